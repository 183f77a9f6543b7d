import { expect, test } from 'vitest';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('..', import.meta.url));

/** Run the compiled demo (`npm test` builds first) as a real process. */
function demo(args: string[]): Promise<{ code: number | null; signal: NodeJS.Signals | null; out: string; err: string }> {
  return new Promise((resolve, reject) => {
    // `timeout` kills a hung demo, so the test fails instead of hanging.
    const child = spawn(process.execPath, ['dist/demo/main.js', ...args], { cwd: root, timeout: 60_000 });
    let out = '', err = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => { out += s; });
    child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s; });
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, out, err }));
  });
}

test.each(['sqlite', 'file'])('demo --processes 2 --threads 2 --seconds 1.5 --backend %s exits 0, exact, a killed worker and a killed process recovered', async (backend) => {
  const { code, signal, out, err } = await demo(['--processes', '2', '--threads', '2', '--seconds', '1.5', '--backend', backend, '--quiet']);
  expect({ code, signal, err }, out).toEqual({ code: 0, signal: null, err: '' });
  expect(out).toContain('exactness: OK');
  expect(out).toMatch(/a worker of process #0 exited inside its update: the lock came back abandoned/);
  expect(out).toMatch(/process #1 was SIGKILLed inside its update/);
  expect(out).toMatch(/fencing tokens +monotonic/);
  expect(out).toMatch(/share of updates +process #0/);
  // --quiet: no progress bar.
  expect(out).not.toMatch(/updates\/s\n/);
});

test('demo rejects --processes 1 with exit code 2', async () => {
  const { code, err } = await demo(['--processes', '1']);
  expect(code).toBe(2);
  expect(err).toContain('--processes must be an integer from 2 to 16');
});

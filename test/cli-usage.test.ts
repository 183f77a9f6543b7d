// The `latchkey` command line: --help and -h on every command (usage and
// exit codes on stdout, exit 0), --version, bad arguments (one line on
// stderr, exit 64, nothing run), and demo/bench forwarding to their scripts.
import { afterEach, describe, expect, test } from 'vitest';
import * as fs from 'node:fs';
import { join } from 'node:path';
import { cleanup, freshEnv, latchkey } from './fixtures/cli-util.js';

afterEach(cleanup);

const EXIT_USAGE = 64;
const commands = ['run', 'status', 'demo', 'bench'] as const;

describe('latchkey --help', () => {
  test.each([['--help'], ['-h'], ['help']])('latchkey %s prints the usage, every command and the exit codes; exits 0', async (flag) => {
    const r = await latchkey([flag], null);
    expect(r.code).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/^Usage: latchkey COMMAND/);
    for (const c of commands) expect(r.stdout).toMatch(new RegExp(`^  ${c} `, 'm'));
    expect(r.stdout).toContain('Exit status:');
    for (const code of ['64', '75', '76', '124', '126', '127', '128+n']) expect(r.stdout).toMatch(new RegExp(`^  ${code.replace('+', '\\+')} `, 'm'));
  }, 30_000);

  test.each(commands)('latchkey %s --help and -h print its usage and exit 0; latchkey help %s prints the same', async (command) => {
    const long = await latchkey([command, '--help'], null);
    expect(long.code).toBe(0);
    expect(long.stderr).toBe('');
    expect(long.stdout).toMatch(new RegExp(`^Usage: latchkey ${command} `));
    expect(long.stdout).toContain('Exit status:');
    const short = await latchkey([command, '-h'], null);
    expect(short).toMatchObject({ code: 0, stdout: long.stdout });
    const topic = await latchkey(['help', command], null);
    expect(topic).toMatchObject({ code: 0, stdout: long.stdout });
  }, 30_000);

  test('each command\'s --help lists its own exit statuses and no other command\'s', async () => {
    const statuses = (help: string) => [...help.slice(help.indexOf('Exit status:')).matchAll(/^  (\S+)\s/gm)].map((m) => m[1]);
    const help = async (c: string) => (await latchkey([c, '--help'], null)).stdout;
    expect(statuses(await help('run'))).toEqual(['N', '64', '69', '70', '75', '76', '124', '126', '127', '128+n']);
    expect(statuses(await help('status'))).toEqual(['0', '64', '69', '70']);
    for (const c of ['demo', 'bench']) expect(statuses(await help(c))).toEqual(['N', '70', '127', '128+n']);
  }, 30_000);

  test('run --help wins over everything else on the line, and runs nothing', async () => {
    const env = freshEnv(), marker = join(env.dir, 'ran');
    const r = await latchkey(['run', '--help', 'x', '--', process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(marker)}, '')`], env);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^Usage: latchkey run /);
    expect(fs.existsSync(marker)).toBe(false);
  }, 30_000);

  test('--version prints the package version', async () => {
    const pkg = JSON.parse(fs.readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    for (const flag of ['--version', '-V']) {
      expect(await latchkey([flag], null)).toMatchObject({ code: 0, stdout: `latchkey ${pkg.version}\n`, stderr: '' });
    }
  }, 30_000);
});

describe('bad arguments: exit 64, one line on stderr naming the problem, nothing run', () => {
  const cmd = (marker: string) => [process.execPath, '-e', `require('fs').writeFileSync(${JSON.stringify(marker)}, '')`];
  const cases: Array<[string, (c: string[]) => string[], RegExp]> = [
    ['no command', () => [], /missing the command/],
    ['an unknown command', () => ['frobnicate'], /unknown command "frobnicate"/],
    ['an unknown top-level option', () => ['--frobnicate'], /unknown option "--frobnicate"/],
    ['help for an unknown command', () => ['help', 'frobnicate'], /unknown command "frobnicate"/],
    ['run without NAME', () => ['run'], /missing the lock NAME/],
    ['run with an option of the command\'s before it, without --', (c) => ['run', 'x', '-j4', ...c], /unknown option '-j'.*put '--' before a COMMAND/],
    ['run with -c and a COMMAND', (c) => ['run', 'x', '-c', 'true', ...c], /-c and a COMMAND cannot be used together/],
    ['run -E 300', (c) => ['run', '-E', '300', 'x', ...c], /-E must be an integer from 0 to 255/],
    ['run with a second NAME before --', (c) => ['run', 'x', 'make', '--', ...c], /expected one lock NAME/],
    ['run with nothing after --', () => ['run', 'x', '--'], /missing the command/],
    ['run with two names', (c) => ['run', 'x', 'y', '--', ...c], /expected one lock NAME/],
    ['run with an empty NAME', (c) => ['run', '', '--', ...c], /NAME is empty/],
    ['run with an unknown option', (c) => ['run', '--bogus', 'x', '--', ...c], /unknown option '--bogus'/],
    ['run --wait without a value', () => ['run', 'x', '--wait'], /--wait/],
    ['run --wait abc', (c) => ['run', '--wait', 'abc', 'x', '--', ...c], /--wait must be a number of seconds/],
    ['run --wait=-1', (c) => ['run', '--wait=-1', 'x', '--', ...c], /--wait must be a number of seconds/],
    ['run --wait 1e3', (c) => ['run', '--wait', '1e3', 'x', '--', ...c], /--wait must be a number of seconds/],
    ['run --ttl 10', (c) => ['run', '--ttl', '10', 'x', '--', ...c], /--ttl must be an integer from 250/],
    ['run --ttl 1.5', (c) => ['run', '--ttl', '1.5', 'x', '--', ...c], /--ttl must be an integer/],
    ['run --scope galaxy', (c) => ['run', '--scope', 'galaxy', 'x', '--', ...c], /--scope must be host, cluster or thread/],
    ['run --nonblock --wait 1', (c) => ['run', '-n', '-w', '1', 'x', '--', ...c], /--nonblock and --wait/],
    ['run --shared --exclusive', (c) => ['run', '-s', '-x', 'x', '--', ...c], /--shared and --exclusive/],
    ['run --shared=yes', (c) => ['run', '--shared=yes', 'x', '--', ...c], /does not take an argument/],
    ['run with NAME after --', (c) => ['run', '--', 'x', ...c], /missing the lock NAME/],
    ['status --top x', () => ['status', '--top', 'x'], /--top must be an integer/],
    ['status with an unknown option', () => ['status', '--bogus'], /unknown option '--bogus'/],
  ];

  test.each(cases)('%s', async (_what, args, message) => {
    const env = freshEnv(), marker = join(env.dir, 'ran');
    const r = await latchkey(args(cmd(marker)), env);
    expect(r.code, r.stderr).toBe(EXIT_USAGE);
    expect(r.stderr).toMatch(/^latchkey: [^\n]+\n$/);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
    expect(fs.existsSync(marker)).toBe(false);
  }, 30_000);
});

describe('latchkey demo and bench run their scripts', () => {
  test('latchkey demo passes its arguments to the demo and its exit status back', async () => {
    const ok = await latchkey(['demo', '--processes', '2', '--threads', '1', '--seconds', '0.8', '--quiet'], null, 60_000);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain('exactness: OK');
    // The demo's own refusal of a flag (its exit 2), passed through.
    const bad = await latchkey(['demo', '--processes', '1'], null);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--processes');
  }, 90_000);
});

// latchkey:host events flow to subscribers without NODE_DEBUG (they used to
// be published only when it was set), from whichever thread they happen in:
// the lease keeper's renewals reach a subscriber in the main thread, and a
// host request of the main thread reaches a subscriber in a worker. A lease
// lost while its holder was frozen is a latchkey:lost event (and a host
// 'lost') in the holder. NODE_DEBUG=latchkey lines round their numbers and
// summarise renewals instead of printing one per renewal. Real processes.
import { type ChildProcess, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';

const INDEX = new URL('../dist/src/index.js', import.meta.url).href;
const live = new Set<ChildProcess>();
const dirs: string[] = [];
afterEach(() => {
  for (const c of live) c.kill('SIGKILL');
  live.clear();
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function freshDir(): string {
  const d = fs.mkdtempSync(join(tmpdir(), 'lk-observe-host-'));
  fs.chmodSync(d, 0o700);
  dirs.push(d);
  return d;
}

/** A node process running `source` (an ES module file in `dir`), with stdout lines collected. */
function child(dir: string, file: string, source: string, env: Record<string, string> = {}) {
  const path = join(dir, file);
  fs.writeFileSync(path, source);
  const base = { ...process.env };
  for (const k of ['NODE_DEBUG', 'NODE_OPTIONS', 'LATCHKEY_BACKEND']) delete base[k];
  const proc = spawn(process.execPath, [path], { env: { ...base, LATCHKEY_DIR: dir, ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
  live.add(proc);
  const lines: string[] = [];
  let out = '', err = '';
  const waiters: Array<() => void> = [];
  proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
    out += d;
    const parts = out.split('\n');
    out = parts.pop()!;
    lines.push(...parts);
    for (const w of waiters.splice(0)) w();
  });
  proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<number | null>((r) => proc.once('close', (code) => r(code)));
  const line = (pred: (l: string) => boolean, what: string): Promise<string> => new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`timed out waiting for ${what}; stdout: ${lines.join('\n')}; stderr: ${err}`)), 20_000);
    const look = () => {
      const found = lines.find(pred);
      if (found !== undefined) {
        clearTimeout(t);
        resolve(found);
      } else waiters.push(look);
    };
    look();
    void exited.then(() => {
      if (!lines.some(pred)) {
        clearTimeout(t);
        reject(new Error(`exited before ${what}; stdout: ${lines.join('\n')}; stderr: ${err}`));
      }
    });
  });
  return { proc, lines, line, exited, stderr: () => err };
}

describe('latchkey:host without NODE_DEBUG', () => {
  test('a main-thread subscriber sees the grant and the lease keeper\'s renewals (ttl 250 ms, held 1 s)', async () => {
    const dir = freshDir();
    const c = child(dir, 'renew.mjs', `
      import dc from 'node:diagnostics_channel';
      const { locks } = await import(${JSON.stringify(INDEX)});
      const seen = [];
      dc.subscribe('latchkey:host', (m) => seen.push(m));
      const g = await locks.lock('renewed', { scope: 'host', ttl: 250 });
      await new Promise((r) => setTimeout(r, 1000));
      g.unlock();
      console.log(JSON.stringify(seen));
    `);
    expect(await c.exited, c.stderr()).toBe(0);
    const seen = JSON.parse(c.lines.at(-1)!) as Array<{ event: string; name: string; token?: number; expires?: number }>;
    expect(seen[0]).toMatchObject({ event: 'grant', name: 'renewed', mode: 'exclusive' });
    const renewals = seen.filter((e) => e.event === 'renew');
    // A renewal when a third of the lease is gone: ~12 in 1 s; at least 4 even on a loaded machine.
    expect(renewals.length).toBeGreaterThanOrEqual(4);
    expect(renewals[0]).toMatchObject({ name: 'renewed', token: seen[0]!.token });
    expect(renewals.at(-1)!.expires!).toBeGreaterThan(Date.now() - 5000);
  }, 30_000);

  test('a worker that subscribes sees the host events of the main thread\'s requests', async () => {
    const dir = freshDir();
    const c = child(dir, 'worker.mjs', `
      import { Worker } from 'node:worker_threads';
      const { locks } = await import(${JSON.stringify(INDEX)});
      const w = new Worker(\`
        const { parentPort } = require('node:worker_threads');
        import(${JSON.stringify(INDEX)}).then(() => {
          const dc = require('node:diagnostics_channel');
          const seen = [];
          dc.subscribe('latchkey:host', (m) => { seen.push(m.event); if (m.event === 'grant') parentPort.postMessage(seen); });
          parentPort.on('message', () => {}); // stays alive until terminated
          parentPort.postMessage('subscribed');
        });\`, { eval: true });
      await new Promise((r) => w.once('message', r));
      await locks.request('from-main', { scope: 'host' }, () => {});
      const seen = await new Promise((r) => w.once('message', r));
      console.log(JSON.stringify(seen));
      await w.terminate();
    `);
    expect(await c.exited, c.stderr()).toBe(0);
    expect(JSON.parse(c.lines.at(-1)!)).toContain('grant');
  }, 30_000);

  test('a holder frozen past its lease hears of the loss: latchkey:lost (reason, token) and a host lost event', async () => {
    const dir = freshDir();
    const holder = child(dir, 'holder.mjs', `
      import dc from 'node:diagnostics_channel';
      const { locks } = await import(${JSON.stringify(INDEX)});
      const events = [];
      dc.subscribe('latchkey:lost', (m) => events.push({ channel: 'lost', ...m }));
      dc.subscribe('latchkey:host', (m) => { if (m.event === 'lost') events.push({ channel: 'host', ...m }); });
      const g = await locks.lock('frozen', { scope: 'host', ttl: 300 });
      const alive = setInterval(() => {}, 1000); // a held lock does not keep a process alive
      console.log('held ' + g.token);
      await new Promise((r) => g.signal.addEventListener('abort', r));
      await new Promise((r) => setImmediate(r));
      clearInterval(alive);
      console.log(JSON.stringify(events));
    `);
    const held = Number((await holder.line((l) => l.startsWith('held '), 'the holder to hold')).split(' ')[1]);
    holder.proc.kill('SIGSTOP');
    const taker = child(dir, 'taker.mjs', `
      const { locks } = await import(${JSON.stringify(INDEX)});
      const g = await locks.lock('frozen', { scope: 'host', timeout: 15000 });
      console.log('took ' + g.token);
      process.stdin.once('data', () => { g.unlock(); process.exit(0); });
    `);
    await taker.line((l) => l.startsWith('took '), 'the taker to take it after the lease');
    holder.proc.kill('SIGCONT');
    expect(await holder.exited, holder.stderr()).toBe(0);
    taker.proc.stdin!.write('go\n');
    await taker.exited;
    const events = JSON.parse(holder.lines.at(-1)!) as Array<Record<string, unknown>>;
    const lost = events.find((e) => e.channel === 'lost');
    expect(lost).toMatchObject({ name: 'frozen', mode: 'exclusive', scope: 'host', token: held });
    expect(['expired', 'owner-changed', 'marker-missing']).toContain(lost!.reason);
    expect(events.some((e) => e.channel === 'host' && e.name === 'frozen')).toBe(true);
  }, 40_000);
});

describe('NODE_DEBUG=latchkey', () => {
  test('renewals are summarised (at ttl 250 ms, 1.5 s held: at most 2 lines, not ~18), and numbers are rounded', async () => {
    const dir = freshDir();
    const c = child(dir, 'debug.mjs', `
      const { locks } = await import(${JSON.stringify(INDEX)});
      const g = await locks.lock('chatty', { scope: 'host', ttl: 250 });
      await new Promise((r) => setTimeout(r, 1500));
      g.unlock();
      await locks.request('chatty', async () => {});
    `, { NODE_DEBUG: 'latchkey' });
    expect(await c.exited, c.stderr()).toBe(0);
    const lines = c.stderr().split('\n').filter((l) => l.startsWith('LATCHKEY '));
    const renewals = lines.filter((l) => l.includes('host renew'));
    expect(renewals.length).toBeGreaterThanOrEqual(1);
    expect(renewals.length).toBeLessThanOrEqual(2);
    expect(renewals[0]).toMatch(/host renew "chatty" \(host token \d+\): lease left \d+ ms/);
    // No number with more than two decimals anywhere (waited, held, lease left …).
    expect(lines.filter((l) => /\d\.\d{3,}/.test(l))).toEqual([]);
    expect(lines.some((l) => /granted host exclusive lock "chatty" \(token \d+, waited \d+(\.\d+)? ms\)/.test(l))).toBe(true);
    expect(lines.some((l) => /released host exclusive lock "chatty" \(token \d+, held 1\.\d s\)|held \d+ ms\)/.test(l))).toBe(true);
  }, 30_000);
});

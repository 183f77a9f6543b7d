import { subscribe, unsubscribe } from 'node:diagnostics_channel';
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, test } from 'vitest';
import { locks } from '../src/index.js';

describe('observability', () => {
  test('diagnostics_channel latchkey:acquire, latchkey:contention and latchkey:release carry name, mode, scope, token and times', async () => {
    const seen: Array<[string, Record<string, unknown>]> = [];
    const on = (channel: string) => (message: unknown) => seen.push([channel, message as Record<string, unknown>]);
    const handlers = ['latchkey:acquire', 'latchkey:contention', 'latchkey:release'].map((c) => [c, on(c)] as const);
    for (const [c, h] of handlers) subscribe(c, h);
    try {
      let release!: () => void;
      const first = locks.request('observe:a', () => new Promise<void>((r) => (release = r)));
      const second = locks.request('observe:a', { mode: 'exclusive' }, () => 'second');
      await null;
      release();
      await first;
      expect(await second).toBe('second');
    } finally {
      for (const [c, h] of handlers) unsubscribe(c, h);
    }
    expect(seen.map(([c]) => c)).toEqual([
      'latchkey:acquire', 'latchkey:contention', 'latchkey:release', 'latchkey:acquire', 'latchkey:release',
    ]);
    const [, grant] = seen[0]!;
    expect(grant).toMatchObject({ name: 'observe:a', mode: 'exclusive', scope: 'thread', abandoned: false, waitedMs: 0 });
    expect(seen[3]![1]).toMatchObject({ name: 'observe:a', scope: 'thread' });
    expect(seen[3]![1].waitedMs as number).toBeGreaterThan(0);
    expect(seen[3]![1].token as number).toBeGreaterThan(grant.token as number);
    expect(seen[2]![1].heldMs as number).toBeGreaterThanOrEqual(0);
  });

  test('NODE_DEBUG=latchkey prints grants, waits and the host tier\'s grants', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lk-observe-'));
    const script = `import('${join(process.cwd(), 'dist/src/index.js')}').then(async ({ locks }) => {
      await locks.request('observe:host', { scope: 'host' }, () => {});
    })`;
    const { stderr, status } = spawnSync(process.execPath, ['-e', script], {
      env: { ...process.env, NODE_DEBUG: 'latchkey', LATCHKEY_DIR: dir }, encoding: 'utf8', timeout: 30_000,
    });
    expect(status).toBe(0);
    expect(stderr).toMatch(/LATCHKEY \d+: host grant "observe:host"/);
    expect(stderr).toMatch(/LATCHKEY \d+: granted host exclusive lock "observe:host" \(token \d+/);
    expect(stderr).toMatch(/LATCHKEY \d+: released host exclusive lock "observe:host"/);
  });
});

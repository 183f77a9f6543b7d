// Cluster scope: races between the agent's answer and the requester,
// found by a review (each failed before its fix): a session lost after the
// agent granted but before the requester took the grant up (the holder ran
// on, never told); an abort landing after the grant was answered (the
// grant was never given back, and other processes waited for ever); and a
// request cancelled while its first attempt was on its way (a waiter row,
// left on the server, and shown by query()).
import { afterAll, describe, expect, test } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { fixture } from './helpers.js';
import { forgetNames, pgUrl, uniquePrefix, useServerGate } from './fixtures/cluster-util.js';

pgUrl(); // no server, no test: fail here, loudly
const PREFIX = uniquePrefix('races');
let n = 0;
useServerGate();
afterAll(() => forgetNames(PREFIX));

async function run(role: string): Promise<unknown> {
  const { stdout } = await promisify(execFile)(process.execPath, [fixture('cluster-races'), role, `${PREFIX}-${role}-${++n}`], { timeout: 30_000 });
  return JSON.parse(stdout.trim().split('\n').pop()!);
}

describe('cluster answers racing their requester', () => {
  test('the session ends between the grant and its taking up: the holder is told (or the request fails), never left unaware', async () => {
    const r = await run('taken-up-late') as { granted: boolean; told?: boolean; unlock?: string; rejected?: string };
    if (r.granted) expect(r).toEqual({ granted: true, told: true, unlock: 'ERR_LOCK_COMPROMISED' });
    else expect(r.rejected).toMatch(/^ERR_LOCK_(BACKEND|COMPROMISED)$/);
  }, 40_000);

  test('an abort that comes after the grant was answered: the lock is not left held by nobody', async () => {
    expect(await run('abort-after-grant')).toMatchObject({ free: true });
  }, 40_000);

  test('requests that time out while their first attempt is on its way leave nothing waiting on the server', async () => {
    expect(await run('timed-out-first')).toEqual({ rows: 0, pending: 0 });
  }, 40_000);
});

import { expect, test } from 'vitest';
import { LockTable } from '../src/index.js';
import { control, exited, start, until } from './helpers.js';
import { words } from './fixtures/rwlock-helpers.js';

test('RWLock: workers killed at random moments while hammering every path leave nothing held or queued', async () => {
  const table = LockTable.create({ slots: 8, threads: 32 });
  const rw = table.rwlock('fair');
  for (let round = 0; round < 10; round++) {
    const ctl = control(8);
    const ws = Array.from({ length: 4 }, () => start('rwlock-hammer', { table: table.buffer, control: ctl.buffer, role: 'mixed-hammer', hold: 0, rounds: 0 }));
    const errors: unknown[] = [];
    for (const w of ws) w.on('error', (err) => errors.push(err));
    await until(ctl, 0, 4).catch((err) => { throw new Error(`round ${round}: ${err} ${errors.join('; ')}`); });
    await new Promise((r) => setTimeout(r, Math.random() * 20));
    await Promise.all(ws.map(async (w) => { const gone = exited(w); await w.terminate(); await gone; }));
    // A thread killed inside an update of the reader count may leave it one too high, and its recovery
    // cannot tell: the next writer's census gives it back (CENSUS_MS). Nothing else may be left.
    const w = rw.writeLockSync({ timeout: 1000 });
    expect(w.abandoned === true || w.abandoned === false).toBe(true);
    expect(words(table, 'fair')).toMatchObject({ readers: 0, queued: 0, heir: 0 });
    w.unlock();
    const left = words(table, 'fair');
    if (left.state !== 0) throw new Error(`round ${round}: left behind ${JSON.stringify(left)}`);
  }
  expect(words(table, 'fair')).toMatchObject({ writer: 0, readers: 0, queued: 0 });
});

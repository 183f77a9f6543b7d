import { expect, test } from 'vitest';
import { locks } from '../src/index.js';
import { control, exited, start, until } from './helpers.js';

test('locks: workers killed at random moments while hammering every path leave nothing held or queued, and no torn record is read', async () => {
  const record = new SharedArrayBuffer(64);
  for (let round = 0; round < 12; round++) {
    const ctl = control(4);
    const ws = Array.from({ length: 4 }, (_, i) => start('locks-hammer', { control: ctl.buffer, record, seed: round * 97 + i + 1 }));
    const errors: unknown[] = [];
    for (const w of ws) w.on('error', (err) => errors.push(err));
    await until(ctl, 0, 4);
    await new Promise((r) => setTimeout(r, 5 + Math.random() * 30)); // kill at a random moment: the point of the test
    await Promise.all(ws.map(async (w) => { const gone = exited(w); await w.terminate(); await gone; }));
    expect(errors).toEqual([]);
    expect(Atomics.load(ctl, 2), `round ${round}: a shared holder read a torn record`).toBe(0);
    // Recovery may finish a few ms after the last 'exit' event (a latch held by
    // another dead thread): the next holder waits for it, and is told.
    for (const name of ['hammer:0', 'hammer:1']) {
      const g = locks.lockSync(name, { timeout: 1000 })!;
      const r = new Int32Array(record, name.endsWith('0') ? 0 : 16, 4);
      // A record left torn by a killed writer is reported to the next holder, who repairs it
      // (on hammer:0: on hammer:1 a steal lets two writers in by design).
      if (name === 'hammer:0' && !r.every((v) => v === r[0])) expect(g.abandoned, `round ${round}: torn ${name} but not abandoned`).toBe(true);
      r.fill(r[0]!);
      g.unlock();
    }
    const { held, pending } = await locks.query();
    expect({ held: held.filter((l) => l.name.startsWith('hammer:')), pending: pending.filter((l) => l.name.startsWith('hammer:')) }, `round ${round}`)
      .toEqual({ held: [], pending: [] });
  }
});

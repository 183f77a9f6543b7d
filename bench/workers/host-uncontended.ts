// CPU per uncontended request in one process (bench/host.ts): process.cpuUsage
// (user + system, every thread of the process: the lease keeper's work
// counts), `await locks.request(name, cb)` one after another, at thread scope
// (the anchor) and at host scope (LATCHKEY_DIR, LATCHKEY_BACKEND), alternating
// batches of `n` after a warm-up. Prints { threadUs: [...], hostUs: [...] }
// (one figure per batch).
import { locks } from '../../src/index.js';

const n = Number(process.argv[2] ?? 3000), batches = Number(process.argv[3] ?? 5);
const cases = {
  thread: () => locks.request('u:t', () => {}),
  host: () => locks.request('u:h', { scope: 'host' }, () => {}),
};
for (const fn of Object.values(cases)) for (let i = 0; i < 300; i++) await fn();
const out: Record<string, number[]> = { threadUs: [], hostUs: [] };
for (let b = 0; b < batches; b++) {
  for (const [k, fn] of Object.entries(cases)) {
    const c0 = process.cpuUsage();
    for (let i = 0; i < n; i++) await fn();
    const c = process.cpuUsage(c0);
    out[`${k}Us`]!.push((c.user + c.system) / n);
  }
}
console.log(JSON.stringify(out));
process.exit(0);

// One contending process for host-anchors' properLockfileContended: forked
// with argv [counterFile, ms]. Says 'ready', waits for 'go', then for `ms`
// ms loops: proper-lockfile lock() (retrying: sleep 1..10 ms, try again),
// non-atomic read-modify-write of the counter file, release(). Every wait
// (lock() call → granted, ms) is kept, up to 65536 of them. Replies
// { ops, waits, endNs } (endNs: process.hrtime.bigint() after the last
// release, as a string) and disconnects so the process exits on its own.
import * as fs from 'node:fs';
import * as lockfile from 'proper-lockfile';

const [counter, msArg] = process.argv.slice(2) as [string, string];
const ms = Number(msArg);
const MAX_WAITS = 1 << 16;
const options: lockfile.LockOptions = {
  realpath: false,
  stale: 10_000,
  retries: { retries: 1000, minTimeout: 1, maxTimeout: 10 },
};

async function run(): Promise<{ ops: number; waits: number[]; endNs: string }> {
  const waits: number[] = [];
  let ops = 0;
  const deadline = performance.now() + ms;
  while (performance.now() < deadline) {
    const t0 = performance.now();
    const release = await lockfile.lock(counter, options);
    if (waits.length < MAX_WAITS) waits.push(performance.now() - t0);
    const n = Number(fs.readFileSync(counter, 'utf8'));
    fs.writeFileSync(counter, String(n + 1));
    await release();
    ops++;
  }
  return { ops, waits, endNs: process.hrtime.bigint().toString() };
}

process.once('message', (m) => {
  if (m !== 'go') return;
  run().then(
    (r) => process.send!(r, () => process.disconnect()),
    (err: Error) => process.send!({ ops: 0, waits: [], endNs: '0', error: err.message }, () => process.disconnect()),
  );
});
process.send!('ready');

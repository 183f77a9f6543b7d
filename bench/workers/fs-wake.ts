// The noticing side of host-anchors' watchWakeUs / pollWakeUs: forked with
// argv [dir, 'watch' | 'poll', intervalMs]. Says 'ready' once set up; then,
// per round, the parent sends { arm: name } (the file exists by then), this
// process replies 'armed', and as soon as it sees `dir/name` gone it replies
// { t } with process.hrtime.bigint() (a string) stamped first thing:
//  - watch: one fs.watch(dir) for the whole run; on an event naming the armed
//    file, stamp, then check the file is really gone (the create's own event
//    may still be in the queue: such an event is ignored);
//  - poll: fs.existsSync(dir/name) every intervalMs until it is false.
// { stop: true } closes the watcher and the IPC channel, and the process exits.
import * as fs from 'node:fs';
import * as path from 'node:path';

const [dir, mode, intervalArg] = process.argv.slice(2) as [string, 'watch' | 'poll', string];
const intervalMs = Number(intervalArg);
let armed: string | null = null;

function woke(t: bigint): void {
  armed = null;
  process.send!({ t: t.toString() });
}

const watcher = mode === 'watch'
  ? fs.watch(dir, (_event, filename) => {
    if (armed === null || filename !== armed) return;
    const t = process.hrtime.bigint();
    if (!fs.existsSync(path.join(dir, armed))) woke(t);
  })
  : null;

function poll(name: string): void {
  const file = path.join(dir, name);
  const timer = setInterval(() => {
    if (fs.existsSync(file)) return;
    const t = process.hrtime.bigint();
    clearInterval(timer);
    woke(t);
  }, intervalMs);
}

process.on('message', (m: { arm?: string; stop?: boolean }) => {
  if (m.stop) {
    watcher?.close();
    process.disconnect();
    return;
  }
  if (m.arm !== undefined) {
    armed = m.arm;
    if (mode === 'poll') poll(m.arm);
    process.send!('armed');
  }
});
process.send!('ready');

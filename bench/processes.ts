/**
 * What bench/host.ts and bench/cluster.ts do alike with their contending
 * processes: start them all at one instant, and read their overlap logs.
 */
import type { ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';

/** A forked child's next message; its exit first rejects (else a crashed child would leave the bench waiting on nothing, and Node would exit 0). */
export function nextMessage<R>(c: ChildProcess): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    const onExit = (code: number | null, signal: NodeJS.Signals | null) => reject(new Error(`bench child exited with ${signal ?? code}`));
    c.once('message', (m) => {
      c.off('exit', onExit);
      resolve(m as R);
    });
    c.once('exit', onExit);
  });
}

/**
 * Wait for each forked child's first message (it is ready), then send every
 * one {goNs}: one instant, `leadNs` from now. Each child's next message is
 * its result; a child that exits before either rejects.
 */
export async function startTogether<R>(children: ChildProcess[], leadNs: bigint): Promise<R[]> {
  await Promise.all(children.map((c) => nextMessage(c)));
  const done = children.map((c) => nextMessage<R>(c));
  const goNs = process.hrtime.bigint() + leadNs; // every child starts at the same instant
  for (const c of children) c.send({ goNs: goNs.toString() });
  return Promise.all(done);
}

/**
 * The overlap log: each file holds [enter, exit] float64 pairs (ns since go)
 * of process `proc`. exact: no section was entered before the one entered
 * before it had left; handoffUs: exit → next enter, µs, at every change of
 * process (the next one was waiting).
 */
export function overlapLog(logs: Array<{ file: string; proc: number }>): { exact: boolean; handoffUs: number[] } {
  const intervals: Array<[number, number, number]> = [];
  for (const { file, proc } of logs) {
    const bytes = readFileSync(file);
    const f = new Float64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    for (let i = 0; i + 1 < f.length; i += 2) intervals.push([f[i]!, f[i + 1]!, proc]);
  }
  intervals.sort((a, b) => a[0] - b[0]);
  let exact = true;
  const handoffUs: number[] = [];
  for (let i = 1; i < intervals.length; i++) {
    if (intervals[i]![0] < intervals[i - 1]![1]) exact = false;
    if (intervals[i]![2] !== intervals[i - 1]![2]) handoffUs.push((intervals[i]![0] - intervals[i - 1]![1]) / 1000);
  }
  return { exact, handoffUs };
}

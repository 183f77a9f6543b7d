/**
 * Text for the demo: numbers, durations, the live progress line and the
 * closing table. Nothing here touches shared memory.
 */
import type { LockStats } from '../src/index.js';

export const int = (n: number): string => Math.round(n).toLocaleString('en-US');

/** A duration given in nanoseconds, in the unit that reads best. */
export function ns(value: number): string {
  if (value < 1e3) return `${value.toFixed(0)} ns`;
  if (value < 1e6) return `${(value / 1e3).toPrecision(3)} µs`;
  if (value < 1e9) return `${(value / 1e6).toPrecision(3)} ms`;
  return `${(value / 1e9).toFixed(2)} s`;
}

export const ms = (value: number): string => ns(value * 1e6);

const pct = (part: number, whole: number): string => `${whole === 0 ? '0.0' : ((100 * part) / whole).toFixed(1)}%`;

function bar(part: number, whole: number, width = 20): string {
  const n = whole === 0 ? 0 : Math.round((width * part) / whole);
  return '█'.repeat(n) + '·'.repeat(width - n);
}

export function progressLine(elapsedS: number, transfers: number, perS: number): string {
  return `  ${elapsedS.toFixed(1).padStart(5)} s   ${int(transfers).padStart(11)} transfers   ${int(perS).padStart(9)} transfers/s`;
}

export interface Recovery {
  name: string;
  /** From worker.terminate() to the acquisition that was told `abandoned`. */
  ms: number;
  by: string;
  action: string;
}

export interface WorkerShare {
  label: string;
  done: number;
}

export interface Summary {
  workers: number;
  syncWorkers: number;
  seconds: number;
  transfers: number;
  acquisitions: number;
  waits: { samples: number; p50Ns: number; p99Ns: number; maxNs: number };
  terminated: string;
  recoveries: Recovery[];
  shares: WorkerShare[];
  locks: LockStats[];
  failures: string[];
  notes: string[];
}

export function closingTable(s: Summary): string {
  const rows: Array<[string, string]> = [];
  const row = (k: string, v: string) => rows.push([k, v]);
  row('workers', `${s.workers} (${s.syncWorkers} lockSync, ${s.workers - s.syncWorkers} await lock())`);
  row('duration', `${s.seconds.toFixed(2)} s`);
  row('transfers', int(s.transfers));
  row('throughput', `${int(s.transfers / s.seconds)} transfers/s, ${int(s.acquisitions / s.seconds)} lock acquisitions/s`);
  row('wait p50 / p99', `${ns(s.waits.p50Ns)} / ${ns(s.waits.p99Ns)}  (max ${ns(s.waits.maxNs)}; every acquisition sampled: ${int(s.waits.samples)})`);
  row('terminated', s.terminated);
  if (s.recoveries.length === 0) row('abandoned locks', 'none recovered');
  for (const [i, r] of s.recoveries.entries()) {
    row(i === 0 ? 'abandoned locks' : '', `${r.name} recovered ${ms(r.ms)} after terminate(), repaired by ${r.by}: ${r.action}`);
  }
  for (const [i, w] of s.shares.entries()) {
    row(i === 0 ? 'share of transfers' : '', `${w.label.padEnd(24)} ${int(w.done).padStart(11)}  ${pct(w.done, s.transfers).padStart(6)}  ${bar(w.done, s.transfers)}`);
  }
  const hot = [...s.locks].sort((a, b) => b.contended - a.contended)[0];
  if (hot !== undefined) {
    row('hottest lock', `${hot.name ?? `#${hot.slot}`}: ${int(hot.acquisitions)} acquisitions, ${int(hot.contended)} contended (${pct(hot.contended, hot.acquisitions)})`);
    row('', `wait avg ${ns(hot.contended === 0 ? 0 : hot.waitNs / hot.contended)} when contended, max ${ns(hot.waitMaxNs)}; longest hold ${ns(hot.holdMaxNs)}`);
    const all = s.locks.reduce((n, l) => n + l.acquisitions, 0), contended = s.locks.reduce((n, l) => n + l.contended, 0);
    row('all locks', `${s.locks.length} locks, ${int(all)} acquisitions, ${pct(contended, all)} contended (table.stats())`);
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  const lines = rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`);
  for (const note of s.notes) lines.push(`  note: ${note}`);
  lines.push(s.failures.length === 0 ? 'exactness: OK' : `exactness: FAILED (${s.failures.join('; ')})`);
  return lines.join('\n');
}

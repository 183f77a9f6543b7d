/**
 * Text for the demo: numbers, durations, the live progress bar and the
 * closing table. Nothing here touches a lock.
 */
export const int = (n: number): string => Math.round(n).toLocaleString('en-US');

/** A duration given in milliseconds, in the unit that reads best. */
export function ms(value: number): string {
  if (value < 1e-3) return `${(value * 1e6).toFixed(0)} ns`;
  if (value < 1) return `${(value * 1e3).toPrecision(3)} µs`;
  if (value < 1e3) return `${value.toPrecision(3)} ms`;
  return `${(value / 1e3).toFixed(2)} s`;
}

const pct = (part: number, whole: number): string => `${whole === 0 ? '0.0' : ((100 * part) / whole).toFixed(1)}%`;

export function bar(part: number, whole: number, width = 24): string {
  const n = whole === 0 ? 0 : Math.min(width, Math.round((width * part) / whole));
  return '█'.repeat(n) + '·'.repeat(width - n);
}

export function progressLine(elapsedS: number, totalS: number, ops: number, perS: number): string {
  return `  ${bar(elapsedS, totalS)} ${elapsedS.toFixed(1).padStart(5)} / ${totalS.toFixed(1)} s  ${int(ops).padStart(9)} updates  ${int(perS).padStart(7)} updates/s`;
}

export interface Share {
  label: string;
  ops: number;
}

export interface Summary {
  processes: number;
  threads: number;
  backend: string;
  seconds: number;
  ops: number;
  waits: { p50: number; p99: number; max: number; samples: number };
  shares: Share[];
  recoveries: string[];
  hostGrants: number;
  failures: string[];
}

export function closingTable(s: Summary): string {
  const rows: Array<[string, string]> = [];
  const row = (k: string, v: string) => rows.push([k, v]);
  row('processes × threads', `${s.processes} × ${s.threads} (piscina pools), host locks over the ${s.backend} backend`);
  row('duration', `${s.seconds.toFixed(2)} s`);
  row('throughput', `${int(s.ops / s.seconds)} cache updates/s (${int(s.ops)} in all)`);
  row('host lock wait', `p50 ${ms(s.waits.p50)}, p99 ${ms(s.waits.p99)}, max ${ms(s.waits.max)} (${int(s.waits.samples)} samples)`);
  row('cohorting', `${int(s.hostGrants)} backend grants served ${int(s.ops)} updates (${(s.ops / Math.max(1, s.hostGrants)).toFixed(1)} per grant)`);
  for (const [i, sh] of s.shares.entries()) {
    row(i === 0 ? 'share of updates' : '', `${sh.label.padEnd(26)} ${int(sh.ops).padStart(9)}  ${pct(sh.ops, s.ops).padStart(6)}  ${bar(sh.ops, s.ops)}`);
  }
  if (s.recoveries.length === 0) row('abandoned locks', 'none');
  for (const [i, r] of s.recoveries.entries()) row(i === 0 ? 'abandoned locks' : '', r);
  row('fencing tokens', s.failures.some((f) => f.includes('fencing')) ? 'NOT monotonic' : 'monotonic: every update carried a larger token than the last');
  const width = Math.max(...rows.map(([k]) => k.length));
  const lines = rows.map(([k, v]) => `  ${k.padEnd(width)}  ${v}`);
  lines.push(s.failures.length === 0 ? 'exactness: OK' : `exactness: FAILED (${s.failures.join('; ')})`);
  return lines.join('\n');
}

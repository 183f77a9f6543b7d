/** Plain-text output for the CLI: aligned columns and short durations. */

/** Rows under a header, each column as wide as its widest cell, two spaces apart; numbers right-aligned. */
export function table(header: readonly string[], rows: ReadonlyArray<readonly string[]>, right: ReadonlySet<number> = new Set()): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) => cells
    .map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
    .join('  ');
  return [line(header), ...rows.map(line)].join('\n');
}

/** 850ms, 4.2s, 3m05s, 2h01m, 3d04h. */
export function duration(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  const t = Math.max(0, ms);
  if (t < 1000) return `${Math.floor(t)}ms`;
  if (t < 60_000) return `${(Math.floor(t / 100) / 10).toFixed(1)}s`;
  const s = Math.floor(t / 1000);
  const pair = (a: number, ua: string, b: number, ub: string) => `${a}${ua}${String(b).padStart(2, '0')}${ub}`;
  if (s < 3600) return pair(Math.floor(s / 60), 'm', s % 60, 's');
  if (s < 86_400) return pair(Math.floor(s / 3600), 'h', Math.floor(s / 60) % 60, 'm');
  return pair(Math.floor(s / 86_400), 'd', Math.floor(s / 3600) % 24, 'h');
}

/** A name as a table cell: as it is when plainly printable, else quoted (JSON) so that the columns hold. */
export function cell(text: string): string {
  return /^[\x21-\x7e]+$/.test(text) ? text : JSON.stringify(text);
}

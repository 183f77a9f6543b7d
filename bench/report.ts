/** One figure of the report: latchkey beside its anchor from the same run. */
export interface Figure {
  figure: string;
  unit: string;
  latchkey: number;
  anchorName: string;
  anchor: number;
  /** latchkey / anchor, in the direction that makes "higher is better" or "lower is better" plain. */
  ratio: number;
  better: 'lower' | 'higher';
  target?: string;
  note?: string;
}

export function figure(f: Omit<Figure, 'ratio'>): Figure {
  return { ...f, ratio: f.latchkey / f.anchor };
}

const fmt = (n: number) => (n >= 100 ? n.toFixed(0) : n >= 10 ? n.toFixed(1) : n.toFixed(2));

export function markdown(figures: Figure[]): string {
  const rows = figures.map((f) =>
    `| ${f.figure} | ${fmt(f.latchkey)} ${f.unit} | ${f.anchorName}: ${fmt(f.anchor)} ${f.unit} | ${f.ratio.toFixed(2)}× (${f.better} is better) | ${f.target ?? ''} |`);
  return ['| figure | latchkey | anchor (same run) | ratio | target |', '|---|---|---|---|---|', ...rows].join('\n');
}

export function percentile(sorted: ArrayLike<number>, q: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;
}

export function median(xs: number[]): number {
  return percentile([...xs].sort((a, b) => a - b), 0.5);
}

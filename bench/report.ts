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

/** How many times better than its anchor a figure is: above 1, latchkey wins (whichever way is better). */
export const advantage = (f: Figure): number => (f.better === 'higher' ? f.ratio : 1 / f.ratio);

const escape = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/**
 * An SVG chart of every figure's advantage over its anchor, one bar each on
 * a log scale centred on 1× (bars right of the line: latchkey is better;
 * left: the anchor is). Figures without an anchor are left out.
 */
export function svgChart(figures: Figure[], title: string): string {
  const rows = figures.filter((f) => Number.isFinite(f.ratio) && f.ratio > 0);
  const label = 560, plot = 420, rowH = 18, top = 40, mid = label + plot / 2;
  const decades = 3; // 1/1000× … 1000×
  const x = (a: number) => mid + (Math.max(-decades, Math.min(decades, Math.log10(a))) / decades) * (plot / 2);
  const height = top + rows.length * rowH + 30;
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${label + plot + 80}" height="${height}" font-family="sans-serif" font-size="11">`,
    `<text x="8" y="18" font-size="13" font-weight="bold">${escape(title)}</text>`,
    `<text x="8" y="32" fill="#555">advantage over the anchor measured in the same run (log scale; right of the line: latchkey is better)</text>`,
  ];
  for (let d = -decades; d <= decades; d++) {
    const gx = mid + (d / decades) * (plot / 2);
    out.push(`<line x1="${gx}" y1="${top - 4}" x2="${gx}" y2="${height - 24}" stroke="${d === 0 ? '#333' : '#ddd'}"/>`);
    out.push(`<text x="${gx}" y="${height - 10}" text-anchor="middle" fill="#555">${d < 0 ? `1/${10 ** -d}` : 10 ** d}×</text>`);
  }
  rows.forEach((f, i) => {
    const y = top + i * rowH, a = advantage(f), bx = x(a);
    const name = `${f.figure} (vs ${f.anchorName})`;
    out.push(`<text x="${label - 6}" y="${y + 12}" text-anchor="end">${escape(name.length > 95 ? `${name.slice(0, 94)}…` : name)}</text>`);
    out.push(`<rect x="${Math.min(bx, mid)}" y="${y + 3}" width="${Math.max(1, Math.abs(bx - mid))}" height="${rowH - 6}" fill="${a >= 1 ? '#3a7d44' : '#b5473a'}"/>`);
    out.push(`<text x="${Math.max(bx, mid) + 4}" y="${y + 12}" fill="#333">${a >= 10 ? a.toFixed(0) : a.toFixed(2)}×</text>`);
  });
  out.push('</svg>');
  return out.join('\n');
}

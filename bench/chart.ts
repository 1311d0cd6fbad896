/** Horizontal bar charts as standalone SVG, one per workload, pointsub highlighted. */

export interface Bar {
  name: string;
  /** Median; undefined when the implementation did not run. */
  value: number | undefined;
  min?: number;
  max?: number;
  /** Shown instead of a bar. */
  note?: string;
}

const esc = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function fmt(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(n >= 1e7 ? 1 : 2)}M`;
  if (n >= 1e4) return `${(n / 1e3).toFixed(0)}K`;
  if (n >= 100) return n.toFixed(0);
  if (n >= 10) return n.toFixed(1);
  return n.toFixed(2);
}

/**
 * Renders `bars` (sorted best first) as an SVG bar chart. `lowerIsBetter`
 * flips the sort order for latencies. Whiskers show min–max.
 */
export function barChart(title: string, unit: string, bars: Bar[], lowerIsBetter: boolean): string {
  const rows = [...bars].sort((a, b) => {
    if (a.value === undefined) return 1;
    if (b.value === undefined) return -1;
    return lowerIsBetter ? a.value - b.value : b.value - a.value;
  });
  const width = 720;
  const left = 130;
  const right = 90;
  const rowH = 26;
  const top = 50;
  const height = top + rows.length * rowH + 28;
  const max = Math.max(...rows.map((r) => r.max ?? r.value ?? 0), 1e-9);
  const scale = (v: number) => ((width - left - right) * v) / max;
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="system-ui, -apple-system, Segoe UI, sans-serif" font-size="13">`,
    `<title>${esc(title)} (${esc(unit)}${lowerIsBetter ? ", lower is better" : ", higher is better"})</title>`,
    `<rect width="100%" height="100%" fill="#ffffff"/>`,
    `<text x="${left}" y="20" font-size="15" font-weight="600" fill="#1f2328">${esc(title)}</text>`,
    `<text x="${left}" y="40" fill="#59636e">${esc(unit)}${lowerIsBetter ? ", lower is better" : ", higher is better"}</text>`,
  );
  rows.forEach((r, i) => {
    const y = top + i * rowH;
    const ours = r.name.startsWith("pointsub");
    const color = ours ? "#d1242f" : "#8c959f";
    parts.push(
      `<text x="${left - 8}" y="${y + 17}" text-anchor="end" fill="#1f2328"${ours ? ' font-weight="700"' : ""}>${esc(r.name)}</text>`,
    );
    if (r.value === undefined) {
      parts.push(
        `<text x="${left + 4}" y="${y + 17}" fill="#59636e" font-style="italic">${esc(r.note ?? "not run")}</text>`,
      );
      return;
    }
    const w = Math.max(1, scale(r.value));
    parts.push(`<rect x="${left}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" rx="2" fill="${color}"/>`);
    if (r.min !== undefined && r.max !== undefined && r.max > r.min) {
      const x1 = left + scale(r.min);
      const x2 = left + scale(r.max);
      const cy = y + rowH / 2;
      parts.push(
        `<line x1="${x1.toFixed(1)}" y1="${cy}" x2="${x2.toFixed(1)}" y2="${cy}" stroke="#1f2328" stroke-width="1"/>`,
      );
    }
    parts.push(
      `<text x="${left + w + 6}" y="${y + 17}" fill="#1f2328"${ours ? ' font-weight="700"' : ""}>${fmt(r.value)}</text>`,
    );
  });
  parts.push(
    `<text x="${left}" y="${height - 8}" fill="#59636e" font-size="11">median of repetitions; whiskers show min–max</text>`,
    "</svg>",
  );
  return `${parts.join("\n")}\n`;
}

// The LUN-bandwidth sweep as an SVG line chart (both systems with their
// run-to-run spread as error bars, the memcpy ceiling and the 60 % target as
// horizontal lines), converted to PNG with rsvg-convert (Debian librsvg2-bin).
import { spawnSync } from 'node:child_process';
import type { Spread } from './stats.ts';

/** One plotted series: a value (median with spread) per LUN count. */
export interface Series {
  label: string;
  color: string;
  points: Array<{ luns: number; value: Spread | null }>;
}

export interface SweepPlot {
  title: string;
  subtitle: string;
  lunCounts: number[];
  series: Series[];
  ceilingMBps: number | null;
}

const W = 960, H = 560, L = 90, R = 260, T = 70, B = 70;

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** A "nice" tick step (1, 2 or 5 × 10^k) giving about `count` ticks up to `max`. */
function niceStep(max: number, count: number): number {
  const raw = max / count;
  const pow = 10 ** Math.floor(Math.log10(raw));
  const m = raw / pow;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * pow;
}

/** A y axis: value → pixel, and labelled tick values. Linear from 0, or
 * logarithmic when every measured value is below a fifth of the largest line
 * (typically the ceiling), so both the curves and the ceiling stay legible. */
interface YAxis {
  log: boolean;
  pos: (v: number) => number;
  ticks: number[];
  minor: number[];
}

function yAxis(top: number, bottom: number, dataMax: number, dataMin: number, overall: number): YAxis {
  const plotH = bottom - top;
  if (dataMax > 0 && dataMax < overall / 5) {
    const lo = 10 ** Math.floor(Math.log10(Math.max(dataMin, 1e-3)));
    const hi = 10 ** Math.ceil(Math.log10(overall * 1.05));
    const pos = (v: number): number => bottom - ((Math.log10(Math.max(v, lo)) - Math.log10(lo)) / (Math.log10(hi) - Math.log10(lo))) * plotH;
    const ticks: number[] = [];
    const minor: number[] = [];
    for (let d = lo; d <= hi * 1.0001; d *= 10) {
      ticks.push(d);
      if (d < hi) minor.push(2 * d, 5 * d);
    }
    return { log: true, pos, ticks, minor };
  }
  const step = niceStep(overall * 1.08, 8);
  const yMax = Math.ceil((overall * 1.08) / step) * step;
  const ticks: number[] = [];
  for (let v = 0; v <= yMax + 1e-9; v += step) ticks.push(v);
  return { log: false, pos: (v) => bottom - (v / yMax) * plotH, ticks, minor: [] };
}

function label(v: number): string {
  if (v === 0) return '0';
  return v >= 10 ? Math.round(v).toLocaleString('en-US') : v >= 1 ? v.toFixed(1) : v.toPrecision(2);
}

/** Renders the sweep as a standalone SVG document. */
export function sweepSvg(p: SweepPlot): string {
  const measured = p.series.flatMap((s) => s.points.flatMap((pt) => (pt.value ? [pt.value.min, pt.value.max] : [])));
  const dataMax = Math.max(0, ...measured);
  const dataMin = measured.length ? Math.min(...measured) : 1;
  const plotW = W - L - R, plotH = H - T - B;
  const axis = yAxis(T, T + plotH, dataMax, dataMin, Math.max(p.ceilingMBps ?? 0, dataMax, 1));
  const x = (i: number): number => L + (p.lunCounts.length === 1 ? plotW / 2 : (i * plotW) / (p.lunCounts.length - 1));
  const y = axis.pos;
  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="DejaVu Sans, sans-serif">`);
  out.push(`<rect width="${W}" height="${H}" fill="white"/>`);
  out.push(`<text x="${L}" y="28" font-size="18" font-weight="bold">${esc(p.title)}</text>`);
  out.push(`<text x="${L}" y="50" font-size="12" fill="#444">${esc(p.subtitle)}</text>`);
  // Grid and y ticks.
  for (const v of axis.minor) out.push(`<line x1="${L}" x2="${L + plotW}" y1="${y(v)}" y2="${y(v)}" stroke="#f2f2f2"/>`);
  for (const v of axis.ticks) {
    out.push(`<line x1="${L}" x2="${L + plotW}" y1="${y(v)}" y2="${y(v)}" stroke="#e0e0e0"/>`);
    out.push(`<text x="${L - 8}" y="${y(v) + 4}" font-size="12" text-anchor="end">${label(v)}</text>`);
  }
  // X ticks.
  p.lunCounts.forEach((n, i) => {
    out.push(`<line x1="${x(i)}" x2="${x(i)}" y1="${T + plotH}" y2="${T + plotH + 5}" stroke="#333"/>`);
    out.push(`<text x="${x(i)}" y="${T + plotH + 20}" font-size="12" text-anchor="middle">${n}</text>`);
  });
  out.push(`<rect x="${L}" y="${T}" width="${plotW}" height="${plotH}" fill="none" stroke="#333"/>`);
  out.push(`<text x="${L + plotW / 2}" y="${H - 22}" font-size="14" text-anchor="middle">LUNs (qemu-storage-daemon: exports), queue depth 4 each — log₂ scale</text>`);
  out.push(`<text transform="translate(22 ${T + plotH / 2}) rotate(-90)" font-size="14" text-anchor="middle">aggregate bandwidth, MB/s (10⁶ bytes/s)${axis.log ? ' — log scale' : ''}</text>`);
  const legend: Array<{ label: string; color: string; dash?: string }> = [];
  if (p.ceilingMBps) {
    const c = p.ceilingMBps;
    out.push(`<line x1="${L}" x2="${L + plotW}" y1="${y(c)}" y2="${y(c)}" stroke="#c0392b" stroke-width="2" stroke-dasharray="8 5"/>`);
    out.push(`<line x1="${L}" x2="${L + plotW}" y1="${y(0.6 * c)}" y2="${y(0.6 * c)}" stroke="#7f8c8d" stroke-width="1.5" stroke-dasharray="2 4"/>`);
    legend.push({ label: `memcpy ceiling ${Math.round(c).toLocaleString('en-US')} MB/s`, color: '#c0392b', dash: '8 5' });
    legend.push({ label: '60 % of ceiling (target)', color: '#7f8c8d', dash: '2 4' });
  }
  for (const s of p.series) {
    const pts = s.points.map((pt, i) => ({ i, v: pt.value })).filter((pt) => pt.v);
    if (pts.length === 0) continue;
    out.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2.5" points="${pts.map((pt) => `${x(pt.i)},${y(pt.v!.median)}`).join(' ')}"/>`);
    for (const pt of pts) {
      const v = pt.v!;
      if (v.max > v.min) {
        out.push(`<line x1="${x(pt.i)}" x2="${x(pt.i)}" y1="${y(v.min)}" y2="${y(v.max)}" stroke="${s.color}" stroke-width="1.5"/>`);
        for (const e of [v.min, v.max]) out.push(`<line x1="${x(pt.i) - 5}" x2="${x(pt.i) + 5}" y1="${y(e)}" y2="${y(e)}" stroke="${s.color}" stroke-width="1.5"/>`);
      }
      out.push(`<circle cx="${x(pt.i)}" cy="${y(v.median)}" r="4.5" fill="${s.color}"/>`);
      // The highest series at this x is labelled above its point, the others below, so labels never collide.
      const highest = p.series.every((o) => (o.points[pt.i]?.value?.median ?? -Infinity) <= v.median);
      out.push(`<text x="${x(pt.i) + 8}" y="${y(v.median) + (highest ? -8 : 17)}" font-size="11" fill="${s.color}">${label(v.median)}</text>`);
    }
    legend.push({ label: s.label, color: s.color });
  }
  legend.forEach((item, k) => {
    const ly = T + 16 + k * 24, lx = L + plotW + 16;
    out.push(`<line x1="${lx}" x2="${lx + 26}" y1="${ly}" y2="${ly}" stroke="${item.color}" stroke-width="2.5"${item.dash ? ` stroke-dasharray="${item.dash}"` : ''}/>`);
    out.push(`<text x="${lx + 32}" y="${ly + 4}" font-size="12">${esc(item.label)}</text>`);
  });
  out.push(`<text x="${L + plotW + 16}" y="${T + 16 + legend.length * 24 + 6}" font-size="11" fill="#555">median of runs; bars: min–max</text>`);
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Converts an SVG file to PNG; throws with an install hint when rsvg-convert is missing. */
export function svgToPng(svgPath: string, pngPath: string): void {
  const r = spawnSync('rsvg-convert', ['--format', 'png', '--output', pngPath, svgPath], { encoding: 'utf8' });
  if (r.error) throw new Error(`rsvg-convert not available (${r.error.message}); install Debian package librsvg2-bin`);
  if (r.status !== 0) throw new Error(`rsvg-convert failed: ${r.stderr}`);
}

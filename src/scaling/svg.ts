// The picture of a scaling fit: final loss against N (one colour per token count D) and against D (one
// colour per size N), log-scaled x, the fitted surface drawn through each group as a line. Plain SVG
// with no dependencies, so that it opens in any browser and diffs as text.
import type { Observation } from './fit.js';
import { predictLoss, type ScalingLaw } from './law.js';

const W = 460;
const H = 340;
const M = { left: 58, right: 16, top: 34, bottom: 46 };
const COLOURS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

function fmt(v: number): string {
  if (v >= 1e9) return `${(v / 1e9).toPrecision(3)}B`;
  if (v >= 1e6) return `${(v / 1e6).toPrecision(3)}M`;
  if (v >= 1e3) return `${(v / 1e3).toPrecision(3)}k`;
  return v.toPrecision(3);
}

interface Group {
  key: number;
  points: Observation[];
}

function groupBy(obs: readonly Observation[], key: (o: Observation) => number): Group[] {
  const m = new Map<string, Group>();
  for (const o of obs) {
    const k = key(o).toPrecision(6);
    const g = m.get(k) ?? { key: key(o), points: [] };
    g.points.push(o);
    m.set(k, g);
  }
  return [...m.values()].sort((a, b) => a.key - b.key);
}

/** One panel: x is N or D (log scale), y the loss; `curve(x, groupKey)` is the fitted loss or null. */
function panel(obs: readonly Observation[], xOf: (o: Observation) => number, groupOf: (o: Observation) => number, xName: string, groupName: string, curve: ((x: number, g: number) => number) | null, dx: number): string {
  const groups = groupBy(obs, groupOf);
  const xs = obs.map(xOf);
  let x0 = Math.log10(Math.min(...xs));
  let x1 = Math.log10(Math.max(...xs));
  if (x1 - x0 < 1e-9) {
    x0 -= 0.5;
    x1 += 0.5;
  }
  const pad = 0.05 * (x1 - x0);
  x0 -= pad;
  x1 += pad;
  const ys = obs.map((o) => o.loss);
  const curves: Array<{ colour: string; pts: Array<[number, number]> }> = [];
  if (curve) {
    groups.forEach((g, i) => {
      const pts: Array<[number, number]> = [];
      for (let s = 0; s <= 60; s++) {
        const lx = x0 + ((x1 - x0) * s) / 60;
        pts.push([lx, curve(10 ** lx, g.key)]);
      }
      curves.push({ colour: COLOURS[i % COLOURS.length]!, pts });
    });
  }
  const allY = [...ys, ...curves.flatMap((c) => c.pts.map((p) => p[1]))].filter(Number.isFinite);
  let y0 = Math.min(...ys);
  let y1 = Math.max(...ys);
  // Curves may run far past the data at the edges: let them widen the range only a little.
  const span = Math.max(y1 - y0, 1e-6);
  y0 = Math.max(Math.min(...allY), y0 - 0.25 * span);
  y1 = Math.min(Math.max(...allY), y1 + 0.25 * span);
  const X = (lx: number): number => dx + M.left + ((lx - x0) / (x1 - x0)) * (W - M.left - M.right);
  const Y = (y: number): number => M.top + (1 - (y - y0) / (y1 - y0 || 1)) * (H - M.top - M.bottom);
  const parts: string[] = [];
  parts.push(`<rect x="${dx + M.left}" y="${M.top}" width="${W - M.left - M.right}" height="${H - M.top - M.bottom}" fill="none" stroke="#999"/>`);
  for (let e = Math.ceil(x0 * 4) / 4; e <= x1; e += 0.25) {
    if (Math.abs(e - Math.round(e * 2) / 2) > 1e-9) continue;
    parts.push(`<line x1="${X(e).toFixed(1)}" y1="${H - M.bottom}" x2="${X(e).toFixed(1)}" y2="${H - M.bottom + 5}" stroke="#333"/>`);
    parts.push(`<text x="${X(e).toFixed(1)}" y="${H - M.bottom + 18}" font-size="11" text-anchor="middle">${fmt(10 ** e)}</text>`);
  }
  for (let i = 0; i <= 4; i++) {
    const y = y0 + ((y1 - y0) * i) / 4;
    parts.push(`<text x="${dx + M.left - 6}" y="${(Y(y) + 4).toFixed(1)}" font-size="11" text-anchor="end">${y.toFixed(3)}</text>`);
  }
  parts.push(`<text x="${dx + (W + M.left) / 2}" y="${H - 8}" font-size="12" text-anchor="middle">${esc(xName)} (log scale)</text>`);
  parts.push(`<text x="${dx + 14}" y="${H / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 ${dx + 14} ${H / 2})">final validation loss</text>`);
  for (const c of curves) {
    const inside = c.pts.filter(([, y]) => y >= y0 && y <= y1);
    if (inside.length > 1) parts.push(`<polyline fill="none" stroke="${c.colour}" stroke-width="1.5" opacity="0.7" points="${inside.map(([lx, y]) => `${X(lx).toFixed(1)},${Y(y).toFixed(1)}`).join(' ')}"/>`);
  }
  groups.forEach((g, i) => {
    const colour = COLOURS[i % COLOURS.length]!;
    for (const o of g.points) parts.push(`<circle cx="${X(Math.log10(xOf(o))).toFixed(1)}" cy="${Y(o.loss).toFixed(1)}" r="3.5" fill="${colour}"><title>${esc(o.label ?? '')} N=${fmt(o.N)} D=${fmt(o.D)} loss=${o.loss.toFixed(4)}</title></circle>`);
    parts.push(`<text x="${dx + W - M.right - 4}" y="${M.top + 14 + 13 * i}" font-size="11" text-anchor="end" fill="${colour}">${esc(groupName)} ${fmt(g.key)}</text>`);
  });
  return parts.join('\n');
}

/** Two panels (loss vs N, loss vs D) as one SVG document; `law` draws the fitted surface. */
export function scalingSvg(obs: readonly Observation[], law: ScalingLaw | null, title: string): string {
  if (obs.length === 0) throw new RangeError('observations: expected at least one run to draw');
  const left = panel(obs, (o) => o.N, (o) => o.D, 'N, parameters', 'D', law ? (x, g) => predictLoss(law, x, g) : null, 0);
  const right = panel(obs, (o) => o.D, (o) => o.N, 'D, training tokens', 'N', law ? (x, g) => predictLoss(law, g, x) : null, W);
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${2 * W}" height="${H}" viewBox="0 0 ${2 * W} ${H}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="${W}" y="18" font-size="13" text-anchor="middle">${esc(title)}</text>`,
    left,
    right,
    '</svg>',
    '',
  ].join('\n');
}

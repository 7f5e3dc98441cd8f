// One line chart as a standalone SVG string (no scripts, no external assets): axes with ticks, a grid,
// faint and solid curves, vertical marks (curriculum steps) and a legend below the plot.
import { extent, formatTick, makeScale, type ScaleKind } from './scale.js';

export interface ChartSeries {
  label: string;
  /** CSS colour, e.g. '#1f77b4'. */
  color: string;
  points: ReadonlyArray<readonly [number, number]>;
  /** 'solid': opaque 2 px line with dots (evaluations); 'faint': thin translucent line (training steps). */
  style: 'solid' | 'faint';
}

export interface ChartMark {
  x: number;
  color: string;
  label: string;
}

export interface ChartSpec {
  /** Used for element ids and file names. */
  id: string;
  title: string;
  xLabel: string;
  yLabel: string;
  xScale: ScaleKind;
  yScale: ScaleKind;
  /** Fixed y range (e.g. [0, 1] for accuracy); default: the data's. */
  yDomain?: [number, number];
  series: readonly ChartSeries[];
  marks?: readonly ChartMark[];
  /** Legend lines below the plot: one per run. */
  legend: ReadonlyArray<{ label: string; color: string }>;
  width?: number;
  height?: number;
}

/** Where the plot area lies inside the SVG (pixels). */
export interface PlotBox {
  left: number;
  top: number;
  width: number;
  height: number;
}

const MARGIN = { left: 70, right: 20, top: 34, bottom: 46 };
const LEGEND_ROW = 18;

export function escapeXml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

function f(v: number): string {
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

/** The plot area of a chart whose plot part (above the legend) is width x height. */
export function plotBox(width: number, height: number): PlotBox {
  return { left: MARGIN.left, top: MARGIN.top, width: width - MARGIN.left - MARGIN.right, height: height - MARGIN.top - MARGIN.bottom };
}

/** Renders the chart; a chart without drawable points says so in its plot area. */
export function renderChart(spec: ChartSpec): string {
  const width = spec.width ?? 640;
  const plotHeight = spec.height ?? 400;
  const height = plotHeight + spec.legend.length * LEGEND_ROW + 8;
  const box = plotBox(width, plotHeight);
  const ok = (v: number, kind: ScaleKind): boolean => Number.isFinite(v) && (kind === 'linear' || v > 0);
  const pts = spec.series.flatMap((s) => s.points.filter(([x, y]) => ok(x, spec.xScale) && ok(y, spec.yScale)));
  const xDom = extent(pts.map((p) => p[0]), spec.xScale);
  const yDom = spec.yDomain ?? extent(pts.map((p) => p[1]), spec.yScale);
  const id = escapeXml(spec.id);
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif" font-size="11" role="img" aria-label="${escapeXml(spec.title)}" data-chart="${id}">`,
    `<title>${escapeXml(spec.title)}</title>`,
    `<rect width="${width}" height="${height}" fill="#ffffff"/>`,
    `<text x="${width / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">${escapeXml(spec.title)}</text>`,
    `<rect class="plot-area" data-chart="${id}" x="${box.left}" y="${box.top}" width="${box.width}" height="${box.height}" fill="#ffffff" stroke="#888888"/>`,
  );
  if (!xDom || !yDom) {
    out.push(`<text x="${box.left + box.width / 2}" y="${box.top + box.height / 2}" text-anchor="middle" fill="#888888">no data</text>`);
  } else {
    const xs = makeScale(spec.xScale, xDom, [box.left, box.left + box.width]);
    const ys = makeScale(spec.yScale, yDom, [box.top + box.height, box.top]);
    const bottom = box.top + box.height;
    for (const t of xs.ticks()) {
      const x = f(xs.map(t));
      out.push(`<line x1="${x}" y1="${box.top}" x2="${x}" y2="${bottom}" stroke="#e6e6e6"/>`, `<text x="${x}" y="${bottom + 15}" text-anchor="middle">${formatTick(t)}</text>`);
    }
    for (const t of ys.ticks()) {
      const y = f(ys.map(t));
      out.push(`<line x1="${box.left}" y1="${y}" x2="${box.left + box.width}" y2="${y}" stroke="#e6e6e6"/>`, `<text x="${box.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${formatTick(t)}</text>`);
    }
    const clip = `clip-${id}`;
    out.push(`<clipPath id="${clip}"><rect x="${box.left}" y="${box.top}" width="${box.width}" height="${box.height}"/></clipPath>`, `<g clip-path="url(#${clip})">`);
    for (const m of spec.marks ?? []) {
      if (!ok(m.x, spec.xScale)) continue;
      const x = f(xs.map(m.x));
      out.push(
        `<line class="mark" x1="${x}" y1="${box.top}" x2="${x}" y2="${bottom}" stroke="${m.color}" stroke-dasharray="4 3" stroke-opacity="0.55"/>`,
        `<text x="${x}" y="${box.top + 4}" transform="rotate(90 ${x} ${box.top + 4})" dx="2" dy="-3" fill="${m.color}" font-size="9">${escapeXml(m.label)}</text>`,
      );
    }
    // Faint curves first, so that the evaluations are drawn over them.
    const ordered = [...spec.series].sort((a, b) => (a.style === b.style ? 0 : a.style === 'faint' ? -1 : 1));
    for (const s of ordered) {
      const p = s.points.filter(([x, y]) => ok(x, spec.xScale) && ok(y, spec.yScale)).map(([x, y]) => `${f(xs.map(x))},${f(ys.map(y))}`);
      if (p.length === 0) continue;
      const label = escapeXml(s.label);
      if (s.style === 'faint') {
        out.push(`<polyline class="curve faint" data-series="${label}" points="${p.join(' ')}" fill="none" stroke="${s.color}" stroke-width="1.2" stroke-opacity="0.35"/>`);
      } else {
        out.push(`<polyline class="curve solid" data-series="${label}" points="${p.join(' ')}" fill="none" stroke="${s.color}" stroke-width="2"/>`);
        for (const q of p) {
          const [cx, cy] = q.split(',');
          out.push(`<circle cx="${cx}" cy="${cy}" r="2.5" fill="${s.color}"/>`);
        }
      }
    }
    out.push('</g>');
  }
  out.push(
    `<text x="${box.left + box.width / 2}" y="${box.top + box.height + 34}" text-anchor="middle">${escapeXml(spec.xLabel)}</text>`,
    `<text x="16" y="${box.top + box.height / 2}" text-anchor="middle" transform="rotate(-90 16 ${box.top + box.height / 2})">${escapeXml(spec.yLabel)}</text>`,
  );
  spec.legend.forEach((l, i) => {
    const y = plotHeight + 4 + i * LEGEND_ROW;
    out.push(
      `<line x1="${box.left}" y1="${y + 6}" x2="${box.left + 24}" y2="${y + 6}" stroke="${l.color}" stroke-width="3"/>`,
      `<text x="${box.left + 30}" y="${y + 10}">${escapeXml(l.label)}</text>`,
    );
  });
  out.push('</svg>');
  return out.join('\n');
}

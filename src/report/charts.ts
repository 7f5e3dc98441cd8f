// The report's four charts (the paper's figures 2 to 4): loss and accuracy, training (faint, binned)
// and validation (solid), against samples seen and against training FLOPs, curriculum steps marked.
import type { ChartSpec, ChartSeries } from './chart.js';
import type { MetricPoint, RunData } from './runlog.js';

/** Run colours (Tableau 10), in run order. */
export const RUN_COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'] as const;

export type XAxis = 'samples' | 'flops';
export type Metric = 'loss' | 'accuracy';

/** Averages consecutive points into at most `maxPoints` bins (training curves have a point per step). */
export function binPoints(points: ReadonlyArray<readonly [number, number]>, maxPoints: number): Array<[number, number]> {
  if (!Number.isSafeInteger(maxPoints) || maxPoints < 1) throw new RangeError(`binPoints maxPoints: expected an integer >= 1, got ${String(maxPoints)}`);
  const good = points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  const size = Math.ceil(good.length / maxPoints);
  if (size <= 1) return good.map(([x, y]) => [x, y]);
  const out: Array<[number, number]> = [];
  for (let i = 0; i < good.length; i += size) {
    const chunk = good.slice(i, i + size);
    out.push([chunk.reduce((a, p) => a + p[0], 0) / chunk.length, chunk.reduce((a, p) => a + p[1], 0) / chunk.length]);
  }
  return out;
}

function xy(points: readonly MetricPoint[], x: XAxis, metric: Metric): Array<[number, number]> {
  return points.map((p) => [p[x], p[metric]]);
}

export function colorOf(i: number): string {
  return RUN_COLORS[i % RUN_COLORS.length]!;
}

/** The spec of one chart over all runs. */
export function chartSpec(runs: readonly RunData[], metric: Metric, x: XAxis): ChartSpec {
  const series: ChartSeries[] = [];
  runs.forEach((r, i) => {
    const color = colorOf(i);
    series.push({ label: `${r.name} train`, color, style: 'faint', points: binPoints(xy(r.train, x, metric), 400) });
    series.push({ label: `${r.name} validation`, color, style: 'solid', points: xy(r.val, x, metric) });
  });
  const marks = runs.flatMap((r, i) => r.curriculum.map((c) => ({ x: c[x], color: colorOf(i), label: `L ${c.to}` })));
  const metricName = metric === 'loss' ? 'loss' : 'accuracy';
  const xName = x === 'samples' ? 'training samples' : 'training FLOPs';
  return {
    id: `${metric}-vs-${x}`,
    title: `${metric === 'loss' ? 'Loss' : 'Accuracy'} vs ${xName}`,
    xLabel: `${xName} (log)`,
    yLabel: metric === 'loss' ? 'cross-entropy loss (log)' : 'accuracy',
    xScale: 'log',
    yScale: metric === 'loss' ? 'log' : 'linear',
    ...(metric === 'accuracy' ? { yDomain: [0, 1] as [number, number] } : {}),
    series,
    marks,
    legend: runs.map((r, i) => ({ label: `${r.name}: ${metricName}, validation (solid, dots) and training (faint)${r.curriculum.length ? ', noise steps dashed' : ''}`, color: colorOf(i) })),
  };
}

/** The four charts, in page order. */
export function reportCharts(runs: readonly RunData[]): ChartSpec[] {
  return [chartSpec(runs, 'loss', 'samples'), chartSpec(runs, 'loss', 'flops'), chartSpec(runs, 'accuracy', 'samples'), chartSpec(runs, 'accuracy', 'flops')];
}

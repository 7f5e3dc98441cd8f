// The report page: one self-contained HTML file (inline SVG and CSS, no scripts, no external assets)
// with a table of the runs and the four charts.
import { escapeXml, renderChart } from './chart.js';
import { colorOf, reportCharts } from './charts.js';
import type { RunData } from './runlog.js';
import { formatTick } from './scale.js';

function num(v: unknown, digits = 4): string {
  return typeof v === 'number' && Number.isFinite(v) ? String(Number(v.toPrecision(digits))) : '–';
}

function big(v: unknown): string {
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? formatTick(v) : '–';
}

function seconds(v: unknown): string {
  return typeof v === 'number' && Number.isFinite(v) ? `${v.toFixed(0)} s` : '–';
}

function pct(v: unknown): string {
  return typeof v === 'number' && Number.isFinite(v) ? `${(100 * v).toFixed(2)}%` : '–';
}

/** A summary row: from the summary line when the run finished, else from its last events. */
function row(r: RunData, i: number): string {
  const s = r.summary ?? {};
  const c = r.config ?? {};
  const lastStep = r.train[r.train.length - 1];
  const lastVal = r.val[r.val.length - 1];
  const bestLoss = r.val.length ? Math.min(...r.val.map((v) => v.loss)) : NaN;
  const bestAcc = r.val.length ? Math.max(...r.val.map((v) => v.accuracy)) : NaN;
  const fps = (c.flopsPerSample ?? s.flopsPerSample ?? {}) as { training?: number; inference?: number };
  const cells = [
    `<span class="swatch" style="background:${colorOf(i)}"></span>${escapeXml(r.name)}`,
    escapeXml(String(c.task ?? s.task ?? '–')),
    escapeXml(String(c.device ?? '–')),
    big(c.parameters),
    String(s.steps ?? lastStep?.step ?? '–'),
    big(s.samples ?? lastStep?.samples),
    seconds(typeof s.seconds === 'number' ? s.seconds : lastVal?.seconds),
    big(s.flops ?? lastStep?.flops),
    `${big(fps.training)} / ${big(fps.inference)}`,
    num(lastVal?.loss),
    num(bestLoss),
    pct(lastVal?.accuracy),
    pct(bestAcc),
    r.summary ? (s.aborted ? 'stopped' : 'done') : 'running or crashed',
  ];
  return `<tr>${cells.map((x) => `<td>${x}</td>`).join('')}</tr>`;
}

/** The whole page. `svgs` are the rendered charts, in reportCharts order. */
export function renderPage(runs: readonly RunData[], opts: { title?: string; generated?: Date } = {}): { html: string; svgs: Array<{ id: string; svg: string }> } {
  const title = opts.title ?? 'recurrent-transformer: training report';
  const svgs = reportCharts(runs).map((spec) => ({ id: spec.id, svg: renderChart(spec) }));
  const head = ['run', 'task', 'device', 'parameters', 'steps', 'samples', 'wall time', 'training FLOPs', 'FLOPs / sample (train / inference)', 'final val loss', 'best val loss', 'final val acc', 'best val acc', 'status'];
  const html = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>${escapeXml(title)}</title>
<style>
  body { font-family: sans-serif; margin: 16px; background: #ffffff; color: #222222; }
  table { border-collapse: collapse; font-size: 12px; margin-bottom: 16px; }
  th, td { border: 1px solid #cccccc; padding: 3px 6px; text-align: right; }
  th:first-child, td:first-child { text-align: left; }
  .swatch { display: inline-block; width: 10px; height: 10px; margin-right: 6px; }
  .charts { display: grid; grid-template-columns: repeat(2, 640px); gap: 12px; }
  figure { margin: 0; }
  p.note { font-size: 12px; color: #555555; max-width: 1290px; }
</style>
</head>
<body>
<h1>${escapeXml(title)}</h1>
<table>
<thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead>
<tbody>
${runs.map(row).join('\n')}
</tbody>
</table>
<p class="note">Validation curves are solid with a dot per evaluation; training curves are faint (each point averages consecutive steps). FLOPs count
matrix products and attention (training = 3 x forward; src/model/flops.ts). Dashed vertical lines mark the copy curriculum's noise-length steps.
Runs: ${runs.map((r) => escapeXml(r.dir)).join(', ')}.${opts.generated ? ` Generated ${escapeXml(opts.generated.toISOString())}.` : ''}</p>
<section class="charts">
${svgs.map((s) => `<figure id="${s.id}">\n${s.svg}\n</figure>`).join('\n')}
</section>
</body>
</html>
`;
  return { html, svgs };
}

// `rt report`: the training curves of one or more runs as one HTML page plus one SVG file per chart.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { renderPage } from './page.js';
import { readRun, type RunData } from './runlog.js';

export { parseRunLog, readRun, type RunData, type MetricPoint, type CurriculumMark } from './runlog.js';
export { renderChart, plotBox, type ChartSpec, type ChartSeries, type ChartMark, type PlotBox } from './chart.js';
export { reportCharts, chartSpec, binPoints, RUN_COLORS, type XAxis, type Metric } from './charts.js';
export { renderPage } from './page.js';

export interface ReportFiles {
  html: string;
  svgs: string[];
  runs: RunData[];
}

/** Reads each run folder's log.jsonl and writes OUT/index.html and OUT/<chart>.svg. */
export async function writeReport(runDirs: readonly string[], outDir: string, opts: { title?: string } = {}): Promise<ReportFiles> {
  if (!Array.isArray(runDirs) || runDirs.length === 0) throw new RangeError('writeReport runDirs: expected at least one run folder');
  if (typeof outDir !== 'string' || outDir === '') throw new TypeError('writeReport outDir: expected a folder path');
  const runs = await Promise.all(runDirs.map((d) => readRun(d)));
  // Two runs of the same preset would share a legend label: add the folder's name.
  const seen = new Map<string, number>();
  for (const r of runs) seen.set(r.name, (seen.get(r.name) ?? 0) + 1);
  for (const r of runs) if ((seen.get(r.name) ?? 0) > 1) r.name = `${r.name} (${r.dir.split(/[\\/]/).filter(Boolean).pop() ?? r.dir})`;
  const { html, svgs } = renderPage(runs, { ...opts, generated: new Date() });
  await mkdir(outDir, { recursive: true });
  const htmlPath = join(outDir, 'index.html');
  await writeFile(htmlPath, html);
  const svgPaths: string[] = [];
  for (const s of svgs) {
    const p = join(outDir, `${s.id}.svg`);
    await writeFile(p, `<?xml version="1.0" encoding="UTF-8"?>\n${s.svg}\n`);
    svgPaths.push(p);
  }
  return { html: htmlPath, svgs: svgPaths, runs };
}

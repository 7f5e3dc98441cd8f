// `rt report`: reading run logs (resumes, torn lines), scales and ticks, the SVG charts, and the page
// rendered by headless Chromium: each plot area holds pixels of each run's colour where the run has
// data, and none where it has not.

import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as fsp from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { ensureCli, ROOT } from './cli-build.js'
import { renderChart } from '../src/report/chart.js'
import { binPoints, RUN_COLORS } from '../src/report/charts.js'
import { parseRunLog, writeReport } from '../src/report/index.js'
import { formatTick, linearTicks, logTicks, makeScale } from '../src/report/scale.js'
import { decodePng } from './png.js'

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/bin/google-chrome'].find((p) => fs.existsSync(p))

let tmp: string
beforeAll(async () => {
  tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'rt-report-test-'))
})
afterAll(async () => {
  await fsp.rm(tmp, { recursive: true, force: true })
})

const line = (o: Record<string, unknown>) => JSON.stringify(o)

/** A copy-task-like log: loss falls, accuracy rises, a curriculum step at step 40. `flops: false` leaves FLOPs out (an old log). */
function syntheticLog(name: string, steps: number, opts: { flops?: boolean; curriculum?: boolean; seed?: number } = {}): string {
  const out = [line({ type: 'config', name, task: 'copy', device: 'cpu', parameters: 12345, flopsPerSample: { training: 3e6, inference: 1e6 } })]
  const s = opts.seed ?? 0
  for (let i = 1; i <= steps; i++) {
    const loss = 2.5 * Math.exp(-i / (30 + s)) + 0.01 + 0.05 * Math.sin(i * 1.7 + s)
    const step: Record<string, unknown> = { type: 'step', step: i, loss, accuracy: Math.min(1, i / steps + 0.02), lr: 1e-3, samples: 64 * i, window: 32 }
    if (opts.flops !== false) step.flops = 3e6 * 64 * i
    out.push(line(step))
    if (i % 10 === 0) {
      const ev: Record<string, unknown> = { type: 'eval', step: i, loss: 2.5 * Math.exp(-i / (30 + s)) + 0.01, accuracy: Math.min(1, i / steps), samples: 64 * i }
      if (opts.flops !== false) ev.flops = 3e6 * 64 * i
      out.push(line(ev))
      if (opts.curriculum && i === 40) out.push(line({ type: 'curriculum', step: i, from: 32, to: 64, lr: 5e-4 }))
    }
  }
  out.push(line({ type: 'summary', task: 'copy', steps, samples: 64 * steps, seconds: 12.5, flops: 3e6 * 64 * steps, aborted: false }))
  return out.join('\n') + '\n'
}

describe('parseRunLog', () => {
  it('reads steps, evaluations, curriculum marks; a resume replaces repeated steps; torn lines are counted', () => {
    const text = [
      line({ type: 'config', name: 'paper-copy' }),
      ...[1, 2, 3, 4, 5, 6].map((i) => line({ type: 'step', step: i, loss: 1 / i, accuracy: 0.1 * i, samples: 10 * i, flops: 100 * i })),
      line({ type: 'eval', step: 3, loss: 0.5, accuracy: 0.3, samples: 30, flops: 300, seconds: 1.5 }),
      line({ type: 'curriculum', step: 3, from: 32, to: 64 }),
      line({ type: 'eval', step: 6, loss: 0.2, accuracy: 0.6, samples: 60, flops: 600 }),
      '{"type":"step","step":7,"lo',
      // Resumed from the checkpoint of step 4: steps 5 and 6 again, then 7.
      line({ type: 'config', name: 'ignored' }),
      ...[5, 6, 7].map((i) => line({ type: 'step', step: i, loss: 2 / i, accuracy: 0.05 * i, samples: 10 * i, flops: 100 * i })),
      line({ type: 'eval', step: 6, loss: 0.25, accuracy: 0.55, samples: 60, flops: 600, seconds: 3.5 }),
      line({ type: 'summary', steps: 7 }),
    ].join('\n')
    const r = parseRunLog(text, '/runs/x')
    expect(r.name).toBe('paper-copy')
    expect(r.badLines).toBe(1)
    expect(r.train.map((p) => p.step)).toEqual([1, 2, 3, 4, 5, 6, 7])
    expect(r.train.map((p) => p.loss)).toEqual([1, 1 / 2, 1 / 3, 1 / 4, 2 / 5, 2 / 6, 2 / 7])
    expect(r.val.map((p) => [p.step, p.loss, p.accuracy])).toEqual([[3, 0.5, 0.3], [6, 0.25, 0.55]])
    expect(r.val.map((p) => p.seconds)).toEqual([1.5, 3.5])
    expect(r.curriculum).toEqual([{ step: 3, samples: 30, flops: 300, from: 32, to: 64 }])
    expect(r.summary).toMatchObject({ steps: 7 })
    expect(parseRunLog('', '/a/b/run-1').name).toBe('run-1')
  })
})

describe('scales and ticks', () => {
  it('places log and linear ticks and maps values', () => {
    expect(logTicks(1e3, 1e7)).toEqual([1e3, 1e4, 1e5, 1e6, 1e7])
    expect(logTicks(3e10, 6e12)).toEqual([5e10, 1e11, 2e11, 5e11, 1e12, 2e12, 5e12])
    expect(logTicks(20, 400)).toEqual([20, 50, 100, 200])
    expect(linearTicks(0, 1)).toEqual([0, 0.2, 0.4, 0.6, 0.8, 1])
    expect(linearTicks(0.13, 0.61)).toEqual([0.2, 0.3, 0.4, 0.5, 0.6])
    const log = makeScale('log', [10, 1000], [0, 200])
    expect(log.map(100)).toBeCloseTo(100, 10)
    expect(log.map(10)).toBe(0)
    const lin = makeScale('linear', [0, 1], [300, 100])
    expect(lin.map(0.25)).toBe(250)
    expect(() => makeScale('log', [0, 10], [0, 1])).toThrow(/log scale needs positive bounds/)
    expect([formatTick(1.5e9), formatTick(64000), formatTick(2e17), formatTick(0.5), formatTick(0.006)]).toEqual(['1.5G', '64k', '200P', '0.5', '6e-3'])
  })

  it('bins long training curves by averaging consecutive points', () => {
    const pts = Array.from({ length: 10 }, (_, i) => [i + 1, 10 * (i + 1)] as [number, number])
    expect(binPoints(pts, 4)).toEqual([[2, 20], [5, 50], [8, 80], [10, 100]])
    expect(binPoints(pts, 20)).toEqual(pts)
  })
})

describe('renderChart', () => {
  it('draws one polyline per series with a point per datum, marks, and a legend line per run', () => {
    const svg = renderChart({
      id: 'c', title: 'T <1>', xLabel: 'x', yLabel: 'y', xScale: 'log', yScale: 'linear', yDomain: [0, 1],
      series: [
        { label: 'a train', color: '#1f77b4', style: 'faint', points: [[1, 0.1], [10, 0.5], [100, 0.9]] },
        { label: 'a validation', color: '#1f77b4', style: 'solid', points: [[10, 0.4], [100, 0.8], [0, 0.5]] },
      ],
      marks: [{ x: 10, color: '#1f77b4', label: 'L 64' }],
      legend: [{ label: 'a', color: '#1f77b4' }],
    })
    expect(svg).toContain('T &lt;1&gt;')
    const polylines = [...svg.matchAll(/<polyline [^>]*points="([^"]*)"/g)].map((m) => m[1]!.split(' ').length)
    // The x = 0 point cannot sit on a log axis: dropped.
    expect(polylines).toEqual([3, 2])
    expect(svg.match(/<circle /g)?.length).toBe(2)
    expect(svg.match(/class="mark"/g)?.length).toBe(1)
    // The faint curve's x = 10 lies in the middle of the log axis: (10 = 10^1 of 10^0..10^2).
    const box = { left: 70, width: 640 - 70 - 20 }
    expect(svg).toContain(`${box.left + box.width / 2},`)
    const empty = renderChart({ id: 'e', title: 'E', xLabel: 'x', yLabel: 'y', xScale: 'log', yScale: 'log', series: [], legend: [] })
    expect(empty).toContain('no data')
  })
})

describe('rt report in headless Chromium', () => {
  let runA: string
  let runB: string
  beforeAll(async () => {
    runA = path.join(tmp, 'runs', 'copy-a')
    runB = path.join(tmp, 'runs', 'copy-b')
    await fsp.mkdir(runA, { recursive: true })
    await fsp.mkdir(runB, { recursive: true })
    await fsp.writeFile(path.join(runA, 'log.jsonl'), syntheticLog('paper-copy', 200, { curriculum: true }))
    // Run B predates FLOP counting: it must appear in the sample charts and nowhere in the FLOPs charts.
    await fsp.writeFile(path.join(runB, 'log.jsonl'), syntheticLog('paper-selective-copy', 120, { flops: false, seed: 7 }))
  })

  it('writes a self-contained page and one SVG per chart', async () => {
    const out = path.join(tmp, 'report-files')
    const files = await writeReport([runA, runB], out)
    expect(files.svgs.map((p) => path.basename(p))).toEqual(['loss-vs-samples.svg', 'loss-vs-flops.svg', 'accuracy-vs-samples.svg', 'accuracy-vs-flops.svg'])
    const html = await fsp.readFile(files.html, 'utf8')
    // Nothing loaded from elsewhere, no scripts.
    expect(html).not.toMatch(/<script|<link|src=|@import|url\((?!#)/)
    expect(html.match(/<svg /g)?.length).toBe(4)
    expect(html).toContain('paper-copy')
    expect(html).toContain('paper-selective-copy')
    // The curriculum step of run A, in each of the four charts.
    expect(html.match(/class="mark"/g)?.length).toBe(4)
    for (const p of files.svgs) {
      const svg = await fsp.readFile(p, 'utf8')
      expect(svg.startsWith('<?xml version="1.0" encoding="UTF-8"?>\n<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true)
    }
  })

  if (!CHROMIUM) console.warn('SKIP: no chromium found (apt-get install chromium): the page is not rendered')
  it.skipIf(!CHROMIUM)('draws each run`s curves inside each plot area where it has data', async () => {
    const out = path.join(tmp, 'report-render')
    const files = await writeReport([runA, runB], out)
    const html = await fsp.readFile(files.html, 'utf8')
    // A copy that reports where the plot areas are; appended at the end, so the layout above is unchanged.
    const probe = path.join(out, 'probe.html')
    await fsp.writeFile(probe, html.replace('</body>', `<script>
      const r = [...document.querySelectorAll('rect.plot-area')].map((e) => { const b = e.getBoundingClientRect(); return { id: e.dataset.chart, x: b.x, y: b.y, w: b.width, h: b.height } });
      const pre = document.createElement('pre');
      pre.id = 'rects';
      pre.textContent = JSON.stringify(r);
      document.body.append(pre);
    </script></body>`))
    const flags = ['--headless', '--no-sandbox', '--disable-gpu', '--hide-scrollbars', '--force-device-scale-factor=1', '--window-size=1400,1600']
    const dom = spawnSync(CHROMIUM!, [...flags, '--virtual-time-budget=2000', '--dump-dom', `file://${probe}`], { encoding: 'utf8', timeout: 60_000 })
    const m = /<pre id="rects">(\[[^<]*)<\/pre>/.exec(dom.stdout)
    expect(m, dom.stderr).not.toBeNull()
    const rects = JSON.parse(m![1]!) as Array<{ id: string; x: number; y: number; w: number; h: number }>
    expect(rects.map((r) => r.id)).toEqual(['loss-vs-samples', 'loss-vs-flops', 'accuracy-vs-samples', 'accuracy-vs-flops'])
    const png = path.join(out, 'shot.png')
    const shot = spawnSync(CHROMIUM!, [...flags, `--screenshot=${png}`, `file://${files.html}`], { encoding: 'utf8', timeout: 60_000 })
    expect(fs.existsSync(png), shot.stderr).toBe(true)
    const img = decodePng(new Uint8Array(await fsp.readFile(png)))
    expect(img.width).toBe(1400)

    const rgb = (hex: string) => [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16))
    const count = (r: { x: number; y: number; w: number; h: number }, hex: string): number => {
      const [cr, cg, cb] = rgb(hex)
      let n = 0
      // Inset by 3 px: the frame is grey, and the count is of the inside.
      for (let y = Math.ceil(r.y) + 3; y < Math.floor(r.y + r.h) - 3; y++) {
        for (let x = Math.ceil(r.x) + 3; x < Math.floor(r.x + r.w) - 3; x++) {
          const i = (y * img.width + x) * img.channels
          if (Math.abs(img.data[i]! - cr!) + Math.abs(img.data[i + 1]! - cg!) + Math.abs(img.data[i + 2]! - cb!) <= 12) n++
        }
      }
      return n
    }
    const [colorA, colorB] = [RUN_COLORS[0], RUN_COLORS[1]]
    for (const r of rects) {
      expect(r.y + r.h, `${r.id} lies inside the screenshot`).toBeLessThan(img.height)
      const a = count(r, colorA)
      const b = count(r, colorB)
      // A solid 2 px curve across most of the width: hundreds of pixels of the exact colour.
      expect(a, `run A in ${r.id}`).toBeGreaterThan(200)
      if (r.id.endsWith('flops')) expect(b, `run B (no FLOPs logged) in ${r.id}`).toBe(0)
      else expect(b, `run B in ${r.id}`).toBeGreaterThan(200)
    }
  })

  it('rt report RUN_DIR... --out DIR from the command line; errors name the problem', () => {
    ensureCli()
    const rt = (args: string[]) => spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/rt.js'), ...args], { cwd: tmp, encoding: 'utf8', timeout: 60_000 })
    const out = path.join(tmp, 'report-cli')
    const r = rt(['report', runA, runB, '--out', out])
    expect(r.status, r.stderr).toBe(0)
    expect(r.stdout.trim().split('\n')).toEqual([path.join(out, 'index.html'), ...['loss-vs-samples', 'loss-vs-flops', 'accuracy-vs-samples', 'accuracy-vs-flops'].map((n) => path.join(out, `${n}.svg`))])
    const none = rt(['report'])
    expect(none.status).toBe(2)
    expect(none.stderr).toMatch(/rt report: expected one or more run folders/)
    const missing = rt(['report', path.join(tmp, 'no-such-run')])
    expect(missing.status).toBe(1)
    expect(missing.stderr).toMatch(/run .*no-such-run: cannot read .*log\.jsonl/)
  })

  it('reads a real `rt train` log: every evaluation a dot, every curriculum step a mark', async () => {
    ensureCli()
    const run = path.join(tmp, 'real-copy')
    // A threshold every loss is below: the noise doubles at each evaluation, 4 -> 8 -> 16.
    const t = spawnSync(process.execPath, [path.join(ROOT, 'dist/cli/rt.js'), 'train', '--steps', '20', '--noise', '16', '--M', '4', '--d', '16', '--heads', '2',
      '--curriculum-start', '4', '--curriculum-threshold', '100', '--eval-every', '5', '--eval-batches', '1', '--stop-accuracy', '2', '--json', '--out', run], { cwd: tmp, encoding: 'utf8', timeout: 60_000 })
    expect(t.status, t.stderr).toBe(0)
    const events = t.stdout.trim().split('\n').map((l) => JSON.parse(l) as { type: string })
    const evals = events.filter((e) => e.type === 'eval').length
    const marks = events.filter((e) => e.type === 'curriculum').length
    expect([evals, marks]).toEqual([4, 2])
    const files = await writeReport([run], path.join(tmp, 'real-report'))
    const r = files.runs[0]!
    expect(r.name).toBe('copy')
    expect(r.curriculum.map((c) => [c.from, c.to])).toEqual([[4, 8], [8, 16]])
    expect(r.curriculum.every((c) => c.samples > 0 && c.flops > 0)).toBe(true)
    const svg = await fsp.readFile(files.svgs[1]!, 'utf8')
    expect(svg.match(/class="mark"/g)?.length).toBe(2)
    expect(svg.match(/<circle /g)?.length).toBe(4)
  })
})

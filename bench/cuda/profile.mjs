// Where a CUDA train step's time goes: runs bench-model.mjs for one config in a child process with
// RT_CUDA_PROFILE=1 (native/cuda/profile.cuh: CUDA events around every backend call) and prints the GPU
// time per operation per step, largest first, as JSON lines and a table.
//
//   node bench/cuda/profile.mjs [--configs copy,char] [--precision bf16] [--reps 5] [--label own] [--out FILE.jsonl]
//
// Totals cover the 2 warm-up steps too (first-use allocations included), so they are divided by reps + 2.
// Nested scopes (linear_backward/dx inside linear_backward.c_fc) are listed as they are: shares of the
// top-level names add up to the profiled part of the step.
import { spawnSync } from 'node:child_process';
import { appendFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { printTable } from '../lib/table.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { values: args } = parseArgs({
  options: {
    configs: { type: 'string', default: 'copy,char' },
    precision: { type: 'string', default: 'bf16' },
    reps: { type: 'string', default: '5' },
    label: { type: 'string', default: '' },
    out: { type: 'string' },
  },
});
const steps = Number(args.reps) + 2;

for (const config of args.configs.split(',')) {
  const r = spawnSync(process.execPath, [join(here, 'bench-model.mjs'), '--configs', config, '--precisions', args.precision, '--no-torch', '--reps', args.reps], {
    encoding: 'utf8', env: { ...process.env, RT_CUDA_PROFILE: '1' }, timeout: 300_000,
  });
  const stderr = r.stderr ?? '';
  const stepLine = (r.stdout ?? '').split('\n').find((l) => l.startsWith('{"impl"'));
  const msStep = stepLine ? JSON.parse(stepLine).ms_step : NaN;
  const line = stderr.split('\n').find((l) => l.startsWith('{"cuda_profile"'));
  if (!line) {
    console.error(`no profile for ${config}:\n${stderr.slice(-2000)}`);
    continue;
  }
  const prof = JSON.parse(line).cuda_profile;
  const rows = Object.entries(prof).map(([name, v]) => ({ name, ms: v.ms / steps, calls: v.calls / steps })).sort((a, b) => b.ms - a.ms);
  const top = rows.filter((x) => !x.name.includes('/')).reduce((s, x) => s + x.ms, 0);
  for (const x of rows) {
    const o = { bench: 'cuda-profile', label: args.label, config, precision: args.precision, op: x.name, ms_per_step: +x.ms.toFixed(3), calls_per_step: +x.calls.toFixed(1), us_per_call: +((x.ms * 1e3) / x.calls).toFixed(1), ms_step_profiled: msStep };
    console.log(JSON.stringify(o));
    if (args.out) appendFileSync(args.out, JSON.stringify(o) + '\n');
  }
  console.log(`\n${config} ${args.precision} ${args.label}: step ${msStep} ms (with the events); profiled ops sum to ${top.toFixed(2)} ms per step`);
  printTable(['op', 'ms/step', 'share', 'calls/step', 'us/call'], rows.map((x) => [x.name, x.ms.toFixed(3), x.name.includes('/') ? '' : ((100 * x.ms) / top).toFixed(1) + '%', x.calls.toFixed(0), ((x.ms * 1e3) / x.calls).toFixed(1)]));
}

// `rt report RUN_DIR... [--out DIR]`: the runs' curves as DIR/index.html and one SVG per chart.
import { writeReport } from '../report/index.js';
import { UsageError, type Flags } from './args.js';

export const REPORT_HELP = 'report   RUN_DIR... [--out DIR (report)]   loss / accuracy curves vs samples and FLOPs: DIR/index.html + SVGs';

export async function reportCommand(dirs: string[], flags: Flags): Promise<number> {
  if (dirs.length === 0) throw new UsageError('rt report: expected one or more run folders (runs/<name>-<time>) holding log.jsonl');
  const out = typeof flags.out === 'string' ? flags.out : 'report';
  const files = await writeReport(dirs, out);
  for (const r of files.runs) {
    if (r.train.length === 0 && r.val.length === 0) process.stderr.write(`rt report: warning: ${r.dir} has no step or eval events\n`);
    if (r.badLines > 0) process.stderr.write(`rt report: warning: ${r.dir}: skipped ${r.badLines} line(s) that were not JSON\n`);
  }
  process.stdout.write(`${files.html}\n${files.svgs.join('\n')}\n`);
  return 0;
}

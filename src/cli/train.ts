// `rt train`: trains a copy / selective-copy model from flags, with a live progress bar on a TTY or
// JSON lines with --json. With no flags it trains a small copy task in about a minute on 2 cores.
import { mkdir, appendFile } from 'node:fs/promises';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { RecurrentTransformer } from '../model/transformer.js';
import type { ModelConfig } from '../model/config.js';
import { CopyTaskData } from '../train/data.js';
import { train, type ScheduleOptions, type TrainEvent } from '../train/trainer.js';
import { int, num, pair, str, UsageError, type Flags } from './args.js';

export const TRAIN_HELP = `rt train [flags]   train a copy or selective-copy model

task      --task copy|selective-copy (copy)  --noise L (64)  --M 8  --alphabet 16
model     --d 64 --heads 4 --layers 1 --window 16 | --window-range MIN,MAX
          --variant forget|accumulate (accumulate)  --alpha 0.5  --alpha-fixed
          --activation relu|gelu (relu)  --dropout 0  --bias  --no-positional
training  --steps 3000 --batch 32 --lr 2e-3 --weight-decay 0 --max-grad-norm 1
          --schedule constant|cosine|curriculum (curriculum) --warmup 100
          --curriculum-start 16 --curriculum-threshold 0.3 --no-curriculum
          --eval-every 50 --eval-batches 4 --stop-accuracy 0.99 (at full noise) --seed 0
output    --out DIR (runs/<task>-<time>)  --json  --resume FILE`;

export async function trainCommand(flags: Flags): Promise<number> {
  const task = str(flags, 'task', ['copy', 'selective-copy'] as const, 'copy');
  const noise = int(flags, 'noise', 64);
  const M = int(flags, 'M', 8);
  const alphabet = int(flags, 'alphabet', 16);
  const data = new CopyTaskData({ task, noise, M, alphabet });
  const windowRange = pair(flags, 'window-range');
  const model: ModelConfig = {
    vocabSize: alphabet,
    d: int(flags, 'd', 64),
    heads: int(flags, 'heads', 4),
    layers: int(flags, 'layers', 1),
    ...(windowRange ? { windowRange } : { window: int(flags, 'window', 16) }),
    variant: str(flags, 'variant', ['forget', 'accumulate'] as const, 'accumulate'),
    alpha: { init: num(flags, 'alpha', 0.5), learnable: !flags['alpha-fixed'] },
    positional: !flags['no-positional'],
    maxLen: data.maxSeqLen,
    activation: str(flags, 'activation', ['relu', 'gelu'] as const, 'relu'),
    dropout: num(flags, 'dropout', 0),
    bias: Boolean(flags.bias),
    head: { copy: M },
    seed: int(flags, 'seed', 0),
  };
  const useCurriculum = !flags['no-curriculum'];
  const scheduleName = str(flags, 'schedule', ['constant', 'cosine', 'curriculum'] as const, useCurriculum ? 'curriculum' : 'constant');
  if (scheduleName === 'curriculum' && !useCurriculum) throw new UsageError('--schedule curriculum needs the curriculum (drop --no-curriculum)');
  const schedule: ScheduleOptions =
    scheduleName === 'cosine' ? { type: 'warmupCosine', warmup: int(flags, 'warmup', 100) } : { type: scheduleName };
  const steps = int(flags, 'steps', 3000);
  const json = Boolean(flags.json);
  const out = typeof flags.out === 'string' ? flags.out : join('runs', `${task}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
  await mkdir(out, { recursive: true });
  const log = join(out, 'log.jsonl');
  const checkpoint = join(out, 'checkpoint.safetensors');

  const net = new RecurrentTransformer(model);
  const controller = new AbortController();
  const onSignal = (): void => controller.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const tty = !json && process.stderr.isTTY;
  const bar = tty
    ? new cliProgress.SingleBar(
        { format: 'train |{bar}| {value}/{total} loss {loss} acc {acc} noise {noise} {tps} tok/s', hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start(steps, 0, { loss: '-', acc: '-', noise: '-', tps: '-' });
  const lines: string[] = [];
  const onEvent = (e: TrainEvent): void => {
    lines.push(JSON.stringify(e));
    if (json) {
      process.stdout.write(JSON.stringify(e) + '\n');
    } else if (e.type === 'step') {
      bar?.update(e.step, { loss: e.loss.toFixed(4), acc: e.accuracy.toFixed(3), noise: e.noise ?? '-', tps: Math.round(e.tokensPerSec) });
    } else if (e.type === 'eval' || e.type === 'curriculum') {
      const msg =
        e.type === 'eval'
          ? `eval step ${e.step}: loss ${e.loss.toFixed(4)} ± ${e.lossStderr.toFixed(4)}, accuracy ${(100 * e.accuracy).toFixed(2)}% ± ${(100 * e.accuracyStderr).toFixed(2)}, noise ${e.noise ?? '-'}`
          : `curriculum: noise ${e.from} -> ${e.to}, lr ${e.lr.toExponential(2)}`;
      // Clear the bar's line first; it redraws itself on the next update.
      process.stderr.write((bar ? '\r\x1b[2K' : '') + msg + '\n');
    }
  };
  const flush = setInterval(() => void appendFile(log, lines.splice(0).map((l) => l + '\n').join('')), 2000);
  try {
    const result = await train({
      model: net,
      data,
      steps,
      batchSize: int(flags, 'batch', 32),
      optimizer: { lr: num(flags, 'lr', 2e-3), weightDecay: num(flags, 'weight-decay', 0), maxGradNorm: num(flags, 'max-grad-norm', 1) },
      schedule,
      curriculum: useCurriculum ? { start: int(flags, 'curriculum-start', Math.min(16, noise)), threshold: num(flags, 'curriculum-threshold', 0.3) } : false,
      evalEvery: int(flags, 'eval-every', 50),
      evalBatches: int(flags, 'eval-batches', 4),
      seed: int(flags, 'seed', 0),
      signal: controller.signal,
      onEvent,
      checkpoint: { path: checkpoint },
      resumeFrom: typeof flags.resume === 'string' ? flags.resume : undefined,
      stopAt: { accuracy: num(flags, 'stop-accuracy', 0.99) },
    });
    bar?.stop();
    const summary = {
      type: 'summary',
      steps: result.step,
      samples: result.samples,
      seconds: Number(result.seconds.toFixed(2)),
      accuracy: result.lastEval?.accuracy ?? null,
      loss: result.lastEval?.loss ?? null,
      aborted: result.aborted,
      checkpoint,
    };
    lines.push(JSON.stringify(summary));
    if (json) process.stdout.write(JSON.stringify(summary) + '\n');
    else {
      const acc = result.lastEval ? `${(100 * result.lastEval.accuracy).toFixed(2)}%` : 'n/a';
      process.stdout.write(
        `${result.aborted ? 'stopped' : 'done'}: ${result.step} steps, ${result.samples} samples, ${result.seconds.toFixed(1)} s; ` +
          `validation accuracy ${acc}, loss ${result.lastEval?.loss.toFixed(4) ?? 'n/a'}\ncheckpoint: ${checkpoint}\n`,
      );
    }
    return 0;
  } finally {
    bar?.stop();
    clearInterval(flush);
    await appendFile(log, lines.splice(0).map((l) => l + '\n').join(''));
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    net.dispose();
  }
}

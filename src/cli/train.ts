// `rt train`: trains a copy / selective-copy model or a language model on text, with a live progress
// bar on a TTY or JSON lines with --json. With no flags it trains a small copy task in well under a
// minute on 2 cores.
import { appendFile, mkdir } from 'node:fs/promises';
import { cpus, hostname } from 'node:os';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import { DEBIAN_FASHION_MNIST_DIR, ImageClassData, openCifar10, openFashionMnist } from '../data/images/index.js';
import { TextDataset } from '../data/text.js';
import type { ModelConfig } from '../model/config.js';
import { flopsPerSample } from '../model/flops.js';
import { preferDevice } from '../native.js';
import { RecurrentTransformer } from '../model/transformer.js';
import { CopyTaskData, type TrainData } from '../train/data.js';
import { train, type ScheduleOptions, type TrainEvent } from '../train/trainer.js';
import { int, num, pair, str, UsageError, type Flags, positiveInt } from './args.js';
import { applyPreset, presetHelp } from './presets.js';
import { DIST_HELP, joinTrainJob, launchTrainWorkers, wantsLaunch, type TrainJob } from './train-dist.js';
import { isWorker } from '../distributed/options.js';
import { PEER_FAILURE_EXIT_CODE } from '../distributed/launcher.js';
import { makeTokenizer } from './tokenizer.js';

export const TRAIN_HELP = `rt train [flags]   train a copy, selective-copy, text or sequential-image model

preset    --preset NAME: the flags of one row of docs/RESULTS.md (flags given here override them)
${presetHelp()}
task      --task copy|selective-copy|text|fmnist|cifar10 (copy)
  copy    --noise L (64)  --M 8  --alphabet 16
  text    --data FILE|DIR  --tokenizer char|gpt2|bpe:V (char)  --seq-len 256  --cache DIR (.rt-cache)
  fmnist  --data DIR (${DEBIAN_FASHION_MNIST_DIR}): IDX files, 784 pixel tokens, 10 classes
  cifar10 --data DIR: CIFAR-10 binary batches, grey (BT.601 luma) 1,024 pixel tokens, 10 classes
          (images: d 128, 4 heads, w 32, forget, gelu, dropout 0.1; evaluation on the test set)
model     --d --heads --layers 1 --window W | --window-range MIN,MAX  --variant forget|accumulate
          --alpha 0.5  --alpha-fixed  --activation relu|gelu  --dropout  --bias  --no-positional
          (copy: d 64, 4 heads, w 16, accumulate, relu; text: d 384, 6 heads, w 16, forget, gelu, dropout 0.2)
training  --steps --batch --lr --beta2 (text 0.99, else 0.999) --weight-decay --max-grad-norm 1 --schedule constant|cosine|curriculum|lm
          --warmup 100 --lm-target 1.4 --curriculum-start 16 --curriculum-threshold 0.3 --no-curriculum
          --curriculum-compound (the cuts of schedule curriculum compound, as in the author's code)
          --eval-every --eval-batches --stop-accuracy 0.99 --stop-loss L (copy, at full noise: stop once
          an evaluation reaches both) --seed 0
device    --device cpu|cuda (RT_DEVICE, else cpu)  --precision bf16|fp32 (cuda)
${DIST_HELP}
output    --out DIR (runs/<preset or task>-<time>)  --json  --resume FILE
          --checkpoint-every N (steps; default: at each evaluation, and always at the end or on a stop)`;

interface Setup {
  data: TrainData;
  /** The full sequence length of a sample (for the FLOPs per sample in the log). */
  seqLen: number;
  model: ModelConfig;
  tokenizer?: unknown;
  steps: number;
  batch: number;
  lr: number;
  weightDecay: number;
  evalEvery: number;
  evalBatches: number;
  schedule: ScheduleOptions;
  curriculum: { start: number; threshold: number } | false;
  stopAt?: { accuracy: number };
}

function modelFlags(flags: Flags, d: { d: number; heads: number; window: number; variant: 'forget' | 'accumulate'; activation: 'relu' | 'gelu'; dropout: number }) {
  const windowRange = pair(flags, 'window-range');
  return {
    d: int(flags, 'd', d.d),
    heads: int(flags, 'heads', d.heads),
    layers: int(flags, 'layers', 1),
    ...(windowRange ? { windowRange } : { window: int(flags, 'window', d.window) }),
    variant: str(flags, 'variant', ['forget', 'accumulate'] as const, d.variant),
    alpha: { init: num(flags, 'alpha', 0.5), learnable: !flags['alpha-fixed'] },
    positional: !flags['no-positional'],
    activation: str(flags, 'activation', ['relu', 'gelu'] as const, d.activation),
    dropout: num(flags, 'dropout', d.dropout),
    bias: Boolean(flags.bias),
    seed: int(flags, 'seed', 0),
    // --device cuda is a preference like RT_DEVICE=cuda: the CPU with a warning when CUDA cannot be used.
    ...(flags.device !== undefined ? { device: preferDevice(str(flags, 'device', ['cpu', 'cuda'] as const, 'cpu'), '--device cuda') } : {}),
    ...(flags.precision !== undefined ? { precision: str(flags, 'precision', ['bf16', 'fp32'] as const, 'bf16') } : {}),
  };
}

function scheduleFlag(flags: Flags, fallback: 'constant' | 'cosine' | 'curriculum' | 'lm', steps: number): ScheduleOptions {
  const name = str(flags, 'schedule', ['constant', 'cosine', 'curriculum', 'lm'] as const, fallback);
  if (flags['curriculum-compound'] && name !== 'curriculum') {
    throw new UsageError(`--curriculum-compound needs --schedule curriculum (the schedule is ${name})`);
  }
  // A warmup cannot outlast the run (a preset's 100 steps under --steps 50): cap it at steps - 1.
  if (name === 'cosine') return { type: 'warmupCosine', warmup: Math.min(int(flags, 'warmup', Math.min(100, Math.floor(steps / 10))), Math.max(0, steps - 1)) };
  if (name === 'lm') return { type: 'lm', target: num(flags, 'lm-target', 1.4), minLr: 1e-5 };
  if (name === 'curriculum') return { type: 'curriculum', compound: Boolean(flags['curriculum-compound']) };
  return { type: name };
}

function copySetup(flags: Flags, task: 'copy' | 'selective-copy'): Setup {
  const noise = int(flags, 'noise', 64);
  const M = int(flags, 'M', 8);
  const alphabet = int(flags, 'alphabet', 16);
  const data = new CopyTaskData({ task, noise, M, alphabet });
  const useCurriculum = !flags['no-curriculum'];
  const steps = int(flags, 'steps', 3000);
  const schedule = scheduleFlag(flags, useCurriculum ? 'curriculum' : 'constant', steps);
  if (schedule.type === 'curriculum' && !useCurriculum) throw new UsageError('--schedule curriculum needs the curriculum (drop --no-curriculum)');
  return {
    data,
    seqLen: data.maxSeqLen,
    model: {
      vocabSize: alphabet,
      maxLen: data.maxSeqLen,
      head: { copy: M },
      ...modelFlags(flags, { d: 64, heads: 4, window: 16, variant: 'accumulate', activation: 'relu', dropout: 0 }),
    },
    steps,
    batch: int(flags, 'batch', 32),
    lr: num(flags, 'lr', 2e-3),
    weightDecay: num(flags, 'weight-decay', 0),
    evalEvery: int(flags, 'eval-every', 50),
    evalBatches: int(flags, 'eval-batches', 4),
    schedule,
    curriculum: useCurriculum ? { start: int(flags, 'curriculum-start', Math.min(16, noise)), threshold: num(flags, 'curriculum-threshold', 0.3) } : false,
    stopAt: { accuracy: num(flags, 'stop-accuracy', 0.99), ...(flags['stop-loss'] !== undefined ? { loss: num(flags, 'stop-loss', 0) } : {}) },
  };
}

async function textSetup(flags: Flags, json: boolean): Promise<Setup> {
  if (typeof flags.data !== 'string') throw new UsageError('--data FILE|DIR: required for --task text');
  const spec = typeof flags.tokenizer === 'string' ? flags.tokenizer : 'char';
  const tokenizer = await makeTokenizer(spec, flags.data);
  const seqLen = int(flags, 'seq-len', 256);
  const data = await TextDataset.open({
    source: flags.data,
    tokenizer,
    seqLen,
    cacheDir: typeof flags.cache === 'string' ? flags.cache : '.rt-cache',
  });
  const steps = int(flags, 'steps', 5000);
  if (!json) process.stderr.write(`text: ${data.tokens('train')} train / ${data.tokens('val')} val tokens, vocabulary ${tokenizer.vocabSize} (${spec})\n`);
  return {
    data,
    seqLen,
    tokenizer: tokenizer.toJSON(),
    model: {
      vocabSize: tokenizer.vocabSize,
      maxLen: seqLen,
      head: 'lm',
      ...modelFlags(flags, { d: 384, heads: 6, window: 16, variant: 'forget', activation: 'gelu', dropout: 0.2 }),
    },
    steps,
    batch: int(flags, 'batch', 64),
    lr: num(flags, 'lr', 1e-3),
    weightDecay: num(flags, 'weight-decay', 0.1),
    evalEvery: int(flags, 'eval-every', 250),
    evalBatches: int(flags, 'eval-batches', 20),
    schedule: scheduleFlag(flags, 'cosine', steps),
    curriculum: false,
  };
}

async function imageSetup(flags: Flags, task: 'fmnist' | 'cifar10', json: boolean): Promise<Setup> {
  let data: ImageClassData;
  if (task === 'fmnist') {
    data = await openFashionMnist(typeof flags.data === 'string' ? flags.data : DEBIAN_FASHION_MNIST_DIR);
  } else {
    if (typeof flags.data !== 'string') throw new UsageError('--data DIR: required for --task cifar10 (the folder of data_batch_*.bin and test_batch.bin)');
    data = await openCifar10(flags.data);
  }
  const steps = int(flags, 'steps', 10000);
  if (!json) process.stderr.write(`${task}: ${data.size('train')} train / ${data.size('val')} test images of ${data.pixels} pixels, ${data.classes} classes\n`);
  return {
    data,
    seqLen: data.pixels,
    model: {
      vocabSize: data.vocabSize,
      maxLen: data.pixels,
      head: { classify: data.classes },
      ...modelFlags(flags, { d: 128, heads: 4, window: 32, variant: 'forget', activation: 'gelu', dropout: 0.1 }),
    },
    steps,
    batch: int(flags, 'batch', 64),
    lr: num(flags, 'lr', 1e-3),
    weightDecay: num(flags, 'weight-decay', 0.1),
    evalEvery: int(flags, 'eval-every', 500),
    evalBatches: int(flags, 'eval-batches', 40),
    schedule: scheduleFlag(flags, 'cosine', steps),
    curriculum: false,
  };
}

function outDir(flags: Flags, task: string): string {
  const runName = typeof flags.preset === 'string' ? flags.preset : task;
  return typeof flags.out === 'string' ? flags.out : join('runs', `${runName}-${new Date().toISOString().replace(/[:.]/g, '-')}`);
}

export async function trainCommand(cliFlags: Flags): Promise<number> {
  if (wantsLaunch(cliFlags)) return launchTrainWorkers(cliFlags);
  if (!isWorker()) return runTraining(cliFlags, null);
  // A worker of `rt train --gpus N`: rank 0's flags and output folder for every rank.
  const preset = applyPreset(cliFlags);
  const job = await joinTrainJob(cliFlags, outDir(preset, str(preset, 'task', ['copy', 'selective-copy', 'text', 'fmnist', 'cifar10'] as const, 'copy')));
  try {
    return await runTraining(job.flags, job);
  } catch (e) {
    const g = job.group;
    if (!g.failed) g.abort((e as Error).message);
    else if (g.failedByPeer) {
      process.stderr.write(`rt train (rank ${g.rank}): ${g.failed.message}\n`);
      return PEER_FAILURE_EXIT_CODE;
    }
    throw e;
  } finally {
    job.group.destroy();
  }
}

async function runTraining(cliFlags: Flags, job: TrainJob | null): Promise<number> {
  const flags = applyPreset(cliFlags);
  const task = str(flags, 'task', ['copy', 'selective-copy', 'text', 'fmnist', 'cifar10'] as const, 'copy');
  // Only rank 0 of a multi-GPU job logs, prints and writes checkpoints.
  const main = !job || job.group.isMain;
  const json = Boolean(flags.json) || !main;
  const setup =
    task === 'text' ? await textSetup(flags, json) : task === 'fmnist' || task === 'cifar10' ? await imageSetup(flags, task, json) : copySetup(flags, task);
  const runName = typeof flags.preset === 'string' ? flags.preset : task;
  const out = job?.out ?? outDir(flags, task);
  if (main) await mkdir(out, { recursive: true });
  const log = join(out, 'log.jsonl');
  const checkpoint = join(out, 'checkpoint.safetensors');

  const net = new RecurrentTransformer(setup.model);
  // Per sample at the full length and the evaluation window: what the results table reports.
  const perSample = flopsPerSample(net.config, setup.seqLen);
  const isText = task === 'text';
  const beta2 = num(flags, 'beta2', isText ? 0.99 : 0.999);
  if (!(beta2 >= 0 && beta2 < 1)) throw new UsageError(`--beta2: expected a number in [0, 1), got ${beta2}`);
  const optimizer = {
    lr: setup.lr,
    weightDecay: setup.weightDecay,
    maxGradNorm: num(flags, 'max-grad-norm', 1),
    betas: [0.9, beta2] as [number, number],
  };
  // The run's header in log.jsonl (not on stdout, which carries training events only): what `rt report`
  // and docs/RESULTS.md need to name and describe the run.
  const header = {
    type: 'config',
    name: runName,
    task,
    preset: flags.preset ?? null,
    argv: process.argv.slice(2),
    flags,
    model: net.config,
    optimizer,
    schedule: setup.schedule,
    device: net.device,
    parameters: net.parameterCount(),
    seqLen: setup.seqLen,
    flopsPerSample: { training: perSample.training, inference: perSample.forward },
    data: setup.data.describe(),
    host: { hostname: hostname(), cpus: cpus().length, cpu: cpus()[0]?.model ?? null },
    date: new Date().toISOString(),
    ...(job ? { worldSize: job.group.worldSize } : {}),
  };
  if (main) await appendFile(log, JSON.stringify(header) + '\n');
  // Best evaluation at the full task (for copy tasks: at the full noise length only).
  const best = { evals: 0, loss: Infinity, accuracy: -Infinity };
  const controller = new AbortController();
  const onSignal = (): void => controller.abort();
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const tty = !json && process.stderr.isTTY;
  const bar = tty
    ? new cliProgress.SingleBar(
        { format: 'train |{bar}| {value}/{total} loss {loss} acc {acc} {extra} {tps} tok/s', hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start(setup.steps, 0, { loss: '-', acc: '-', extra: '', tps: '-' });
  const lines: string[] = [];
  const onEvent = (e: TrainEvent): void => {
    if (e.type === 'eval' && (e.noise === undefined || e.noise === setup.data.maxNoise)) {
      best.evals++;
      best.loss = Math.min(best.loss, e.loss);
      best.accuracy = Math.max(best.accuracy, e.accuracy);
    }
    const line = JSON.stringify(e.type === 'eval' && isText ? { ...e, perplexity: Math.exp(e.loss) } : e);
    if (!main) return;
    lines.push(line);
    if (json) {
      process.stdout.write(line + '\n');
    } else if (e.type === 'step') {
      bar?.update(e.step, { loss: e.loss.toFixed(4), acc: e.accuracy.toFixed(3), extra: e.noise !== undefined ? `noise ${e.noise}` : `lr ${e.lr.toExponential(1)}`, tps: Math.round(e.tokensPerSec) });
    } else if (e.type === 'eval' || e.type === 'curriculum') {
      const msg =
        e.type === 'curriculum'
          ? `curriculum: noise ${e.from} -> ${e.to}, lr ${e.lr.toExponential(2)}`
          : isText
            ? `eval step ${e.step}: val loss ${e.loss.toFixed(4)} ± ${e.lossStderr.toFixed(4)}, perplexity ${Math.exp(e.loss).toFixed(2)}`
            : `eval step ${e.step}: loss ${e.loss.toFixed(4)} ± ${e.lossStderr.toFixed(4)}, accuracy ${(100 * e.accuracy).toFixed(2)}% ± ${(100 * e.accuracyStderr).toFixed(2)}, noise ${e.noise ?? '-'}${e.alpha ? `, alpha ${e.alpha.map((a) => a.toFixed(3)).join(' ')}` : ''}`;
      // Clear the bar's line first; it redraws itself on the next update.
      process.stderr.write((bar ? '\r\x1b[2K' : '') + msg + '\n');
    }
  };
  const flush = setInterval(() => {
    if (lines.length) void appendFile(log, lines.splice(0).map((l) => l + '\n').join(''));
  }, 2000);
  try {
    const result = await train({
      model: net,
      data: setup.data,
      steps: setup.steps,
      batchSize: setup.batch,
      optimizer,
      schedule: setup.schedule,
      curriculum: setup.curriculum,
      evalEvery: setup.evalEvery,
      evalBatches: setup.evalBatches,
      seed: int(flags, 'seed', 0),
      signal: controller.signal,
      onEvent,
      checkpoint: { path: checkpoint, every: positiveInt(flags, 'checkpoint-every') },
      resumeFrom: typeof flags.resume === 'string' ? flags.resume : undefined,
      stopAt: setup.stopAt,
      tokenizer: setup.tokenizer,
      distributed: job?.group,
    });
    bar?.stop();
    const ev = result.lastEval;
    const summary = {
      type: 'summary',
      task,
      steps: result.step,
      samples: result.samples,
      flops: result.flops,
      flopsPerSample: header.flopsPerSample,
      seconds: Number(result.seconds.toFixed(2)),
      accuracy: ev?.accuracy ?? null,
      loss: ev?.loss ?? null,
      lossStderr: ev?.lossStderr ?? null,
      bestLoss: best.evals ? best.loss : null,
      bestAccuracy: best.evals ? best.accuracy : null,
      ...(isText && ev ? { perplexity: Math.exp(ev.loss) } : {}),
      aborted: result.aborted,
      checkpoint,
    };
    if (!main) return 0;
    lines.push(JSON.stringify(summary));
    if (json) process.stdout.write(JSON.stringify(summary) + '\n');
    else {
      const metric = !ev
        ? 'no evaluation'
        : isText
          ? `validation loss ${ev.loss.toFixed(4)} ± ${ev.lossStderr.toFixed(4)}, perplexity ${Math.exp(ev.loss).toFixed(2)}`
          : `validation accuracy ${(100 * ev.accuracy).toFixed(2)}%, loss ${ev.loss.toFixed(4)}`;
      process.stdout.write(`${result.aborted ? 'stopped' : 'done'}: ${result.step} steps, ${result.samples} samples, ${result.seconds.toFixed(1)} s; ${metric}\ncheckpoint: ${checkpoint}\n`);
    }
    return 0;
  } finally {
    bar?.stop();
    clearInterval(flush);
    if (lines.length) await appendFile(log, lines.splice(0).map((l) => l + '\n').join(''));
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    net.dispose();
    if (setup.data instanceof TextDataset) await setup.data.close();
  }
}

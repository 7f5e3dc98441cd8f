// `rt eval` and `rt info`: a checkpoint's accuracy on fresh data, and what it holds.
import { Rng } from '../data/rng.js';
import { loadModel } from '../model/load.js';
import { Tensor } from '../tensor.js';
import { CopyTaskData } from '../train/data.js';
import type { CopyTaskOptions } from '../data/copy.js';
import { int, UsageError, type Flags } from './args.js';

function checkpointPath(flags: Flags): string {
  const p = flags.checkpoint;
  if (typeof p !== 'string') throw new UsageError('--checkpoint FILE: required');
  return p;
}

export async function infoCommand(flags: Flags): Promise<number> {
  const { model, checkpoint, data } = await loadModel(checkpointPath(flags));
  try {
    const info = {
      config: model.config,
      parameters: model.parameterCount(),
      data: data ?? null,
      step: (checkpoint.training as { step?: number } | undefined)?.step ?? null,
      tensors: Object.keys(checkpoint.params).length,
    };
    process.stdout.write(JSON.stringify(info, null, 2) + '\n');
    return 0;
  } finally {
    model.dispose();
  }
}

export async function evalCommand(flags: Flags): Promise<number> {
  const { model, data } = await loadModel(checkpointPath(flags));
  try {
    if (!data || data.kind !== 'copy') throw new UsageError('rt eval: this checkpoint was not trained on a copy task');
    const task = new CopyTaskData(data as unknown as CopyTaskOptions);
    const noise = int(flags, 'noise', task.maxNoise);
    const batches = int(flags, 'batches', 8);
    const batchSize = int(flags, 'batch', 32);
    const rng = new Rng(int(flags, 'seed', 12345));
    let loss = 0;
    let correct = 0;
    let count = 0;
    for (let i = 0; i < batches; i++) {
      const b = task.batch(rng, batchSize, 'val', { noise });
      const tok = Tensor.fromArray(b.tokens, [b.batch, b.seqLen], 'int32');
      const tgt = Tensor.fromArray(b.targets, [b.batch, b.positions], 'int32');
      try {
        const r = await model.evaluate(tok, tgt);
        loss += r.loss * r.count;
        correct += r.correct;
        count += r.count;
      } finally {
        tok.dispose();
        tgt.dispose();
      }
    }
    process.stdout.write(JSON.stringify({ noise, samples: batches * batchSize, loss: loss / count, accuracy: correct / count }) + '\n');
    return 0;
  } finally {
    model.dispose();
  }
}

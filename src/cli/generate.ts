// `rt generate`: streams a continuation of a prompt from a text checkpoint to stdout.
import { generate } from '../generate.js';
import { loadModel } from '../model/load.js';
import { tokenizerFromJSON } from '../tokenizer/index.js';
import { int, num, UsageError, type Flags } from './args.js';

export async function generateCommand(flags: Flags): Promise<number> {
  if (typeof flags.checkpoint !== 'string') throw new UsageError('--checkpoint FILE: required');
  const { model, checkpoint } = await loadModel(flags.checkpoint);
  try {
    if (!checkpoint.tokenizer) throw new UsageError(`rt generate: ${flags.checkpoint} holds no tokenizer (was it trained with --task text?)`);
    const tokenizer = tokenizerFromJSON(checkpoint.tokenizer);
    const prompt = typeof flags.prompt === 'string' ? flags.prompt : '\n';
    const controller = new AbortController();
    const onSignal = (): void => controller.abort();
    process.once('SIGINT', onSignal);
    try {
      process.stdout.write(prompt);
      for await (const t of generate(model, prompt, {
        tokenizer,
        maxTokens: int(flags, 'max-tokens', 500),
        temperature: num(flags, 'temperature', 0.8),
        topK: int(flags, 'top-k', 0),
        topP: num(flags, 'top-p', 1),
        seed: int(flags, 'seed', 0),
        stop: typeof flags.stop === 'string' ? [flags.stop] : undefined,
        signal: controller.signal,
      })) {
        process.stdout.write(t.text);
      }
      process.stdout.write('\n');
    } finally {
      process.off('SIGINT', onSignal);
    }
    return 0;
  } finally {
    model.dispose();
  }
}

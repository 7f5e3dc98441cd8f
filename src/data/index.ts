// Data: the seeded PRNG and the copy / selective-copy task generators.
export { Rng } from './rng.js';
export {
  copyBatch,
  copySeqLen,
  copyMarkerToken,
  resolveCopyTaskOptions,
  COPY_NOISE_TOKEN,
  type CopyTask,
  type CopyBatch,
  type CopyTaskOptions,
  type ResolvedCopyTaskOptions,
} from './copy.js';
export {
  TextDataset,
  tokenizerFingerprint,
  type TextTokenizer,
  type TextDatasetOptions,
  type TextBatch,
  type TextSplit,
  type TokenDtype,
} from './text.js';
export * from './images/index.js';

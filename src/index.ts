// Public API of recurrent-transformer.
export { Tensor, type DType } from './tensor.js';
export { RecurrentLayer, type Parameter, type ParameterLock, type ForwardOptions } from './model/layer.js';
export { RecurrentTransformer, IGNORE_INDEX, type LossResult, type StepOptions, type Decoder } from './model/transformer.js';
export { loadModel, type LoadedModel } from './model/load.js';
export {
  resolveLayerConfig,
  resolveModelConfig,
  type LayerConfig,
  type ResolvedLayerConfig,
  type ModelConfig,
  type ResolvedModelConfig,
  type HeadConfig,
  type Variant,
  type Activation,
} from './model/config.js';
export { AdamW, type AdamWOptions, type AdamWState, type StepInfo } from './optim/adamw.js';
export * from './optim/schedule.js';
export { train, type TrainOptions, type TrainEvent, type TrainResult, type EvalResult, type ScheduleOptions } from './train/trainer.js';
export { CopyTaskData, type Batch, type TrainData } from './train/data.js';
export { NoiseCurriculum, sampleWindow, evalWindow, type CurriculumOptions, type WindowRange } from './train/curriculum.js';
export * from './data/index.js';
export * from './io/index.js';
export { createServer, type ServerOptions, type RunningServer } from './serve/server.js';
export { Scheduler, QueueFullError, AbortedError, type SchedulerOptions } from './serve/scheduler.js';
export { generate, rowSampling, sampleRows, sampleToken, SequenceSampler, type GenerateOptions, type GeneratedToken, type RowSampling, type SampledRows, type TextCodec } from './generate.js';
export {
  nativeInfo, benchSgemm, nativeAllocatedBytes, defaultDevice, cudaStatus, preferDevice, CUDA_PACKAGE,
  type Device, type CudaStatus, type CudaStatusReport,
} from './native.js';
export * from './tokenizer/index.js';
export { flopsPerSample, applicationFlops, applicationLengths, type FlopsModel, type FlopsPerSample } from './model/flops.js';
export { writeReport, readRun, parseRunLog, type ReportFiles, type RunData } from './report/index.js';
export * from './distributed/index.js';
export { CHINCHILLA, GAMMA_ASSUMPTIONS, gammaInterval, predictLoss, type ScalingLaw, type GammaInterval } from './scaling/law.js';
export { fitScalingLaw, diagnose, type Observation, type FitOptions, type ScalingFit, type FitDiagnostics, type Interval } from './scaling/fit.js';
export { countCorpus, fitPowerLaw, windowExponents, WindowCounter, type WindowCounts, type PowerLawFit, type WindowExponent } from './scaling/corpus.js';
export { advise, readReferenceRun, CHINCHILLA_REFERENCE, type Advice, type ReferenceRun, type ModelSuggestion } from './scaling/advise.js';
export { HyperLogLog } from './scaling/hll.js';
export { readRunObservation, nonEmbeddingParams, type ScalingRecord, type ParamCount } from './scaling/runs.js';

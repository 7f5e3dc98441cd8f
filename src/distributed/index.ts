// Data-parallel training over several GPUs and hosts (issue 9).
export { launch, freePort, PEER_FAILURE_EXIT_CODE, type LaunchOptions, type LaunchResult, type WorkerExit } from './launcher.js';
export { initProcessGroup, ProcessGroup, type ProcessGroupOptions } from './process-group.js';
export { isWorker, workerEnv, type DistributedOptions, type WorkerEnv } from './options.js';
export { shardBatch, shardRange } from './shard.js';
export type { GradientSync } from './sync.js';

// Rebuilds a model from a checkpoint: the config travels in the file's metadata.
import { loadCheckpoint, type CheckpointData } from '../io/checkpoint.js';
import type { ModelConfig, ModelPlacement } from './config.js';
import { RecurrentTransformer } from './transformer.js';

export interface LoadedModel {
  model: RecurrentTransformer;
  checkpoint: CheckpointData;
  /** The training task's description, when the checkpoint came from `train`. */
  data?: Record<string, unknown>;
}

/** Loads a checkpoint onto `placement.device` (default RT_DEVICE, else 'cpu'): the file does not depend on it. */
export async function loadModel(path: string, placement: Partial<ModelPlacement> = {}): Promise<LoadedModel> {
  const checkpoint = await loadCheckpoint(path);
  const cfg = checkpoint.config as { model?: ModelConfig; data?: Record<string, unknown> } | undefined;
  if (!cfg || typeof cfg !== 'object' || !cfg.model) throw new Error(`checkpoint ${path} has no model config`);
  const model = new RecurrentTransformer({ ...cfg.model, ...placement });
  try {
    model.importParameters(checkpoint.params);
  } catch (e) {
    model.dispose();
    throw new Error(`checkpoint ${path}: ${(e as Error).message}`);
  }
  return { model, checkpoint, data: cfg.data };
}

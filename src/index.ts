// Public API of recurrent-transformer.
export { Tensor, type DType } from './tensor.js';
export { RecurrentLayer, type Parameter, type ForwardOptions } from './model/layer.js';
export {
  resolveLayerConfig,
  type LayerConfig,
  type ResolvedLayerConfig,
  type Variant,
  type Activation,
} from './model/config.js';
export { nativeInfo, benchSgemm, nativeAllocatedBytes, defaultDevice, type Device } from './native.js';

// Float64 TypeScript reference of the recurrent transformer (DESIGN.md section 1). Test-only code.
export { erf, gelu, geluGrad } from './erf.js'
export {
  type Activation,
  type Params,
  type ReferenceConfig,
  type ReferenceGradients,
  type ReferenceOptions,
  type Variant,
  parameterShapes,
  referenceForward,
  referenceGradients,
} from './recurrent.js'

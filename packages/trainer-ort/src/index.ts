export { GraphBuilder, Value, broadcastShapes, type DType, type Node, type Attr, type Data, type Initializer } from "./graph/builder.js";
export { isStatic, type Dim } from "./graph/dims.js";
export {
  OPSET,
  IR_VERSION,
  ONNX_TYPE,
  EXTERNAL_MIN_BYTES,
  serializeModel,
  writeOnnxModel,
  decodeOnnxModel,
  type ModelOptions,
  type WriteOptions,
} from "./graph/onnx.js";
export { gradients } from "./graph/autodiff.js";
export { VJP, unbroadcast, type VjpRule } from "./graph/vjp.js";
export {
  modelGraph,
  modelGraphNames,
  decoderGraph,
  gpt2Graph,
  geluNew,
  rmsNorm,
  rotaryTables,
  silu,
  type KvCache,
  type ModelGraph,
  type ApplyDropout,
  type DropoutSite,
} from "./models/index.js";
export {
  names,
  idsType,
  adamwDefaults,
  compileTrainStep,
  compileEval,
  compileGradient,
  compileApply,
  type AdamWOptions,
  type BatchShape,
  type CompiledGraph,
  type DropoutInput,
  type TrainGraphOptions,
} from "./step.js";
export {
  createEngine,
  createSession,
  DEVICE_HINTS,
  DEVICES,
  webgpuReason,
  type Device,
  type Engine,
  type EngineOptions,
  type StepOptions,
} from "./engine.js";
export { matmulPeak, type MatmulPeak, type MatmulPeakOptions } from "./peak.js";
export { PROVIDER_NAMES, parsePlacement, placementFallbacks, stepPlacement, type ProviderPlacement } from "./placement.js";
export { dropoutMasks, type DropoutMasks } from "./dropout.js";
export {
  train,
  evaluate,
  evaluateBlocks,
  resolveSchedule,
  defaultEngineFactory,
  DEFAULT_BATCH,
  DEFAULT_CLIP,
  DEFAULT_EVAL_BLOCKS,
  DEFAULT_SCHEDULE,
  type TrainOptions,
  type TrainResult,
  type TrainCallbacks,
  type StepInfo,
  type EvalInfo,
  type SaveInfo,
  type EvaluateOptions,
  type EvaluateResult,
  type EngineFactory,
  type TrainEngine,
  type TrainEngineOptions,
} from "./trainer.js";
export { ortTrainer, type OrtTrainerPlugin } from "./plugin.js";
// The metrics log format belongs to @staged/scheduler, which reads it to decide when to grow.
export { METRICS_FILE, readMetrics, parseMetrics, formatMetrics, type MetricsRecord } from "@staged/scheduler";
export { byteTokenizer, hfTokenizer, loadHfTokenizer, tokenizerOf, checkTokenizerFits, type TextTokenizer } from "./data/tokenizer.js";
export { brownText, brownDocuments, untagDocument, untagSentence, BROWN_VALIDATION_EVERY, type BrownSplit } from "./data/brown.js";
export {
  readTokens,
  readTokenFile,
  tokenFileDtype,
  prepareData,
  decodeTokenFile,
  encodeTokenFile,
  requireBlock,
  HELD_OUT_FRACTION,
  TOKEN_FILE_CHUNK_BYTES,
  type TokenDtype,
  type ReadTokenFileOptions,
  type TokenStream,
  type PreparedData,
  type PrepareOptions,
} from "./data/corpus.js";
export { createSampler, evalBlockCount, SAMPLER_KINDS, type Sampler, type SamplerKind, type SamplerOptions } from "./data/sampler.js";
export { tinyBpeTokenizerJson } from "./data/testing.js";

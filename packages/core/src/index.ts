// The public API of @staged/core: what the other packages, examples/ and the READMEs use, and the types of its
// signatures. One export statement per module; helpers used only inside core (and its tests) stay in their files.

// The training state: its types, a fresh one, reading and saving a checkpoint directory (the save protocol every
// checkpoint format goes through), the project's own format.
export type {
  AdamWState,
  ForeignFormat,
  LazyTensor,
  LrRestart,
  LrScheduleSpec,
  ModelShape,
  ParamLrScale,
  Progress,
  StageRecord,
  TokenizerSpec,
  TrainingSettings,
  TrainingState,
  Precision,
} from "./types.js";
export { PRECISIONS } from "./types.js";
export { DEFAULT_ADAMW, inMemory, initTrainingState, parameterCount } from "./state/init.js";
export { isLoaded, loadTrainingState, recoverInterruptedSave, type LoadOptions, type LoadedTrainingState } from "./state/load.js";
export { STAGED_FORMAT, writeModelFiles, type CheckpointContents, type ModelToSave } from "./state/format.js";
export { firstNonFinite, saveCheckpointDirectory, saveTrainingState, type SaveOptions, type SaveProgress } from "./state/save.js";
export { canonicalPath, checkOutputPath } from "./state/paths.js";
export {
  LR_SCALE_PARAMS,
  checkStageOptions,
  derived,
  detachedState,
  globalStepOf,
  grownState,
  haveStoredBytes,
  laidOut,
  mapValues,
  zerosTensor,
  type LrScaleParams,
  type StageOptions,
  type StoredBytesOf,
} from "./stage.js";

// File formats: training_state.json, metrics.jsonl, a Hugging Face Trainer checkpoint's file names, tokenizer files.
export { STATE_FILE } from "./state-format.js";
export { METRICS_FILE, formatMetrics, parseMetrics, type MetricsRecord } from "./metrics-format.js";
export { TRAINER_FILES, TRAINER_RNG_FILE } from "./trainer-files.js";
export { BYTE_LEVEL_PAD_ID, byteLevelTokenizerConfig, byteLevelTokenizerJson, bytesToUnicode } from "./tokenizer-json.js";
export { schemaError } from "./schema.js";

// safetensors files and Hugging Face checkpoints (single or sharded).
export { SafetensorsError, type SafetensorsErrorCode } from "./safetensors/errors.js";
export type { TensorInfo } from "./safetensors/header.js";
export { decodeTensor, encodeTensor, readStoredBytes } from "./safetensors/codec.js";
export { SafetensorsFile } from "./safetensors/reader.js";
export { writeSafetensors, type TensorEntry, type WriteObserver } from "./safetensors/writer.js";
export { closeCheckpoint, openCheckpoint, writeCheckpoint, type CheckpointFiles, type CheckpointTensor } from "./shards.js";

// Tensors and dtypes.
export {
  PIECE_BYTES,
  Tensor,
  blockDiagonal,
  blockLayoutPieces,
  blockMatrix,
  concat,
  concatBytes,
  f32ToStored,
  scaleStored,
  storedToF32,
  tileLayout,
  type BlockLayout,
  type TypedArray,
} from "./tensor.js";
export {
  DTYPE_SIZES,
  HOST_LITTLE_ENDIAN,
  TORCH_NAMES,
  encodeF16,
  firstNonFiniteStored,
  isDType,
  type DType,
  type SafetensorsDType,
} from "./dtype.js";
export { Rng, deriveSeed, streamKey } from "./rng.js";

// Plugins: what an architecture, growth operator, checkpoint format, law, schedule, timing rule or trainer provides,
// the registry, and the built-in architectures.
export {
  initWeights,
  namedParameters,
  type ArchitecturePlugin,
  type AxisSpace,
  type CheckpointDirectory,
  type CheckpointFormatPlugin,
  type DecoderSpec,
  type GrowthPlugin,
  type GrowthTiming,
  type GrowthTimingContext,
  type GrowthTimingPlugin,
  type InitShape,
  type LrSchedulePlugin,
  type ParamLayout,
  type ParamRole,
  type ParamSpec,
  type PluginKind,
  type PluginKinds,
  type ScalingLawPlugin,
  type TimingPoint,
  type TrainerPlugin,
} from "./plugins.js";
export { createDefaultRegistry, createRegistry, type Registry } from "./registry.js";
export { gpt2 } from "./gpt2.js";
export { llama } from "./llama.js";
export { rotaryTables } from "./rope.js";
// The decoder an architecture plugin describes, resolved once for every graph builder.
export { resolveDecoder, type ResolvedDecoder, type Projection, type Norm, type MatrixParam } from "./decoder.js";

// Locks and crash safety, files and inputs, resource limits.
export {
  LockedError,
  describeThisProcess,
  lockCheckpoint,
  processStart,
  withCheckpointLock,
  type CheckpointLock,
  type LockHolder,
  type LockMode,
} from "./lock.js";
export { checkInput, inputError, isInside, parseJsonFile, readTextInput, syncDir, systemCode, systemReason, writeFileAtomic } from "./files.js";
export { checkInputSize, openInput, readInputWithin, type InputHandle, type InputLimit, type InputStats } from "./input.js";
export {
  F32_BYTES,
  MAX_TENSOR_VALUES,
  MAX_TEXT_BYTES,
  MAX_TOKENIZER_BYTES,
  MODEL_LIMITS,
  checkDiskSpace,
  checkMemory,
  checkModelSize,
  checkTensorSizes,
  checkpointBytes,
  formatBytes,
  formatCount,
  freeMemory,
  writeAnnouncement,
  type ModelLimits,
  type ShapeNames,
} from "./limits.js";

import type { DType } from "./dtype.js";
import type { Tensor } from "./tensor.js";

/** A tensor known by dtype and shape whose values are produced on demand (read from disk or computed). */
export interface LazyTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  read(): Promise<Tensor>;
  /**
   * The tensor's stored bytes: little-endian values of `dtype` as a safetensors file holds them (F16/BF16 as 16-bit
   * words, not widened), equal to what writing read()'s values would store. Present where they come without decoding:
   * a tensor of a checkpoint file, and tensors growth computes from such tensors by copying bytes (tiles, block
   * matrices, layer copies, zeros). Writers use them as they are; absent, they encode read()'s values.
   */
  readBytes?(): Promise<Uint8Array>;
  /**
   * The same bytes in order, in pieces of at most a few MiB, so that a writer never holds a large tensor whole; the
   * pieces are read-only. `buffer(n)`, when given, supplies the memory of a piece of n bytes that has to be filled
   * (a writer recycling a few buffers instead of faulting in fresh pages for every piece): such a piece is the
   * caller's, and the tensor fills all of it. Absent: readBytes() as one piece.
   */
  streamBytes?(buffer?: (bytes: number) => Uint8Array): AsyncIterable<Uint8Array>;
}

/** The architecture-independent shape of a decoder-only transformer. */
export interface ModelShape {
  layers: number;
  dModel: number;
  heads: number;
  headDim: number;
  ffn: number;
  vocab: number;
  context: number;
  /** Key/value heads of grouped-query attention (absent: one per query head). */
  kvHeads?: number;
  /** Whether the MLP is gated (SwiGLU: three matrices, gate, in and out; absent: two). */
  gatedMlp?: boolean;
}

/**
 * The arithmetic of a training step: fp32 everywhere, or mixed: matrices and activations in float16, parameters,
 * gradients, moments and the update in float32, with a dynamic loss scale (@staged/trainer-ort's step graphs).
 */
export const PRECISIONS = ["fp32", "mixed"] as const;
export type Precision = (typeof PRECISIONS)[number];

export interface AdamWState {
  name: "adamw";
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  /** Global gradient-norm clip (torch.nn.utils.clip_grad_norm_), null for none; absent: the trainer's default. */
  clip?: number | null;
  /** Parameter names excluded from weight decay. */
  noDecay: string[];
  /** Number of optimizer updates applied (PyTorch's `state["step"]`). */
  step: number;
  /**
   * Adam's bias correction (÷ (1 − βᵗ) of both moments, PyTorch's). Absent: on. Off is the seed code's
   * setting (allenai/staged-training trains with `correct_bias=False`).
   */
  biasCorrection?: boolean;
  /**
   * Mixed precision's dynamic loss scale (a power of two) and the updates since it last changed (PyTorch
   * GradScaler's scale and growth tracker), so that a resumed run continues with them; absent: the trainer's
   * initial scale (fp32 training has none).
   */
  lossScale?: { scale: number; goodSteps: number };
  /** First and second moments by parameter name; absent for a bare pretrained checkpoint. */
  expAvg?: Map<string, LazyTensor>;
  expAvgSq?: Map<string, LazyTensor>;
}

/** A learning-rate restart at a growth step (interpreted by @staged/scheduler). */
export interface LrRestart {
  step: number;
  warmupSteps: number;
}

/**
 * A per-parameter LR factor set by a growth: from `step`, the parameters whose role is in `roles` (null: every
 * parameter) train at the schedule's LR × a factor that starts at `scale` and returns linearly to 1 over
 * `rampSteps` steps (0: stays `scale`). Factors of several growths multiply. Interpreted by @staged/scheduler
 * (`paramLrScale`).
 */
export interface ParamLrScale {
  step: number;
  scale: number;
  rampSteps: number;
  roles: string[] | null;
}

/** Serializable LR schedule description; @staged/scheduler turns it into a function of the step. */
export interface LrScheduleSpec {
  kind: string;
  peakLr: number;
  warmupSteps: number;
  totalSteps: number;
  minLr?: number;
  /** Kind-specific settings (e.g. the decay fraction of warmup-stable-decay). */
  [option: string]: unknown;
  restarts: LrRestart[];
  /** Per-parameter factors on the LR (see ParamLrScale); absent or empty: every parameter at the schedule's LR. */
  paramScales?: ParamLrScale[];
}

/** One growth event. */
export interface StageRecord {
  step: number;
  operator: string;
  options: Record<string, unknown>;
  before: ModelShape;
  after: ModelShape;
  /** The step the grown model continues from (the paper's S_before / constant_op; docs/formats.md, progress.stages). */
  continueAt?: number;
}

export interface Progress {
  step: number;
  tokensSeen: number;
  flopsSeen: number;
  samplerSeed: number;
  /** The data sampler kind ("random", "sequential"); absent: the trainer's default. */
  sampler?: string;
  /**
   * Optimizer updates over the whole run, all stages together: unlike `step`, which a growth may set back
   * (continueAt), it never decreases, so curves plotted against it stay in order. Absent: equal to `step`.
   */
  globalStep?: number;
  stages: StageRecord[];
}

/**
 * How the checkpoint is being trained, stored so that a resumed run (or the next stage after a growth)
 * needs only `--data --steps`: options left out of a later call take these values.
 */
export interface TrainingSettings {
  /** Blocks per optimizer step. */
  batch: number;
  /** Blocks per micro-batch (gradient accumulation); absent: the whole batch. */
  microBatch?: number;
  /** The training step's arithmetic (PRECISIONS); absent: fp32. */
  precision?: Precision;
  /** Tokens per block. */
  context: number;
  /** Validation every K steps (0: only at the end of each call). */
  evalEvery: number;
  /** Validation blocks each time. */
  evalBlocks: number;
  /** The training data (`brown`, a file path) and the validation data, when one was named. */
  data?: string;
  valData?: string;
}

/**
 * Byte-level (vocabulary 256), a Hugging Face tokenizer.json stored beside the checkpoint, or none: an HF
 * checkpoint whose vocabulary is larger than 256 came without a tokenizer.json (text data is then refused;
 * token ids from a .bin file are fine).
 */
export type TokenizerSpec = { kind: "bytes" } | { kind: "hf"; file: "tokenizer.json" } | { kind: "none" };

/** Everything a staged run needs: model, optimizer, schedule and progress (docs/ARCHITECTURE.md). */
export interface TrainingState {
  architecture: string;
  /** The architecture's HF config (config.json). */
  config: Record<string, unknown>;
  shape: ModelShape;
  /** Trainable parameters by canonical HF name; tied weights appear once, buffers never. */
  params: Map<string, LazyTensor>;
  optimizer: AdamWState;
  schedule: LrScheduleSpec | null;
  progress: Progress;
  tokenizer: TokenizerSpec;
  /** Extra files copied verbatim (tokenizer.json, tokenizer_config.json, ...). */
  files?: Map<string, Uint8Array>;
  /** The trainer's batch, context and evaluation settings (absent: never trained by this project's trainer). */
  training?: TrainingSettings;
  /**
   * Set on a state read from a checkpoint format other than the project's own (a Hugging Face Trainer checkpoint):
   * a save writes that format again unless told otherwise (SaveOptions.format), with the records the format keeps that
   * the state has no field for. Core never looks inside `records`; growth carries them over.
   */
  foreign?: ForeignFormat;
}

/** A state's foreign checkpoint format (see TrainingState.foreign). */
export interface ForeignFormat {
  /** The CheckpointFormatPlugin's name. */
  format: string;
  records: unknown;
}

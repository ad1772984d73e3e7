import type { Tensor } from "./tensor.js";
import type { LrScheduleSpec, ModelShape, TrainingState } from "./types.js";
import type { CheckpointContents, ModelToSave } from "./state/format.js";
import type { SaveOptions } from "./state/save.js";

/**
 * What a parameter is for, independent of the architecture's names (docs/ARCHITECTURE.md). A block has an
 * attention part (its norm, q/k/v as one fused projection or three, the output projection) and an MLP part
 * (its norm, the input projection, for gated MLPs (SwiGLU) a gate projection, the output projection).
 */
export type ParamRole =
  | "embed.tokens"
  | "embed.positions"
  | "attn.norm.weight"
  | "attn.norm.bias"
  | "attn.qkv.weight"
  | "attn.qkv.bias"
  | "attn.q.weight"
  | "attn.q.bias"
  | "attn.k.weight"
  | "attn.k.bias"
  | "attn.v.weight"
  | "attn.v.bias"
  | "attn.out.weight"
  | "attn.out.bias"
  | "mlp.norm.weight"
  | "mlp.norm.bias"
  | "mlp.in.weight"
  | "mlp.in.bias"
  | "mlp.gate.weight"
  | "mlp.gate.bias"
  | "mlp.out.weight"
  | "mlp.out.bias"
  | "final_norm.weight"
  | "final_norm.bias"
  | "lm_head.weight";

/**
 * How a parameter is stored: `conv1d` is GPT-2's Conv1D `[in, out]` (y = x W + b), `linear` is
 * torch's `[out, in]`, `embedding` is `[rows, dModel]`, `vector` is 1-D.
 */
export type ParamLayout = "conv1d" | "linear" | "embedding" | "vector";

/**
 * What one axis of a parameter indexes, which is what width growth needs to know about it: the residual
 * stream (`model`, dModel), the query heads (`heads`, heads·headDim), the key/value heads (`kvHeads`,
 * kvHeads·headDim), the MLP's hidden units (`ffn`), the vocabulary, the positions, or a fused q|k|v axis
 * (`qkv`: the parts named by ParamSpec.fused, each `heads` or `kvHeads`).
 */
export type AxisSpace = "model" | "heads" | "kvHeads" | "ffn" | "vocab" | "positions" | "qkv";

export interface ParamSpec {
  name: string;
  role: ParamRole;
  /** Block index, or null for embeddings and the final norm. */
  layer: number | null;
  shape: number[];
  layout: ParamLayout;
  /** What each axis indexes (one entry per axis of `shape`). */
  axes: readonly AxisSpace[];
  /** For fused projections, the parts along the `qkv` axis in order (GPT-2 c_attn: q, k, v). */
  fused?: readonly ("q" | "k" | "v")[];
  /** Whether it writes into the residual stream at the end of a block (zero in a new identity block). */
  writesResidual?: boolean;
  /** Whether it is the norm right before the output layer (its values carry width growth's 1/k). */
  feedsOutput?: boolean;
  /** Whether AdamW decays it by default (2-D weights do, 1-D ones do not). */
  decay: boolean;
}

/**
 * The forward pass of a decoder-only transformer, as data the trainer's graph follows: every architecture
 * of the registry is a pre-norm decoder that these settings describe (see @staged/trainer-ort's decoder).
 */
export interface DecoderSpec {
  /** LayerNorm (with bias) or RMSNorm (weight only, x / √(mean(x²) + eps)). */
  norm: { kind: "layernorm" | "rmsnorm"; eps: number };
  /** Learned absolute positions (embed.positions), or rotary embeddings (HF's rotate-half convention). */
  positions: { kind: "learned" } | { kind: "rope"; theta: number };
  /** Attention scores are q·kᵀ × scale (GPT-2 may also divide by layer + 1). */
  attention: { scale: number; scaleByInverseLayer?: boolean; slidingWindow?: number | null };
  /** MLP: tanh-approximated GELU (GPT-2's gelu_new) of the input projection, or SwiGLU silu(gate) · in. */
  mlp: { kind: "gelu_tanh" | "swiglu" };
  /** Logits against the token embedding (tied) or against lm_head.weight. */
  tiedOutput: boolean;
  /**
   * Dropout probabilities in [0, 1), read from the HF config under the architecture's names, applied by the
   * training graphs only (evaluation, logits and export never drop): `embedding` on the summed embeddings,
   * `attention` on the attention probabilities after the softmax, `residual` on each block's attention and
   * MLP outputs before their residual adds. Absent, or 0: none.
   */
  dropout?: { embedding: number; attention: number; residual: number };
}

/** One model family: its HF config, its parameters with roles, and a fresh initialization. */
export interface ArchitecturePlugin {
  name: string;
  /** HF `model_type` values this plugin reads. */
  modelTypes: readonly string[];
  /**
   * Normalize an HF config (filling HF's defaults) and derive the shape; `file` names it in errors. Throws for
   * a model above MODEL_LIMITS (checkModelSize of limits.ts), so nothing after it allocates for an absurd config.
   */
  parseConfig(config: Record<string, unknown>, file?: string): { config: Record<string, unknown>; shape: ModelShape };
  /**
   * Distinct trainable values of a config's model (a tied output layer once, buffers never), computed
   * arithmetically from the shape, in O(1): size checks call it before anything builds `params`, so a config
   * claiming 10⁸ layers is refused at once. For another shape, count `withShape(base, shape)`.
   * `parseConfig` checks this count and the shape against MODEL_LIMITS (limits.ts).
   */
  parameterCount(config: Record<string, unknown>): number;
  /** A config with a new shape, keeping every other setting of `base`. */
  withShape(base: Record<string, unknown>, shape: ModelShape): Record<string, unknown>;
  /** Trainable parameters in canonical order. */
  params(config: Record<string, unknown>): ParamSpec[];
  /**
   * Where the parameters of a block come in the HF model's `named_parameters()` order when it is not params()'s: a rank
   * per role (roles not named rank 0; equal ranks keep params()'s order). It is the order Trainer's optimizer.pt stores
   * parameters by (@staged/hf-trainer). Absent: params()'s order is named_parameters()'s. See namedParameters.
   */
  blockModuleOrder?: Readonly<Partial<Record<ParamRole, number>>>;
  /** Map a name found in a foreign checkpoint to the canonical one; null for buffers to ignore. */
  canonicalName(name: string): string | null;
  /**
   * One parameter of a fresh model, as HF's `_init_weights` draws it; deterministic for a seed (each parameter's
   * values depend only on the seed and its name). Width growth's fresh units take their values from it.
   */
  initParam(config: Record<string, unknown>, spec: ParamSpec, seed: number): Tensor;
  /** Deterministic fresh weights for a seed: `initParam` of every parameter (initWeights). */
  init(config: Record<string, unknown>, seed: number): Map<string, Tensor>;
  /** The forward pass of a config's model (throws for settings the trainer does not implement, by name). */
  decoder(config: Record<string, unknown>): DecoderSpec;
  /**
   * The HF config.json of a fresh model of this architecture with this shape (`staged init`, `staged run`):
   * dropout `shape.dropout` (default none), no special tokens outside a small vocabulary.
   */
  initConfig(shape: InitShape, tie: boolean): Record<string, unknown>;
  /**
   * Whether a fresh model of this architecture ties its output layer to the token embedding unless told otherwise
   * (HF's default for the architecture: GPT-2 ties, Llama does not). `staged init` and `staged run` specs use it.
   */
  tiedByDefault: boolean;
}

/** A fresh model's weights: each parameter from an architecture's initParam, in params()'s order. */
export function initWeights(specs: readonly ParamSpec[], initParam: (spec: ParamSpec) => Tensor): Map<string, Tensor> {
  return new Map(specs.map((p) => [p.name, initParam(p)]));
}

/**
 * The parameters in the order of the HF model's `named_parameters()` (tied weights once): params()'s order, with the
 * parameters of each block ordered by the architecture's blockModuleOrder.
 */
export function namedParameters(arch: ArchitecturePlugin, specs: readonly ParamSpec[]): ParamSpec[] {
  const rank = arch.blockModuleOrder;
  if (!rank) return [...specs];
  const out: ParamSpec[] = [];
  for (let i = 0; i < specs.length;) {
    let j = i;
    while (j < specs.length && specs[j]!.layer !== null && specs[j]!.layer === specs[i]!.layer) j++;
    if (j === i) {
      out.push(specs[i++]!);
      continue;
    }
    // Array.prototype.sort is stable: equal ranks keep params()'s order.
    out.push(...specs.slice(i, j).sort((a, b) => (rank[a.role] ?? 0) - (rank[b.role] ?? 0)));
    i = j;
  }
  return out;
}

/** A dropout probability as DecoderSpec.dropout takes it: a number in [0, 1); `what` names it in the one-line error. */
export function dropoutProbability(v: unknown, what: string): number {
  if (typeof v !== "number" || !(v >= 0 && v < 1)) throw new Error(`${what} must be a number in [0, 1), got ${JSON.stringify(v)}`);
  return v;
}

/** The shape of a fresh model: ffn and kvHeads default to the architecture's (4·dModel or its own; heads). */
export interface InitShape {
  layers: number;
  dModel: number;
  heads: number;
  vocab: number;
  context: number;
  ffn?: number;
  kvHeads?: number;
  /** The probability of every dropout the architecture's config has (GPT-2: three, Llama: one), in [0, 1); default 0. */
  dropout?: number;
}

/** A growth operator: a pure function of the training state and its options. */
export interface GrowthPlugin<O = Record<string, unknown>> {
  name: string;
  grow(state: TrainingState, options: O): TrainingState | Promise<TrainingState>;
  /** Whether these options keep the model's function (logits, loss) exactly. */
  lossPreserving(options: O): boolean;
}

/**
 * A scaling law L(N, D) or L(N, S): loss from parameters and data. Registered under "scheduler"; @staged/scheduler's
 * ScalingLaw says what its planners need (`form`, `curve`, ...), and a `staged run` spec names one as `"law": {"name": …}`.
 */
export interface ScalingLawPlugin {
  name: string;
  [member: string]: unknown;
}

/**
 * An LR schedule kind, registered under "lrSchedule": `create(spec)` is the schedule of a spec of this kind (its `kind`
 * is the plugin's name) as a pure function of the step, before the spec's `restarts`, which @staged/scheduler's
 * createLrSchedule applies to every kind (as it checks the fields every kind shares). The trainer looks a state's
 * schedule up by its kind (@staged/trainer-ort `TrainOptions.registry`).
 */
export interface LrSchedulePlugin<S = LrScheduleSpec> {
  name: string;
  create(spec: S): (step: number) => number;
}

/** A point of a run's validation curve, as a growth-timing rule sees it. */
export interface TimingPoint {
  /** The stage model's step, the run's step over all stages, the run's FLOPs so far, the validation loss there. */
  step: number;
  globalStep: number;
  flops: number;
  valLoss: number;
}

/** What a growth-timing rule knows when a stage starts (`staged run`, @staged/run). */
export interface GrowthTimingContext {
  /** The stage's index: 0 for the first model. */
  stage: number;
  /** The model before and after this stage's growth: non-embedding parameters and training FLOPs per token. */
  small: { params: number; flopsPerToken: number };
  large: { params: number; flopsPerToken: number };
  /** Tokens per optimizer step. */
  batchTokens: number;
  /** The run's budget in FLOPs. */
  budget: number;
  /** The spec's scaling law (a Chinchilla-form fit of @staged/scheduler) and the loss below which data backs it; null without one. */
  law: unknown;
  maxLoss: number | null;
}

/** When to grow: a fixed moment known at the stage's start, and/or a test of each validation point. */
export interface GrowthTiming {
  /** Grow once the stage has taken this many steps / the run has spent this many FLOPs. */
  steps?: number;
  flops?: number;
  /** Fed every validation point after the stage's re-warmup (and, on a resume, the saved ones); true once the growth is due. */
  push?(point: TimingPoint): boolean;
}

/**
 * A growth-timing rule a `staged run` spec names (`"at": "auto"`, `"plan"`, or `{"rule": name}`): register it under
 * "growthTiming". @staged/run registers "auto" and "plan" (the marginal-efficiency rule of @staged/scheduler).
 */
export interface GrowthTimingPlugin {
  name: string;
  /** Whether the rule needs the spec's `law` (a spec without one is refused). */
  needsLaw: boolean;
  create(context: GrowthTimingContext): GrowthTiming;
}

/**
 * A trainer, registered under "trainer": `train` runs `options`' steps on a state and returns the new state (and
 * whether a stop signal cut the call short), `evaluate` the mean validation loss of a state's model. The options
 * and callbacks are the trainer's own types (@staged/trainer-ort's `TrainOptions`, `TrainCallbacks` and
 * `EvaluateOptions` for its "ort" trainer, which `staged run` calls with them); a `staged run` spec names one as `"trainer"`.
 */
export interface TrainerPlugin<Options = never, Callbacks = never, EvalOptions = never> {
  name: string;
  train(state: TrainingState, options: Options, callbacks?: Callbacks): Promise<{ state: TrainingState; result: { interrupted: boolean } }>;
  evaluate(state: TrainingState, options: EvalOptions): Promise<{ loss: number; blocks: number; tokens: number }>;
}

/** A directory being read by loadTrainingState, for a CheckpointFormatPlugin. */
export interface CheckpointDirectory {
  /** The directory as the caller named it (for messages). */
  dir: string;
  /** Its canonical path. */
  root: string;
  /**
   * The path of one of its files, checked as every file a load reads (a regular file, no symlink out of the
   * directory: files.ts checkCheckpointFile), or null when it has none of that name.
   */
  file(name: string): Promise<string | null>;
  /** The names of the files it holds. */
  names: readonly string[];
  /** The parameters of the model core read from it (its architecture's params(), in that order). */
  specs: readonly ParamSpec[];
  /** Its architecture. */
  arch: ArchitecturePlugin;
}

/**
 * A checkpoint layout other than the project's own (docs/formats.md), e.g. a Hugging Face Trainer `checkpoint-N/`
 * (@staged/hf-trainer). loadTrainingState reads a directory's HF model files itself (config, weights, tokenizer
 * files) and lets the format whose `detect` claims the directory complete the state; saveTrainingState writes a
 * state in the format it came from (TrainingState.foreign) or the one asked for, through core's save protocol.
 */
export interface CheckpointFormatPlugin {
  name: string;
  /** Whether a directory holding these file names is one of this format's checkpoints. */
  detect(files: readonly string[]): boolean;
  /**
   * The state read from the directory: `base` is what core read (the model, the tokenizer files, the project's
   * default optimizer settings without moments, zero progress). `close`, given, releases what it opened; core calls
   * it with the state's close().
   */
  read(base: TrainingState, dir: CheckpointDirectory): Promise<{ state: TrainingState; close?: () => Promise<void> }>;
  /** What a save of `state` in this format writes (checked before anything is written: a throw writes nothing). */
  contents(state: TrainingState, model: ModelToSave, options: SaveOptions): CheckpointContents;
}

export interface PluginKinds {
  architecture: ArchitecturePlugin;
  growth: GrowthPlugin<never>;
  scheduler: ScalingLawPlugin;
  lrSchedule: LrSchedulePlugin;
  trainer: TrainerPlugin;
  checkpointFormat: CheckpointFormatPlugin;
  growthTiming: GrowthTimingPlugin;
}
export type PluginKind = keyof PluginKinds;

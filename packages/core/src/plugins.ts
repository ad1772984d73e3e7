import type { Tensor } from "./tensor.js";
import type { ModelShape, TrainingState } from "./types.js";

/** What a parameter is for, independent of the architecture's names (DESIGN section 5). */
export type ParamRole =
  | "embed.tokens" | "embed.positions"
  | "norm.weight" | "norm.bias"
  | "attn.qkv.weight" | "attn.qkv.bias" | "attn.out.weight" | "attn.out.bias"
  | "mlp.in.weight" | "mlp.in.bias" | "mlp.out.weight" | "mlp.out.bias"
  | "final_norm.weight" | "final_norm.bias"
  | "lm_head.weight";

/**
 * How a parameter is stored: `conv1d` is GPT-2's Conv1D `[in, out]` (y = x W + b), `linear` is
 * torch's `[out, in]`, `embedding` is `[rows, dModel]`, `vector` is 1-D.
 */
export type ParamLayout = "conv1d" | "linear" | "embedding" | "vector";

export interface ParamSpec {
  name: string;
  role: ParamRole;
  /** Block index, or null for embeddings and the final norm. */
  layer: number | null;
  shape: number[];
  layout: ParamLayout;
  /** For fused projections, the parts along the output axis in order (GPT-2 c_attn: q, k, v). */
  fused?: readonly ("q" | "k" | "v")[];
  /** Whether AdamW decays it by default (2-D weights do, 1-D ones do not). */
  decay: boolean;
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
  /** Map a name found in a foreign checkpoint to the canonical one; null for buffers to ignore. */
  canonicalName(name: string): string | null;
  /** Deterministic fresh weights for a seed. */
  init(config: Record<string, unknown>, seed: number): Map<string, Tensor>;
}

/** A growth operator: a pure function of the training state and its options. */
export interface GrowthPlugin<O = Record<string, unknown>> {
  name: string;
  grow(state: TrainingState, options: O): TrainingState | Promise<TrainingState>;
  /** Whether these options keep the model's function (logits, loss) exactly. */
  lossPreserving(options: O): boolean;
}

/** A scaling law L(N, D) or L(N, S): loss from parameters and data. */
export interface ScalingLawPlugin {
  name: string;
  [member: string]: unknown;
}

/** LR schedule kind: a pure function of the step built from a serializable spec. */
export interface LrSchedulePlugin<S = Record<string, unknown>> {
  name: string;
  create(spec: S): (step: number) => number;
}

export interface TrainerPlugin {
  name: string;
  [member: string]: unknown;
}

export interface PluginKinds {
  architecture: ArchitecturePlugin;
  growth: GrowthPlugin<never>;
  scheduler: ScalingLawPlugin;
  lrSchedule: LrSchedulePlugin<never>;
  trainer: TrainerPlugin;
}
export type PluginKind = keyof PluginKinds;

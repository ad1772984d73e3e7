/** A fresh training state in memory, and what any state has: its architecture, its parameter count. */
import { createDefaultRegistry, type Registry } from "../registry.js";
import type { ArchitecturePlugin, ParamSpec } from "../plugins.js";
import type { AdamWState, LazyTensor, TrainingState } from "../types.js";
import type { Tensor } from "../tensor.js";

/** PyTorch AdamW's defaults, used when a checkpoint carries no optimizer settings. */
export const DEFAULT_ADAMW: Omit<AdamWState, "noDecay"> = {
  name: "adamw",
  lr: 1e-3,
  betas: [0.9, 0.999],
  eps: 1e-8,
  weightDecay: 0.01,
  step: 0,
};

/** AdamW at its defaults, with no moments yet, over these parameters (those that do not decay named in `noDecay`). */
export const freshAdamW = (specs: readonly ParamSpec[]): AdamWState => ({
  ...DEFAULT_ADAMW,
  betas: [...DEFAULT_ADAMW.betas],
  noDecay: specs.filter((p) => !p.decay).map((p) => p.name),
});

/** A state's architecture plugin, from the registry (default: the built-in architectures). */
export const architectureOf = (state: TrainingState, registry: Registry = createDefaultRegistry()): ArchitecturePlugin =>
  registry.get("architecture", state.architecture);

/** A LazyTensor over values already in memory. */
export const inMemory = (t: Tensor): LazyTensor => ({ dtype: t.dtype, shape: t.shape, read: async () => t });

/** A fresh state: initialized weights, no moments, zero progress. */
export function initTrainingState(
  architecture: string,
  config: Record<string, unknown>,
  seed: number,
  registry: Registry = createDefaultRegistry(),
): TrainingState {
  const arch = registry.get("architecture", architecture);
  const parsed = arch.parseConfig(config);
  const weights = arch.init(parsed.config, seed);
  const specs = arch.params(parsed.config);
  return {
    architecture: arch.name,
    config: arch.withShape(parsed.config, parsed.shape),
    shape: parsed.shape,
    params: new Map([...weights].map(([n, t]) => [n, inMemory(t)])),
    optimizer: freshAdamW(specs),
    schedule: null,
    progress: { step: 0, tokensSeen: 0, flopsSeen: 0, samplerSeed: seed, stages: [] },
    tokenizer: { kind: "bytes" },
  };
}

/** Count of distinct trainable values (a tied output layer once, buffers never). */
export const parameterCount = (state: TrainingState): number =>
  [...state.params.values()].reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);

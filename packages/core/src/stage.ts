import type { LazyTensor, ModelShape, Progress, StageRecord, TrainingState } from "./types.js";
import { PIECE_BYTES, Tensor, blockLayoutBytes, blockLayoutPieces, numel, zeroPieces, type BlockLayout } from "./tensor.js";
import { DTYPE_SIZES, type DType } from "./dtype.js";
import { deriveSeed } from "./rng.js";

/** Optimizer updates over the whole run, all stages together (Progress.globalStep; absent, it equals `step`). */
export const globalStepOf = (p: Progress): number => p.globalStep ?? p.step;

/** Options every growth operator shares: how the run continues after the growth. */
export interface StageOptions {
  /** LR re-warmup steps after the growth (0: no restart). */
  rewarmup?: number;
  /**
   * The step the grown model continues from (default: unchanged): the paper's S_before / constant_op, the grown
   * model placed on the larger model's curve at equal loss (docs/ARCHITECTURE.md).
   */
  continueAt?: number;
  /**
   * The grown model's peak LR (and minimum LR) is the small model's × lrScale. Default: the operator's
   * (width growth: 1/factor, depth: 1), the setting that removed the post-growth loss rise in the ablation of
   * @staged/run's README: with Adam, a matrix whose input dimension grew k-fold by copies changes the function
   * k times faster at the same LR (the μP argument).
   */
  lrScale?: number;
  /**
   * Which parameters lrScale applies to: "all" (default), or "fanIn", only the matrices whose input dimension
   * the growth multiplied (μP's rule for Adam; the operator says which: width growth's hidden and output
   * matrices, none for depth growth).
   */
  lrScaleParams?: LrScaleParams;
  /** Steps over which the scale returns linearly to 1 after the growth (default 0: it stays). */
  lrRamp?: number;
}

export type LrScaleParams = "all" | "fanIn";
export const LR_SCALE_PARAMS: readonly LrScaleParams[] = ["all", "fanIn"];

/** How a derived tensor's stored bytes are computed (see LazyTensor.readBytes / streamBytes). */
export interface StoredBytesOf {
  readBytes?: () => Promise<Uint8Array>;
  streamBytes?: (buffer?: (bytes: number) => Uint8Array) => AsyncIterable<Uint8Array>;
}

/**
 * A LazyTensor computed on demand from other lazy tensors, so growth streams one output at a time. `stored`: how its
 * stored bytes are computed without decoding, where they can be (they must equal what writing read()'s values stores).
 */
export const derived = (
  dtype: LazyTensor["dtype"],
  shape: readonly number[],
  compute: () => Promise<Tensor>,
  stored: StoredBytesOf = {},
): LazyTensor => {
  const t: LazyTensor = { dtype, shape: [...shape], read: compute };
  return Object.assign(t, stored.readBytes ? { readBytes: stored.readBytes } : {}, stored.streamBytes ? { streamBytes: stored.streamBytes } : {});
};

/**
 * Each tensor of `tensors` with its values mapped elementwise (`f(value, index)`) and stored as `dtype` (default: its
 * own dtype): lazy, one tensor read at a time. E.g. AdamW moments derived from the weights, or a checkpoint retyped.
 */
export function mapValues(tensors: ReadonlyMap<string, LazyTensor>, f: (v: number, i: number) => number, dtype?: DType): Map<string, LazyTensor> {
  return new Map(
    [...tensors].map(([name, t]) => {
      const to = dtype ?? t.dtype;
      return [name, derived(to, t.shape, async () => new Tensor(to, t.shape, (await t.read()).f32.map(f)))];
    }),
  );
}

/** Whether every one of these tensors has its stored bytes (so growth can copy them instead of decoding). */
export const haveStoredBytes = (...ts: LazyTensor[]): boolean => ts.every((t) => typeof t.readBytes === "function");

/** A tensor of zeros: values, or stored bytes (all zero in every dtype) without a float32 array. */
export const zerosTensor = (dtype: LazyTensor["dtype"], shape: readonly number[]): LazyTensor => {
  const bytes = numel(shape) * DTYPE_SIZES[dtype];
  return derived(dtype, shape, async () => Tensor.zeros(dtype, shape), {
    readBytes: async () => new Uint8Array(bytes),
    streamBytes: () => toAsync(zeroPieces(bytes)),
  });
};

async function* toAsync<T>(it: Iterable<T>): AsyncGenerator<T> {
  yield* it;
}

/**
 * A tensor laid out from blocks of stored bytes (tiles, block matrices: see BlockLayout): `sources()` gives them (read
 * once per computation), `compute` the same tensor as values. Its stored bytes come in pieces of whole rows, so a writer
 * holds the sources and one piece, never the whole result.
 */
export function laidOut(
  dtype: LazyTensor["dtype"],
  shape: readonly number[],
  compute: () => Promise<Tensor>,
  sources: () => Promise<Uint8Array[]>,
  layout: BlockLayout,
): LazyTensor {
  const size = DTYPE_SIZES[dtype];
  const want = numel(shape) * size;
  const got = layout.rowBands * layout.rows * layout.colBands * layout.cols * size;
  if (got !== want) throw new Error(`laidOut: the layout makes ${got} bytes, [${shape.join(", ")}] ${dtype} is ${want}`);
  return derived(dtype, shape, compute, {
    readBytes: async () => blockLayoutBytes(await sources(), size, layout),
    streamBytes: async function* (buffer?: (bytes: number) => Uint8Array) {
      yield* blockLayoutPieces(await sources(), size, layout, PIECE_BYTES, buffer);
    },
  });
}

export function checkStageOptions(o: StageOptions, state: TrainingState): void {
  for (const key of ["rewarmup", "continueAt", "lrRamp"] as const) {
    const v = o[key];
    if (v !== undefined && !(Number.isInteger(v) && v >= 0)) throw new Error(`${key} must be an integer ≥ 0, got ${v}`);
  }
  if (o.lrScale !== undefined && !(typeof o.lrScale === "number" && Number.isFinite(o.lrScale) && o.lrScale > 0)) {
    throw new Error(`lrScale must be a number > 0, got ${o.lrScale}`);
  }
  if (o.lrScaleParams !== undefined && !LR_SCALE_PARAMS.includes(o.lrScaleParams)) {
    throw new Error(`lrScaleParams must be one of ${LR_SCALE_PARAMS.join(", ")}, got ${JSON.stringify(o.lrScaleParams)}`);
  }
  const total = state.schedule?.totalSteps;
  if (o.continueAt !== undefined && total !== undefined && o.continueAt > total) {
    throw new Error(`continueAt ${o.continueAt} is past the schedule's last step ${total}`);
  }
}

/**
 * The non-tensor part of a growth: new config and shape, the optimizer step (restarted with reset
 * moments, whose bias correction must start over), the LR restart and a stages record.
 */
/**
 * The state without what a loaded one adds (its `source` directory, its `lock`, `close`): a derived state
 * belongs to no directory, so nothing (a trainer saving "where the state came from") can overwrite its input
 * with it. Its tensors may still read from the input's files until that is closed.
 */
export function detachedState(state: TrainingState): TrainingState {
  const { source: _s, lock: _l, close: _c, ...plain } = state as TrainingState & { source?: unknown; lock?: unknown; close?: unknown };
  return plain;
}

/** The state after a growth (see detachedState: it has no source directory). */
export function grownState(
  state: TrainingState,
  grown: {
    operator: string;
    options: Record<string, unknown>;
    config: Record<string, unknown>;
    shape: ModelShape;
    params: Map<string, LazyTensor>;
    expAvg?: Map<string, LazyTensor>;
    expAvgSq?: Map<string, LazyTensor>;
    resetMoments: boolean;
    stage: StageOptions;
    /** The operator's LR scale when stage.lrScale is not given (default 1). */
    defaultLrScale?: number;
    /** Parameter names excluded from weight decay after the growth (default: unchanged). */
    noDecay?: string[];
    /** Roles of the matrices whose input dimension the growth multiplied (lrScaleParams "fanIn"); default none. */
    fanInRoles?: string[];
  },
): TrainingState {
  const step = grown.stage.continueAt ?? state.progress.step;
  const lrScale = grown.stage.lrScale ?? grown.defaultLrScale ?? 1;
  const which = grown.stage.lrScaleParams ?? "all";
  const ramp = grown.stage.lrRamp ?? 0;
  const record: StageRecord = {
    step: state.progress.step,
    operator: grown.operator,
    options: { ...grown.options, lrScale, ...(which === "all" ? {} : { lrScaleParams: which }), ...(ramp > 0 ? { lrRamp: ramp } : {}) },
    before: state.shape,
    after: grown.shape,
    continueAt: step,
  };
  const rewarmup = grown.stage.rewarmup ?? 0;
  // A state without a schedule (fresh, or a pretrained checkpoint) gets the trainer's default, a constant LR,
  // so that the re-warmup and the LR scale are not lost.
  const base = state.schedule ?? { kind: "constant", peakLr: state.optimizer.lr, warmupSteps: 0, totalSteps: Math.max(step, 1), restarts: [] };
  // A permanent scale of every parameter is a new peak LR; one that ramps back or spares some parameters is a
  // per-parameter factor of the schedule (ParamLrScale).
  const perParam = which !== "all" || ramp > 0;
  const peakScale = perParam ? 1 : lrScale;
  const scaled =
    lrScale === 1
      ? base
      : perParam
        ? {
            ...base,
            paramScales: [
              ...(base.paramScales ?? []),
              { step, scale: lrScale, rampSteps: ramp, roles: which === "all" ? null : [...(grown.fanInRoles ?? [])] },
            ],
          }
        : { ...base, peakLr: base.peakLr * lrScale, ...(base.minLr === undefined ? {} : { minLr: base.minLr * lrScale }) };
  const schedule =
    rewarmup > 0 ? { ...scaled, restarts: [...scaled.restarts, { step, warmupSteps: rewarmup }] } : lrScale !== 1 ? scaled : state.schedule;
  const { expAvg: _a, expAvgSq: _b, ...optimizer } = state.optimizer;
  const hasMoments = Boolean(grown.expAvg && grown.expAvgSq);
  return {
    ...detachedState(state),
    config: grown.config,
    shape: grown.shape,
    params: grown.params,
    optimizer: {
      ...optimizer,
      lr: optimizer.lr * peakScale,
      step: grown.resetMoments ? 0 : state.optimizer.step,
      noDecay: grown.noDecay ?? optimizer.noDecay,
      ...(hasMoments ? { expAvg: grown.expAvg, expAvgSq: grown.expAvgSq } : {}),
    },
    schedule,
    progress: {
      ...state.progress,
      step,
      stages: [...state.progress.stages, record],
      globalStep: globalStepOf(state.progress),
      // Continuing at an earlier step must not replay the random batches the small model saw there
      // (the sequential sampler is defined by the step alone, so it does replay them).
      ...(step < state.progress.step ? { samplerSeed: deriveSeed(state.progress.samplerSeed, `stage:${state.progress.stages.length + 1}`) } : {}),
    },
  };
}

import { Rng, deriveSeed } from "@staged/core";

export type SamplerKind = "random" | "sequential";
export const SAMPLER_KINDS: readonly SamplerKind[] = ["random", "sequential"];

/**
 * Chooses the batch of each step: `batch(s)` is B blocks of T tokens, row-major (B·T ids), and depends
 * only on the stream, the settings and s (the number of steps taken before it, 0 for the first), so a
 * resumed run sees exactly the batches it would have seen.
 */
export interface Sampler {
  readonly kind: SamplerKind;
  readonly batchSize: number;
  readonly context: number;
  /** The ids of step s; written into `out` when given (length B·T). */
  batch(step: number, out?: Int32Array): Int32Array;
  /** Start offsets in the stream of the B blocks of step s. */
  offsets(step: number): number[];
}

export interface SamplerOptions {
  batch: number;
  context: number;
  seed: number;
}

/**
 * `random`: each block starts at a uniform offset in [0, n − T], drawn by `Rng(deriveSeed(seed, "step:" + s))`.
 * `sequential`: the stream is cut into ⌊n / T⌋ consecutive non-overlapping blocks; step s takes blocks
 * s·B, ..., s·B + B − 1, modulo the number of blocks (wrapping around).
 */
export function createSampler(kind: SamplerKind, tokens: Int32Array, o: SamplerOptions): Sampler {
  const { batch: B, context: T, seed } = o;
  if (!Number.isInteger(B) || B < 1) throw new Error(`batch must be a positive integer, got ${B}`);
  if (!Number.isInteger(T) || T < 2) throw new Error(`context must be an integer ≥ 2, got ${T}`);
  const n = tokens.length;
  if (n < T) throw new Error(`${n} tokens, shorter than one block of ${T} tokens`);
  let offsets: (step: number) => number[];
  if (kind === "random") {
    const span = n - T + 1;
    offsets = (s) => {
      const rng = new Rng(deriveSeed(seed, `step:${s}`));
      return Array.from({ length: B }, () => rng.int(span));
    };
  } else if (kind === "sequential") {
    const blocks = Math.floor(n / T);
    offsets = (s) => Array.from({ length: B }, (_, i) => ((s * B + i) % blocks) * T);
  } else {
    throw new Error(`unknown sampler "${String(kind)}" (expected ${SAMPLER_KINDS.join(" or ")})`);
  }
  return {
    kind,
    batchSize: B,
    context: T,
    offsets,
    batch(step, out = new Int32Array(B * T)) {
      if (!Number.isInteger(step) || step < 0) throw new Error(`step must be a non-negative integer, got ${step}`);
      if (out.length !== B * T) throw new Error(`batch buffer has ${out.length} ids, expected ${B * T}`);
      offsets(step).forEach((at, i) => out.set(tokens.subarray(at, at + T), i * T));
      return out;
    },
  };
}

/**
 * The evaluation blocks of a stream: consecutive non-overlapping blocks of T tokens (a last partial
 * block dropped), the first `maxBlocks` of them when given.
 */
export function evalBlockCount(tokens: number, context: number, maxBlocks?: number): number {
  const all = Math.floor(tokens / context);
  return maxBlocks === undefined ? all : Math.min(all, maxBlocks);
}

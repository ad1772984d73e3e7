import ort from "onnxruntime-node";
import { Rng } from "@staged/core";
import type { DropoutInput } from "./step.js";

/** Keyed dropout masks for the `dropout.*` inputs of one compiled training graph (CompiledGraph.dropout). */
export interface DropoutMasks {
  /** Whether the graph has any (none when every probability is 0). */
  readonly active: boolean;
  /**
   * The masks of stream (key, index), e.g. a step's key and its micro-batch: drawn in the graph's input order
   * from Rng.keyed(key, index), each entry 0 with probability p, else 1/(1 − p). A function of the key, the
   * index and the graph's sites alone, so a resumed run and one at another thread count draw the same.
   * The feeds' buffers are reused by the next call.
   */
  draw(key: number, index: number): Record<string, ort.Tensor>;
  /** Masks of ones: the graph computes the function without dropout. */
  ones(): Record<string, ort.Tensor>;
}

export function dropoutMasks(inputs: readonly DropoutInput[]): DropoutMasks {
  const size = (d: DropoutInput) => d.shape.reduce((a, b) => a * b, 1);
  const masks = inputs.map((d) => ({ d, data: new Float32Array(size(d)) }));
  const feeds = Object.fromEntries(masks.map((m) => [m.d.input, new ort.Tensor("float32", m.data, m.d.shape)]));
  let ones: Record<string, ort.Tensor> | null = null;
  return {
    active: inputs.length > 0,
    draw(key, index) {
      if (!Number.isSafeInteger(key) || key < 0) throw new Error(`dropout key must be a safe integer ≥ 0, got ${key}`);
      const rng = Rng.keyed(key, index);
      for (const { d, data } of masks) {
        if (!d.causal) {
          rng.fillDropout(data, d.p);
          continue;
        }
        // Causal attention probabilities: row i of each T×T block is 0 past column i, whatever the mask; only
        // the entries on and below the diagonal are drawn (the rest stay 0), half the work.
        const T = d.shape[d.shape.length - 1]!;
        for (let row = 0, start = 0; start < data.length; row++, start += T) rng.fillDropout(data, d.p, start, start + (row % T) + 1);
      }
      return feeds;
    },
    ones() {
      ones ??= Object.fromEntries(inputs.map((d) => [d.input, new ort.Tensor("float32", new Float32Array(size(d)).fill(1), d.shape)]));
      return ones;
    },
  };
}

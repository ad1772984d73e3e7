import type { ModelShape, ParamSpec, ResolvedDecoder } from "@staged/core";
import type { GraphBuilder, Value } from "../graph/builder.js";

/**
 * A place where the training graph applies dropout (DecoderSpec.dropout): its name (unique in the graph), kind,
 * layer and probability p > 0; `causal` for the attention probabilities [B, H, T, T], of which only the entries
 * on and below the diagonal of the last two axes are not 0.
 */
export interface DropoutSite {
  name: string;
  kind: "embedding" | "attention" | "residual";
  layer: number | null;
  p: number;
  causal: boolean;
}

/** Applies dropout to x at a site and returns the result (step.ts: x times a mask fed as a graph input). */
export type ApplyDropout = (x: Value, site: DropoutSite) => Value;

/**
 * The KV cache of an inference graph (@staged/export): what makes its forward pass differ from the training one.
 * Values have the dynamic axes of the graph's inputs (ids [B, T] with T new tokens; Tk = past + T keys).
 */
export interface KvCache {
  /** Position ids [B, T] (int64): the learned positions and the rotary tables are read at them. */
  positions: Value;
  /** The additive attention bias (float32), broadcast to the scores [B, H, T, Tk]: replaces the causal mask. */
  bias: Value;
  /** The keys and values block `layer` attends to ([B, KV, Tk, hd]: the past, then the new `k` and `v`). */
  attend(layer: number, k: Value, v: Value): { k: Value; v: Value };
}

/**
 * The type the matrices and activations are computed in (mixed precision: float16, from float32 parameters cast
 * where they are used; norms, the softmax and the loss stay float32).
 */
export type ComputeType = "float32" | "float16";

/** The forward graph of one architecture: the generic decoder built from its plugin (modelGraph, decoderGraph). */
export interface ModelGraph {
  readonly architecture: string;
  /** Trainable parameters in canonical order (from the architecture plugin of @staged/core). */
  params(config: Record<string, unknown>): ParamSpec[];
  shape(config: Record<string, unknown>): ModelShape;
  /**
   * Logits [B, T, vocab] for int64 ids [B, T]; `p` returns the graph value of a parameter. With `cache`, the
   * same forward pass with a KV cache (the export's inference graph); `decoder`: `config` already resolved by the
   * caller (@staged/core's resolveDecoder), not resolved again.
   */
  logits(
    b: GraphBuilder,
    config: Record<string, unknown>,
    p: (name: string) => Value,
    ids: Value,
    options?: { cache?: KvCache; decoder?: ResolvedDecoder },
  ): Value;
  /**
   * Scalar mean next-token cross-entropy over the B·(T−1) predictions inside the blocks. With `dropout` (the
   * training graphs), it is called at every site whose probability is above 0; without it (evaluation), the
   * graph has no dropout. `computeType` float16: mixed precision (ComputeType).
   */
  loss(
    b: GraphBuilder,
    config: Record<string, unknown>,
    p: (name: string) => Value,
    ids: Value,
    options?: { dropout?: ApplyDropout; computeType?: ComputeType },
  ): Value;
}

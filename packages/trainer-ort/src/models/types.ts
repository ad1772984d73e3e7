import type { ModelShape, ParamSpec } from "@staged/core";
import type { GraphBuilder, Value } from "../graph/builder.js";

/** The forward graph of one architecture: the generic decoder built from its plugin (modelGraph, decoderGraph). */
export interface ModelGraph {
  readonly architecture: string;
  /** Trainable parameters in canonical order (from the architecture plugin of @staged/core). */
  params(config: Record<string, unknown>): ParamSpec[];
  shape(config: Record<string, unknown>): ModelShape;
  /** Logits [B, T, vocab] for int64 ids [B, T]; `p` returns the graph value of a parameter. */
  logits(b: GraphBuilder, config: Record<string, unknown>, p: (name: string) => Value, ids: Value): Value;
  /** Scalar mean next-token cross-entropy over the B·(T−1) predictions inside the blocks. */
  loss(b: GraphBuilder, config: Record<string, unknown>, p: (name: string) => Value, ids: Value): Value;
}

import type { ModelShape } from "@staged/core";

/**
 * Matrix (weight) parameters of a decoder-only transformer, embeddings' lookup excluded:
 * per layer 4·d² (attention q, k, v and output projections) + 2·d·ffn (MLP in and out), plus the output
 * layer vocab·d (a matrix multiply per token even when tied to the token embedding). Biases and norms are
 * left out, as in Kaplan et al. 2020.
 */
export function matrixParams(shape: ModelShape): number {
  const { layers, dModel: d, ffn, vocab } = shape;
  return layers * (4 * d * d + 2 * d * ffn) + vocab * d;
}

/**
 * Non-embedding parameters in Kaplan's sense, `N = layers·(4·d² + 2·d·ffn)` (= 12·layers·d² when ffn = 4d):
 * the N of the scaling laws. The output layer is not counted.
 */
export function nonEmbeddingParams(shape: ModelShape): number {
  const { layers, dModel: d, ffn } = shape;
  return layers * (4 * d * d + 2 * d * ffn);
}

export interface FlopsOptions {
  /**
   * How the attention scores are counted. "kaplan" (default): Kaplan et al. 2020, Table 1, forward
   * 2·layers·context·d per token. "full": QKᵀ and the attention-weighted sum of V both counted without the
   * causal halving, forward 4·layers·context·d per token (as Hoffmann et al. 2022, Appendix F).
   */
  attention?: "kaplan" | "full";
}

/**
 * Training FLOPs per token (forward + backward = 3 × forward) of a model with this shape at this context:
 *
 *   flopsPerToken = 6·N_matrix + 6·layers·context·d
 *
 * where N_matrix = layers·(4·d² + 2·d·ffn) + vocab·d ({@link matrixParams}): every matrix parameter costs 2
 * FLOPs forward (a multiply and an add) and 4 backward, and the attention term is Kaplan's forward
 * 2·n_layer·n_ctx·d_attn per token times 3 for training. With `{attention: "full"}` the attention term is
 * 12·layers·context·d instead. Used wherever compute is counted (C = flopsPerToken · tokens).
 */
export function flopsPerToken(shape: ModelShape, context: number, options: FlopsOptions = {}): number {
  for (const k of ["layers", "dModel", "ffn", "vocab"] as const) {
    const v = shape?.[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
      throw new Error(`flopsPerToken: shape.${k} must be a positive integer, got ${JSON.stringify(v)}`);
    }
  }
  if (typeof context !== "number" || !Number.isInteger(context) || context < 1) {
    throw new Error(`flopsPerToken: context must be a positive integer, got ${JSON.stringify(context)}`);
  }
  const attention = options.attention ?? "kaplan";
  if (attention !== "kaplan" && attention !== "full") {
    throw new Error(`flopsPerToken: attention must be "kaplan" or "full", got ${JSON.stringify(attention)}`);
  }
  const perLayerAttention = (attention === "kaplan" ? 2 : 4) * shape.layers * context * shape.dModel;
  return 6 * matrixParams(shape) + 3 * perLayerAttention;
}

import type { ModelShape } from "@staged/core";

/**
 * Weights of one block's matrices: q and o projections d·(heads·headDim) each, k and v d·(kvHeads·headDim)
 * each (grouped-query attention), and the MLP's 2·d·ffn (3·d·ffn for a gated MLP: gate, in, out). For
 * GPT-2 (heads·headDim = d, kvHeads = heads, not gated) 4·d² + 2·d·ffn. Everything comes from the shape.
 */
export function blockMatrixParams(shape: ModelShape): number {
  const { dModel: d, ffn } = shape;
  const q = attentionWidth(shape),
    kv = shape.kvHeads === undefined ? q : shape.kvHeads * shape.headDim;
  return 2 * d * q + 2 * d * kv + (shape.gatedMlp ? 3 : 2) * d * ffn;
}

/** heads·headDim, the width of attention (d where a partial shape does not say). */
const attentionWidth = (shape: ModelShape): number =>
  Number.isInteger(shape.heads) && Number.isInteger(shape.headDim) ? shape.heads * shape.headDim : shape.dModel;

/**
 * Matrix (weight) parameters of a decoder-only transformer, embeddings' lookup excluded: every block's
 * matrices ({@link blockMatrixParams}) plus the output layer vocab·d (a matrix multiply per token even when
 * tied to the token embedding). Biases and norms are left out, as in Kaplan et al. 2020.
 */
export function matrixParams(shape: ModelShape): number {
  return shape.layers * blockMatrixParams(shape) + shape.vocab * shape.dModel;
}

/**
 * Non-embedding parameters in Kaplan's sense, the blocks' matrices (= 12·layers·d² for GPT-2 with ffn = 4d):
 * the N of the scaling laws. The output layer is not counted.
 */
export function nonEmbeddingParams(shape: ModelShape): number {
  return shape.layers * blockMatrixParams(shape);
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
 * where N_matrix = layers·(4·d² + 2·d·ffn) + vocab·d for GPT-2 ({@link matrixParams}: GQA and gated MLPs
 * counted as they are): every matrix parameter costs 2 FLOPs forward (a multiply and an add) and 4 backward,
 * and the attention term is Kaplan's forward 2·n_layer·n_ctx·d_attn per token (d_attn = heads·headDim) times 3
 * for training. With `{attention: "full"}` the attention term is
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
  // Scores and their weighted sum run over the query heads' width, heads·headDim (= d for GPT-2).
  const perLayerAttention = (attention === "kaplan" ? 2 : 4) * shape.layers * context * attentionWidth(shape);
  return 6 * matrixParams(shape) + 3 * perLayerAttention;
}

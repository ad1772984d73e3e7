import { gpt2 as plugin } from "@staged/core";
import type { GraphBuilder, Value } from "../graph/builder.js";
import type { ModelGraph } from "./types.js";

/** HF activations equal to 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))). */
const TANH_GELUS = new Set(["gelu_new", "gelu_pytorch_tanh", "gelu_fast"]);

/**
 * GPT2LMHeadModel's forward pass, as HF computes it (no dropout): token + position embeddings;
 * per block ln_1 → fused c_attn → causal softmax(q·kᵀ/√d_head)·v → c_proj, residual, ln_2 → c_fc →
 * gelu_new → c_proj, residual; ln_f; logits against wte (or an untied lm_head.weight).
 * Activations are kept 2-D ([B·T, d]) so every Conv1D is one Gemm with its bias.
 */
function hidden(b: GraphBuilder, config: Record<string, unknown>, p: (name: string) => Value, ids: Value): Value {
  const { config: c, shape: s } = plugin.parseConfig(config);
  const eps = c.layer_norm_epsilon as number;
  const [B, T] = ids.shape as [number, number];
  if (T > s.context) throw new Error(`context ${T} exceeds n_positions ${s.context}`);
  const { dModel: d, heads: H, headDim: hd } = s;
  const N = B * T;

  const tok = b.gather(p("transformer.wte.weight"), ids, 0); // [B, T, d]
  const pos = b.slice(p("transformer.wpe.weight"), [0], [T], [0]); // [T, d]
  let h = b.reshape(b.add(tok, pos), [N, d]);

  // Additive causal mask: 0 on and below the diagonal, a large negative above (softmax gives exact zeros).
  const mask = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) mask[i * T + j] = -1e9;
  const maskValue = b.initializer("causal_mask", "float32", [T, T], mask);
  const act = String(c.activation_function);
  if (!TANH_GELUS.has(act)) throw new Error(`gpt2: activation_function "${act}" is not supported (supported: ${[...TANH_GELUS].join(", ")})`);
  if (c.reorder_and_upcast_attn === true) throw new Error("gpt2: reorder_and_upcast_attn is not supported");

  for (let l = 0; l < s.layers; l++) {
    const q_ = (n: string) => p(`transformer.h.${l}.${n}`);
    const a = b.layerNorm(h, q_("ln_1.weight"), q_("ln_1.bias"), eps).y;
    const qkv = b.gemm(a, q_("attn.c_attn.weight"), q_("attn.c_attn.bias"));
    // One transpose to [3, B, H, T, hd], then contiguous splits: cheaper than splitting columns.
    const parts = b.transpose(b.reshape(qkv, [B, T, 3, H, hd]), [2, 0, 3, 1, 4]);
    const [q, k, v] = b.split(parts, 0, [1, 1, 1]).map((x) => b.reshape(x, [B, H, T, hd]));
    // Scaling q (B·T·d values) rather than the scores (B·H·T·T) gives the same softmax input.
    // HF: scores / √d_head (scale_attn_weights), and / (layer + 1) with scale_attn_by_inverse_layer_idx.
    const scale = (c.scale_attn_weights === false ? 1 : 1 / Math.sqrt(hd)) / (c.scale_attn_by_inverse_layer_idx === true ? l + 1 : 1);
    const qh = scale === 1 ? q! : b.mul(q!, scale);
    // MatMul of a last-two-axes Transpose: onnxruntime fuses it into FusedMatMul(transB) without a copy.
    const probs = b.softmax(b.add(b.matmul(qh, b.transpose(k!, [0, 1, 3, 2])), maskValue), -1);
    const ctx = b.reshape(b.transpose(b.matmul(probs, v!), [0, 2, 1, 3]), [N, d]);
    h = b.add(h, b.gemm(ctx, q_("attn.c_proj.weight"), q_("attn.c_proj.bias")));

    const m = b.layerNorm(h, q_("ln_2.weight"), q_("ln_2.bias"), eps).y;
    const f = b.gemm(m, q_("mlp.c_fc.weight"), q_("mlp.c_fc.bias"));
    h = b.add(h, b.gemm(b.fastGelu(f), q_("mlp.c_proj.weight"), q_("mlp.c_proj.bias")));
  }
  return b.layerNorm(h, p("transformer.ln_f.weight"), p("transformer.ln_f.bias"), eps).y; // [N, d]
}

/** HF gelu_new from standard ops (the model uses the equal, fused FastGelu; this is the portable form). */
export function geluNew(b: GraphBuilder, x: Value): Value {
  const inner = b.mul(b.add(x, b.mul(b.mul(b.mul(x, x), x), 0.044715)), Math.sqrt(2 / Math.PI));
  return b.mul(b.mul(x, 0.5), b.add(b.tanh(inner), 1));
}

const outputWeight = (config: Record<string, unknown>, p: (name: string) => Value) =>
  p(config.tie_word_embeddings === false ? "lm_head.weight" : "transformer.wte.weight");

export const gpt2: ModelGraph = {
  architecture: "gpt2",
  params: (config) => plugin.params(plugin.parseConfig(config).config),
  shape: (config) => plugin.parseConfig(config).shape,

  logits(b, config, p, ids) {
    const h = hidden(b, config, p, ids);
    const [B, T] = ids.shape as [number, number];
    const logits = b.gemm(h, outputWeight(config, p), null, { transB: true });
    return b.reshape(logits, [B, T, logits.shape[1]!]);
  },

  loss(b, config, p, ids) {
    const [B, T] = ids.shape as [number, number];
    if (T < 2) throw new Error("the loss needs blocks of at least 2 tokens");
    const h = hidden(b, config, p, ids);
    const logits = b.gemm(h, outputWeight(config, p), null, { transB: true }); // [B·T, V]
    // Position t predicts token t+1; the last position of each block predicts nothing: its target is a
    // dummy 0 with weight 0. (Masking costs less than slicing the activations, a strided copy.)
    const next = b.concat([b.slice(ids, [1], [T], [1]), b.zeros([B, 1], "int64")], 1);
    const picked = b.gatherElements(b.logSoftmax(logits, 1), b.reshape(next, [B * T, 1]), 1); // [B·T, 1]
    const weight = new Float32Array(B * T).map((_, i) => (i % T === T - 1 ? 0 : -1 / (B * (T - 1))));
    return b.reduceSum(b.mul(picked, b.initializer("loss_weight", "float32", [B * T, 1], weight)), [0, 1], false);
  },
};

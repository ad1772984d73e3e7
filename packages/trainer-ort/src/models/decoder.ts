import type { ArchitecturePlugin, Norm, Projection, ResolvedDecoder } from "@staged/core";
import { resolveDecoder, rotaryTables } from "@staged/core";
import type { GraphBuilder, Value } from "../graph/builder.js";
import type { ApplyDropout, ComputeType, DropoutSite, KvCache, ModelGraph } from "./types.js";

/**
 * RMSNorm (HF LlamaRMSNorm): x / √(mean(x²) + eps) · w over the last axis, from standard ops. `fused`: the form
 * onnxruntime's inference fuses into one kernel (x / √(mean(x^2) + eps)); else one reciprocal per row, then a
 * multiply: cheaper, forward and backward, than dividing every element.
 */
export function rmsNorm(b: GraphBuilder, x: Value, w: Value, eps: number, fused = false): Value {
  if (fused) return b.mul(b.div(x, b.sqrt(b.add(b.reduceMean(b.pow(x, 2), [-1]), eps))), w);
  const inv = b.div(1, b.sqrt(b.add(b.reduceMean(b.mul(x, x), [-1]), eps)));
  return b.mul(b.mul(x, inv), w);
}

/** SiLU (HF's "silu"): x · σ(x). */
export const silu = (b: GraphBuilder, x: Value): Value => b.mul(x, b.sigmoid(x));

/**
 * HF gelu_new from standard ops, with x³ as a Pow as PyTorch exports it (the form onnxruntime fuses into one kernel):
 * the inference graph's; the training graph uses the equal, fused FastGelu (an onnxruntime contrib op).
 */
export function geluNew(b: GraphBuilder, x: Value): Value {
  const inner = b.mul(b.add(x, b.mul(b.pow(x, 3), 0.044715)), Math.sqrt(2 / Math.PI));
  return b.mul(b.mul(x, 0.5), b.add(b.tanh(inner), 1));
}

/**
 * The hidden states [B·T, d] after the final norm, for any pre-norm decoder the plugin describes: embeddings
 * (+ learned positions); per block h += attn(norm(h)), h += mlp(norm(h)); the final norm. Activations stay
 * 2-D so that every projection is one Gemm with its bias. GPT-2 (HF GPT2LMHeadModel) builds the same nodes
 * the hand-written graph did: LayerNormalization, the fused c_attn split by one transpose, q scaled instead
 * of the scores, FastGelu. The Llama family (HF modeling_llama.py, modeling_mistral.py, modeling_qwen2.py):
 * RMSNorm, rotary q and k, grouped-query attention without repeating k and v, SwiGLU. With `dropout` (the
 * training graphs), dropout where HF's modeling code applies it: on the embeddings, on the attention
 * probabilities, and on each block's attention and MLP outputs before their residual adds (sites of p 0 skipped).
 *
 * With `cache` (the inference graph of @staged/export, dynamic batch and sequence axes), the same pass reads the
 * positions from `cache.positions`, masks with `cache.bias` instead of the causal mask, attends to the keys and
 * values `cache.attend` returns (past ‖ new), and uses standard operators only (gelu_new, RMSNorm in the forms
 * onnxruntime fuses). Parameters may then be float16 (the compute type, that of the token embedding): norms and
 * the softmax run in float32 (norm weights are float32), the rest in float16.
 */
function hidden(
  b: GraphBuilder,
  m: ResolvedDecoder,
  p: (name: string) => Value,
  ids: Value,
  dropout?: ApplyDropout,
  cache?: KvCache,
  computeType?: ComputeType,
) {
  const { shape: s, spec, need } = m;
  const B = ids.dims[0]!,
    T = ids.dims[1]!;
  const { dModel: d, heads: H, headDim: hd } = s;
  const KV = m.kvHeads;
  if (!cache) m.checkContext(ids.shape[1]!);

  // Dropout where HF applies it (DecoderSpec.dropout), only when asked (the training graphs) and p > 0.
  const rates = spec.dropout;
  const drop = (x: Value, kind: DropoutSite["kind"], layer: number | null, name: string): Value => {
    const rate = rates?.[kind] ?? 0;
    if (!dropout || !(rate > 0)) return x;
    return dropout(x, { name, kind, layer, p: rate, causal: kind === "attention" });
  };

  const embedding = p(need("embed.tokens", null).name);
  // The compute type: the caller's (mixed precision: float32 parameters cast to float16 where used), else the
  // token embedding's (an export's stored type). Norms and the softmax run in float32 either way.
  const ct = computeType ?? embedding.dtype;
  const project = (x: Value, part: Projection, layer: number): Value => {
    const { weight, bias } = m.projection(part, layer);
    return b.gemm(x, b.cast(p(weight.spec.name), ct), bias ? b.cast(p(bias.name), ct) : null, weight.transB ? { transB: true } : {});
  };
  const norm = (x: Value, part: Norm, layer: number | null): Value => {
    const { weight, bias } = m.norm(part, layer);
    const xf = b.cast(x, "float32"),
      w = p(weight.name);
    const y =
      spec.norm.kind === "layernorm"
        ? b.layerNorm(xf, w, bias ? p(bias.name) : null, spec.norm.eps).y
        : rmsNorm(b, xf, w, spec.norm.eps, cache !== undefined);
    return b.cast(y, ct);
  };

  // The lookup in the table's own type (its gradient is summed there), then cast: PyTorch autocast's embedding.
  const tok = b.cast(b.gather(embedding, ids, 0), ct); // [B, T, d]
  let h: Value;
  if (spec.positions.kind === "learned") {
    const table = b.cast(p(need("embed.positions", null).name), ct);
    h = b.reshape(b.add(tok, cache ? b.gather(table, cache.positions, 0) : b.slice(table, [0], [ids.shape[1]!], [0])), [-1, d]);
  } else {
    h = b.reshape(tok, [-1, d]);
  }
  h = drop(h, "embedding", null, "embed");

  let mask: Value;
  if (cache) mask = cache.bias;
  else {
    // Additive causal mask: 0 on and below the diagonal, a large negative above (softmax gives exact zeros).
    // A sliding window W ≥ T masks nothing more (i − j ≤ T − 1 < W; checkContext).
    const n = ids.shape[1]!;
    const causal = new Float32Array(n * n);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) causal[i * n + j] = -1e9;
    mask = b.initializer("causal_mask", "float32", [n, n], causal);
  }

  // Rotary tables [T, hd] (with a cache: [C, hd] for the model's context C, gathered at the positions to [B, 1, T, hd]),
  // broadcast over batch and heads; q's carry the attention scale.
  let rope: { q: { cos: Value; sin: Value }; k: { cos: Value; sin: Value } } | null = null;
  if (spec.positions.kind === "rope") {
    const theta = spec.positions.theta;
    const rows = cache ? s.context : ids.shape[1]!;
    const tables = (scale: number, name: string) => {
      const t = rotaryTables(rows, hd, theta, scale);
      const at = (v: Value) => (cache ? b.unsqueeze(b.gather(v, cache.positions, 0), [1]) : v);
      return { cos: at(b.initializer(`rope_cos${name}`, ct, [rows, hd], t.cos)), sin: at(b.initializer(`rope_sin${name}`, ct, [rows, hd], t.sin)) };
    };
    const k = tables(1, "");
    rope = { k, q: spec.attention.scale === 1 ? k : tables(spec.attention.scale, "_q") };
  }
  // HF apply_rotary_pos_emb: x·cos + rotate_half(x)·sin, here x·cos + cat(x₂, x₁)·(sign-folded sin).
  const rotary = (x: Value, t: { cos: Value; sin: Value }) => {
    const [x1, x2] = b.split(x, -1, [hd / 2, hd / 2]);
    return b.add(b.mul(x, t.cos), b.mul(b.concat([x2!, x1!], -1), t.sin));
  };

  for (let l = 0; l < s.layers; l++) {
    const a = norm(h, "attn.norm", l);
    let q: Value, k: Value, v: Value; // [B, H, T, hd], [B, KV, T, hd], [B, KV, T, hd]
    if (m.fusedQkv(l)) {
      const qkv = project(a, "attn.qkv", l);
      // One transpose to [3, B, H, T, hd], then contiguous splits: cheaper than splitting columns.
      const parts = b.transpose(b.reshape(qkv, [B, T, 3, H, hd]), [2, 0, 3, 1, 4]);
      [q, k, v] = b.split(parts, 0, [1, 1, 1]).map((x) => b.reshape(x, [B, H, T, hd])) as [Value, Value, Value];
    } else {
      const heads = (x: Value, n: number) => b.transpose(b.reshape(x, [B, T, n, hd]), [0, 2, 1, 3]);
      q = heads(project(a, "attn.q", l), H);
      k = heads(project(a, "attn.k", l), KV);
      v = heads(project(a, "attn.v", l), KV);
    }
    // Scaling q (B·T·d values) rather than the scores (B·H·T·T) gives the same softmax input; with rotary
    // embeddings the scale rides in q's tables.
    const layerScale = spec.attention.scaleByInverseLayer ? 1 / (l + 1) : 1;
    if (rope) {
      q = rotary(q, rope.q);
      if (layerScale !== 1) q = b.mul(q, layerScale);
      k = rotary(k, rope.k);
    } else {
      const scale = spec.attention.scale / (spec.attention.scaleByInverseLayer ? l + 1 : 1);
      if (scale !== 1) q = b.mul(q, scale);
    }
    if (cache) ({ k, v } = cache.attend(l, k, v)); // [B, KV, Tk, hd]: the past, then these
    const Tk = k.dims[2]!;
    // Grouped-query attention (HF repeat_kv: key/value head j serves query heads j·r ... j·r + r − 1): the r
    // query heads of a key/value head are consecutive, so q as [B, KV, r·T, hd] meets k and v unrepeated.
    // MatMul of a last-two-axes Transpose: onnxruntime fuses it into FusedMatMul(transB) without a copy.
    const scores = b.reshape(b.matmul(b.reshape(q, [B, KV, -1, hd]), b.transpose(k, [0, 1, 3, 2])), [B, H, T, Tk]);
    const probs = drop(b.cast(b.softmax(b.add(b.cast(scores, "float32"), mask), -1), ct), "attention", l, `h${l}.attn_probs`);
    const o = b.reshape(b.matmul(b.reshape(probs, [B, KV, -1, Tk]), v), [B, H, T, hd]);
    const ctx = b.reshape(b.transpose(o, [0, 2, 1, 3]), [-1, H * hd]);
    h = b.add(h, drop(project(ctx, "attn.out", l), "residual", l, `h${l}.attn_out`));

    const x = norm(h, "mlp.norm", l);
    const act =
      spec.mlp.kind === "gelu_tanh"
        ? cache
          ? geluNew(b, project(x, "mlp.in", l))
          : b.fastGelu(project(x, "mlp.in", l))
        : b.mul(silu(b, project(x, "mlp.gate", l)), project(x, "mlp.in", l));
    h = b.add(h, drop(project(act, "mlp.out", l), "residual", l, `h${l}.mlp_out`));
  }
  h = norm(h, "final_norm", null); // [N, d]
  const out = m.output();
  return { h, out: { w: b.cast(p(out.spec.name), ct), transB: out.transB }, B, T };
}

/** The logits [B·T, V] of the hidden states. */
const outputLogits = (b: GraphBuilder, r: ReturnType<typeof hidden>) => b.gemm(r.h, r.out.w, null, r.out.transB ? { transB: true } : {});

/** The generic decoder graph of an architecture plugin (any plugin whose `decoder` describes its forward pass). */
export function decoderGraph(plugin: ArchitecturePlugin): ModelGraph {
  return {
    architecture: plugin.name,
    params: (config) => plugin.params(plugin.parseConfig(config).config),
    shape: (config) => plugin.parseConfig(config).shape,

    logits(b, config, p, ids, options = {}) {
      const r = hidden(b, options.decoder ?? resolveDecoder(plugin, config), p, ids, undefined, options.cache);
      const logits = outputLogits(b, r);
      return b.reshape(logits, [r.B, r.T, logits.dims[1]!]);
    },

    loss(b, config, p, ids, options = {}) {
      const [B, T] = ids.shape as [number, number];
      if (T < 2) throw new Error("the loss needs blocks of at least 2 tokens");
      const r = hidden(b, resolveDecoder(plugin, config), p, ids, options.dropout, undefined, options.computeType);
      const logits = b.cast(outputLogits(b, r), "float32"); // [B·T, V]; the log-softmax in float32
      // Position t predicts token t+1; the last position of each block predicts nothing: its target is the
      // block's first token with weight 0. (Masking costs less than slicing the activations, a strided copy.) A
      // Gather, not Slice and Concat: onnxruntime's WebGPU provider slices only floats.
      const shift = b.constant(
        Array.from({ length: T }, (_, t) => (t + 1) % T),
        "int64",
        [T],
      );
      const next = b.gather(ids, shift, 1); // [B, T]
      // log p(next) = logit(next) − logΣexp(logits): the log-softmax of the picked entries only ([B·T, 1]).
      const picked = b.sub(b.gatherElements(logits, b.reshape(next, [B * T, 1]), 1), b.logSumExp(logits, 1));
      const weight = new Float32Array(B * T).map((_, i) => (i % T === T - 1 ? 0 : -1 / (B * (T - 1))));
      return b.reduceSum(b.mul(picked, b.initializer("loss_weight", "float32", [B * T, 1], weight)), [0, 1], false);
    },
  };
}

import type { ArchitecturePlugin, DecoderSpec, ParamRole, ParamSpec } from "@staged/core";
import { rotaryTables } from "@staged/core";
import type { GraphBuilder, Value } from "../graph/builder.js";
import type { ApplyDropout, DropoutSite, ModelGraph } from "./types.js";

/** Projections, by the role prefix of their weight (and bias, where the architecture has one). */
type Projection = "attn.qkv" | "attn.q" | "attn.k" | "attn.v" | "attn.out" | "mlp.in" | "mlp.gate" | "mlp.out";
type Norm = "attn.norm" | "mlp.norm" | "final_norm";

/** RMSNorm (HF LlamaRMSNorm): x / √(mean(x²) + eps) · w over the last axis, from standard ops. */
export function rmsNorm(b: GraphBuilder, x: Value, w: Value, eps: number): Value {
  // One reciprocal per row, then a multiply: cheaper, forward and backward, than dividing every element.
  const inv = b.div(1, b.sqrt(b.add(b.reduceMean(b.mul(x, x), [-1]), eps)));
  return b.mul(b.mul(x, inv), w);
}

/** SiLU (HF's "silu"): x · σ(x). */
export const silu = (b: GraphBuilder, x: Value): Value => b.mul(x, b.sigmoid(x));

/** HF gelu_new from standard ops (the graph uses the equal, fused FastGelu; this is the portable form). */
export function geluNew(b: GraphBuilder, x: Value): Value {
  const inner = b.mul(b.add(x, b.mul(b.mul(b.mul(x, x), x), 0.044715)), Math.sqrt(2 / Math.PI));
  return b.mul(b.mul(x, 0.5), b.add(b.tanh(inner), 1));
}


const key = (role: ParamRole, layer: number | null) => `${role}@${layer ?? ""}`;

/** One graph build: the parameters by (role, layer), the plugin's DecoderSpec and the shape. */
function context(plugin: ArchitecturePlugin, config: Record<string, unknown>, p: (name: string) => Value) {
  const { config: c, shape } = plugin.parseConfig(config);
  const spec: DecoderSpec = plugin.decoder(c);
  const specs = new Map<string, ParamSpec>(plugin.params(c).map((s) => [key(s.role, s.layer), s]));
  const type = String(c.model_type ?? plugin.name);
  const find = (role: ParamRole, layer: number | null) => specs.get(key(role, layer));
  const need = (role: ParamRole, layer: number | null): ParamSpec => {
    const s = find(role, layer);
    if (!s) throw new Error(`${type}: no parameter with role ${role}${layer === null ? "" : ` in layer ${layer}`}`);
    return s;
  };
  const optional = (role: ParamRole, layer: number | null): Value | null => {
    const s = find(role, layer);
    return s ? p(s.name) : null;
  };
  /** x·W (+ bias): Conv1D weights [in, out] as they are, torch Linear weights [out, in] transposed by Gemm. */
  const matrix = (s: ParamSpec): { w: Value; transB: boolean } => {
    if (s.layout !== "conv1d" && s.layout !== "linear" && s.layout !== "embedding") throw new Error(`${type}: ${s.name} has layout ${s.layout}, not a matrix`);
    return { w: p(s.name), transB: s.layout !== "conv1d" };
  };
  return { c, shape, spec, type, find, need, optional, matrix };
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
 */
function hidden(b: GraphBuilder, plugin: ArchitecturePlugin, config: Record<string, unknown>, p: (name: string) => Value, ids: Value, dropout?: ApplyDropout) {
  const m = context(plugin, config, p);
  const { shape: s, spec, type, need, optional } = m;
  const [B, T] = ids.shape as [number, number];
  const { dModel: d, heads: H, headDim: hd } = s;
  const KV = s.kvHeads ?? H;
  const N = B * T;
  const window = spec.attention.slidingWindow ?? null;
  if (window !== null && T > window) throw new Error(`${type}: context ${T} exceeds sliding_window ${window}`);
  if (H % KV !== 0) throw new Error(`${type}: ${H} query heads are not a multiple of ${KV} key/value heads`);

  // Dropout where HF applies it (DecoderSpec.dropout), only when asked (the training graphs) and p > 0.
  const rates = spec.dropout;
  const drop = (x: Value, kind: DropoutSite["kind"], layer: number | null, name: string): Value => {
    const rate = rates?.[kind] ?? 0;
    if (!dropout || !(rate > 0)) return x;
    return dropout(x, { name, kind, layer, p: rate, causal: kind === "attention" });
  };

  const project = (x: Value, part: Projection, layer: number): Value => {
    const { w, transB } = m.matrix(need(`${part}.weight`, layer));
    return b.gemm(x, w, optional(`${part}.bias`, layer), transB ? { transB } : {});
  };
  const norm = (x: Value, part: Norm, layer: number | null): Value => {
    const w = p(need(`${part}.weight`, layer).name), bias = optional(`${part}.bias`, layer);
    if (spec.norm.kind === "layernorm") return b.layerNorm(x, w, bias, spec.norm.eps).y;
    if (bias) throw new Error(`${type}: RMSNorm has no bias, but ${part}.bias is a parameter`);
    return rmsNorm(b, x, w, spec.norm.eps);
  };

  const tok = b.gather(p(need("embed.tokens", null).name), ids, 0); // [B, T, d]
  let h: Value;
  if (spec.positions.kind === "learned") {
    const table = need("embed.positions", null);
    if (T > table.shape[0]!) throw new Error(`${type}: context ${T} exceeds the model's ${table.shape[0]} positions`);
    h = b.reshape(b.add(tok, b.slice(p(table.name), [0], [T], [0])), [N, d]);
  } else {
    h = b.reshape(tok, [N, d]);
  }
  h = drop(h, "embedding", null, "embed");

  // Additive causal mask: 0 on and below the diagonal, a large negative above (softmax gives exact zeros).
  // A sliding window W ≥ T masks nothing more (i − j ≤ T − 1 < W).
  const mask = new Float32Array(T * T);
  for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) mask[i * T + j] = -1e9;
  const maskValue = b.initializer("causal_mask", "float32", [T, T], mask);

  // Rotary tables [T, hd], broadcast over batch and heads; q's carry the attention scale.
  let rope: { q: { cos: Value; sin: Value }; k: { cos: Value; sin: Value } } | null = null;
  if (spec.positions.kind === "rope") {
    if (hd % 2 !== 0) throw new Error(`${type}: head_dim ${hd} must be even for rotary embeddings`);
    const theta = spec.positions.theta;
    const tables = (scale: number, name: string) => {
      const t = rotaryTables(T, hd, theta, scale);
      return { cos: b.initializer(`rope_cos${name}`, "float32", [T, hd], t.cos), sin: b.initializer(`rope_sin${name}`, "float32", [T, hd], t.sin) };
    };
    const k = tables(1, "");
    rope = { k, q: spec.attention.scale === 1 ? k : tables(spec.attention.scale, "_q") };
  }
  // HF apply_rotary_pos_emb: x·cos + rotate_half(x)·sin, here x·cos + cat(x₂, x₁)·(sign-folded sin).
  const rotary = (x: Value, t: { cos: Value; sin: Value }) => {
    const [x1, x2] = b.split(x, -1, [hd / 2, hd / 2]);
    return b.add(b.mul(x, t.cos), b.mul(b.concat([x2!, x1!], -1), t.sin));
  };
  const fused = (layer: number) => {
    const w = m.find("attn.qkv.weight", layer);
    if (w && (KV !== H || (w.fused ?? []).join() !== "q,k,v")) throw new Error(`${type}: a fused q|k|v projection needs the parts q, k, v and one key/value head per query head`);
    return w !== undefined;
  };

  for (let l = 0; l < s.layers; l++) {
    const a = norm(h, "attn.norm", l);
    let q: Value, k: Value, v: Value; // [B, H, T, hd], [B, KV, T, hd], [B, KV, T, hd]
    if (fused(l)) {
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
    // Grouped-query attention (HF repeat_kv: key/value head j serves query heads j·r ... j·r + r − 1): the r
    // query heads of a key/value head are consecutive, so q as [B, KV, r·T, hd] meets k and v unrepeated.
    const r = H / KV;
    // MatMul of a last-two-axes Transpose: onnxruntime fuses it into FusedMatMul(transB) without a copy.
    const scores = b.reshape(b.matmul(b.reshape(q, [B, KV, r * T, hd]), b.transpose(k, [0, 1, 3, 2])), [B, H, T, T]);
    const probs = drop(b.softmax(b.add(scores, maskValue), -1), "attention", l, `h${l}.attn_probs`);
    const o = b.reshape(b.matmul(b.reshape(probs, [B, KV, r * T, T]), v), [B, H, T, hd]);
    const ctx = b.reshape(b.transpose(o, [0, 2, 1, 3]), [N, H * hd]);
    h = b.add(h, drop(project(ctx, "attn.out", l), "residual", l, `h${l}.attn_out`));

    const x = norm(h, "mlp.norm", l);
    const act = spec.mlp.kind === "gelu_tanh"
      ? b.fastGelu(project(x, "mlp.in", l))
      : b.mul(silu(b, project(x, "mlp.gate", l)), project(x, "mlp.in", l));
    h = b.add(h, drop(project(act, "mlp.out", l), "residual", l, `h${l}.mlp_out`));
  }
  h = norm(h, "final_norm", null); // [N, d]
  const out = m.matrix(need(spec.tiedOutput ? "embed.tokens" : "lm_head.weight", null));
  return { h, out, B, T };
}

/** The logits [B·T, V] of the hidden states. */
const outputLogits = (b: GraphBuilder, r: ReturnType<typeof hidden>) => b.gemm(r.h, r.out.w, null, r.out.transB ? { transB: true } : {});

/** The generic decoder graph of an architecture plugin (any plugin whose `decoder` describes its forward pass). */
export function decoderGraph(plugin: ArchitecturePlugin): ModelGraph {
  return {
    architecture: plugin.name,
    params: (config) => plugin.params(plugin.parseConfig(config).config),
    shape: (config) => plugin.parseConfig(config).shape,

    logits(b, config, p, ids) {
      const r = hidden(b, plugin, config, p, ids);
      const logits = outputLogits(b, r);
      return b.reshape(logits, [r.B, r.T, logits.shape[1]!]);
    },

    loss(b, config, p, ids, options = {}) {
      const [B, T] = ids.shape as [number, number];
      if (T < 2) throw new Error("the loss needs blocks of at least 2 tokens");
      const logits = outputLogits(b, hidden(b, plugin, config, p, ids, options.dropout)); // [B·T, V]
      // Position t predicts token t+1; the last position of each block predicts nothing: its target is a
      // dummy 0 with weight 0. (Masking costs less than slicing the activations, a strided copy.)
      const next = b.concat([b.slice(ids, [1], [T], [1]), b.zeros([B, 1], "int64")], 1);
      const picked = b.gatherElements(b.logSoftmax(logits, 1), b.reshape(next, [B * T, 1]), 1); // [B·T, 1]
      const weight = new Float32Array(B * T).map((_, i) => (i % T === T - 1 ? 0 : -1 / (B * (T - 1))));
      return b.reduceSum(b.mul(picked, b.initializer("loss_weight", "float32", [B * T, 1], weight)), [0, 1], false);
    },
  };
}

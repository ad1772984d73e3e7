/**
 * The inference graph of any registered architecture, built from its plugin's data (parameter roles and
 * layouts, DecoderSpec, shape): a decoder with a KV cache in the layout transformers.js (and Optimum) use for
 * decoder-only models. No per-architecture code: GPT-2 and the Llama family are the same builder.
 *
 * Inputs: input_ids, attention_mask, position_ids (int64) and past_key_values.{i}.key / .value
 * [batch_size, kv_heads, past_sequence_length, head_dim]; outputs: logits [batch_size, sequence_length, vocab]
 * (float32) and present.{i}.key / .value = past ‖ new along the sequence. The attention mask is causal in the
 * cache (query s sees keys up to past + s), restricted to the positions attention_mask marks as tokens, and to
 * the sliding window where the architecture has one. Positions come from position_ids (learned: a Gather of
 * the position embedding; rotary: cos/sin tables gathered), so left padding works.
 *
 * With float16, weights, activations and the cache are float16; norms and the softmax run in float32, and the
 * logits are float32.
 */
import { encodeF16, firstNonFinite, HOST_LITTLE_ENDIAN, rotaryTables, Tensor, type ArchitecturePlugin, type DecoderSpec, type ModelShape, type ParamRole, type ParamSpec } from "@staged/core";
import { OnnxGraph, type ElemType } from "./onnx.js";

export type ExportDType = "fp32" | "fp16";

/** Names of the graph's inputs and outputs (transformers.js reads them from the session). */
export const IO = {
  ids: "input_ids",
  mask: "attention_mask",
  positions: "position_ids",
  logits: "logits",
  pastKey: (l: number) => `past_key_values.${l}.key`,
  pastValue: (l: number) => `past_key_values.${l}.value`,
  presentKey: (l: number) => `present.${l}.key`,
  presentValue: (l: number) => `present.${l}.value`,
} as const;

/** Names of the dynamic axes; transformers.js sizes an empty cache by them (batch_size: the batch, others: 0). */
export const AXES = { batch: "batch_size", seq: "sequence_length", past: "past_sequence_length", total: "total_sequence_length" } as const;

/** The additive attention bias of masked positions: large enough that softmax gives them exact zeros, finite so no NaN arises. */
const MASKED = -1e9;

export interface DecoderGraphOptions {
  dtype: ExportDType;
  /** The values of a parameter (float32 in memory, any stored dtype), read when the model is written. */
  tensor(name: string): Promise<Tensor>;
}

export interface DecoderGraph {
  graph: OnnxGraph;
  shape: ModelShape;
  spec: DecoderSpec;
  kvHeads: number;
}


/** Little-endian bytes of float32 values as `type`, refusing values that are not finite there (a diverged model, or beyond float16). */
export function encodeValues(values: Float32Array, type: "float32" | "float16", what: string): Uint8Array {
  if (!HOST_LITTLE_ENDIAN) throw new Error("export needs a little-endian host");
  const bad = firstNonFinite(new Tensor(type === "float16" ? "F16" : "F32", [values.length], values));
  if (bad) {
    throw new Error(`${what} holds ${bad.value} at index ${bad.index}` +
      (Number.isFinite(bad.value) ? ", beyond float16's range (export it as fp32)" : " (a diverged model?)"));
  }
  if (type === "float32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint8Array(values.length * 2);
  encodeF16(values, out);
  return out;
}

const key = (role: ParamRole, layer: number | null) => `${role}@${layer ?? ""}`;

type Projection = "attn.qkv" | "attn.q" | "attn.k" | "attn.v" | "attn.out" | "mlp.in" | "mlp.gate" | "mlp.out";
type Norm = "attn.norm" | "mlp.norm" | "final_norm";

/** The export graph of a model (`config` as the plugin parses it). */
export function decoderGraph(plugin: ArchitecturePlugin, config: Record<string, unknown>, options: DecoderGraphOptions): DecoderGraph {
  const { config: c, shape: s } = plugin.parseConfig(config);
  const spec = plugin.decoder(c);
  const specs = plugin.params(c);
  const type = String(c.model_type ?? plugin.name);
  const byRole = new Map<string, ParamSpec>(specs.map((p) => [key(p.role, p.layer), p]));
  const find = (role: ParamRole, layer: number | null) => byRole.get(key(role, layer));
  const need = (role: ParamRole, layer: number | null): ParamSpec => {
    const p = find(role, layer);
    if (!p) throw new Error(`${type}: no parameter with role ${role}${layer === null ? "" : ` in layer ${layer}`}`);
    return p;
  };

  const g = new OnnxGraph();
  const ct: ElemType = options.dtype === "fp16" ? "float16" : "float32";
  const { dModel: d, heads: H, headDim: hd } = s;
  const KV = s.kvHeads ?? H;
  if (H % KV !== 0) throw new Error(`${type}: ${H} query heads are not a multiple of ${KV} key/value heads`);
  const groups = H / KV;

  // Parameters: matrices and projection biases in the compute type, norm weights in float32 (norms run in float32).
  const weights = new Map<string, string>();
  const param = (p: ParamSpec): string => {
    let name = weights.get(p.name);
    if (name === undefined) {
      const t: "float32" | "float16" = p.role.includes("norm.") ? "float32" : ct === "float16" ? "float16" : "float32";
      name = g.weight(p.name, t, [...p.shape], async () => {
        const tensor = await options.tensor(p.name);
        if (tensor.shape.length !== p.shape.length || tensor.shape.some((n, i) => n !== p.shape[i])) {
          throw new Error(`parameter ${p.name} has shape [${tensor.shape}], the config says [${p.shape}]`);
        }
        return encodeValues(tensor.f32, t, `parameter ${p.name}`);
      });
      weights.set(p.name, name);
    }
    return name;
  };
  const optional = (role: ParamRole, layer: number | null): string | null => {
    const p = find(role, layer);
    return p ? param(p) : null;
  };
  // Constants and shapes used again and again are made once.
  const made = new Map<string, string>();
  const once = (key: string, make: () => string): string => {
    let name = made.get(key);
    if (name === undefined) made.set(key, name = make());
    return name;
  };
  const scalar = (v: number, t: ElemType = ct): string => once(`${t} ${v}`, () => t === "float16"
    ? g.weight(`scalar_f16_${g.initializers.length}`, "float16", [], async () => encodeValues(Float32Array.of(v), "float16", "a constant"))
    : g.constant(t, [], [v], "scalar"));

  // ---- inputs ----
  const ids = g.input(IO.ids, "int64", [AXES.batch, AXES.seq]);
  const mask = g.input(IO.mask, "int64", [AXES.batch, AXES.total]);
  const positions = g.input(IO.positions, "int64", [AXES.batch, AXES.seq]);
  const past: { k: string; v: string }[] = [];
  for (let l = 0; l < s.layers; l++) {
    past.push({
      k: g.input(IO.pastKey(l), ct, [AXES.batch, KV, AXES.past, hd]),
      v: g.input(IO.pastValue(l), ct, [AXES.batch, KV, AXES.past, hd]),
    });
  }

  const batchSeq = g.op("Shape", [ids]); // [B, S]
  const dims = (...rest: number[]) => once(`dims ${rest}`, () => g.op("Concat", [batchSeq, g.i64(rest)], { axis: { i: 0 } }));
  const axes = (...a: number[]) => once(`axes ${a}`, () => g.i64(a, "axes"));
  const shape = (...a: number[]) => once(`shape ${a}`, () => g.i64(a));

  // ---- the attention bias [B, 1, S, T]: causal in the cache, padding from attention_mask, the sliding window ----
  const seqLen = g.op("Squeeze", [g.op("Shape", [ids], { start: { i: 1 } }), axes(0)]); // S (scalar)
  const total = g.op("Squeeze", [g.op("Shape", [mask], { start: { i: 1 } }), axes(0)]); // T = P + S (scalar)
  const keyIndex = g.op("Range", [g.scalarI64(0), total, g.scalarI64(1)]); // [T]
  const queryIndex = g.op("Range", [g.op("Sub", [total, seqLen]), total, g.scalarI64(1)]); // [S]: P .. T − 1
  const qCol = g.op("Unsqueeze", [queryIndex, axes(1)]); // [S, 1]
  const kRow = g.op("Unsqueeze", [keyIndex, axes(0)]); // [1, T]
  let allowed = g.op("LessOrEqual", [kRow, qCol]); // [S, T]
  const window = spec.attention.slidingWindow ?? null;
  if (window !== null) allowed = g.op("And", [allowed, g.op("Less", [g.op("Sub", [qCol, kRow]), g.scalarI64(window)])]);
  const tokens = g.op("Unsqueeze", [g.op("Cast", [mask], { to: { i: 9 } }), axes(1, 2)]); // [B, 1, 1, T]
  allowed = g.op("And", [g.op("Unsqueeze", [allowed, axes(0, 1)]), tokens]);
  const bias = g.op("Where", [allowed, scalar(0, "float32"), scalar(MASKED, "float32")]); // [B, 1, S, T] float32

  // ---- embeddings ----
  let x = g.op("Gather", [param(need("embed.tokens", null)), ids], { axis: { i: 0 } }); // [B, S, d]
  if (spec.positions.kind === "learned") x = g.op("Add", [x, g.op("Gather", [param(need("embed.positions", null)), positions], { axis: { i: 0 } })]);
  let h = g.op("Reshape", [x, g.i64([-1, d])]); // [N, d]

  // Rotary cos/sin of each position [B, 1, S, hd], broadcast over heads.
  let rope: { cos: string; sin: string } | null = null;
  if (spec.positions.kind === "rope") {
    if (hd % 2 !== 0) throw new Error(`${type}: head_dim ${hd} must be even for rotary embeddings`);
    const theta = spec.positions.theta;
    let tables: { cos: Float32Array; sin: Float32Array } | null = null;
    const table = (part: "cos" | "sin") => g.weight(`rotary.${part}`, ct, [s.context, hd], async () => {
      tables ??= rotaryTables(s.context, hd, theta);
      const values = tables[part];
      if (part === "sin") tables = null;
      return encodeValues(values, ct === "float16" ? "float16" : "float32", `rotary ${part}`);
    });
    const gathered = (t: string) => g.op("Unsqueeze", [g.op("Gather", [t, positions], { axis: { i: 0 } }), axes(1)]);
    rope = { cos: gathered(table("cos")), sin: gathered(table("sin")) };
  }
  let halves: string | null = null;
  const rotary = (v: string, r: { cos: string; sin: string }) => {
    halves ??= g.i64([hd / 2, hd / 2], "split");
    const [a, b] = g.node("Split", [v, halves], { axis: { i: -1 } }, 2) as [string, string];
    return g.op("Add", [g.op("Mul", [v, r.cos]), g.op("Mul", [g.op("Concat", [b, a], { axis: { i: -1 } }), r.sin])]);
  };

  const project = (v: string, part: Projection, layer: number): string => {
    const p = need(`${part}.weight`, layer);
    if (p.layout !== "conv1d" && p.layout !== "linear") throw new Error(`${type}: ${p.name} has layout ${p.layout}, not a matrix`);
    const b = optional(`${part}.bias`, layer);
    return g.op("Gemm", b ? [v, param(p), b] : [v, param(p)], p.layout === "linear" ? { transB: { i: 1 } } : {});
  };
  const toF32 = (v: string) => (ct === "float16" ? g.op("Cast", [v], { to: { i: 1 } }) : v);
  const fromF32 = (v: string) => (ct === "float16" ? g.op("Cast", [v], { to: { i: 10 } }) : v);
  const norm = (v: string, part: Norm, layer: number | null): string => {
    const w = param(need(`${part}.weight`, layer));
    const b = optional(`${part}.bias`, layer);
    const xf = toF32(v);
    if (spec.norm.kind === "layernorm") {
      return fromF32(g.op("LayerNormalization", b ? [xf, w, b] : [xf, w], { axis: { i: -1 }, epsilon: { f: spec.norm.eps } }));
    }
    if (b) throw new Error(`${type}: RMSNorm has no bias, but ${part}.bias is a parameter`);
    // HF LlamaRMSNorm: x / √(mean(x²) + eps) · w, in the form onnxruntime fuses into one kernel.
    const ms = g.op("ReduceMean", [g.op("Pow", [xf, scalar(2, "float32")])], { axes: { ints: [-1] }, keepdims: { i: 1 } });
    const normed = g.op("Div", [xf, g.op("Sqrt", [g.op("Add", [ms, scalar(spec.norm.eps, "float32")])])]);
    return fromF32(g.op("Mul", [normed, w]));
  };
  const heads = (v: string, n: number) => g.op("Transpose", [g.op("Reshape", [v, dims(n, hd)])], { perm: { ints: [0, 2, 1, 3] } }); // [B, n, S, hd]

  for (let l = 0; l < s.layers; l++) {
    const a = norm(h, "attn.norm", l);
    let q: string, k: string, v: string;
    const fused = find("attn.qkv.weight", l);
    if (fused) {
      if (KV !== H || (fused.fused ?? []).join() !== "q,k,v") throw new Error(`${type}: a fused q|k|v projection needs the parts q, k, v and one key/value head per query head`);
      // [N, 3d] → [B, S, 3, H, hd] → [3, B, H, S, hd] → three [B, H, S, hd].
      const parts = g.op("Transpose", [g.op("Reshape", [project(a, "attn.qkv", l), dims(3, H, hd)])], { perm: { ints: [2, 0, 3, 1, 4] } });
      [q, k, v] = g.node("Split", [parts, shape(1, 1, 1)], { axis: { i: 0 } }, 3).map((p) => g.op("Squeeze", [p, axes(0)])) as [string, string, string];
    } else {
      q = heads(project(a, "attn.q", l), H);
      k = heads(project(a, "attn.k", l), KV);
      v = heads(project(a, "attn.v", l), KV);
    }
    if (rope) { q = rotary(q, rope); k = rotary(k, rope); }
    const scale = spec.attention.scale / (spec.attention.scaleByInverseLayer ? l + 1 : 1);
    if (scale !== 1) q = g.op("Mul", [q, scalar(scale)]);
    const keys = g.op("Concat", [past[l]!.k, k], { axis: { i: 2 } }, IO.presentKey(l)); // [B, KV, T, hd]
    const values = g.op("Concat", [past[l]!.v, v], { axis: { i: 2 } }, IO.presentValue(l));
    g.output(keys, ct, [AXES.batch, KV, AXES.total, hd]);
    g.output(values, ct, [AXES.batch, KV, AXES.total, hd]);

    // Grouped-query attention (HF repeat_kv: key/value head j serves query heads j·r .. j·r + r − 1): the r query
    // heads of a key/value head are consecutive, so q as [B, KV, r·S, hd] meets the keys and values unrepeated.
    const kT = g.op("Transpose", [keys], { perm: { ints: [0, 1, 3, 2] } });
    let scores = groups === 1
      ? g.op("MatMul", [q, kT])
      : g.op("Reshape", [g.op("MatMul", [g.op("Reshape", [q, shape(0, KV, -1, hd)]), kT]), shape(0, H, -1, 0)]); // [B, H, S, T]
    scores = g.op("Add", [toF32(scores), bias]);
    const probs = fromF32(g.op("Softmax", [scores], { axis: { i: -1 } }));
    const o = groups === 1
      ? g.op("MatMul", [probs, values])
      : g.op("Reshape", [g.op("MatMul", [g.op("Reshape", [probs, shape(0, KV, -1, 0)]), values]), shape(0, H, -1, hd)]); // [B, H, S, hd]
    const context = g.op("Reshape", [g.op("Transpose", [o], { perm: { ints: [0, 2, 1, 3] } }), shape(-1, H * hd)]);
    h = g.op("Add", [h, project(context, "attn.out", l)]);

    const m = norm(h, "mlp.norm", l);
    let act: string;
    if (spec.mlp.kind === "gelu_tanh") {
      // HF gelu_new: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
      const u = project(m, "mlp.in", l);
      // As PyTorch exports it (with pow), the form onnxruntime fuses into one kernel.
      const inner = g.op("Mul", [g.op("Add", [u, g.op("Mul", [g.op("Pow", [u, scalar(3)]), scalar(0.044715)])]), scalar(Math.sqrt(2 / Math.PI))]);
      act = g.op("Mul", [g.op("Mul", [u, scalar(0.5)]), g.op("Add", [g.op("Tanh", [inner]), scalar(1)])]);
    } else {
      const gate = project(m, "mlp.gate", l);
      act = g.op("Mul", [g.op("Mul", [gate, g.op("Sigmoid", [gate])]), project(m, "mlp.in", l)]);
    }
    h = g.op("Add", [h, project(act, "mlp.out", l)]);
  }

  h = norm(h, "final_norm", null);
  const out = need(spec.tiedOutput ? "embed.tokens" : "lm_head.weight", null);
  // Embedding [V, d] and Linear [V, d] are both multiplied transposed.
  const logits = toF32(g.op("Gemm", [h, param(out)], out.layout === "conv1d" ? {} : { transB: { i: 1 } })); // [N, V]
  g.op("Reshape", [logits, dims(s.vocab)], {}, IO.logits);
  g.output(IO.logits, "float32", [AXES.batch, AXES.seq, s.vocab]);
  g.outputs.unshift(g.outputs.pop()!); // logits first, then the cache (Optimum's order)
  return { graph: g, shape: s, spec, kvHeads: KV };
}

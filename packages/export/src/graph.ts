/**
 * The inference graph of any registered architecture: the trainer's forward pass (@staged/trainer-ort's decoder,
 * from the plugin's data resolved by @staged/core's resolveDecoder) with a KV cache, in the layout transformers.js
 * (and Optimum) use for decoder-only models, built with trainer-ort's GraphBuilder and written by its ONNX writer.
 * No per-architecture code: GPT-2 and the Llama family are the same builder.
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
import {
  encodeF16,
  firstNonFinite,
  HOST_LITTLE_ENDIAN,
  resolveDecoder,
  Tensor,
  type ArchitecturePlugin,
  type DecoderSpec,
  type ModelShape,
} from "@staged/core";
import { broadcastShapes, decoderGraph as forwardOf, GraphBuilder, type Value } from "@staged/trainer-ort";

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
  /** The graph, written by @staged/trainer-ort's writeOnnxModel. */
  graph: GraphBuilder;
  shape: ModelShape;
  spec: DecoderSpec;
  kvHeads: number;
}

/** Little-endian bytes of float32 values as `type`, refusing values that are not finite there (a diverged model, or beyond float16). */
export function encodeValues(values: Float32Array, type: "float32" | "float16", what: string): Uint8Array {
  if (!HOST_LITTLE_ENDIAN) throw new Error("export needs a little-endian host");
  const bad = firstNonFinite(new Tensor(type === "float16" ? "F16" : "F32", [values.length], values));
  if (bad) {
    throw new Error(
      `${what} holds ${bad.value} at index ${bad.index}` +
        (Number.isFinite(bad.value) ? ", beyond float16's range (export it as fp32)" : " (a diverged model?)"),
    );
  }
  if (type === "float32") return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint8Array(values.length * 2);
  encodeF16(values, out);
  return out;
}

/**
 * The export graph of a model (`config` as the plugin parses it): the training graph's forward pass
 * (@staged/trainer-ort's decoderGraph) with a KV cache; what is the export's own is here: the inputs and outputs,
 * the attention bias, past ‖ new keys and values, and the stored types of the weights.
 */
export function decoderGraph(plugin: ArchitecturePlugin, config: Record<string, unknown>, options: DecoderGraphOptions): DecoderGraph {
  const m = resolveDecoder(plugin, config);
  const { shape: s, spec, kvHeads: KV } = m;
  const hd = s.headDim;
  const b = new GraphBuilder();
  b.section = "export";
  const ct = options.dtype === "fp16" ? "float16" : "float32";

  // Parameters: matrices and projection biases in the compute type, norm weights in float32 (norms run in float32).
  const byName = new Map(m.params.map((p) => [p.name, p]));
  const weights = new Map<string, Value>();
  const param = (name: string): Value => {
    let v = weights.get(name);
    const p = byName.get(name);
    if (!p) throw new Error(`the export graph asked for unknown parameter ${name}`);
    if (v === undefined) {
      const t = p.role.includes("norm.") ? "float32" : ct;
      v = b.weight(p.name, t, p.shape, async () => {
        const tensor = await options.tensor(p.name);
        if (tensor.shape.length !== p.shape.length || tensor.shape.some((n, i) => n !== p.shape[i])) {
          throw new Error(`parameter ${p.name} has shape [${tensor.shape}], the config says [${p.shape}]`);
        }
        return encodeValues(tensor.f32, t, `parameter ${p.name}`);
      });
      weights.set(name, v);
    }
    return v;
  };

  // ---- inputs ----
  const ids = b.input(IO.ids, "int64", [AXES.batch, AXES.seq]);
  const mask = b.input(IO.mask, "int64", [AXES.batch, AXES.total]);
  const positions = b.input(IO.positions, "int64", [AXES.batch, AXES.seq]);
  const past: { k: Value; v: Value }[] = [];
  for (let l = 0; l < s.layers; l++) {
    past.push({
      k: b.input(IO.pastKey(l), ct, [AXES.batch, KV, AXES.past, hd]),
      v: b.input(IO.pastValue(l), ct, [AXES.batch, KV, AXES.past, hd]),
    });
  }

  // ---- the attention bias [B, 1, S, T]: causal in the cache, padding from attention_mask, the sliding window ----
  const scalarOf = (shapeOf: Value) => b.node1("Squeeze", [b.node1("Shape", [shapeOf], { start: 1 }, "int64", [1]), b.ints([0])], {}, "int64", []);
  const seqLen = scalarOf(ids); // S
  const total = scalarOf(mask); // T = P + S
  const one = b.scalar(1, "int64");
  const keyIndex = b.node1("Range", [b.scalar(0, "int64"), total, one], {}, "int64", [AXES.total]); // [T]
  const queryIndex = b.node1("Range", [b.sub(total, seqLen), total, one], {}, "int64", [AXES.seq]); // [S]: P .. T − 1
  const qCol = b.unsqueeze(queryIndex, [1]); // [S, 1]
  const kRow = b.unsqueeze(keyIndex, [0]); // [1, T]
  const and = (x: Value, y: Value) => b.node1("And", [x, y], {}, "bool", broadcastShapes(x.dims, y.dims));
  let allowed = b.node1("LessOrEqual", [kRow, qCol], {}, "bool", [AXES.seq, AXES.total]); // [S, T]
  const window = spec.attention.slidingWindow ?? null;
  if (window !== null) allowed = and(allowed, b.less(b.sub(qCol, kRow), b.scalar(window, "int64")));
  const tokens = b.unsqueeze(b.cast(mask, "bool"), [1, 2]); // [B, 1, 1, T]
  allowed = and(b.unsqueeze(allowed, [0, 1]), tokens); // [B, 1, S, T]
  const bias = b.where(allowed, b.scalar(0), b.scalar(MASKED)); // float32

  // ---- the training graph's forward pass, with the cache ----
  const present: { k: Value; v: Value }[] = [];
  const attend = (l: number, k: Value, v: Value) => {
    // past ‖ new along the sequence: the total length attention_mask has.
    const cat = (a: Value, x: Value) => b.node1("Concat", [a, x], { axis: 2 }, ct, [AXES.batch, KV, AXES.total, hd]);
    const r = { k: cat(past[l]!.k, k), v: cat(past[l]!.v, v) };
    present.push(r);
    return r;
  };
  const logits = forwardOf(plugin).logits(b, config, param, ids, { cache: { positions, bias, attend }, decoder: m });
  b.output(b.cast(logits, "float32"), IO.logits); // logits first, then the cache (Optimum's order)
  present.forEach((r, l) => {
    b.output(r.k, IO.presentKey(l));
    b.output(r.v, IO.presentValue(l));
  });
  return { graph: b, shape: s, spec, kvHeads: KV };
}

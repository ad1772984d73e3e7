// Test helpers (not part of the package: excluded from dist). The reference is the trainer's evaluation graph.
import ort from "onnxruntime-node";
import { initTrainingState, inMemory, Tensor, type LazyTensor, type TrainingState } from "@staged/core";
import { GraphBuilder, modelGraph } from "@staged/trainer-ort";
import { IO } from "../graph.js";

export type Feeds = Record<string, ort.Tensor>;

/** The float32 values of every parameter of a state. */
export async function paramFeeds(state: TrainingState): Promise<Feeds> {
  const feeds: Feeds = {};
  for (const [name, t] of state.params) {
    const v = await t.read();
    feeds[name] = new ort.Tensor("float32", Float32Array.from(v.f32), [...v.shape]);
  }
  return feeds;
}

/**
 * Logits [B, T, V] of the trainer's graph (modelGraph(architecture).logits, the graph training evaluates) for ids
 * [B][T] of equal lengths.
 */
export async function trainerLogits(state: TrainingState, ids: readonly (readonly number[])[]): Promise<Float32Array> {
  const B = ids.length,
    T = ids[0]!.length;
  const model = modelGraph(state.architecture);
  const b = new GraphBuilder();
  const specs = model.params(state.config);
  const pv = new Map(specs.map((s) => [s.name, b.input(s.name, "float32", s.shape)]));
  const idv = b.input("input_ids", "int64", [B, T]);
  b.output(
    model.logits(b, state.config, (n) => pv.get(n)!, idv),
    "logits",
  );
  const session = await ort.InferenceSession.create(b.serialize(), { intraOpNumThreads: 1 });
  try {
    const out = await session.run({
      ...(await paramFeeds(state)),
      input_ids: new ort.Tensor("int64", BigInt64Array.from(ids.flat(), BigInt), [B, T]),
    });
    return out.logits!.data as Float32Array;
  } finally {
    await session.release();
  }
}

export interface CacheState {
  keys: ort.Tensor[];
  values: ort.Tensor[];
}

/** One call of an exported model: ids [B][S] (rows of equal length, padding included), mask [B][P+S], positions [B][S], the past (empty: none). */
export async function runExport(
  session: ort.InferenceSession,
  layers: number,
  kvHeads: number,
  headDim: number,
  ids: number[][],
  mask: number[][],
  positions: number[][],
  past?: CacheState,
  type: "float32" | "float16" = "float32",
): Promise<{ logits: Float32Array; present: CacheState }> {
  const B = ids.length,
    S = ids[0]!.length;
  const i64 = (rows: number[][]) => new ort.Tensor("int64", BigInt64Array.from(rows.flat(), BigInt), [rows.length, rows[0]!.length]);
  const empty = () => new ort.Tensor(type, type === "float16" ? new Uint16Array(0) : new Float32Array(0), [B, kvHeads, 0, headDim]);
  const feeds: Feeds = { [IO.ids]: i64(ids), [IO.mask]: i64(mask), [IO.positions]: i64(positions) };
  for (let l = 0; l < layers; l++) {
    feeds[IO.pastKey(l)] = past?.keys[l] ?? empty();
    feeds[IO.pastValue(l)] = past?.values[l] ?? empty();
  }
  const out = await session.run(feeds);
  if (out.logits!.dims.join() !== [B, S, out.logits!.dims[2]].join()) throw new Error(`logits of shape [${out.logits!.dims}]`);
  return {
    logits: out.logits!.data as Float32Array,
    present: {
      keys: Array.from({ length: layers }, (_, l) => out[IO.presentKey(l)]!),
      values: Array.from({ length: layers }, (_, l) => out[IO.presentValue(l)]!),
    },
  };
}

/** The state with every parameter in memory, its values replaced by `f(name, values)`. */
export async function transformed(state: TrainingState, f: (name: string, values: Float32Array) => Float32Array): Promise<TrainingState> {
  const params = new Map<string, LazyTensor>();
  for (const [n, t] of state.params) {
    const v = await t.read();
    params.set(n, inMemory(new Tensor(v.dtype, v.shape, f(n, Float32Array.from(v.f32)))));
  }
  return { ...state, params };
}

/**
 * A fresh state with weights × `scale` (sharper next-token distributions: greedy choices far from ties) and
 * random biases (zero at initialization), so that every parameter counts in a comparison.
 */
export async function testState(architecture: string, config: Record<string, unknown>, seed: number, scale = 1): Promise<TrainingState> {
  let x = seed * 7919 + 1;
  const rand = () => {
    x = (x * 48271) % 2147483647;
    return x / 2147483647 - 0.5;
  };
  return transformed(initTrainingState(architecture, config, seed), (n, v) =>
    n.endsWith(".bias") ? v.map(() => rand() * 0.2) : /norm|ln_/.test(n) ? v.map((w) => w + rand() * 0.2) : v.map((w) => w * scale),
  );
}

/** Largest violation of |a − e| ≤ atol + rtol·|e| (≤ 0: every element passes). */
export function worstExcess(actual: ArrayLike<number>, expected: ArrayLike<number>, rtol: number, atol: number): number {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} vs ${expected.length}`);
  let worst = -Infinity;
  for (let i = 0; i < actual.length; i++) {
    const e = Math.abs(actual[i]! - expected[i]!) - (atol + rtol * Math.abs(expected[i]!));
    if (!(e <= worst)) worst = Number.isNaN(e) ? Infinity : e;
  }
  return worst;
}

/** Small configs of every registered architecture (and its variants) for the parity tests. */
export const VARIANTS: readonly { name: string; architecture: string; config: Record<string, unknown> }[] = [
  { name: "gpt2 (tied)", architecture: "gpt2", config: { model_type: "gpt2", n_layer: 2, n_embd: 16, n_head: 2, vocab_size: 256, n_positions: 32 } },
  {
    name: "gpt2 (untied, scale by inverse layer)",
    architecture: "gpt2",
    config: {
      model_type: "gpt2",
      n_layer: 2,
      n_embd: 16,
      n_head: 4,
      vocab_size: 256,
      n_positions: 32,
      tie_word_embeddings: false,
      scale_attn_by_inverse_layer_idx: true,
    },
  },
  {
    name: "llama (GQA 4/2, untied)",
    architecture: "llama",
    config: {
      model_type: "llama",
      num_hidden_layers: 2,
      hidden_size: 16,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      intermediate_size: 24,
      vocab_size: 256,
      max_position_embeddings: 32,
    },
  },
  {
    name: "llama (MQA 4/1, tied, rope_theta 500)",
    architecture: "llama",
    config: {
      model_type: "llama",
      num_hidden_layers: 2,
      hidden_size: 16,
      num_attention_heads: 4,
      num_key_value_heads: 1,
      intermediate_size: 24,
      vocab_size: 256,
      max_position_embeddings: 32,
      tie_word_embeddings: true,
      rope_theta: 500,
    },
  },
  {
    name: "qwen2 (q/k/v biases, GQA)",
    architecture: "llama",
    config: {
      model_type: "qwen2",
      num_hidden_layers: 2,
      hidden_size: 16,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      intermediate_size: 24,
      vocab_size: 256,
      max_position_embeddings: 32,
    },
  },
];

/**
 * Greedy decoding by full recomputation with the trainer's graph: at each step the whole sequence so far goes
 * through modelGraph(...).logits (one static-shaped session, the ids right-padded: position t sees ids ≤ t only),
 * and the next token is the argmax at the last position. `margins`: top-1 minus top-2 logit of each choice.
 */
export async function trainerGreedy(state: TrainingState, prompt: readonly number[], n: number): Promise<{ ids: number[]; margins: number[] }> {
  const T = prompt.length + n - 1;
  const model = modelGraph(state.architecture);
  const b = new GraphBuilder();
  const pv = new Map(model.params(state.config).map((s) => [s.name, b.input(s.name, "float32", s.shape)]));
  b.output(
    model.logits(b, state.config, (name) => pv.get(name)!, b.input("input_ids", "int64", [1, T])),
    "logits",
  );
  const session = await ort.InferenceSession.create(b.serialize(), { intraOpNumThreads: 1 });
  const params = await paramFeeds(state);
  const ids = [...prompt],
    margins: number[] = [];
  try {
    for (let k = 0; k < n; k++) {
      const padded = [...ids, ...Array(T - ids.length).fill(0)];
      const logits = (await session.run({ ...params, input_ids: new ort.Tensor("int64", BigInt64Array.from(padded, BigInt), [1, T]) })).logits!
        .data as Float32Array;
      const V = logits.length / T;
      const row = logits.subarray((ids.length - 1) * V, ids.length * V);
      let best = 0;
      for (let i = 1; i < V; i++) if (row[i]! > row[best]!) best = i;
      let second = -Infinity;
      for (let i = 0; i < V; i++) if (i !== best) second = Math.max(second, row[i]!);
      margins.push(row[best]! - second);
      ids.push(best);
    }
  } finally {
    await session.release();
  }
  return { ids: ids.slice(prompt.length), margins };
}

/** UTF-8 bytes: the byte-level tokenizer's ids. */
export const bytesOf = (text: string): number[] => [...new TextEncoder().encode(text)];

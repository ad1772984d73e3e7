import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TrainingState } from "@staged/core";
import { exportModel } from "./export.js";
import { runExport, testState, trainerLogits, VARIANTS, worstExcess, type CacheState } from "./testing/reference.js";

/**
 * The exported decoder against the trainer's evaluation graph (@staged/trainer-ort's modelGraph(...).logits)
 * on the same ids: without a cache, with a cache (a prefix, then the rest), and for a batch of two rows, one
 * left-padded, whose positions and mask come as transformers.js makes them. Tolerance: float32 rounding of
 * differently ordered sums (|Δ| ≤ 1e-6 + 1e-5·|logit|).
 */
const RTOL = 1e-5,
  ATOL = 1e-6;
const A = [72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100]; // "Hello, world"
const B = [84, 104, 101, 32, 99, 97, 116]; // "The cat" (padded on the left to A's length)

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-export-graph-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** transformers.js' position ids: cumsum(mask) − 1, 1 where masked. */
const positionsOf = (mask: number[]) => {
  let c = 0;
  return mask.map((m) => (m ? c++ : 1));
};

describe.each(VARIANTS)("the export of $name", ({ name, architecture, config }) => {
  let state: TrainingState, session: ort.InferenceSession, dims: { layers: number; kv: number; hd: number };
  let refA: Float32Array, refB: Float32Array;
  const V = 256;

  beforeAll(async () => {
    state = await testState(architecture, config, 7, 2);
    const dir = join(root, name.replace(/\W+/g, "-"));
    await exportModel(state, dir);
    session = await ort.InferenceSession.create(join(dir, "onnx", "model.onnx"), { intraOpNumThreads: 1 });
    dims = { layers: state.shape.layers, kv: state.shape.kvHeads ?? state.shape.heads, hd: state.shape.headDim };
    refA = await trainerLogits(state, [A]);
    refB = await trainerLogits(state, [B]);
  });
  afterAll(async () => {
    await session?.release();
  });

  const run = (ids: number[][], mask: number[][], pos: number[][], past?: CacheState) =>
    runExport(session, dims.layers, dims.kv, dims.hd, ids, mask, pos, past);

  it("logits without a cache equal the trainer's", async () => {
    const { logits, present } = await run([A], [A.map(() => 1)], [A.map((_, i) => i)]);
    expect(worstExcess(logits, refA, RTOL, ATOL)).toBeLessThanOrEqual(0);
    expect(present.keys[0]!.dims).toEqual([1, dims.kv, A.length, dims.hd]);
    expect(present.values[dims.layers - 1]!.dims).toEqual([1, dims.kv, A.length, dims.hd]);
  });

  it("with a cache: a prefix, then the rest one call at a time and in one call", async () => {
    const k = 5;
    const first = await run([A.slice(0, k)], [Array(k).fill(1)], [[0, 1, 2, 3, 4]]);
    expect(worstExcess(first.logits, refA.subarray(0, k * V), RTOL, ATOL)).toBeLessThanOrEqual(0);
    const rest = await run([A.slice(k)], [A.map(() => 1)], [A.slice(k).map((_, i) => k + i)], first.present);
    expect(worstExcess(rest.logits, refA.subarray(k * V), RTOL, ATOL)).toBeLessThanOrEqual(0);
    let past = first.present;
    for (let t = k; t < A.length; t++) {
      const step = await run([[A[t]!]], [Array(t + 1).fill(1)], [[t]], past);
      expect(worstExcess(step.logits, refA.subarray(t * V, (t + 1) * V), RTOL, ATOL), `position ${t}`).toBeLessThanOrEqual(0);
      past = step.present;
    }
    expect(past.keys[0]!.dims).toEqual([1, dims.kv, A.length, dims.hd]);
  });

  it("a batch of 2 with left padding, with and without a cache: each row's tokens as alone", async () => {
    const pad = A.length - B.length;
    const ids = [A, [...Array(pad).fill(0), ...B]];
    const mask = [A.map(() => 1), [...Array(pad).fill(0), ...B.map(() => 1)]];
    const pos = mask.map(positionsOf);
    const check = (logits: Float32Array, from: number, to: number) => {
      const S = to - from;
      // Row 0: every position; row 1: its tokens (positions ≥ pad).
      expect(worstExcess(logits.subarray(0, S * V), refA.subarray(from * V, to * V), RTOL, ATOL)).toBeLessThanOrEqual(0);
      const start = Math.max(from, pad);
      expect(
        worstExcess(logits.subarray((S + start - from) * V, 2 * S * V), refB.subarray((start - pad) * V, (to - pad) * V), RTOL, ATOL),
      ).toBeLessThanOrEqual(0);
    };
    const whole = await run(ids, mask, pos);
    check(whole.logits, 0, A.length);
    for (const logit of whole.logits) expect(Number.isFinite(logit)).toBe(true); // padded rows too: no NaN to leak
    const k = 7;
    const first = await run(
      ids.map((r) => r.slice(0, k)),
      mask.map((r) => r.slice(0, k)),
      pos.map((r) => r.slice(0, k)),
    );
    check(first.logits, 0, k);
    const rest = await run(
      ids.map((r) => r.slice(k)),
      mask,
      pos.map((r) => r.slice(k)),
      first.present,
    );
    check(rest.logits, k, A.length);
  });
});

it("sliding window (mistral): a token attends to the last `sliding_window` tokens, so its logits are those of that window alone", async () => {
  // Rotary scores depend on relative positions only: the window's tokens at positions 0..W−1 give the same logits
  // (one layer: with more, a token sees further back through the window of the one before; HF: key j is seen by
  // query i when i − W < j ≤ i).
  const W = 4;
  const state = await testState(
    "llama",
    {
      model_type: "mistral",
      num_hidden_layers: 1,
      hidden_size: 16,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      intermediate_size: 24,
      vocab_size: 256,
      max_position_embeddings: 32,
      sliding_window: W,
    },
    3,
    2,
  );
  const dir = join(root, "mistral");
  await exportModel(state, dir);
  const session = await ort.InferenceSession.create(join(dir, "onnx", "model.onnx"), { intraOpNumThreads: 1 });
  try {
    const { logits } = await runExport(session, 1, 2, 4, [A], [A.map(() => 1)], [A.map((_, i) => i)]);
    for (const t of [W - 1, W, A.length - 1]) {
      const window = A.slice(Math.max(0, t - W + 1), t + 1);
      const ref = await trainerLogits(state, [window]);
      expect(
        worstExcess(logits.subarray(t * 256, (t + 1) * 256), ref.subarray((window.length - 1) * 256), 1e-4, 1e-5),
        `position ${t}`,
      ).toBeLessThanOrEqual(0);
    }
    // And not the logits of the whole prefix: the window matters.
    const full = await trainerLogits({ ...state, config: { ...state.config, sliding_window: 64 } }, [A]);
    expect(worstExcess(logits.subarray((A.length - 1) * 256), full.subarray((A.length - 1) * 256), 1e-4, 1e-5)).toBeGreaterThan(0);
  } finally {
    await session.release();
  }
});

it("the export's logits do not depend on the thread count: 1, 4 and 8 intra-op threads, with and without a cache", async () => {
  // Shapes large enough for onnxruntime's CPU kernels to split their work (4 rows × 96 positions, width 128),
  // repeated tokens. Tolerance: float32 reduction order, as against the trainer.
  const S = 96,
    rows = 4;
  const ids = Array.from({ length: rows }, (_, r) => Array.from({ length: S }, (_, t) => A[(t * 3 + r) % 5]!));
  const mask = ids.map((r) => r.map(() => 1)),
    pos = ids.map((r) => r.map((_, t) => t));
  for (const [architecture, config] of [
    ["gpt2", { model_type: "gpt2", n_layer: 2, n_embd: 128, n_head: 4, vocab_size: 256, n_positions: 128 }],
    [
      "llama",
      {
        model_type: "llama",
        num_hidden_layers: 2,
        hidden_size: 128,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        intermediate_size: 256,
        vocab_size: 256,
        max_position_embeddings: 128,
      },
    ],
  ] as const) {
    const state = await testState(architecture, config, 11, 2);
    const dir = join(root, `threads-${architecture}`);
    await exportModel(state, dir);
    const dims = { layers: state.shape.layers, kv: state.shape.kvHeads ?? state.shape.heads, hd: state.shape.headDim };
    const logitsAt = async (threads: number) => {
      const session = await ort.InferenceSession.create(join(dir, "onnx", "model.onnx"), { intraOpNumThreads: threads });
      try {
        const first = await runExport(
          session,
          dims.layers,
          dims.kv,
          dims.hd,
          ids.map((r) => r.slice(0, S - 1)),
          mask.map((r) => r.slice(0, S - 1)),
          pos.map((r) => r.slice(0, S - 1)),
        );
        const last = await runExport(
          session,
          dims.layers,
          dims.kv,
          dims.hd,
          ids.map((r) => r.slice(S - 1)),
          mask,
          pos.map((r) => r.slice(S - 1)),
          first.present,
        );
        return { first: first.logits, last: last.logits };
      } finally {
        await session.release();
      }
    };
    const one = await logitsAt(1);
    for (const threads of [4, 8]) {
      const many = await logitsAt(threads);
      expect(worstExcess(many.first, one.first, RTOL, ATOL), `${architecture}, ${threads} threads`).toBeLessThanOrEqual(0);
      expect(worstExcess(many.last, one.last, RTOL, ATOL), `${architecture}, ${threads} threads, cached step`).toBeLessThanOrEqual(0);
    }
  }
}, 60_000);

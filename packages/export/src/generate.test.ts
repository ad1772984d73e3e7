import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { saveTrainingState, type TrainingState } from "@staged/core";
import { growWidth } from "@staged/grow-width";
import { filterTopKTopP, generate, loadGenerator, type Generator } from "./generate.js";
import { bytesOf, testState, trainerGreedy } from "./testing/reference.js";

/**
 * Greedy generation through transformers.js (pipeline("text-generation") on the export, with its KV cache)
 * against greedy decoding by full recomputation with the trainer's graph, token for token; the weights are
 * scaled, and seeds chosen, so that every choice is clear of a tie (margins checked: float32 rounding cannot
 * flip one).
 */
const N = 24;
const MIN_MARGIN = 1e-3;
let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-export-generate-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const gpt2Config = { model_type: "gpt2", n_layer: 2, n_embd: 16, n_head: 2, vocab_size: 256, n_positions: 64 };
const llamaConfig = {
  model_type: "llama",
  num_hidden_layers: 2,
  hidden_size: 16,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  intermediate_size: 32,
  vocab_size: 256,
  max_position_embeddings: 64,
};

const CASES: { name: string; state: () => Promise<TrainingState> }[] = [
  { name: "GPT-2", state: () => testState("gpt2", gpt2Config, 1, 6) },
  {
    name: "a GPT-2 grown in width (growWidth ×2, noise breaking the symmetry)",
    state: async () => growWidth(await testState("gpt2", gpt2Config, 2, 6), { factor: 2, symmetry: "noise" }),
  },
  { name: "Llama with grouped-query attention (4 heads, 2 key/value heads)", state: () => testState("llama", llamaConfig, 5, 6) },
];

describe.each(CASES)("greedy generation of $name", ({ name, state: make }) => {
  let state: TrainingState, generator: Generator;
  beforeAll(async () => {
    state = await make();
    const dir = join(root, name.replace(/\W+/g, "-").slice(0, 40));
    await saveTrainingState(dir, state);
    generator = await loadGenerator(dir, { threads: 1 });
  });
  afterAll(async () => {
    await generator?.dispose();
  });

  it("through transformers.js equals greedy recomputation with the trainer's graph, token for token", async () => {
    for (const prompt of ["Hello", "The quick brown fox"]) {
      const ref = await trainerGreedy(state, bytesOf(prompt), N);
      expect(Math.min(...ref.margins), "a choice near a tie").toBeGreaterThan(MIN_MARGIN);
      const pieces: string[] = [];
      const r = await generator.generate(prompt, { maxNewTokens: N, onText: (p) => pieces.push(p) });
      expect(r.promptIds).toEqual(bytesOf(prompt));
      expect(r.newIds).toEqual(ref.ids);
      expect(r.ids).toEqual([...bytesOf(prompt), ...ref.ids]);
      expect(r.text).toBe(new TextDecoder().decode(Uint8Array.from(r.ids)));
      expect(r.text).toBe(prompt + r.completion);
      expect(pieces.join("")).toBe(r.completion);
      expect(r.timing.steps).toBe(N);
      expect(r.timing.firstTokenSeconds).toBeGreaterThan(0);
    }
  });

  it("a batch of prompts of different lengths (left padding) gives each prompt's own continuation", async () => {
    const prompts = ["Hi", "The quick brown fox", "a"];
    const { results, timing } = await generator.generateBatch(prompts, { maxNewTokens: 12 });
    expect(timing.batch).toBe(3);
    for (const [i, p] of prompts.entries()) {
      const ref = await trainerGreedy(state, bytesOf(p), 12);
      expect(Math.min(...ref.margins)).toBeGreaterThan(MIN_MARGIN);
      expect(results[i]!.newIds, p).toEqual(ref.ids);
      expect(results[i]!.text).toBe(new TextDecoder().decode(Uint8Array.from([...bytesOf(p), ...ref.ids])));
    }
  });
});

describe("sampling", () => {
  let generator: Generator;
  beforeAll(async () => {
    const dir = join(root, "sampling");
    await saveTrainingState(dir, await testState("gpt2", gpt2Config, 21, 1));
    generator = await loadGenerator(dir, { threads: 1 });
  });
  afterAll(async () => {
    await generator?.dispose();
  });

  it("the same seed gives the same sample, another seed another; top-k 1 is greedy", async () => {
    const o = { maxNewTokens: 16, temperature: 1.5 };
    const a = await generator.generate("Once", { ...o, seed: 1 });
    const b = await generator.generate("Once", { ...o, seed: 1 });
    const c = await generator.generate("Once", { ...o, seed: 2 });
    expect(b.newIds).toEqual(a.newIds);
    expect(c.newIds).not.toEqual(a.newIds);
    const greedy = await generator.generate("Once", { maxNewTokens: 16 });
    expect((await generator.generate("Once", { maxNewTokens: 16, topK: 1, seed: 3 })).newIds).toEqual(greedy.newIds);
    expect((await generator.generate("Once", { maxNewTokens: 16, topP: 1e-6, seed: 4 })).newIds).toEqual(greedy.newIds);
  });

  it("refuses what it cannot do, by name", async () => {
    await expect(generator.generate("x", { maxNewTokens: 64 })).rejects.toThrow(
      "the prompt (1 tokens) and 64 new tokens exceed the model's context of 64 positions",
    );
    await expect(generator.generate("", {})).rejects.toThrow(/prompt gives no tokens/);
    await expect(generator.generate("x", { topP: 2 })).rejects.toThrow("topP must be in (0, 1], got 2");
    await expect(generator.generate("x", { maxNewTokens: 0 })).rejects.toThrow("maxNewTokens must be an integer ≥ 1, got 0");
    await expect(generate(join(root, "nowhere"), "x")).rejects.toThrow(/nowhere: not a checkpoint directory/);
  });
});

describe("filterTopKTopP (HF's TopKLogitsWarper, then TopPLogitsWarper)", () => {
  it("keeps the k largest (ties with the k-th too), then the smallest set of probability ≥ p", () => {
    const row = Float32Array.from([1, 3, 2, 3, 0]);
    filterTopKTopP(row, 2, 1);
    expect([...row]).toEqual([-Infinity, 3, -Infinity, 3, -Infinity]);
    const p = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
    filterTopKTopP(p, 0, 0.75); // 0.5 + 0.3 ≥ 0.75
    expect([...p].map((x) => x > -Infinity)).toEqual([true, true, false, false]);
    const q = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
    filterTopKTopP(q, 0, 0.5); // the most likely alone reaches 0.5
    expect([...q].map((x) => x > -Infinity)).toEqual([true, false, false, false]);
    const all = Float32Array.from([0, 0, 0]);
    filterTopKTopP(all, 0, 1);
    expect([...all]).toEqual([0, 0, 0]);
  });
});

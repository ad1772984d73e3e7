// Exactness of the growth operators, measured by the trainer: a tiny GPT-2 trained a few steps (so it has
// weights and AdamW moments worth preserving) is grown, and the grown model's loss and gradients are
// computed by the same onnxruntime training engine that trains it.
import { describe, expect, it, beforeAll } from "vitest";
import { Rng, Tensor, deriveSeed, gpt2, inMemory, initTrainingState, type LazyTensor, type TrainingState } from "@staged/core";
import { growWidth, type WidthOptions } from "@staged/grow-width";
import { growDepth, type DepthOptions } from "@staged/grow-depth";
import { createEngine, type Engine } from "@staged/trainer-ort";
import { TINY_LLAMA } from "@staged/testing";

const B = 4,
  T = 12,
  VOCAB = 40;
// No dropout (HF's GPT-2 default is 0.1): the steps here must be the deterministic function of the batches.
const config = {
  model_type: "gpt2",
  n_layer: 2,
  n_embd: 16,
  n_head: 2,
  vocab_size: VOCAB,
  n_positions: 16,
  resid_pdrop: 0,
  embd_pdrop: 0,
  attn_pdrop: 0,
};
const batches = Array.from({ length: 8 }, (_, s) => {
  const rng = new Rng(1000 + s);
  return Int32Array.from({ length: B * T }, () => rng.int(VOCAB));
});

const readAll = async (m: Map<string, LazyTensor>) => new Map(await Promise.all([...m].map(async ([n, t]) => [n, (await t.read()).f32] as const)));

async function engineFor(state: TrainingState): Promise<Engine> {
  const { expAvg, expAvgSq } = state.optimizer;
  return createEngine(
    state.architecture,
    state.config,
    await readAll(state.params),
    expAvg && expAvgSq ? { expAvg: await readAll(expAvg), expAvgSq: await readAll(expAvgSq) } : undefined,
    { batch: B, context: T, threads: 1, noDecay: state.optimizer.noDecay },
  );
}

const lazy = (values: Map<string, Float32Array>, shapes: Map<string, LazyTensor>) =>
  new Map([...values].map(([n, v]) => [n, inMemory(new Tensor("F32", shapes.get(n)!.shape, Float32Array.from(v)))]));

/** A tiny model after a few AdamW steps: weights, moments, step counter. */
async function trainedState(steps = 4, cfg: Record<string, unknown> = config, arch = "gpt2"): Promise<TrainingState> {
  const init = initTrainingState(arch, cfg, 7);
  const engine = await engineFor(init);
  for (let s = 0; s < steps; s++) await engine.step(batches[s]!, 3e-3, s + 1);
  const { expAvg, expAvgSq } = engine.moments();
  const state: TrainingState = {
    ...init,
    params: lazy(engine.params(), init.params),
    optimizer: { ...init.optimizer, step: steps, expAvg: lazy(expAvg, init.params), expAvgSq: lazy(expAvgSq, init.params) },
    progress: { ...init.progress, step: steps },
  };
  await engine.release();
  return state;
}

async function loss(state: TrainingState, batch = batches[7]!): Promise<number> {
  const engine = await engineFor(state);
  try {
    return await engine.evalLoss(batch);
  } finally {
    await engine.release();
  }
}

let small: TrainingState;
let smallLoss: number;
beforeAll(async () => {
  small = await trainedState();
  smallLoss = await loss(small);
}, 60_000);

// float32 rounding: the grown model sums the same terms in another order and over more (zero) entries.
const close = (a: number, b: number) => expect(Math.abs(a - b)).toBeLessThan(2e-6 * Math.max(1, Math.abs(b)));

describe("width growth keeps the loss exactly", () => {
  const cases: [string, WidthOptions][] = [
    ["×2 (paper layout, consistent moments)", { factor: 2 }],
    ["×2 with paper moments", { factor: 2, moments: "paper" }],
    ["×3", { factor: 3 }],
    ["FFN only ×2", { factor: 1, ffnFactor: 2 }],
    ["×2 with FFN ×2 more", { factor: 2, ffnFactor: 2 }],
    ["×2 with the lossless split", { factor: 2, symmetry: "split", seed: 5 }],
    ["×3 with the lossless split", { factor: 3, symmetry: "split", seed: 5 }],
    ["×2 with fresh units", { factor: 2, units: "fresh", seed: 5 }],
    ["×3 with fresh units", { factor: 3, units: "fresh", seed: 5 }],
    ["FFN only ×2, fresh units", { factor: 1, ffnFactor: 2, units: "fresh" }],
    ["×2 with FFN ×2 more, fresh units", { factor: 2, ffnFactor: 2, units: "fresh" }],
  ];
  for (const [label, options] of cases) {
    it(label, async () => close(await loss(growWidth(small, options)), smallLoss), 30_000);
  }

  it("noise moves the loss, by little", async () => {
    const moved = await loss(growWidth(small, { symmetry: "noise", noiseStd: 1e-3, seed: 1 }));
    expect(moved).not.toBe(smallLoss);
    expect(Math.abs(moved - smallLoss)).toBeLessThan(1e-2);
  }, 30_000);
});

describe("depth growth", () => {
  const cases: [string, DepthOptions][] = [
    ["×2 alternate, identity init", { factor: 2, placement: "alternate" }],
    ["×2 append, identity init", { factor: 2, placement: "append" }],
    ["to 3 layers", { layers: 3 }],
    ["explicit layer map", { layerMap: [0, 1, 1, 0, 1] }],
  ];
  for (const [label, options] of cases) {
    it(`${label} keeps the loss exactly`, async () => close(await loss(growDepth(small, options)), smallLoss), 30_000);
  }

  it("copy init changes the loss", async () => {
    expect(Math.abs((await loss(growDepth(small, { init: "copy" }))) - smallLoss)).toBeGreaterThan(1e-4);
  }, 30_000);
});

describe("an untied output layer", () => {
  it("width ×2 (split) and depth ×2 keep the loss exactly", async () => {
    const untied = await trainedState(3, { ...config, tie_word_embeddings: false });
    expect(untied.params.has("lm_head.weight")).toBe(true);
    const before = await loss(untied);
    close(await loss(growWidth(untied, { factor: 2, symmetry: "split" })), before);
    close(await loss(growDepth(untied, { factor: 2 })), before);
  }, 60_000);
});

describe("composition", () => {
  it("width then depth, and depth then width, keep the loss exactly", async () => {
    close(await loss(growDepth(growWidth(small, { factor: 2 }), { factor: 2 })), smallLoss);
    close(await loss(growWidth(growDepth(small, { factor: 2, placement: "append" }), { factor: 2, symmetry: "split" })), smallLoss);
  }, 60_000);
});

/**
 * The small model's gradient g (and g²) put where its moments go, grown with `options`; with the grown model's own
 * gradient on the same batch, its mapped moments and the largest gradient entry.
 */
async function grownGradients(options: WidthOptions) {
  const engine = await engineFor(small);
  const { grads } = await engine.gradients(batches[6]!);
  await engine.release();
  const g = lazy(grads, small.params);
  const gSq = lazy(new Map([...grads].map(([n, v]) => [n, v.map((x) => x * x)])), small.params);
  const grown = growWidth({ ...small, optimizer: { ...small.optimizer, expAvg: g, expAvgSq: gSq } }, options);
  const big = await engineFor(grown);
  const actual = (await big.gradients(batches[6]!)).grads;
  await big.release();
  let scale = 0;
  for (const v of actual.values()) for (const x of v) scale = Math.max(scale, Math.abs(x));
  return { actual, scale, mapped: await readAll(grown.optimizer.expAvg!), mappedSq: await readAll(grown.optimizer.expAvgSq!), grads };
}

describe("consistent moments are the grown model's gradients", () => {
  for (const options of [{ factor: 2 }, { factor: 3 }, { factor: 1, ffnFactor: 2 }, { factor: 2, ffnFactor: 3 }] as WidthOptions[]) {
    it(`factor ${options.factor}, ffnFactor ${options.ffnFactor ?? 1}: every entry, off-diagonal blocks included`, async () => {
      // Put the small model's gradient g (and g²) where its moments go; the consistent mapping of g must equal
      // the gradient the grown model computes for every entry.
      const { actual, scale, mapped, mappedSq } = await grownGradients({ ...options, moments: "consistent" });
      for (const [name, a] of actual) {
        const m = mapped.get(name)!,
          m2 = mappedSq.get(name)!;
        for (let i = 0; i < a.length; i++) {
          expect(Math.abs(a[i]! - m[i]!), `${name}[${i}]`).toBeLessThan(1e-5 * scale);
          expect(Math.abs(a[i]! * a[i]! - m2[i]!), `${name}[${i}]²`).toBeLessThan(1e-5 * scale * scale);
        }
      }
    }, 60_000);
  }
});

describe("fresh units", () => {
  for (const options of [{ factor: 2 }, { factor: 3 }, { factor: 2, ffnFactor: 2 }] as WidthOptions[]) {
    it(`factor ${options.factor}, ffnFactor ${options.ffnFactor ?? 1}: the old units' moments are the grown model's gradients, the new units' are 0 and their gradients are not`, async () => {
      const { actual, scale, mapped, mappedSq, grads } = await grownGradients({ ...options, units: "fresh", seed: 4 });
      // Which entries are the old units' (or copies of a shared parameter): the mapping of moments that are all 1.
      const ones = lazy(new Map([...grads].map(([n, v]) => [n, v.map(() => 1)])), small.params);
      const old = await readAll(
        growWidth({ ...small, optimizer: { ...small.optimizer, expAvg: ones, expAvgSq: ones } }, { ...options, units: "fresh", seed: 4 }).optimizer
          .expAvg!,
      );
      let newEntries = 0,
        newGradient = 0;
      for (const [name, a] of actual) {
        const m = mapped.get(name)!,
          m2 = mappedSq.get(name)!,
          o = old.get(name)!;
        for (let i = 0; i < a.length; i++) {
          if (o[i] === 0) {
            expect(m[i], `${name}[${i}] (new)`).toBe(0);
            expect(m2[i], `${name}[${i}]² (new)`).toBe(0);
            newEntries++;
            newGradient = Math.max(newGradient, Math.abs(a[i]!));
            continue;
          }
          expect(Math.abs(a[i]! - m[i]!), `${name}[${i}]`).toBeLessThan(1e-5 * scale);
          expect(Math.abs(a[i]! * a[i]! - m2[i]!), `${name}[${i}]²`).toBeLessThan(1e-5 * scale * scale);
        }
      }
      expect(newEntries).toBeGreaterThan(0);
      // The new units' output weights start at 0 but their inputs are random: they learn from the first step.
      expect(newGradient).toBeGreaterThan(1e-3 * scale);
    }, 60_000);
  }

  it("the new units are the grown model's own initialization; the old units read the mean of the copies", async () => {
    const grown = growWidth(small, { factor: 2, units: "fresh", seed: 9 });
    const fc = "transformer.h.1.mlp.c_fc.weight";
    const [w, g] = [await small.params.get(fc)!.read(), await grown.params.get(fc)!.read()];
    const [rows, cols] = w.shape as [number, number];
    const fresh = gpt2.initParam(
      grown.config,
      gpt2.params(grown.config).find((p) => p.name === fc)!,
      deriveSeed(9, "fresh units"),
    );
    for (let r = 0; r < 2 * rows; r++) {
      for (let c = 0; c < 2 * cols; c++) {
        const at = r * 2 * cols + c;
        expect(g.f32[at]).toBe(c < cols ? w.f32[(r % rows) * cols + c]! / 2 : fresh.f32[at]!);
      }
    }
  });
});

describe("symmetry breaking", () => {
  /** The largest difference between hidden copy 0 and copy 1 of the token embeddings after training. */
  async function copyGap(options: WidthOptions): Promise<number> {
    const grown = growWidth(small, { factor: 2, ...options });
    const engine = await engineFor(grown);
    for (let s = 0; s < 3; s++) await engine.step(batches[s]!, 3e-3, small.optimizer.step + s + 1);
    const wte = new Tensor("F32", [VOCAB, 32], engine.params().get("transformer.wte.weight")!);
    await engine.release();
    const [a, b] = wte.chunk(1, 2);
    return a!.f32.reduce((m, x, i) => Math.max(m, Math.abs(x - b!.f32[i]!)), 0);
  }

  it("copies stay identical under none and diverge under split, antithetic and fresh units", async () => {
    expect(await copyGap({ symmetry: "none" })).toBeLessThan(1e-6);
    expect(await copyGap({ symmetry: "split", seed: 2 })).toBeGreaterThan(1e-4);
    expect(await copyGap({ symmetry: "antithetic", noiseStd: 1e-3, seed: 2 })).toBeGreaterThan(1e-4);
    expect(await copyGap({ units: "fresh", seed: 2 })).toBeGreaterThan(1e-4);
  }, 60_000);

  it("antithetic noise changes the loss only at second order: far less than plain noise, superlinear in its size", async () => {
    const change = async (o: WidthOptions) => Math.abs((await loss(growWidth(small, { factor: 2, seed: 3, ...o }))) - smallLoss);
    const [anti1, anti2, plain1] = [
      await change({ symmetry: "antithetic", noiseStd: 1e-2 }),
      await change({ symmetry: "antithetic", noiseStd: 2e-2 }),
      await change({ symmetry: "noise", noiseStd: 1e-2 }),
    ];
    // measured: 6.4e-6 vs 8.6e-4 for plain noise of the same size
    expect(anti1).toBeLessThan(plain1 / 50);
    // no first-order term: doubling the noise (the same draws × 2) multiplies the change by more than 2×
    // (measured 12×: second- and fourth-order terms)
    expect(anti2 / anti1).toBeGreaterThan(3);
  }, 60_000);
});

// The Llama family through the same trainer: grouped-query attention, qwen2's q/k/v biases, tied and untied heads.
const llamaConfigs: [string, Record<string, unknown>][] = [
  ["llama, GQA 4/2, untied", { ...TINY_LLAMA, vocab_size: VOCAB, max_position_embeddings: 16 }],
  [
    "llama, tied",
    {
      model_type: "llama",
      hidden_size: 16,
      intermediate_size: 24,
      num_hidden_layers: 2,
      num_attention_heads: 2,
      vocab_size: VOCAB,
      max_position_embeddings: 16,
      tie_word_embeddings: true,
    },
  ],
  [
    "qwen2, q/k/v biases, GQA",
    {
      model_type: "qwen2",
      hidden_size: 16,
      intermediate_size: 32,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 1,
      vocab_size: VOCAB,
      max_position_embeddings: 16,
    },
  ],
];

describe.each(llamaConfigs)("Llama family: %s", (_label, cfg) => {
  let base: TrainingState;
  let baseLoss: number;
  beforeAll(async () => {
    base = await trainedState(3, cfg, "llama");
    baseLoss = await loss(base);
  }, 60_000);

  const width: [string, WidthOptions][] = [
    ["width ×2", { factor: 2 }],
    ["width ×2, paper moments", { factor: 2, moments: "paper" }],
    ["width ×3", { factor: 3 }],
    ["FFN only ×2", { factor: 1, ffnFactor: 2 }],
    ["width ×2, lossless split", { factor: 2, symmetry: "split", seed: 3 }],
    ["width ×2, fresh units", { factor: 2, units: "fresh", seed: 3 }],
    ["width ×3, fresh units", { factor: 3, units: "fresh", seed: 3 }],
  ];
  for (const [label, options] of width) it(`${label} keeps the loss`, async () => close(await loss(growWidth(base, options)), baseLoss), 30_000);

  const depth: [string, DepthOptions][] = [
    ["depth ×2, identity (LLaMA Pro block expansion)", { factor: 2, placement: "alternate" }],
    ["depth, SOLAR-style map 0,1 then 0,1 with identity", { layerMap: [0, 1, 0, 1] }],
  ];
  for (const [label, options] of depth) it(`${label} keeps the loss`, async () => close(await loss(growDepth(base, options)), baseLoss), 30_000);

  it("SOLAR's depth up-scaling with copies (init copy) changes the loss", async () => {
    expect(Math.abs((await loss(growDepth(base, { layerMap: [0, 1, 0, 1], init: "copy" }))) - baseLoss)).toBeGreaterThan(1e-5);
  }, 30_000);

  it("width then depth keeps the loss; consistent moments are the grown model's gradients", async () => {
    close(await loss(growDepth(growWidth(base, { factor: 2 }), { factor: 2 })), baseLoss);
    const engine = await engineFor(base);
    const { grads } = await engine.gradients(batches[6]!);
    await engine.release();
    const grown = growWidth(
      { ...base, optimizer: { ...base.optimizer, expAvg: lazy(grads, base.params), expAvgSq: lazy(grads, base.params) } },
      { factor: 2 },
    );
    const big = await engineFor(grown);
    const actual = (await big.gradients(batches[6]!)).grads;
    await big.release();
    const mapped = await readAll(grown.optimizer.expAvg!);
    let scale = 0;
    for (const v of actual.values()) for (const x of v) scale = Math.max(scale, Math.abs(x));
    for (const [name, a] of actual) {
      const m = mapped.get(name)!;
      for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - m[i]!), `${name}[${i}]`).toBeLessThan(1e-5 * scale);
    }
  }, 60_000);
});

import ort from "onnxruntime-node";
import onnxProto from "onnx-proto";
import { gpt2, llama, type ArchitecturePlugin } from "@staged/core";
import { describe, expect, it } from "vitest";
import { initWeights } from "./testing/weights.js";
import { dropoutMasks } from "./dropout.js";
import { createEngine, type Engine } from "./engine.js";
import { GraphBuilder } from "./graph/builder.js";
import { modelGraph } from "./models/index.js";
import { adamwDefaults, compileEval, compileGradient, compileTrainStep, idsType, names, type DropoutInput } from "./step.js";
import { closeness, loadFixture } from "./testing/fixture.js";
import { FIXTURE_THREADS, idsTensor, paramFeeds, session } from "./testing/graph-checks.js";

/**
 * Dropout in the training graphs (DecoderSpec.dropout): inverted dropout x · m with masks fed as graph inputs
 * and drawn by the engine from a keyed stream, so that they are deterministic, resumable and independent of
 * the thread count; evaluation, logits and gradients() without a key have none.
 */
const shapeOf = (dropout: number) => ({ layers: 2, dModel: 32, heads: 4, vocab: 64, context: 16, dropout });
const CONFIGS: [string, ArchitecturePlugin, (p: number) => Record<string, unknown>][] = [
  ["gpt2", gpt2, (p) => gpt2.initConfig(shapeOf(p), true)],
  ["llama", llama, (p) => llama.initConfig({ ...shapeOf(p), kvHeads: 2 }, false)],
];
const SHAPE = { batch: 2, context: 16 };
const opTypes = (model: Uint8Array) => new Set(onnxProto.onnx.ModelProto.decode(model).graph!.node!.map((n) => n.opType!));
const bytes = (model: Uint8Array) => Buffer.from(model);

function logitsGraph(architecture: string, config: Record<string, unknown>): Uint8Array {
  const b = new GraphBuilder();
  const pv = new Map(
    modelGraph(architecture)
      .params(config)
      .map((sp) => [sp.name, b.input(sp.name, "float32", sp.shape)]),
  );
  b.output(
    modelGraph(architecture).logits(b, config, (n) => pv.get(n)!, b.input(names.ids, idsType, [SHAPE.batch, SHAPE.context])),
    "logits",
  );
  return b.serialize();
}

describe.each(CONFIGS)("%s: the graphs", (architecture, _plugin, config) => {
  const opt = adamwDefaults(modelGraph(architecture).params(config(0)));

  it("dropout 0 builds exactly the graphs without dropout; evaluation and logits never have any", () => {
    const [c0, c1] = [config(0), config(0.1)];
    const step0 = compileTrainStep(architecture, c0, SHAPE, opt);
    expect(step0.dropout).toEqual([]);
    expect(bytes(step0.model)).toEqual(bytes(compileTrainStep(architecture, c1, SHAPE, opt, undefined, { dropout: false }).model));
    expect(bytes(compileGradient(architecture, c0, SHAPE).model)).toEqual(
      bytes(compileGradient(architecture, c1, SHAPE, undefined, { dropout: false }).model),
    );
    expect(bytes(compileEval(architecture, c1, SHAPE).model)).toEqual(bytes(compileEval(architecture, c0, SHAPE).model));
    expect(bytes(logitsGraph(architecture, c1))).toEqual(bytes(logitsGraph(architecture, c0)));
    expect(compileEval(architecture, c1, SHAPE).dropout).toEqual([]);
  });

  it("p > 0: one float32 mask input per site, HF's sites, no random op in the graph", () => {
    const step = compileTrainStep(architecture, config(0.1), SHAPE, opt);
    const sites =
      architecture === "gpt2"
        ? ["embed", ...[0, 1].flatMap((l) => [`h${l}.attn_probs`, `h${l}.attn_out`, `h${l}.mlp_out`])]
        : ["h0.attn_probs", "h1.attn_probs"];
    expect(step.dropout.map((d) => d.name)).toEqual(sites);
    expect(step.dropout.every((d) => d.p === 0.1 && step.inputs.includes(d.input) && d.input === names.dropoutMask(d.name))).toBe(true);
    const probs = step.dropout.find((d) => d.kind === "attention")!;
    expect(probs).toMatchObject({ shape: [2, 4, 16, 16], causal: true, layer: 0 });
    if (architecture === "gpt2") expect(step.dropout[0]).toMatchObject({ kind: "embedding", shape: [32, 32], causal: false, layer: null });
    for (const g of [step, compileGradient(architecture, config(0.1), SHAPE)]) {
      const ops = opTypes(g.model);
      for (const op of ["Dropout", "RandomUniform", "RandomUniformLike", "RandomNormal", "Bernoulli"]) expect(ops.has(op), op).toBe(false);
    }
    expect(compileGradient(architecture, config(0.1), SHAPE).dropout.map((d) => d.name)).toEqual(sites);
  });
});

it("GPT-2's three fields each drive their own sites", () => {
  const c = { ...gpt2.initConfig(shapeOf(0), true), attn_pdrop: 0.2 };
  const g = compileGradient("gpt2", c, SHAPE);
  expect(g.dropout.map((d) => [d.name, d.p])).toEqual([
    ["h0.attn_probs", 0.2],
    ["h1.attn_probs", 0.2],
  ]);
  const r = compileGradient("gpt2", { ...c, attn_pdrop: 0, resid_pdrop: 0.3 }, SHAPE);
  expect(r.dropout.map((d) => d.name)).toEqual(["h0.attn_out", "h0.mlp_out", "h1.attn_out", "h1.mlp_out"]);
  expect(compileGradient("gpt2", { ...c, attn_pdrop: 0, embd_pdrop: 0.05 }, SHAPE).dropout.map((d) => d.name)).toEqual(["embed"]);
});

/**
 * Fixed masks against PyTorch (scripts/make_fixtures.py: gpt2-tiny-dropout with embd_pdrop 0.1, attn_pdrop 0.2,
 * resid_pdrop 0.3; llama-tiny-dropout with attention_dropout 0.25; float64, stored as float32): the gradient
 * graph fed the fixture's masks gives its loss (rtol 1e-5) and every gradient (|Δ| ≤ 1e-6 + 1e-4·|g|).
 */
describe.each(["gpt2-tiny-dropout", "llama-tiny-dropout"].flatMap((v) => FIXTURE_THREADS.map((t) => [v, t] as const)))(
  "%s vs PyTorch with fixed masks, %i threads",
  (variant, threads) => {
    const fx = loadFixture(variant);
    const architecture = String(fx.config.model_type) === "gpt2" ? "gpt2" : "llama";
    const specs = modelGraph(architecture).params(fx.config);

    it("the loss and every gradient; the masks change the loss, the eval graph has none", async () => {
      const g = compileGradient(architecture, fx.config, { batch: fx.B, context: fx.T });
      const masks = [...fx.tensors.keys()].filter((k) => k.startsWith("mask.")).map((k) => k.slice(5));
      expect(g.dropout.map((d) => d.name)).toEqual(masks);
      const s = await session(g.model, threads);
      const feeds: Record<string, ort.Tensor> = { ...paramFeeds(architecture, fx), [names.ids]: idsTensor(fx) };
      for (const sp of specs)
        feeds[names.gradAcc(sp.name)] = new ort.Tensor("float32", new Float32Array(sp.shape.reduce((a, b) => a * b, 1)), sp.shape);
      for (const d of g.dropout) {
        expect(fx.tensors.get(`mask.${d.name}`)!.shape).toEqual(d.shape);
        feeds[d.input] = new ort.Tensor("float32", fx.f32(`mask.${d.name}`), d.shape);
      }
      const out = await s.run(feeds);
      await s.release();
      const loss = Number(out[names.loss]!.data[0]);
      expect(loss).toBeCloseTo(Number(fx.meta.loss), 5);
      expect(Math.abs(loss - Number(fx.meta.loss_without_dropout))).toBeGreaterThan(1e-3);
      for (const sp of specs) {
        const c = closeness(out[names.grad(sp.name)]!.data as Float32Array, fx.f32(`grad.${sp.name}`), 1e-4, 1e-6);
        expect(c.worst, `${sp.name}: ${JSON.stringify(c)}`).toBeLessThanOrEqual(0);
      }
      const e = await session(compileEval(architecture, fx.config, { batch: fx.B, context: fx.T }).model, threads);
      const ev = await e.run({ ...paramFeeds(architecture, fx), [names.ids]: idsTensor(fx) });
      await e.release();
      expect(Number(ev[names.loss]!.data[0])).toBeCloseTo(Number(fx.meta.loss_without_dropout), 5);
    });
  },
);

describe("the masks", () => {
  const site = (name: string, p: number, shape: number[], causal: boolean): DropoutInput => ({
    name,
    kind: causal ? "attention" : "residual",
    layer: 0,
    p,
    causal,
    input: names.dropoutMask(name),
    shape,
  });
  const inputs = [site("x", 0.1, [512, 256], false), site("probs", 0.3, [4, 2, 64, 64], true)];
  const copy = (f: Record<string, ort.Tensor>) =>
    Object.fromEntries(Object.entries(f).map(([k, t]) => [k, Float32Array.from(t.data as Float32Array)]));

  it("keep 1 − p of the entries at 1/(1 − p), the rest 0; causal ones only on and below the diagonal", () => {
    const m = copy(dropoutMasks(inputs).draw(5, 0));
    const x = m["dropout.x"]!;
    const kept = (a: ArrayLike<number>, p: number) => {
      const scale = Math.fround(1 / (1 - p));
      let k = 0,
        other = 0;
      for (let i = 0; i < a.length; i++)
        if (a[i] === scale) k++;
        else if (a[i] !== 0) other++;
      expect(other).toBe(0);
      // Within 5 standard deviations of 1 − p.
      expect(Math.abs(k / a.length - (1 - p))).toBeLessThan(5 * Math.sqrt((p * (1 - p)) / a.length));
    };
    kept(x, 0.1);
    const probs = m["dropout.probs"]!,
      T = 64;
    const lower: number[] = [];
    let above = 0;
    for (let r = 0; r < probs.length / T; r++) {
      for (let j = 0; j < T; j++) {
        const v = probs[r * T + j]!;
        if (j <= r % T) lower.push(v);
        else if (v !== 0) above++;
      }
    }
    expect(above).toBe(0);
    expect(lower.length).toBe((8 * T * (T + 1)) / 2);
    kept(lower, 0.3);
  });

  it("the same key and index give the same masks, another key or index others; ones() is the identity", () => {
    const masks = dropoutMasks(inputs);
    const a = copy(masks.draw(5, 0));
    const equal = (x: Float32Array, y: Float32Array) => Buffer.from(x.buffer).equals(Buffer.from(y.buffer));
    const sameAll = (b: Record<string, Float32Array>) => Object.keys(a).every((n) => equal(a[n]!, b[n]!));
    expect(sameAll(copy(masks.draw(5, 0)))).toBe(true);
    expect(sameAll(copy(dropoutMasks(inputs).draw(5, 0)))).toBe(true);
    for (const [key, index] of [
      [6, 0],
      [5, 1],
      [2 ** 52, 0],
    ] as const) {
      const b = copy(masks.draw(key, index));
      for (const n of Object.keys(a)) expect(equal(a[n]!, b[n]!), `${key}, ${index}: ${n}`).toBe(false);
    }
    expect(Object.values(copy(masks.ones())).every((m) => m.every((v) => v === 1))).toBe(true);
    expect(() => masks.draw(-1, 0)).toThrow("dropout key must be a safe integer ≥ 0, got -1");
    expect(dropoutMasks([]).active).toBe(false);
  });
});

describe("the engine", () => {
  const B = 4,
    T = 16;
  const batch = (s: number) => Int32Array.from({ length: B * T }, (_, i) => (i * 7 + s * 13 + (i >> 3)) % 64);
  const same = (a: Map<string, Float32Array>, b: Map<string, Float32Array>) =>
    [...a].every(([n, x]) =>
      Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(b.get(n)!.buffer, b.get(n)!.byteOffset, b.get(n)!.byteLength)),
    );
  const copy = (m: Map<string, Float32Array>) => new Map([...m].map(([n, d]) => [n, Float32Array.from(d)]));

  it.each(CONFIGS)(
    "%s: keyed steps are reproducible; evaluation and gradients() without a key have no dropout",
    async (architecture, plugin, config) => {
      const [c0, c1] = [config(0), config(0.2)];
      const w = initWeights(plugin, c0, 5);
      const make = (c: Record<string, unknown>, microBatch?: number) =>
        createEngine(architecture, c, w, undefined, { batch: B, context: T, threads: 1, ...(microBatch ? { microBatch } : {}) });
      const [e0, e1, e2] = [await make(c0), await make(c1), await make(c1)];
      const engines: Engine[] = [e0, e1, e2];
      try {
        expect(await e1.evalLoss(batch(0))).toBe(await e0.evalLoss(batch(0)));
        const g0 = await e0.gradients(batch(0)),
          g1 = await e1.gradients(batch(0));
        expect(g1.loss).toBe(g0.loss);
        for (const [n, g] of g0.grads) expect(closeness(g1.grads.get(n)!, g, 1e-6, 1e-9).worst, n).toBeLessThanOrEqual(0);
        const k7 = await e1.gradients(batch(0), { dropoutKey: 7 });
        expect(k7.loss).not.toBe(g0.loss);
        expect((await e2.gradients(batch(0), { dropoutKey: 7 })).loss).toBe(k7.loss);
        expect((await e1.gradients(batch(0), { dropoutKey: 8 })).loss).not.toBe(k7.loss);

        // Same keys: the same steps, bit for bit. The default key is the step number.
        const r1 = await e1.step(batch(1), 1e-3, 1, { dropoutKey: 42 });
        const r2 = await e2.step(batch(1), 1e-3, 1, { dropoutKey: 42 });
        expect(r2).toEqual(r1);
        expect(same(e1.params(), e2.params())).toBe(true);
        const s1 = await e1.step(batch(2), 1e-3, 2, { dropoutKey: 2 });
        const s2 = await e2.step(batch(2), 1e-3, 2);
        expect(s2).toEqual(s1);
        const before = copy(e1.params());
        const t1 = await e1.step(batch(3), 1e-3, 3, { dropoutKey: 43 });
        const t2 = await e2.step(batch(3), 1e-3, 3, { dropoutKey: 44 });
        expect(t2.loss).not.toBe(t1.loss);
        expect(same(e1.params(), e2.params())).toBe(false);
        expect(same(e1.params(), before)).toBe(false);
        await expect(e1.step(batch(0), 1e-3, 4, { dropoutKey: 1.5 })).rejects.toThrow("dropout key must be a safe integer ≥ 0, got 1.5");

        // Gradient accumulation draws each micro-batch's masks from (key, index).
        const [m1, m2] = [await make(c1, 2), await make(c1, 2)];
        engines.push(m1, m2);
        const a = await m1.step(batch(1), 1e-3, 1, { dropoutKey: 42 }),
          b = await m2.step(batch(1), 1e-3, 1, { dropoutKey: 42 });
        expect(b).toEqual(a);
        expect(Number.isFinite(a.loss) && a.loss !== r1.loss).toBe(true);
      } finally {
        await Promise.all(engines.map((e) => e.release()));
      }
    },
  );

  it("a config with a dropout outside [0, 1) is refused, naming the field", async () => {
    const c = { ...gpt2.initConfig(shapeOf(0), true), resid_pdrop: 1 };
    await expect(createEngine("gpt2", c, new Map(), undefined, { batch: B, context: T })).rejects.toThrow(
      '"resid_pdrop" must be a number in [0, 1), got 1',
    );
    expect(() => compileTrainStep("llama", { ...llama.initConfig(shapeOf(0), false), attention_dropout: -0.5 }, SHAPE, adamwDefaults([]))).toThrow(
      '"attention_dropout" must be a number in [0, 1), got -0.5',
    );
  });
});

/**
 * The same training at 1 and 4 threads with dropout on (the masks come from JS, not from onnxruntime): weights
 * and moments to 1e-3 of the update / moment after 3 steps, as src/threads.test.ts asks without dropout.
 */
describe.each([
  ["gpt2", gpt2, gpt2.initConfig({ layers: 2, dModel: 128, heads: 4, vocab: 64, context: 64, dropout: 0.1 }, true)],
  ["llama", llama, llama.initConfig({ layers: 2, dModel: 128, heads: 4, kvHeads: 2, vocab: 64, context: 64, dropout: 0.1 }, false)],
] as const)("%s with dropout 0.1: the same training at 1 and 4 threads", (architecture, plugin, config) => {
  const B = 16,
    T = 64;
  const batch = (s: number) =>
    Int32Array.from({ length: B * T }, (_, i) => "abcab aab cabba ".charCodeAt((i * 3 + s * 5 + Math.floor(i / 7)) % 16) % 64);
  const w0 = initWeights(plugin, config, 3);
  const maxAbs = (a: Float32Array, b?: Float32Array) => a.reduce((m, x, i) => Math.max(m, Math.abs(x - (b?.[i] ?? 0))), 0);

  it("weights and moments after 3 steps", async () => {
    const run = async (threads: number) => {
      const e = await createEngine(architecture, config, w0, undefined, { batch: B, context: T, threads });
      try {
        for (let s = 0; s < 3; s++) await e.step(batch(s), 1e-3, s + 1, { dropoutKey: 100 + s });
        const copy = (m: Map<string, Float32Array>) => new Map([...m].map(([n, d]) => [n, Float32Array.from(d)]));
        return { params: copy(e.params()), expAvgSq: copy(e.moments().expAvgSq) };
      } finally {
        await e.release();
      }
    };
    const one = await run(1),
      four = await run(4);
    for (const [n, p] of one.params) expect(maxAbs(four.params.get(n)!, p), n).toBeLessThanOrEqual(1e-3 * maxAbs(p, w0.get(n)));
    for (const [n, m] of one.expAvgSq) expect(maxAbs(four.expAvgSq.get(n)!, m), n).toBeLessThanOrEqual(1e-3 * maxAbs(m));
  }, 120_000);
});

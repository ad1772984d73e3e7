import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gpt2, initTrainingState, llama, loadTrainingState, type ArchitecturePlugin } from "@staged/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initWeights } from "./testing/weights.js";
import { createEngine, LOSS_SCALE, type EngineOptions } from "./engine.js";
import { gradients } from "./graph/autodiff.js";
import { GraphBuilder } from "./graph/builder.js";
import { modelGraph } from "./models/index.js";
import { idsType } from "./step.js";
import { train } from "./trainer.js";

/**
 * Mixed precision (issue 18): matrices and activations in float16, parameters, gradients, moments and the update
 * in float32, a dynamic loss scale. The CPU provider runs the float16 nodes through casts to float32 kernels
 * (onnxruntime's InsertCastTransformer), so these tests check the graph's types, the loss scaling and the
 * engine's overflow handling; a GPU with float16 kernels rounds more, which examples/bench/device-bench.mjs measures.
 */
const B = 8,
  T = 16;
const CASES: [string, ArchitecturePlugin, Record<string, unknown>][] = [
  ["gpt2", gpt2, gpt2.initConfig({ layers: 2, dModel: 64, heads: 4, vocab: 64, context: T }, true)],
  ["llama", llama, llama.initConfig({ layers: 2, dModel: 64, heads: 4, kvHeads: 2, vocab: 64, context: T }, false)],
];
const batchOf = (s: number) => Int32Array.from({ length: B * T }, (_, i) => (i * 7 + s * 13 + (i >> 3)) % 64);

async function steps(architecture: string, config: Record<string, unknown>, w0: Map<string, Float32Array>, n: number, o: Partial<EngineOptions>) {
  const e = await createEngine(architecture, config, w0, undefined, { batch: B, context: T, threads: 1, ...o });
  try {
    const out: { loss: number; gradNorm: number }[] = [];
    for (let s = 1; s <= n; s++) out.push(await e.step(batchOf(s), 3e-3, s));
    return { out, params: new Map([...e.params()].map(([k, v]) => [k, v.slice()])), lossScale: e.lossScale() };
  } finally {
    await e.release();
  }
}

describe.each(CASES)("%s, mixed precision", (architecture, plugin, config) => {
  const w0 = initWeights(plugin, config, 3);

  it("the matrix products run in float16, forward and backward; norms, softmax and the loss in float32; gradients come out float32", () => {
    const model = modelGraph(architecture);
    const specs = model.params(config);
    const b = new GraphBuilder();
    const pv = specs.map((s) => b.input(s.name, "float32", s.shape));
    const byName = new Map(specs.map((s, i) => [s.name, pv[i]!]));
    const loss = model.loss(b, config, (n) => byName.get(n)!, b.input("ids", idsType, [B, T]), { computeType: "float16" });
    const grads = gradients(b, loss, pv, b.input("scale", "float32", []));
    const typesOf = (ops: string[]) => new Set(b.nodes.filter((n) => ops.includes(n.op)).map((n) => n.outputs[0]!.dtype));
    const products = b.nodes.filter((n) => n.op === "Gemm" || n.op === "MatMul");
    expect(products.length).toBeGreaterThan(4 * 2 * 3); // per layer at least 4 forward products, each with backward ones
    expect(typesOf(["Gemm", "MatMul"])).toEqual(new Set(["float16"]));
    for (const op of ["Softmax", "ReduceMax", "Exp", "Log", "LayerNormalization", "ReduceMean"]) {
      const types = typesOf([op]);
      if (types.size > 0) expect([...types], op).toEqual(["float32"]);
    }
    expect(loss.dtype).toBe("float32");
    expect(new Set(grads.map((g) => g.dtype))).toEqual(new Set(["float32"]));
  });

  it("trains as fp32 does, to float16's rounding (8 steps)", async () => {
    const ref = await steps(architecture, config, w0, 8, {});
    const mixed = await steps(architecture, config, w0, 8, { precision: "mixed" });
    mixed.out.forEach((r, i) => {
      expect(Math.abs(r.loss - ref.out[i]!.loss), `loss at step ${i + 1}`).toBeLessThan(2e-3 * ref.out[i]!.loss);
      expect(Math.abs(r.gradNorm - ref.out[i]!.gradNorm), `grad norm at step ${i + 1}`).toBeLessThan(1e-2 * ref.out[i]!.gradNorm);
    });
    // Adam's update is nearly a sign for entries of tiny gradients, which float16 rounding may flip: the updates
    // are compared as vectors, ‖Δmixed − Δfp32‖ against ‖Δfp32‖, per tensor (measured: at most 0.016). GPT-2's
    // key bias (the middle third of c_attn.bias) has a gradient of exactly 0 (the softmax ignores a shift of
    // all scores), so both updates there are rounding noise scaled up by Adam: it is left out.
    const d = 64;
    for (const [n, p] of ref.params) {
      const w = w0.get(n)!,
        m = mixed.params.get(n)!;
      let diff = 0,
        norm = 0;
      p.forEach((x, i) => {
        if (n.endsWith("attn.c_attn.bias") && i >= d && i < 2 * d) return;
        diff += (m[i]! - x) ** 2;
        norm += (x - w[i]!) ** 2;
      });
      expect(Math.sqrt(diff / norm), n).toBeLessThan(0.05);
    }
    // ...and is not fp32: float16 rounding shows in the losses.
    expect(mixed.out.some((r, i) => r.loss !== ref.out[i]!.loss)).toBe(true);
    // GradScaler's start, 2¹⁶, may overflow on the way (it does for this GPT-2 at step 6): then halved.
    expect([LOSS_SCALE.initial, LOSS_SCALE.initial / 2, LOSS_SCALE.initial / 4]).toContain(mixed.lossScale.scale);
  }, 60_000);

  it("gradients() are unscaled: equal to fp32's to float16's rounding", async () => {
    const grads = async (precision: "fp32" | "mixed") => {
      const e = await createEngine(architecture, config, w0, undefined, { batch: B, context: T, threads: 1, precision, microBatch: B / 2 });
      try {
        return (await e.gradients(batchOf(1))).grads;
      } finally {
        await e.release();
      }
    };
    const [ref, mixed] = [await grads("fp32"), await grads("mixed")];
    for (const [n, g] of ref) {
      const m = mixed.get(n)!;
      let dot = 0,
        gg = 0,
        mm = 0;
      g.forEach((x, i) => {
        dot += x * m[i]!;
        gg += x * x;
        mm += m[i]! * m[i]!;
      });
      if (gg === 0) continue;
      expect(dot / Math.sqrt(gg * mm), n).toBeGreaterThan(0.999);
      expect(Math.abs(Math.sqrt(mm / gg) - 1), n).toBeLessThan(5e-3);
    }
  }, 60_000);
});

describe("the dynamic loss scale", () => {
  const [architecture, plugin, config] = CASES[0]!;
  const w0 = initWeights(plugin, config, 3);

  it.each([B, B / 2])(
    "an overflow repeats the step at half the scale until it is finite: the same step as one started at that scale (micro-batch %i)",
    async (microBatch) => {
      // 2⁴⁰ × the logits' gradient overflows float16 (max 65504).
      const high = await steps(architecture, config, w0, 1, { precision: "mixed", lossScale: { scale: 2 ** 40, goodSteps: 5 }, microBatch });
      const scale = high.lossScale.scale;
      expect(scale).toBeLessThan(2 ** 40);
      expect(high.lossScale.goodSteps).toBe(1);
      expect(Number.isFinite(high.out[0]!.gradNorm)).toBe(true);
      const direct = await steps(architecture, config, w0, 1, { precision: "mixed", lossScale: { scale, goodSteps: 0 }, microBatch });
      expect(high.out).toEqual(direct.out);
      for (const [n, p] of direct.params) expect(high.params.get(n), n).toEqual(p);
      // One doubling above it overflows (the halving stopped at the first finite scale).
      const e = await createEngine(architecture, config, w0, undefined, {
        batch: B,
        context: T,
        threads: 1,
        precision: "mixed",
        microBatch,
        lossScale: { scale: scale * 2, goodSteps: 0 },
      });
      await e.step(batchOf(1), 3e-3, 1);
      expect(e.lossScale().scale).toBe(scale);
      await e.release();
    },
    60_000,
  );

  it("doubles after the growth interval without overflow", async () => {
    const r = await steps(architecture, config, w0, 5, { precision: "mixed", lossScale: { scale: 2 ** 4, goodSteps: 0 }, lossScaleInterval: 2 });
    expect(r.lossScale).toEqual({ scale: 2 ** 6, goodSteps: 1 });
  }, 60_000);

  it("refuses a scale that is not a power of two, and an interval below 1", async () => {
    await expect(
      createEngine(architecture, config, w0, undefined, { batch: B, context: T, precision: "mixed", lossScale: { scale: 3, goodSteps: 0 } }),
    ).rejects.toThrow(/loss scale 3 must be a power of two/);
    await expect(
      createEngine(architecture, config, w0, undefined, { batch: B, context: T, precision: "mixed", lossScaleInterval: 0 }),
    ).rejects.toThrow(/loss scale interval 0 must be a positive integer/);
  });
});

describe("train() with precision mixed", () => {
  let dir: string, text: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "staged-mixed-"));
    text = join(dir, "data.txt");
    await writeFile(text, "the cat sat on a mat and the dog ran far. ".repeat(200));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));
  const tiny = () => initTrainingState("gpt2", { n_layer: 1, n_embd: 32, n_head: 2, vocab_size: 256, n_positions: 16 }, 3);
  const base = { data: text!, batch: 4, context: 16, lr: 3e-3, seed: 1, threads: 1, evalEvery: 0 };

  it("stores the precision and the loss scale; a resumed run equals an uninterrupted one", async () => {
    const one = join(dir, "one"),
      two = join(dir, "two");
    const o = { ...base, data: text, precision: "mixed" as const };
    const a = await train(tiny(), { ...o, steps: 6, totalSteps: 6, saveDir: one });
    await train(tiny(), { ...o, steps: 3, totalSteps: 6, saveDir: two });
    const loaded = await loadTrainingState(two);
    expect(loaded.training?.precision).toBe("mixed");
    expect(loaded.optimizer.lossScale).toEqual({ scale: LOSS_SCALE.initial, goodSteps: 3 });
    const b = await train(loaded, { data: text, steps: 3, threads: 1 }); // precision, batch, ... from the checkpoint
    await loaded.close();
    expect(b.result.losses).toEqual(a.result.losses.slice(3));
    const meta = JSON.parse(await readFile(join(two, "training_state.json"), "utf8"));
    expect(meta.training.precision).toBe("mixed");
    expect(meta.optimizer.lossScale).toEqual({ scale: LOSS_SCALE.initial, goodSteps: 6 });
  }, 60_000);

  it("fp32 keeps no loss scale; a bad precision is refused", async () => {
    const d = join(dir, "fp32");
    await train(tiny(), { ...base, data: text, steps: 1, saveDir: d });
    const meta = JSON.parse(await readFile(join(d, "training_state.json"), "utf8"));
    expect(meta.optimizer.lossScale).toBeUndefined();
    expect(meta.training.precision).toBeUndefined();
    await expect(train(tiny(), { ...base, data: text, steps: 1, saveDir: null, precision: "bf16" as never })).rejects.toThrow(
      /precision must be one of fp32, mixed, got "bf16"/,
    );
  });
});

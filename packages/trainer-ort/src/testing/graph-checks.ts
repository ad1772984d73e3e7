// Checks of a model's graphs against a PyTorch fixture (scripts/make_fixtures.py), shared by the per-architecture
// tests (gpt2.test.ts, llama.test.ts). Test-only: not built into the package.
import ort from "onnxruntime-node";
import { expect } from "vitest";
import { GraphBuilder } from "../graph/builder.js";
import { modelGraph } from "../models/index.js";
import { compileGradient, idsType, names } from "../step.js";
import { closeness, type Fixture } from "./fixture.js";

/**
 * Thread counts every fixture comparison runs at: results must not depend on the machine (onnxruntime's
 * kernels split work between threads; a racy one, like CPU ScatterND with reduction "add", differs at 4).
 */
export const FIXTURE_THREADS = [1, 4] as const;

export async function session(model: Uint8Array, threads = 1): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(model, { graphOptimizationLevel: "all", intraOpNumThreads: threads });
}

/** The fixture's weights as feeds of the architecture's parameters, in the plugin's order and shapes. */
export function paramFeeds(architecture: string, fx: Fixture): Record<string, ort.Tensor> {
  return Object.fromEntries(
    modelGraph(architecture)
      .params(fx.config)
      .map((s) => [s.name, new ort.Tensor("float32", fx.f32(`param.${s.name}`), s.shape)]),
  );
}

/** Batch `s` of the fixture's ids as the graphs' int64 input. */
export const idsTensor = (fx: Fixture, s = 0): ort.Tensor => new ort.Tensor(idsType, Int32Array.from(fx.ids(s)), [fx.B, fx.T]);

/** The gradient graph's loss and every gradient equal the fixture's: loss rtol 1e-5, gradients |Δ| ≤ 1e-6 + 1e-4·|g|. */
export async function expectGradientsMatch(architecture: string, fx: Fixture, threads = 1): Promise<void> {
  const specs = modelGraph(architecture).params(fx.config);
  const s = await session(compileGradient(architecture, fx.config, { batch: fx.B, context: fx.T }).model, threads);
  const zeros = Object.fromEntries(
    specs.map((sp) => [names.gradAcc(sp.name), new ort.Tensor("float32", new Float32Array(sp.shape.reduce((a, b) => a * b, 1)), sp.shape)]),
  );
  const out = await s.run({ ...paramFeeds(architecture, fx), ...zeros, [names.ids]: idsTensor(fx) });
  expect(Number(out[names.loss]!.data[0])).toBeCloseTo(Number(fx.meta.loss), 5);
  for (const sp of specs) {
    const c = closeness(out[names.grad(sp.name)]!.data as Float32Array, fx.f32(`grad.${sp.name}`), 1e-4, 1e-6);
    expect(c.worst, `${sp.name}: ${JSON.stringify(c)}`).toBeLessThanOrEqual(0);
  }
  await s.release();
}

/** The logits graph's mean next-token cross-entropy equals the fixture's loss (rtol 1e-5), over its whole vocabulary. */
export async function expectLogitsLoss(architecture: string, fx: Fixture, threads = 1): Promise<void> {
  const b = new GraphBuilder();
  const pv = new Map(
    modelGraph(architecture)
      .params(fx.config)
      .map((sp) => [sp.name, b.input(sp.name, "float32", sp.shape)]),
  );
  const idv = b.input(names.ids, idsType, [fx.B, fx.T]);
  b.output(
    modelGraph(architecture).logits(b, fx.config, (n) => pv.get(n)!, idv),
    "logits",
  );
  const s = await session(b.serialize(), threads);
  const logits = (await s.run({ ...paramFeeds(architecture, fx), [names.ids]: idsTensor(fx) })).logits!.data as Float32Array;
  const V = logits.length / (fx.B * fx.T);
  expect(V).toBe(fx.config.vocab_size);
  const tok = fx.ids(0);
  let total = 0;
  for (let r = 0; r < fx.B; r++) {
    for (let t = 0; t < fx.T - 1; t++) {
      const row = logits.subarray((r * fx.T + t) * V, (r * fx.T + t + 1) * V);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((a, x) => a + Math.exp(x - max), 0));
      total += lse - row[tok[r * fx.T + t + 1]!]!;
    }
  }
  expect(total / (fx.B * (fx.T - 1))).toBeCloseTo(Number(fx.meta.loss), 5);
  await s.release();
}

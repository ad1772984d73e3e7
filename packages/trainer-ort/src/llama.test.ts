import ort from "onnxruntime-node";
import { createDefaultRegistry, llama, type ArchitecturePlugin } from "@staged/core";
import { describe, expect, it } from "vitest";
import { createEngine } from "./engine.js";
import { modelGraph } from "./models/index.js";
import { compileEval, names } from "./step.js";
import { closeness, loadFixture, type Fixture } from "./testing/fixture.js";
import { expectGradientsMatch, expectLogitsLoss, FIXTURE_THREADS, idsTensor, session } from "./testing/graph-checks.js";

/**
 * The decoder graph on the Llama family against an independent PyTorch implementation (scripts/make_fixtures.py:
 * RMSNorm, rotate_half rotary embeddings, repeat_kv grouped-query attention, SwiGLU; float64, stored as float32).
 * Tolerances as for GPT-2: loss rtol 1e-5; gradients |Δ| ≤ 1e-6 + 1e-4·|expected|; AdamW steps as in step.test.ts.
 */
const VARIANTS = [
  ["llama-tiny", "4 query heads on 2 key/value heads, untied"],
  ["llama-tiny-tied", "tied output, one key/value head per query head"],
  ["qwen2-tiny", "q/k/v biases, 4 query heads on 1 key/value head"],
] as const;

const paramNames = (fx: Fixture) => [...fx.tensors.keys()].filter((k) => k.startsWith("param.")).map((k) => k.slice(6));
const weightsOf = (fx: Fixture, prefix: string, list: readonly string[]) => new Map(list.map((n) => [n, fx.f32(`${prefix}${n}`)]));

/** The eval graph's loss for this config on the fixture's weights and first batch. */
async function evalLoss(fx: Fixture, config: Record<string, unknown>, architecture = "llama", registry = createDefaultRegistry(), threads = 1) {
  const specs = modelGraph(architecture, registry).params(config);
  const s = await session(compileEval(architecture, config, { batch: fx.B, context: fx.T }, registry).model, threads);
  const feeds = Object.fromEntries(specs.map((sp, i) => [sp.name, new ort.Tensor("float32", fx.f32(`param.${paramNames(fx)[i]!}`), sp.shape)]));
  const out = await s.run({ ...feeds, [names.ids]: idsTensor(fx) });
  await s.release();
  return Number(out[names.loss]!.data[0]);
}

describe.each(VARIANTS.flatMap(([v, what]) => FIXTURE_THREADS.map((t) => [v, what, t] as const)))(
  "decoder graph vs PyTorch fixture %s (%s), %i threads",
  (variant, _what, threads) => {
    const fx = loadFixture(variant);
    const specs = modelGraph("llama").params(fx.config);

    it("the plugin's parameters are the fixture's, in its order", () => {
      expect(specs.map((s) => s.name)).toEqual(paramNames(fx));
      for (const s of specs) expect(fx.tensors.get(`param.${s.name}`)!.shape).toEqual(s.shape);
    });

    it("forward loss", async () => {
      expect(await evalLoss(fx, fx.config, "llama", createDefaultRegistry(), threads)).toBeCloseTo(Number(fx.meta.loss), 5);
    });

    it("every gradient", () => expectGradientsMatch("llama", fx, threads));

    it("logits graph gives the same loss", () => expectLogitsLoss("llama", fx, threads));

    it("3 AdamW steps with clipping through the engine: losses, gradient norms, params and moments", async () => {
      const losses = JSON.parse(fx.meta.losses!) as number[];
      const norms = JSON.parse(fx.meta.grad_norms!) as number[];
      const e = await createEngine("llama", fx.config, weightsOf(fx, "param.", paramNames(fx)), undefined, {
        batch: fx.B,
        context: fx.T,
        threads,
        betas: fx.hp.betas,
        eps: fx.hp.eps,
        weightDecay: fx.hp.weight_decay,
        clip: fx.hp.clip,
      });
      for (let s = 0; s < 3; s++) {
        const r = await e.step(fx.ids(s), fx.hp.lrs[s]!, s + 1);
        expect(r.loss).toBeCloseTo(losses[s]!, 4);
        expect(Math.abs(r.gradNorm - norms[s]!) / norms[s]!).toBeLessThan(1e-5);
      }
      const m = e.moments();
      for (const [prefix, values, atol] of [
        ["step3.param.", e.params(), 5e-6],
        ["step3.exp_avg.", m.expAvg, 1e-6],
        ["step3.exp_avg_sq.", m.expAvgSq, 1e-9],
      ] as const) {
        for (const [n, a] of values) {
          const c = closeness(a, fx.f32(`${prefix}${n}`), 1e-4, atol);
          expect(c.worst, `${prefix}${n}: ${JSON.stringify(c)}`).toBeLessThanOrEqual(0);
        }
      }
      await e.release();
    });
  },
);

describe("Llama-family settings", () => {
  const fx = loadFixture("llama-tiny");

  it("mistral (same parameters) with a sliding window ≥ T is the causal model; a shorter window is refused", async () => {
    const mistral = { ...fx.config, model_type: "mistral", architectures: ["MistralForCausalLM"] };
    expect(await evalLoss(fx, { ...mistral, sliding_window: fx.T })).toBeCloseTo(Number(fx.meta.loss), 5);
    await expect(evalLoss(fx, { ...mistral, sliding_window: fx.T - 1 })).rejects.toThrow(
      `mistral: context ${fx.T} exceeds sliding_window ${fx.T - 1}`,
    );
    const qwen2 = { ...fx.config, model_type: "qwen2", use_sliding_window: true, sliding_window: 4 };
    expect(() => compileEval("llama", qwen2, { batch: 1, context: fx.T })).toThrow(`qwen2: context ${fx.T} exceeds sliding_window 4`);
  });

  it("rope_theta, rms_norm_eps and the output layer change the function", async () => {
    const base = Number(fx.meta.loss);
    for (const extra of [{ rope_theta: 10 }, { rms_norm_eps: 0.5 }]) {
      expect(Math.abs((await evalLoss(fx, { ...fx.config, ...extra })) - base), JSON.stringify(extra)).toBeGreaterThan(1e-4);
    }
    expect(() => compileEval("llama", { ...fx.config, rope_scaling: { rope_type: "yarn", factor: 2 } }, { batch: 1, context: fx.T })).toThrow(
      /rope_scaling of type "yarn" is not supported/,
    );
  });

  it("parameters are found by role, not by name: a renamed copy of the plugin computes the same loss", async () => {
    const renamed: ArchitecturePlugin = {
      ...llama,
      name: "renamed-llama",
      params: (config) => llama.params(config).map((s) => ({ ...s, name: `w${s.name.length}.${s.name.split("").reverse().join("")}` })),
    };
    const registry = createDefaultRegistry().register("architecture", renamed);
    expect(modelGraph("renamed-llama", registry).params(fx.config)[0]!.name).not.toBe(paramNames(fx)[0]);
    expect(await evalLoss(fx, fx.config, "renamed-llama", registry)).toBeCloseTo(Number(fx.meta.loss), 5);
  });
});

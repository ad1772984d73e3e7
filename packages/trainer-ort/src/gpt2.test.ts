import { describe, expect, it } from "vitest";
import { compileEval, idsType, names } from "./step.js";
import { loadFixture } from "./testing/fixture.js";
import { expectGradientsMatch, expectLogitsLoss, FIXTURE_THREADS, idsTensor, paramFeeds, session } from "./testing/graph-checks.js";
import { createRegistry, gpt2 } from "@staged/core";
import { GraphBuilder } from "./graph/builder.js";
import { modelGraph } from "./models/index.js";

/**
 * The GPT-2 graph against an independent PyTorch implementation (scripts/make_fixtures.py, float64,
 * stored as float32). Tolerances: loss rtol 1e-5; gradients |Δ| ≤ 1e-6 + 1e-4·|expected|.
 */
const VARIANTS = ["gpt2-tiny", "gpt2-tiny-untied"];

describe.each(VARIANTS.flatMap((v) => FIXTURE_THREADS.map((t) => [v, t] as const)))(
  "GPT-2 graph vs PyTorch fixture %s, %i threads",
  (variant, threads) => {
    const fx = loadFixture(variant);
    it("forward loss", async () => {
      const s = await session(compileEval("gpt2", fx.config, { batch: fx.B, context: fx.T }).model, threads);
      const out = await s.run({ ...paramFeeds("gpt2", fx), [names.ids]: idsTensor(fx) });
      expect(Number(out[names.loss]!.data[0])).toBeCloseTo(Number(fx.meta.loss), 5);
      await s.release();
    });

    it("every gradient", () => expectGradientsMatch("gpt2", fx, threads));

    it("logits graph gives the same loss", () => expectLogitsLoss("gpt2", fx, threads));
  },
);

it("model graphs come from the plugin registry: unknown architectures get the registry's error", () => {
  expect(modelGraph("llama").architecture).toBe("llama");
  expect(() => modelGraph("mamba")).toThrow(/^unknown architecture "mamba" \(registered: gpt2, llama[,)]/);
  expect(() => modelGraph("gpt2", createRegistry())).toThrow('unknown architecture "gpt2" (registered: none)');
  // A registry passed in is the one asked: wte, wpe, 12 per block, ln_f's 2.
  expect(modelGraph("gpt2", createRegistry().register("architecture", gpt2)).params(loadFixture("gpt2-tiny").config).length).toBe(2 + 12 * 2 + 2);
});

it("the GPT-2 forward graph keeps its fused ops: LayerNormalization, one Gemm per Conv1D, FastGelu, q scaled once", () => {
  const fx = loadFixture("gpt2-tiny");
  const b = new GraphBuilder();
  const pv = new Map(
    modelGraph("gpt2")
      .params(fx.config)
      .map((sp) => [sp.name, b.input(sp.name, "float32", sp.shape)]),
  );
  b.output(
    modelGraph("gpt2").logits(b, fx.config, (n) => pv.get(n)!, b.input(names.ids, idsType, [fx.B, fx.T])),
    "logits",
  );
  const ops: Record<string, number> = {};
  for (const n of b.live().nodes) ops[n.op] = (ops[n.op] ?? 0) + 1;
  // Per layer (2): 2 LayerNormalization, 4 Gemm, 1 FastGelu, 1 Split, 2 Transpose + the one fused into MatMul,
  // 1 Mul (q·scale), 3 Add (mask, 2 residuals), 1 Softmax, 2 MatMul.
  expect(ops).toEqual({
    Gather: 1,
    Slice: 1,
    Add: 7,
    Reshape: 12,
    LayerNormalization: 5,
    Gemm: 9,
    Transpose: 6,
    Split: 2,
    Mul: 2,
    MatMul: 4,
    Softmax: 2,
    FastGelu: 2,
  });
});

describe("GPT-2 config options", () => {
  const fx = loadFixture("gpt2-tiny");
  const lossWith = async (extra: Record<string, unknown>) => {
    const s = await session(compileEval("gpt2", { ...fx.config, ...extra }, { batch: fx.B, context: fx.T }).model);
    const out = await s.run({ ...paramFeeds("gpt2", fx), [names.ids]: idsTensor(fx) });
    await s.release();
    return Number(out[names.loss]!.data[0]);
  };
  it("gelu_pytorch_tanh is gelu_new; scale flags change the function; unsupported settings are refused", async () => {
    expect(await lossWith({ activation_function: "gelu_pytorch_tanh" })).toBeCloseTo(Number(fx.meta.loss), 5);
    expect(Math.abs((await lossWith({ scale_attn_by_inverse_layer_idx: true })) - Number(fx.meta.loss))).toBeGreaterThan(1e-4);
    expect(Math.abs((await lossWith({ scale_attn_weights: false })) - Number(fx.meta.loss))).toBeGreaterThan(1e-4);
    await expect(lossWith({ activation_function: "relu" })).rejects.toThrow(/activation_function "relu" is not supported/);
  });
});

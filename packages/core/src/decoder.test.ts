import { describe, expect, it } from "vitest";
import { TINY_LLAMA } from "@staged/testing";
import { resolveDecoder } from "./decoder.js";
import { gpt2 } from "./gpt2.js";
import { llama } from "./llama.js";
import type { ArchitecturePlugin, ParamSpec } from "./plugins.js";

const tinyGpt2 = { model_type: "gpt2", n_layer: 2, n_embd: 16, n_head: 4, vocab_size: 40, n_positions: 8 };

/** A plugin like `base` whose parameters (or parsed shape) are changed: the decoder's error paths. */
const variant = (
  base: ArchitecturePlugin,
  change: { params?: (p: ParamSpec[]) => ParamSpec[]; headDim?: number; kvHeads?: number },
): ArchitecturePlugin => ({
  ...base,
  params: (c) => (change.params ?? ((p) => p))(base.params(c)),
  parseConfig(c, file) {
    const r = base.parseConfig(c, file);
    return {
      config: r.config,
      shape: { ...r.shape, ...(change.headDim ? { headDim: change.headDim } : {}), ...(change.kvHeads ? { kvHeads: change.kvHeads } : {}) },
    };
  },
});

describe("resolveDecoder", () => {
  it("GPT-2: the shape, the spec, the fused q|k|v, Conv1D matrices as they are, the tied output transposed", () => {
    const d = resolveDecoder(gpt2, tinyGpt2);
    expect(d.type).toBe("gpt2");
    expect(d.shape).toMatchObject({ layers: 2, dModel: 16, heads: 4, headDim: 4 });
    expect([d.kvHeads, d.groups]).toEqual([4, 1]);
    expect(d.fusedQkv(0)).toBe(true);
    expect(d.projection("attn.qkv", 1)).toMatchObject({
      weight: { spec: { name: "transformer.h.1.attn.c_attn.weight" }, transB: false },
      bias: { name: "transformer.h.1.attn.c_attn.bias" },
    });
    expect(d.norm("final_norm", null)).toMatchObject({ weight: { name: "transformer.ln_f.weight" }, bias: { name: "transformer.ln_f.bias" } });
    expect(d.output()).toMatchObject({ spec: { name: "transformer.wte.weight" }, transB: true });
    expect(() => d.checkContext(8)).not.toThrow();
    expect(() => d.checkContext(9)).toThrow("gpt2: context 9 exceeds the model's 8 positions");
  });

  it("Llama: grouped-query heads, separate q/k/v, Linear matrices transposed, no norm bias, lm_head", () => {
    const d = resolveDecoder(llama, TINY_LLAMA);
    expect([d.kvHeads, d.groups]).toEqual([2, 2]);
    expect(d.fusedQkv(0)).toBe(false);
    expect(d.projection("attn.k", 0)).toMatchObject({
      weight: { spec: { name: "model.layers.0.self_attn.k_proj.weight" }, transB: true },
      bias: undefined,
    });
    expect(d.norm("mlp.norm", 1).bias).toBeUndefined();
    expect(d.output().spec.name).toBe("lm_head.weight");
    expect(d.need("embed.tokens", null).name).toBe("model.embed_tokens.weight");
    expect(() => resolveDecoder(llama, { ...TINY_LLAMA, model_type: "mistral", sliding_window: 4 }).checkContext(5)).toThrow(
      "mistral: context 5 exceeds sliding_window 4",
    );
  });

  it("refuses, in one line naming the model type, what no decoder graph can run", () => {
    expect(() => resolveDecoder(llama, TINY_LLAMA).need("attn.qkv.weight", 1)).toThrow(
      /^llama: no parameter with role attn\.qkv\.weight in layer 1$/,
    );
    expect(() => resolveDecoder(variant(llama, { kvHeads: 3 }), TINY_LLAMA)).toThrow(
      /^llama: 4 query heads are not a multiple of 3 key\/value heads$/,
    );
    expect(() => resolveDecoder(variant(llama, { headDim: 3 }), TINY_LLAMA)).toThrow(/^llama: head_dim 3 must be even for rotary embeddings$/);
    const withBias = variant(llama, {
      params: (ps) => [...ps, { ...ps.find((p) => p.role === "mlp.norm.weight")!, name: "b", role: "mlp.norm.bias" }],
    });
    expect(() => resolveDecoder(withBias, TINY_LLAMA).norm("mlp.norm", 0)).toThrow(
      /^llama: RMSNorm has no bias, but mlp\.norm\.bias is a parameter$/,
    );
    const vector = variant(llama, { params: (ps) => ps.map((p) => (p.role === "attn.out.weight" ? { ...p, layout: "vector" as const } : p)) });
    expect(() => resolveDecoder(vector, TINY_LLAMA).projection("attn.out", 0)).toThrow(
      /^llama: model\.layers\.0\.self_attn\.o_proj\.weight has layout vector, not a matrix$/,
    );
    const kvq = variant(gpt2, { params: (ps) => ps.map((p) => (p.role === "attn.qkv.weight" ? { ...p, fused: ["k", "v", "q"] as const } : p)) });
    expect(() => resolveDecoder(kvq, tinyGpt2).fusedQkv(0)).toThrow(
      /^gpt2: a fused q\|k\|v projection needs the parts q, k, v and one key\/value head per query head$/,
    );
    const noPositions = variant(gpt2, { params: (ps) => ps.filter((p) => p.role !== "embed.positions") });
    expect(() => resolveDecoder(noPositions, tinyGpt2).checkContext(4)).toThrow(/^gpt2: no parameter with role embed\.positions$/);
  });
});

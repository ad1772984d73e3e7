import { describe, expect, it } from "vitest";
import { gpt2 } from "./gpt2.js";

const tiny = { model_type: "gpt2", n_layer: 2, n_embd: 8, n_head: 2, vocab_size: 11, n_positions: 6 };

describe("gpt2 architecture", () => {
  it("fills HF's GPT2Config defaults and derives the shape", () => {
    const { config, shape } = gpt2.parseConfig({ model_type: "gpt2" });
    expect(shape).toEqual({ layers: 12, dModel: 768, heads: 12, headDim: 64, ffn: 3072, vocab: 50257, context: 1024 });
    expect(config.layer_norm_epsilon).toBe(1e-5);
    expect(config.activation_function).toBe("gelu_new");
    expect(config.tie_word_embeddings).toBe(true);
    expect(gpt2.parseConfig({ ...tiny, n_inner: 20 }).shape.ffn).toBe(20);
  });

  it("rejects configs that cannot hold, naming the file", () => {
    expect(() => gpt2.parseConfig({ ...tiny, n_head: 3 }, "x/config.json")).toThrow("x/config.json: n_embd 8 is not divisible by n_head 3");
    expect(() => gpt2.parseConfig({ ...tiny, n_layer: 0 })).toThrow(/"n_layer" must be a positive integer/);
    expect(() => gpt2.parseConfig({ ...tiny, model_type: "llama" })).toThrow(/is not gpt2/);
  });

  it("emits an HF config that round-trips", () => {
    const { config, shape } = gpt2.parseConfig(tiny);
    const out = gpt2.withShape(config, { ...shape, dModel: 16, heads: 4, ffn: 64 });
    expect(out.architectures).toEqual(["GPT2LMHeadModel"]);
    expect(out.n_inner).toBeNull();
    expect(gpt2.parseConfig(out).shape).toEqual({ ...shape, dModel: 16, heads: 4, headDim: 4, ffn: 64 });
  });

  it("lists parameters with roles, layouts and HF shapes", () => {
    const specs = gpt2.params(gpt2.parseConfig(tiny).config);
    expect(specs).toHaveLength(2 + 2 * 12 + 2);
    const byName = new Map(specs.map((s) => [s.name, s]));
    expect(byName.get("transformer.h.1.attn.c_attn.weight")).toMatchObject({ role: "attn.qkv.weight", layer: 1, shape: [8, 24], layout: "conv1d", fused: ["q", "k", "v"] });
    expect(byName.get("transformer.h.0.mlp.c_proj.weight")).toMatchObject({ shape: [32, 8], role: "mlp.out.weight" });
    expect(byName.get("transformer.ln_f.bias")).toMatchObject({ role: "final_norm.bias", decay: false });
    expect(byName.has("lm_head.weight")).toBe(false);
    expect(gpt2.params({ ...tiny, tie_word_embeddings: false }).at(-1)).toMatchObject({ name: "lm_head.weight", shape: [11, 8], layout: "linear" });
  });

  it("maps foreign names and drops the causal-mask buffers", () => {
    expect(gpt2.canonicalName("h.0.attn.c_attn.weight")).toBe("transformer.h.0.attn.c_attn.weight");
    expect(gpt2.canonicalName("wte.weight")).toBe("transformer.wte.weight");
    expect(gpt2.canonicalName("transformer.h.3.attn.bias")).toBeNull();
    expect(gpt2.canonicalName("h.3.attn.masked_bias")).toBeNull();
    expect(gpt2.canonicalName("h.3.attn.c_attn.bias")).toBe("transformer.h.3.attn.c_attn.bias");
    expect(gpt2.canonicalName("lm_head.weight")).toBe("lm_head.weight");
  });

  it("initializes deterministically with GPT-2's rules", () => {
    const cfg = { ...tiny, n_embd: 64, n_head: 4, vocab_size: 300 };
    const a = gpt2.init(cfg, 7), b = gpt2.init(cfg, 7), c = gpt2.init(cfg, 8);
    const wte = a.get("transformer.wte.weight")!.f32;
    expect(wte).toEqual(b.get("transformer.wte.weight")!.f32);
    expect(wte).not.toEqual(c.get("transformer.wte.weight")!.f32);
    const std = (x: Float32Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
    expect(std(wte)).toBeCloseTo(0.02, 3);
    expect(std(a.get("transformer.h.0.mlp.c_proj.weight")!.f32)).toBeCloseTo(0.02 / Math.sqrt(4), 3);
    expect([...a.get("transformer.h.1.ln_2.weight")!.f32].every((v) => v === 1)).toBe(true);
    expect([...a.get("transformer.h.1.mlp.c_fc.bias")!.f32].every((v) => v === 0)).toBe(true);
  });
});

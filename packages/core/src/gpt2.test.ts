import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { gpt2 } from "./gpt2.js";
import { loadTrainingState } from "./state/load.js";

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

  it("reads dropout from the config with HF's names and defaults (0.1), refuses values outside [0, 1) by field", () => {
    // HF GPT2Config's defaults: a pretrained GPT-2 config without the fields trains with dropout 0.1.
    expect(gpt2.decoder(tiny).dropout).toEqual({ embedding: 0.1, attention: 0.1, residual: 0.1 });
    expect(gpt2.decoder({ ...tiny, embd_pdrop: 0.2, attn_pdrop: 0, resid_pdrop: 0.3 }).dropout).toEqual({
      embedding: 0.2,
      attention: 0,
      residual: 0.3,
    });
    expect(() => gpt2.parseConfig({ ...tiny, attn_pdrop: 1 }, "x/config.json")).toThrow(
      'x/config.json: "attn_pdrop" must be a number in [0, 1), got 1',
    );
    expect(() => gpt2.parseConfig({ ...tiny, resid_pdrop: -0.1 })).toThrow('config.json: "resid_pdrop" must be a number in [0, 1), got -0.1');
    expect(() => gpt2.parseConfig({ ...tiny, embd_pdrop: "0.1" })).toThrow('config.json: "embd_pdrop" must be a number in [0, 1), got "0.1"');
    // A fresh config says its dropout (0 by default); growth's withShape keeps it.
    const fresh = gpt2.initConfig({ layers: 1, dModel: 8, heads: 2, vocab: 11, context: 6 }, true);
    expect([fresh.embd_pdrop, fresh.attn_pdrop, fresh.resid_pdrop]).toEqual([0, 0, 0]);
    const dropped = gpt2.initConfig({ layers: 1, dModel: 8, heads: 2, vocab: 11, context: 6, dropout: 0.15 }, true);
    expect(gpt2.decoder(dropped).dropout).toEqual({ embedding: 0.15, attention: 0.15, residual: 0.15 });
    const { config, shape } = gpt2.parseConfig({ ...tiny, embd_pdrop: 0.2, attn_pdrop: 0, resid_pdrop: 0.3 });
    expect(gpt2.decoder(gpt2.withShape(config, { ...shape, layers: 4, dModel: 16, heads: 4, headDim: 4, ffn: 64 })).dropout).toEqual({
      embedding: 0.2,
      attention: 0,
      residual: 0.3,
    });
    expect(() => gpt2.initConfig({ layers: 1, dModel: 8, heads: 2, vocab: 11, context: 6, dropout: 1 }, true)).toThrow(
      "dropout must be a number in [0, 1), got 1",
    );
  });

  it("lists parameters with roles, layouts and HF shapes", () => {
    const specs = gpt2.params(gpt2.parseConfig(tiny).config);
    expect(specs).toHaveLength(2 + 2 * 12 + 2);
    const byName = new Map(specs.map((s) => [s.name, s]));
    expect(byName.get("transformer.h.1.attn.c_attn.weight")).toMatchObject({
      role: "attn.qkv.weight",
      layer: 1,
      shape: [8, 24],
      layout: "conv1d",
      fused: ["q", "k", "v"],
    });
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
    const a = gpt2.init(cfg, 7),
      b = gpt2.init(cfg, 7),
      c = gpt2.init(cfg, 8);
    const wte = a.get("transformer.wte.weight")!.f32;
    expect(wte).toEqual(b.get("transformer.wte.weight")!.f32);
    expect(wte).not.toEqual(c.get("transformer.wte.weight")!.f32);
    const std = (x: Float32Array) => Math.sqrt(x.reduce((s, v) => s + v * v, 0) / x.length);
    expect(std(wte)).toBeCloseTo(0.02, 3);
    expect(std(a.get("transformer.h.0.mlp.c_proj.weight")!.f32)).toBeCloseTo(0.02 / Math.sqrt(4), 3);
    expect([...a.get("transformer.h.1.ln_2.weight")!.f32].every((v) => v === 1)).toBe(true);
    expect([...a.get("transformer.h.1.mlp.c_fc.bias")!.f32].every((v) => v === 0)).toBe(true);
  });

  it("counts parameters arithmetically, as the parameter list does", () => {
    const listed = (c: Record<string, unknown>) => gpt2.params(c).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
    for (const c of [
      tiny,
      { ...tiny, tie_word_embeddings: false },
      { ...tiny, n_inner: 20 },
      { model_type: "gpt2" },
      { ...tiny, n_layer: 7, n_embd: 12, n_head: 3 },
    ]) {
      expect(gpt2.parameterCount(c)).toBe(listed(c));
    }
    expect(gpt2.parameterCount({ model_type: "gpt2" })).toBe(124439808); // GPT-2 small
  });

  it("refuses a config above the size limits before building anything per layer", () => {
    const t0 = performance.now();
    expect(() =>
      gpt2.parseConfig({ ...tiny, n_embd: 768, n_head: 12, vocab_size: 50257, n_positions: 1024, n_layer: 100_000_000 }, "x/config.json"),
    ).toThrow("x/config.json: n_layer 100000000 gives 7.1e14 parameters (2.8 PB as F32); the limits are n_layer ≤ 10000 and 1e13 parameters");
    expect(() => gpt2.params({ ...tiny, n_layer: 100_000_000 })).toThrow(/n_layer 100000000 gives/);
    expect(() => gpt2.init({ ...tiny, n_embd: 2_000_000, n_head: 1 }, 1)).toThrow(
      "config.json: n_embd 2000000, ffn 8000000 gives 9.6e13 parameters (384 TB as F32); the limits are n_embd ≤ 1048576, ffn ≤ 1048576 and 1e13 parameters",
    );
    expect(() => gpt2.parseConfig({ ...tiny, n_layer: 1000, n_embd: 30_000, n_head: 1, n_inner: 400_000 })).toThrow(
      /^config.json: n_layer 1000, n_embd 30000, n_inner 400000, vocab_size 11, n_positions 6 gives 2\.8e13 parameters .*; the limit is 1e13 parameters$/,
    );
    expect(performance.now() - t0).toBeLessThan(100);
  });

  it("accepts the largest real shapes: a 405B Llama's sizes as a GPT-2 config", () => {
    const big = { model_type: "gpt2", n_layer: 126, n_embd: 16384, n_head: 128, n_inner: 53248, vocab_size: 128256, n_positions: 131072 };
    expect(gpt2.parseConfig(big).shape).toMatchObject({ layers: 126, dModel: 16384, ffn: 53248 });
    expect(gpt2.parameterCount(big)).toBe(359414259712); // 126 × 2818772992 + (128256 + 131072 + 2) × 16384
    expect(gpt2.params(big)).toHaveLength(2 + 126 * 12 + 2);
  });

  it("a checkpoint directory with an absurd config fails in well under a second, naming config.json", async () => {
    const dir = await mkdtemp(join(tmpdir(), "staged-gpt2-huge-"));
    try {
      await mkdir(join(dir, "ck"));
      await writeFile(join(dir, "ck", "config.json"), JSON.stringify({ model_type: "gpt2", n_layer: 100_000_000 }));
      await writeFile(join(dir, "ck", "model.safetensors"), new Uint8Array(16));
      const t0 = performance.now();
      await expect(loadTrainingState(join(dir, "ck"))).rejects.toThrow(
        /ck\/config.json: n_layer 100000000 gives 7\.1e14 parameters \(2\.8 PB as F32\)/,
      );
      expect(performance.now() - t0).toBeLessThan(1000);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

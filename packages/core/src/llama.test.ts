import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { TINY_LLAMA } from "@staged/testing";
import { llama } from "./llama.js";
import { writeCheckpoint } from "./shards.js";
import { initTrainingState, parameterCount } from "./state/init.js";
import { loadTrainingState } from "./state/load.js";
import { saveTrainingState } from "./state/save.js";
import { Tensor } from "./tensor.js";

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-llama-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/**
 * An HF Llama-family checkpoint as other tools write it: names with or without the `model.` prefix (LlamaModel
 * vs LlamaForCausalLM), rotary inv_freq buffers, a dtype, sharded or not, tied or not.
 */
async function foreign(
  path: string,
  config: Record<string, unknown>,
  o: { prefix?: boolean; buffers?: boolean; dtype?: "F32" | "F16" | "BF16"; maxShardBytes?: number } = {},
) {
  await mkdir(path, { recursive: true });
  await writeFile(join(path, "config.json"), JSON.stringify(config));
  const weights = llama.init(config, 7);
  const entries = [...weights].map(([name, t]) => ({
    name: o.prefix === false ? name.replace(/^model\./, "") : name,
    tensor: t.withDType(o.dtype ?? "F32"),
  }));
  if (o.buffers) {
    const layers = config.num_hidden_layers as number;
    for (let i = 0; i < layers; i++)
      entries.push({ name: `model.layers.${i}.self_attn.rotary_emb.inv_freq`, tensor: Tensor.fromArray([2], [1, 0.1]) });
  }
  await writeCheckpoint(path, "model", entries, { maxShardBytes: o.maxShardBytes, metadata: { format: "pt" } });
  return weights;
}

describe("llama plugin", () => {
  it("fills HF's defaults per model_type and derives the shape (GQA, explicit head_dim)", () => {
    const a = llama.parseConfig(TINY_LLAMA);
    expect(a.shape).toEqual({ layers: 2, dModel: 16, heads: 4, headDim: 4, kvHeads: 2, ffn: 24, vocab: 40, context: 32, gatedMlp: true });
    expect(a.config).toMatchObject({ rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: false, hidden_act: "silu" });
    expect(llama.parseConfig({ model_type: "llama", num_hidden_layers: 1 }).shape).toMatchObject({
      dModel: 4096,
      heads: 32,
      kvHeads: 32,
      ffn: 11008,
      vocab: 32000,
      context: 2048,
    });
    expect(llama.parseConfig({ model_type: "mistral", num_hidden_layers: 1 }).shape).toMatchObject({ kvHeads: 8, ffn: 14336 });
    expect(llama.parseConfig({ model_type: "qwen2", num_hidden_layers: 1 }).shape).toMatchObject({ vocab: 151936, ffn: 22016 });
    expect(llama.parseConfig({ ...TINY_LLAMA, head_dim: 8 }).shape.headDim).toBe(8);
  });

  it("refuses what it does not implement, by name, and bad sizes, naming the file", () => {
    expect(() => llama.parseConfig({ ...TINY_LLAMA, num_key_value_heads: 3 }, "c.json")).toThrow(
      "c.json: num_attention_heads 4 is not a multiple of num_key_value_heads 3",
    );
    expect(() => llama.parseConfig({ ...TINY_LLAMA, hidden_size: 18 }, "c.json")).toThrow(/hidden_size 18 is not divisible by num_attention_heads 4/);
    expect(() => llama.decoder({ ...TINY_LLAMA, rope_scaling: { rope_type: "yarn", factor: 4 } })).toThrow(
      'llama: rope_scaling of type "yarn" is not supported (supported: none)',
    );
    expect(() => llama.decoder({ ...TINY_LLAMA, rope_scaling: { type: "linear", factor: 2 } })).toThrow(/type "linear" is not supported/);
    expect(llama.decoder({ ...TINY_LLAMA, rope_scaling: { rope_type: "default" } }).positions).toEqual({ kind: "rope", theta: 10000 });
    expect(() => llama.decoder({ ...TINY_LLAMA, hidden_act: "gelu" })).toThrow(/hidden_act "gelu" is not supported/);
    expect(() => llama.parseConfig({ ...TINY_LLAMA, model_type: "falcon" }, "c.json")).toThrow(
      /c.json: model_type "falcon" is not one of the Llama family/,
    );
    expect(() => llama.parseConfig({ ...TINY_LLAMA, num_hidden_layers: 1e8 }, "c.json")).toThrow(/c.json: num_hidden_layers 100000000 gives/);
  });

  it("names, layouts, axes and biases per model_type; the parameter count is the arithmetic one", () => {
    const names = (c: Record<string, unknown>) => llama.params(c).map((p) => p.name);
    const l0 = names(TINY_LLAMA).filter((n) => n.startsWith("model.layers.0."));
    expect(l0).toEqual(
      [
        "input_layernorm.weight",
        "self_attn.q_proj.weight",
        "self_attn.k_proj.weight",
        "self_attn.v_proj.weight",
        "self_attn.o_proj.weight",
        "post_attention_layernorm.weight",
        "mlp.gate_proj.weight",
        "mlp.up_proj.weight",
        "mlp.down_proj.weight",
      ].map((n) => `model.layers.0.${n}`),
    );
    expect(names({ ...TINY_LLAMA, model_type: "qwen2" }).filter((n) => n.startsWith("model.layers.0.") && n.endsWith("bias"))).toEqual(
      ["q", "k", "v"].map((p) => `model.layers.0.self_attn.${p}_proj.bias`),
    );
    expect(
      names({ ...TINY_LLAMA, attention_bias: true, mlp_bias: true }).filter((n) => n.startsWith("model.layers.0.") && n.endsWith("bias")),
    ).toHaveLength(7);
    const k = llama.params(TINY_LLAMA).find((p) => p.name.endsWith("0.self_attn.k_proj.weight"))!;
    expect(k).toMatchObject({ shape: [8, 16], layout: "linear", axes: ["kvHeads", "model"], role: "attn.k.weight" });
    expect(
      llama
        .params(TINY_LLAMA)
        .filter((p) => p.writesResidual)
        .map((p) => p.role),
    ).toEqual(["attn.out.weight", "mlp.out.weight", "attn.out.weight", "mlp.out.weight"]);
    for (const c of [
      TINY_LLAMA,
      { ...TINY_LLAMA, tie_word_embeddings: true },
      { ...TINY_LLAMA, model_type: "qwen2" },
      { ...TINY_LLAMA, attention_bias: true, mlp_bias: true },
    ]) {
      const total = llama.params(c).reduce((s, p) => s + p.shape.reduce((a, b) => a * b, 1), 0);
      expect(llama.parameterCount(c)).toBe(total);
    }
  });

  it("reads attention_dropout (HF default 0, Llama's only dropout) per model_type, refuses values outside [0, 1)", () => {
    expect(llama.decoder(TINY_LLAMA).dropout).toEqual({ embedding: 0, attention: 0, residual: 0 });
    for (const model_type of ["llama", "mistral", "qwen2"]) {
      expect(llama.decoder({ ...TINY_LLAMA, model_type, attention_dropout: 0.25 }).dropout, model_type).toEqual({
        embedding: 0,
        attention: 0.25,
        residual: 0,
      });
    }
    expect(() => llama.parseConfig({ ...TINY_LLAMA, attention_dropout: 1.5 }, "c.json")).toThrow(
      'c.json: "attention_dropout" must be a number in [0, 1), got 1.5',
    );
    expect(() => llama.parseConfig({ ...TINY_LLAMA, attention_dropout: null }, "c.json")).toThrow(
      'c.json: "attention_dropout" must be a number in [0, 1), got null',
    );
    const fresh = llama.initConfig({ layers: 1, dModel: 16, heads: 4, vocab: 40, context: 8, dropout: 0.1 }, false);
    expect(fresh.attention_dropout).toBe(0.1);
    expect(llama.initConfig({ layers: 1, dModel: 16, heads: 4, vocab: 40, context: 8 }, false).attention_dropout).toBe(0);
    // Growth's withShape keeps it.
    expect(llama.withShape(fresh, { ...llama.parseConfig(fresh).shape, layers: 2, dModel: 32, heads: 8, kvHeads: 8 }).attention_dropout).toBe(0.1);
    expect(() => llama.initConfig({ layers: 1, dModel: 16, heads: 4, vocab: 40, context: 8, dropout: -1 }, false)).toThrow(
      "dropout must be a number in [0, 1), got -1",
    );
  });

  it("writes configs transformers reads as LlamaForCausalLM / Qwen2ForCausalLM, keeping other settings", () => {
    const c = llama.withShape(
      { ...TINY_LLAMA, model_type: "qwen2", rope_theta: 1e6 },
      { ...llama.parseConfig(TINY_LLAMA).shape, dModel: 32, heads: 8, kvHeads: 4 },
    );
    expect(c).toMatchObject({
      model_type: "qwen2",
      architectures: ["Qwen2ForCausalLM"],
      hidden_size: 32,
      num_attention_heads: 8,
      num_key_value_heads: 4,
      rope_theta: 1e6,
    });
    expect("head_dim" in c).toBe(false);
    expect(llama.withShape(TINY_LLAMA, { ...llama.parseConfig(TINY_LLAMA).shape, headDim: 8, dModel: 16 })).toMatchObject({ head_dim: 8 });
  });
});

describe("llama checkpoints written by other tools", () => {
  it("loads LlamaModel names without the prefix, ignores rotary buffers, BF16 sharded, and saves back", async () => {
    const weights = await foreign(join(dir, "m"), TINY_LLAMA, { prefix: false, buffers: true, dtype: "BF16", maxShardBytes: 2000 });
    expect((await readFile(join(dir, "m", "model.safetensors.index.json"), "utf8")).length).toBeGreaterThan(0);
    const s = await loadTrainingState(join(dir, "m"));
    expect(s.architecture).toBe("llama");
    expect(s.shape).toMatchObject({ kvHeads: 2, gatedMlp: true });
    expect(s.tokenizer).toEqual({ kind: "bytes" });
    expect([...s.params.keys()].sort()).toEqual([...weights.keys()].sort());
    const q = await s.params.get("model.layers.1.self_attn.q_proj.weight")!.read();
    expect(q.dtype).toBe("BF16");
    expect(Math.abs(q.f32[5]! - weights.get("model.layers.1.self_attn.q_proj.weight")!.f32[5]!)).toBeLessThan(1e-3);
    await saveTrainingState(join(dir, "out"), s);
    await s.close();
    const back = await loadTrainingState(join(dir, "out"));
    expect(parameterCount(back)).toBe(llama.parameterCount(TINY_LLAMA));
    expect(JSON.parse(await readFile(join(dir, "out", "config.json"), "utf8"))).toMatchObject({
      architectures: ["LlamaForCausalLM"],
      torch_dtype: "bfloat16",
    });
    await back.close();
  });

  it("tied (no lm_head), untied, qwen2 with q/k/v biases", async () => {
    for (const [name, config] of [
      ["tied", { ...TINY_LLAMA, tie_word_embeddings: true }],
      ["untied", TINY_LLAMA],
      ["qwen2", { ...TINY_LLAMA, model_type: "qwen2" }],
    ] as const) {
      const weights = await foreign(join(dir, name), config);
      const s = await loadTrainingState(join(dir, name));
      expect(s.params.has("lm_head.weight"), name).toBe(name !== "tied");
      expect(s.params.has("model.layers.0.self_attn.q_proj.bias"), name).toBe(name === "qwen2");
      expect(s.params.size).toBe(weights.size);
      await s.close();
    }
  });

  it("initializes like HF: norms 1, biases 0, matrices N(0, 0.02)", () => {
    const s = initTrainingState("llama", { ...TINY_LLAMA, model_type: "qwen2", hidden_size: 64, intermediate_size: 128 }, 3);
    const read = (n: string) => (s.params.get(n) as unknown as { read(): Promise<Tensor> }).read();
    return Promise.all([read("model.norm.weight"), read("model.layers.0.self_attn.k_proj.bias"), read("model.layers.0.mlp.up_proj.weight")]).then(
      ([norm, bias, w]) => {
        expect(norm!.f32.every((x) => x === 1)).toBe(true);
        expect(bias!.f32.every((x) => x === 0)).toBe(true);
        const v = w!.f32,
          mean = v.reduce((a, b) => a + b, 0) / v.length;
        const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
        expect(Math.abs(std - 0.02)).toBeLessThan(0.002);
      },
    );
  });
});

import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { byteLevelTokenizerConfig, byteLevelTokenizerJson, initTrainingState, saveTrainingState, Tensor, inMemory } from "@staged/core";
import { tinyBpeTokenizerJson } from "@staged/trainer-ort";
import { exportModel, readManifest, MANIFEST } from "./export.js";
import { formatManifest, type ExportManifest } from "./manifest.js";
import { loadGenerator } from "./generate.js";
import { runExport, testState, trainerGreedy, bytesOf, VARIANTS, worstExcess } from "./testing/reference.js";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-export-files-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});
const readJson = async (p: string) => JSON.parse(await readFile(p, "utf8")) as Record<string, unknown>;
const gpt2Config = { model_type: "gpt2", n_layer: 2, n_embd: 16, n_head: 2, vocab_size: 256, n_positions: 64 };

describe("exportModel", () => {
  it("writes what transformers.js loads: onnx/model.onnx, config.json, generation_config.json, the byte-level tokenizer, a manifest", async () => {
    const ckpt = join(root, "ckpt");
    await saveTrainingState(ckpt, await testState("gpt2", gpt2Config, 1));
    const before = (await readdir(ckpt)).sort();
    const out = join(root, "out");
    const r = await exportModel(ckpt, out);
    expect(r.dir).toBe(out);
    expect((await readdir(out)).sort()).toEqual(
      ["config.json", "generation_config.json", "onnx", MANIFEST, "tokenizer.json", "tokenizer_config.json"].sort(),
    );
    expect(await readdir(join(out, "onnx"))).toEqual(["model.onnx"]);
    expect(await readdir(ckpt)).toEqual(before); // the checkpoint is only read
    const config = await readJson(join(out, "config.json"));
    expect(config).toMatchObject({ model_type: "gpt2", n_layer: 2, n_embd: 16, n_head: 2, vocab_size: 256, n_positions: 64, use_cache: true });
    expect(await readJson(join(out, "generation_config.json"))).toEqual({
      _from_model_config: true,
      bos_token_id: null,
      eos_token_id: null,
      pad_token_id: 0,
    });
    expect(await readFile(join(out, "tokenizer.json"), "utf8")).toBe(byteLevelTokenizerJson());
    expect(await readFile(join(out, "tokenizer_config.json"), "utf8")).toBe(byteLevelTokenizerConfig());
    const manifest = await readManifest(out);
    expect(manifest).toMatchObject({ format: "staged-export", architecture: "gpt2", dtypes: ["fp32"], externalData: {} });
    expect(manifest!.source).toMatch(/^[0-9a-f]{64}$/);
    // Exporting again replaces the export (it has a manifest).
    await exportModel(ckpt, out, { dtype: "fp16" });
    expect((await readdir(join(out, "onnx"))).sort()).toEqual(["model.onnx", "model_fp16.onnx"]);
    expect((await readdir(root)).filter((f) => f.startsWith(".out."))).toEqual([]); // no temporary left
  });

  it("an HF tokenizer and generation_config.json are copied; a checkpoint without a tokenizer exports the model alone", async () => {
    const state = initTrainingState("gpt2", { ...gpt2Config, vocab_size: 300, eos_token_id: 5 }, 2);
    const tokenizerJson = tinyBpeTokenizerJson();
    const files = new Map([
      ["tokenizer.json", new TextEncoder().encode(tokenizerJson)],
      ["generation_config.json", new TextEncoder().encode('{"eos_token_id": 5, "do_sample": false}\n')],
    ]);
    const hf = await exportModel({ ...state, tokenizer: { kind: "hf", file: "tokenizer.json" }, files }, join(root, "hf"));
    expect(await readFile(join(root, "hf", "tokenizer.json"), "utf8")).toBe(tokenizerJson);
    expect(await readJson(join(root, "hf", "tokenizer_config.json"))).toEqual({ tokenizer_class: "PreTrainedTokenizerFast" });
    expect(await readJson(join(root, "hf", "generation_config.json"))).toEqual({ eos_token_id: 5, do_sample: false });
    expect(hf.files).toContain("tokenizer.json");
    const none = await exportModel({ ...state, tokenizer: { kind: "none" } }, join(root, "none"));
    expect(none.files).not.toContain("tokenizer.json");
    expect(await readJson(join(root, "none", "generation_config.json"))).toMatchObject({ eos_token_id: 5, pad_token_id: null });
  });

  it("refuses, writing nothing: a directory that is not an export, the checkpoint itself or a place inside it, weights that are not finite", async () => {
    const ckpt = join(root, "ckpt2");
    await saveTrainingState(ckpt, initTrainingState("gpt2", gpt2Config, 3));
    const other = join(root, "not-an-export");
    await mkdir(other);
    await writeFile(join(other, "notes.txt"), "mine");
    await expect(exportModel(ckpt, other)).rejects.toThrow(`${other}: already exists and is not an export of staged (refusing to overwrite)`);
    expect(await readdir(other)).toEqual(["notes.txt"]);
    await expect(exportModel(ckpt, ckpt)).rejects.toThrow(/the export must go outside the checkpoint/);
    await expect(exportModel(ckpt, join(ckpt, "onnx-export"))).rejects.toThrow(/the export must go outside the checkpoint/);
    const s = initTrainingState("gpt2", gpt2Config, 3);
    const bad = new Map(s.params);
    const t = Tensor.zeros("F32", [256, 16]);
    t.f32[17] = Number.NaN;
    bad.set("transformer.wte.weight", inMemory(t));
    await expect(exportModel({ ...s, params: bad }, join(root, "nan"))).rejects.toThrow(
      "parameter transformer.wte.weight holds NaN at index 17 (a diverged model?)",
    );
    const big = new Map(s.params);
    const u = Tensor.zeros("F32", [256, 16]);
    u.f32[3] = 1e6;
    big.set("transformer.wte.weight", inMemory(u));
    await expect(exportModel({ ...s, params: big }, join(root, "big"), { dtype: "fp16" })).rejects.toThrow(
      "parameter transformer.wte.weight holds 1000000 at index 3, beyond float16's range (export it as fp32)",
    );
    expect((await readdir(root)).filter((f) => /^(nan|big)$|^\.(nan|big)\./.test(f))).toEqual([]);
    await expect(exportModel(join(root, "missing"), join(root, "x"))).rejects.toThrow(/missing: not a checkpoint directory/);
    // An output that is a symlink to nothing is said to be one (not ENOTDIR from the rename).
    const dangling = join(root, "dangling");
    await symlink("nowhere/export", dangling);
    await expect(exportModel(ckpt, dangling)).rejects.toThrow(new RegExp(`^${dangling}: a symlink to nowhere/export, which does not exist$`));
    expect((await readdir(root)).filter((f) => f.includes("dangling") || f.includes("nowhere"))).toEqual(["dangling"]);
  });
});

describe("staged-export.json", () => {
  it("is read through its schema: absent is null, a bad or foreign manifest is one line naming the file and the field", async () => {
    const d = join(root, "manifests");
    await mkdir(d);
    expect(await readManifest(d)).toBeNull();
    expect(await readManifest(join(root, "no-such-dir"))).toBeNull();
    const file = join(d, MANIFEST);
    const good: ExportManifest = {
      format: "staged-export",
      version: 1,
      exporter: "@staged/export 0.1.0",
      architecture: "gpt2",
      dtypes: ["fp32"],
      externalData: {},
      source: null,
    };
    await writeFile(file, formatManifest(good));
    expect(await readManifest(d)).toEqual(good);
    for (const [over, message] of [
      [{ format: "staged-run-result" }, 'format must be "staged-export"'],
      [{ version: 0 }, "version must be an integer ≥ 1"],
      [{ dtypes: ["int8"] }, 'dtypes[0] must be "fp32" or "fp16"'],
      [{ externalData: { "onnx/model.onnx": 3 } }, "externalData.onnx/model.onnx must be a file name"],
      [{ source: 7 }, "source must be a string or null"],
      [{ architecture: undefined }, "architecture must be a string"],
    ] as const) {
      await writeFile(file, JSON.stringify({ ...good, ...over }));
      await expect(readManifest(d)).rejects.toThrow(new Error(`${file}: ${message}`));
    }
    await writeFile(file, "not json");
    await expect(readManifest(d)).rejects.toThrow(new RegExp(`^${file}: invalid JSON`));
    // exportModel refuses to replace a directory whose manifest is not one, naming it.
    const ckpt = join(root, "ckpt3");
    await saveTrainingState(ckpt, initTrainingState("gpt2", gpt2Config, 3));
    await writeFile(file, JSON.stringify({ ...good, format: "other" }));
    await expect(exportModel(ckpt, d)).rejects.toThrow(new Error(`${file}: format must be "staged-export"`));
    expect((await readdir(d)).sort()).toEqual([MANIFEST]);
  });
});

describe("fp16 export (onnx/model_fp16.onnx)", () => {
  it("logits within float16's tolerance of the fp32 model, with and without a cache, and with left padding", async () => {
    for (const v of VARIANTS) {
      const state = await testState(v.architecture, v.config, 4, 2);
      const dir = join(root, `fp16-${v.name.replace(/\W+/g, "-")}`);
      await exportModel(state, dir, { dtype: "fp16" });
      const kv = state.shape.kvHeads ?? state.shape.heads,
        hd = state.shape.headDim,
        L = state.shape.layers;
      const ids = [
          [3, 90, 17, 200, 45, 61],
          [0, 0, 99, 12, 7, 250],
        ],
        mask = [
          [1, 1, 1, 1, 1, 1],
          [0, 0, 1, 1, 1, 1],
        ],
        pos = [
          [0, 1, 2, 3, 4, 5],
          [1, 1, 0, 1, 2, 3],
        ];
      const s32 = await ort.InferenceSession.create(join(dir, "onnx", "model.onnx"), { intraOpNumThreads: 1 });
      const s16 = await ort.InferenceSession.create(join(dir, "onnx", "model_fp16.onnx"), { intraOpNumThreads: 1 });
      const full32 = await runExport(s32, L, kv, hd, ids, mask, pos);
      const full16 = await runExport(s16, L, kv, hd, ids, mask, pos, undefined, "float16");
      expect(full16.present.keys[0]!.type).toBe("float16");
      const scale = Math.max(...full32.logits.map(Math.abs));
      expect(worstExcess(full16.logits, full32.logits, 1e-2, 1e-2 * scale), v.name).toBeLessThanOrEqual(0);
      // The cache in float16: a prefix, then the rest.
      const first = await runExport(
        s16,
        L,
        kv,
        hd,
        ids.map((r) => r.slice(0, 4)),
        mask.map((r) => r.slice(0, 4)),
        pos.map((r) => r.slice(0, 4)),
        undefined,
        "float16",
      );
      const rest = await runExport(
        s16,
        L,
        kv,
        hd,
        ids.map((r) => r.slice(4)),
        mask,
        pos.map((r) => r.slice(4)),
        first.present,
        "float16",
      );
      const tail32 = Float32Array.from([...full32.logits.subarray(4 * 256, 6 * 256), ...full32.logits.subarray(10 * 256, 12 * 256)]);
      expect(worstExcess(rest.logits, tail32, 1e-2, 1e-2 * scale), v.name).toBeLessThanOrEqual(0);
      // fp16 is not fp32: a check that can fail.
      expect(worstExcess(full16.logits, full32.logits, 0, 0)).toBeGreaterThan(0);
      await s32.release();
      await s16.release();
    }
  });

  it("transformers.js loads it with dtype fp16 and generates the fp32 model's greedy tokens (choices clear of float16 error)", async () => {
    const state = await testState("gpt2", gpt2Config, 1, 6);
    const dir = join(root, "fp16-generate");
    await exportModel(state, dir, { dtype: "fp16" });
    const ref = await trainerGreedy(state, bytesOf("Hello"), 8);
    expect(Math.min(...ref.margins)).toBeGreaterThan(0.02);
    const g = await loadGenerator(dir, { dtype: "fp16", threads: 1 });
    try {
      expect(g.dir).toBe(dir);
      expect((await g.generate("Hello", { maxNewTokens: 8 })).newIds).toEqual(ref.ids);
    } finally {
      await g.dispose();
    }
  });
});

describe("external data through transformers.js", () => {
  it("an export with its weights in onnx/model.onnx_data generates as the inline one does", async () => {
    const state = await testState("llama", VARIANTS[2]!.config, 5, 6);
    const dir = join(root, "external-generate");
    await exportModel(state, dir, { externalData: true });
    const ref = await trainerGreedy(state, bytesOf("Hi"), 10);
    const g = await loadGenerator(dir, { threads: 1 });
    try {
      expect((await g.generate("Hi", { maxNewTokens: 10 })).newIds).toEqual(ref.ids);
    } finally {
      await g.dispose();
    }
  });
});

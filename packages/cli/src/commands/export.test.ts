import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { MANIFEST } from "@staged/export";
import { json, ok, staged } from "../testing.js";

/** Every file of a checkpoint, names and bytes (the testing helper's fingerprint also lists the parent, where exports go). */
const contents = async (dir: string) => Promise.all((await readdir(dir)).sort().map(async (f) => [f, await readFile(join(dir, f))]));

let root: string;
const at = (name: string) => join(root, name);
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-export-cli-"));
  ok("init", at("ckpt"), "--layers", "1", "--d-model", "16", "--heads", "2", "--context", "32");
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("staged export", () => {
  it("writes the directory transformers.js loads, beside the checkpoint by default, fp16 on request", async () => {
    const before = await contents(at("ckpt"));
    const out = json("export", at("ckpt"));
    expect(out).toMatchObject({ out: at("ckpt-onnx"), architecture: "gpt2", dtypes: ["fp32"], externalData: false });
    expect(out.files).toEqual(
      expect.arrayContaining(["onnx/model.onnx", "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"]),
    );
    expect((await readdir(at("ckpt-onnx"))).sort()).toEqual([
      "config.json",
      "generation_config.json",
      "onnx",
      MANIFEST,
      "tokenizer.json",
      "tokenizer_config.json",
    ]);
    expect(await contents(at("ckpt"))).toEqual(before);
    const r = ok("export", at("ckpt"), "--out", at("half"), "--dtype", "fp16");
    expect(r.stdout).toMatch(/^exported .*ckpt \(gpt2\) to .*half: onnx\/model\.onnx, onnx\/model_fp16\.onnx, /);
    expect(r.stdout).toContain('pipeline("text-generation"');
    expect((await readdir(join(at("half"), "onnx"))).sort()).toEqual(["model.onnx", "model_fp16.onnx"]);
    const config = JSON.parse(await readFile(join(at("half"), "config.json"), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({ model_type: "gpt2", n_layer: 1, n_embd: 16, use_cache: true });
  }, 60_000);

  it("bad input: one line naming the problem, exit 1, nothing written", async () => {
    await mkdir(at("mine"));
    await writeFile(join(at("mine"), "notes.txt"), "x");
    const listing = (await readdir(root)).sort();
    for (const [args, message] of [
      [["export", at("missing")], /^staged: .*missing: not a checkpoint directory \(it does not exist or is not a directory\)$/],
      [["export", at("ckpt"), "--dtype", "bf16"], /^staged: option '--dtype <d>' argument 'bf16' is invalid\. Allowed choices are fp32, fp16\.$/],
      [["export", at("ckpt"), "--out", at("mine")], /^staged: .*mine: already exists and is not an export of staged \(refusing to overwrite\)$/],
      [
        ["export", at("ckpt"), "--out", join(at("ckpt"), "onnx")],
        /^staged: .*: the export must go outside the checkpoint .*ckpt \(and not contain it\)$/,
      ],
    ] as const) {
      const r = staged(...args);
      expect(r.status, args.join(" ")).toBe(1);
      expect(r.stderr.trim()).toMatch(message);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stdout).toBe("");
    }
    expect((await readdir(root)).sort()).toEqual(listing);
    expect(await readdir(at("mine"))).toEqual(["notes.txt"]);
  }, 60_000);
});

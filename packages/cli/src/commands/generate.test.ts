import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate } from "@staged/export";
import { json, ok, staged } from "../testing.js";

/** Every file of a checkpoint, names and bytes (the testing helper's fingerprint also lists the parent, where exports go). */
const contents = async (dir: string) => Promise.all((await readdir(dir)).sort().map(async (f) => [f, await readFile(join(dir, f))]));

let root: string;
const at = (name: string) => join(root, name);
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-generate-cli-"));
  ok("init", at("ckpt"), "--layers", "1", "--d-model", "16", "--heads", "2", "--context", "32", "--seed", "5");
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("staged generate", () => {
  it("streams the prompt and its continuation to stdout, exporting into the cache beside the checkpoint on first use", async () => {
    const before = await contents(at("ckpt"));
    const first = ok("generate", at("ckpt"), "--prompt", "Hello", "--max-new-tokens", "8");
    expect(first.stderr).toMatch(
      /^exported the model to .*\.ckpt\.staged-export\n8 tokens in [\d.]+ s: first token \d+ ms, then [\d.]+ tokens\/s\n$/,
    );
    expect(await contents(at("ckpt"))).toEqual(before);
    expect((await readdir(root)).sort()).toEqual([".ckpt.staged-export", "ckpt"]);
    const second = ok("generate", at("ckpt"), "--prompt", "Hello", "--max-new-tokens", "8");
    expect(second.stderr).not.toMatch(/exported/);
    expect(second.stdout).toBe(first.stdout);

    // --json: the text and the token ids, the same greedy continuation as the library's (and the stream's).
    const out = json("generate", at("ckpt"), "--prompt", "Hello", "--max-new-tokens", "8");
    const lib = await generate(at("ckpt"), "Hello", { maxNewTokens: 8 });
    expect(out).toMatchObject({
      prompt: "Hello",
      text: lib.text,
      completion: lib.completion,
      ids: lib.ids,
      newIds: lib.newIds,
      exported: false,
      dtype: "fp32",
      steps: 8,
    });
    expect(out.promptIds).toEqual([72, 101, 108, 108, 111]);
    expect(out.newIds).toHaveLength(8);
    expect(first.stdout).toBe(`${lib.text}\n`);
  }, 60_000);

  it("samples with --temperature, --top-k, --top-p; --seed makes it reproducible; runs an export directory as it is", async () => {
    const sample = (seed: string) =>
      json(
        "generate",
        at("ckpt"),
        "--prompt",
        "abc",
        "--max-new-tokens",
        "12",
        "--temperature",
        "1.2",
        "--top-k",
        "40",
        "--top-p",
        "0.95",
        "--seed",
        seed,
      );
    expect(sample("1").newIds).toEqual(sample("1").newIds);
    expect(sample("1").newIds).not.toEqual(sample("2").newIds);
    ok("export", at("ckpt"), "--out", at("exported"), "--dtype", "fp16");
    const listing = (await readdir(root)).sort();
    const direct = json("generate", at("exported"), "--prompt", "Hello", "--max-new-tokens", "8");
    expect(direct).toMatchObject({ export: at("exported"), exported: false });
    expect(direct.newIds).toEqual(json("generate", at("ckpt"), "--prompt", "Hello", "--max-new-tokens", "8").newIds);
    expect(json("generate", at("exported"), "--prompt", "Hello", "--max-new-tokens", "4", "--dtype", "fp16").newIds).toHaveLength(4);
    expect((await readdir(root)).sort()).toEqual(listing);
  }, 60_000);

  it("bad input: one line naming the problem, exit 1, nothing written", async () => {
    ok("init", at("fresh"), "--layers", "1", "--d-model", "16", "--heads", "2", "--context", "32");
    const listing = (await readdir(root)).sort();
    for (const [args, message] of [
      [["generate", at("missing"), "--prompt", "x"], /^staged: .*missing: not a checkpoint directory \(it does not exist or is not a directory\)$/],
      [
        ["generate", at("fresh"), "--prompt", "x", "--max-new-tokens", "0"],
        /^staged: option '--max-new-tokens <N>' argument '0' is invalid\. --max-new-tokens must be an integer ≥ 1\.$/,
      ],
      [
        ["generate", at("fresh"), "--prompt", "x", "--top-p", "2"],
        /^staged: option '--top-p <p>' argument '2' is invalid\. --top-p must be a number in \(0, 1\]\.$/,
      ],
      [
        ["generate", at("fresh"), "--prompt", "x", "--temperature", "-1"],
        /^staged: option '--temperature <t>' argument '-1' is invalid\. --temperature must be a non-negative number\.$/,
      ],
      [
        ["generate", at("fresh"), "--prompt", "x", "--dtype", "int8"],
        /^staged: option '--dtype <d>' argument 'int8' is invalid\. Allowed choices are fp32, fp16\.$/,
      ],
      [
        ["generate", at("fresh"), "--prompt", "x", "--device", "tpu"],
        /^staged: option '--device <d>' argument 'tpu' is invalid\. Allowed choices are cpu, cuda, webgpu\.$/,
      ],
      [["generate", at("fresh")], /^staged: required option '--prompt <text>' not specified$/],
      // Refused before the export cache beside the checkpoint is made (the listing below shows none).
      [
        ["generate", at("fresh"), "--prompt", ""],
        /^staged: .*fresh: --prompt is empty and the checkpoint's tokenizer adds no start token: give some text to continue$/,
      ],
    ] as const) {
      const r = staged(...args);
      expect(r.status, args.join(" ")).toBe(1);
      expect(r.stderr.trim()).toMatch(message);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stdout).toBe("");
    }
    expect((await readdir(root)).sort()).toEqual(listing);
    // A prompt longer than the context is refused by name (the export is made first, stdout stays empty).
    const r = staged("generate", at("fresh"), "--prompt", "x".repeat(30), "--max-new-tokens", "8");
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n").at(-1)).toBe("staged: the prompt (30 tokens) and 8 new tokens exceed the model's context of 32 positions");
    expect(r.stdout).toBe("");
  }, 60_000);

  it("--device webgpu: the CPU's greedy continuation where the machine has an adapter, else one line saying what it needs", () => {
    const r = staged("--json", "generate", at("ckpt"), "--prompt", "Hello", "--max-new-tokens", "8", "--device", "webgpu");
    if (r.status === 0) {
      const cpu = json("generate", at("ckpt"), "--prompt", "Hello", "--max-new-tokens", "8");
      expect((JSON.parse(r.stdout) as { newIds: number[] }).newIds).toEqual(cpu.newIds);
      return;
    }
    expect(r.status).toBe(1);
    expect(r.stdout).toBe("");
    // Dawn may print its own Vulkan warning first; ours is the last line.
    expect(r.stderr.trim().split("\n").at(-1)).toMatch(
      /^staged: .*\.ckpt\.staged-export: transformers\.js cannot run the export on webgpu: .+ \(onnxruntime-node's WebGPU runs on Dawn over Vulkan: it needs libvulkan1/,
    );
  }, 60_000);
});

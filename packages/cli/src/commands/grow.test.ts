import { mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initTrainingState, loadTrainingState, writeCheckpoint } from "@staged/core";
import { TEST_CONFIG as config, fingerprint, json, ok, staged, testCheckpoint } from "../testing.js";

let root: string;
const at = (name: string) => join(root, name);
const checkpoint = (name: string, dtype?: "F32" | "F16" | "BF16", maxShardBytes?: number, scale?: number) =>
  testCheckpoint(at(name), dtype, maxShardBytes, scale);

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-grow-cli-"));
  await checkpoint("f32");
}, 30_000);
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("staged grow", () => {
  it("width --json reports shapes, counts, options and exactness; the output loads and keeps its moments", async () => {
    const r = json("grow", "width", at("f32"), at("w2"), "--factor", "2", "--moments", "paper", "--rewarmup", "3", "--continue-at", "2");
    expect(r).toMatchObject({
      operator: "width",
      before: { dModel: 8, heads: 2, ffn: 32 },
      after: { dModel: 16, heads: 4, ffn: 64 },
      options: { factor: 2, moments: "paper", symmetry: "none" },
      lossPreserving: true,
      step: 5,
      continueAt: 2,
    });
    expect(r.parametersAfter).toBeGreaterThan(r.parametersBefore as number);
    const grown = await loadTrainingState(at("w2"));
    expect(grown.optimizer.expAvg?.size).toBe(grown.params.size);
    expect(grown.schedule!.restarts).toEqual([{ step: 2, warmupSteps: 3 }]);
    expect(grown.progress.stages).toHaveLength(1);
    await grown.close();
    expect(json("grow", "width", at("f32"), at("noisy"), "--symmetry", "noise", "--noise-std", "0.01").lossPreserving).toBe(false);
  });

  it("a small growth says nothing on stderr: only writes above a gigabyte are announced", () => {
    const r = staged("--json", "grow", "depth", at("f32"), at("quiet"));
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ after: { layers: 4 }, bytes: expect.any(Number) });
    expect(r.stderr).toBe("");
  });

  it("--progress jsonl and none are taken (a growth within a second shows nothing either way); other modes are refused", () => {
    for (const mode of ["jsonl", "none", "lines"]) {
      const r = staged("--json", "grow", "depth", at("f32"), at(`progress-${mode}`), "--progress", mode);
      expect(r.status).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ after: { layers: 4 } });
      expect(r.stderr).toBe("");
    }
    const r = staged("grow", "depth", at("f32"), at("bad"), "--progress", "loud");
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/argument 'loud' is invalid/);
  });

  it("depth --json, then inspect shows both stages", () => {
    const r = json("grow", "depth", at("w2"), at("w2d"), "--layer-map", "0,0,1,1,1");
    expect(r).toMatchObject({ after: { layers: 5 }, lossPreserving: true, options: { layerMap: [0, 0, 1, 1, 1], init: "identity" } });
    expect(json("grow", "depth", at("w2"), at("w2c"), "--init", "copy").lossPreserving).toBe(false);
    const info = json("inspect", at("w2d"));
    expect(info).toMatchObject({ layers: 5, dModel: 16, hasOptimizerState: true, step: 2 });
    expect((info.stages as { operator: string }[]).map((s) => s.operator)).toEqual(["width", "depth"]);
  });

  it("--eval-data measures the loss change: zero for exact options, reported for copy init", async () => {
    const tokens = join(root, "tokens.bin");
    await writeFile(tokens, Buffer.from(Uint16Array.from({ length: 4096 }, (_, i) => (i * 7 + (i >> 3)) % 32).buffer));
    const exact = json("grow", "width", at("f32"), at("checked-w"), "--symmetry", "split", "--eval-data", tokens, "--eval-context", "16");
    expect(exact.evalTokens).toBe(16 * 16);
    expect(Math.abs(exact.lossChange as number)).toBeLessThan(1e-5);
    // Weights large enough that a stacked copy of a layer visibly changes the function.
    const strong = await checkpoint("strong", "F32", undefined, 20);
    const copy = json("grow", "depth", strong, at("checked-d"), "--init", "copy", "--eval-data", tokens, "--eval-context", "16");
    expect(Math.abs(copy.lossChange as number)).toBeGreaterThan(1e-2);
    expect(copy.lossAfter).toBeCloseTo((copy.lossBefore as number) + (copy.lossChange as number), 6);
  });

  for (const dtype of ["F16", "BF16"] as const) {
    it(`keeps ${dtype}, sharded in and out`, async () => {
      const input = await checkpoint(`in-${dtype}`, dtype, 4000);
      expect((await readdir(input)).filter((f) => f.startsWith("model-")).length).toBeGreaterThan(1);
      const out = at(`out-${dtype}`);
      ok("grow", "width", input, out, "--max-shard-bytes", "4000");
      const files = await readdir(out);
      expect(files).toContain("model.safetensors.index.json");
      expect(files).toContain("optimizer.safetensors.index.json");
      expect(JSON.parse(await readFile(join(out, "config.json"), "utf8")).torch_dtype).toBe(dtype === "F16" ? "float16" : "bfloat16");
      const info = json("inspect", out);
      expect(info).toMatchObject({ dtype: dtype === "F16" ? "float16" : "bfloat16", dModel: 16 });
    });
  }

  describe("bad input: one line, exit 1, nothing written", () => {
    const cases: [string, string[], RegExp][] = [
      ["a factor that is not an integer", ["width", "f32", "bad", "--factor", "2.5"], /--factor must be an integer/],
      ["a factor of 1", ["width", "f32", "bad", "--factor", "1"], /nothing to grow: factor must be an integer ≥ 2/],
      ["a depth factor of 1", ["depth", "f32", "bad", "--factor", "1"], /factor must be an integer ≥ 2/],
      ["a layer map naming a missing layer", ["depth", "f32", "bad", "--layer-map", "0,1,2"], /layer map names layer 2/],
      ["an output equal to the input", ["width", "f32", "f32"], /the output is the input/],
      ["an output inside the input", ["width", "f32", "f32/sub"], /inside the input/],
      ["an existing output", ["width", "f32", "w2"], /already exists/],
      ["an unknown symmetry", ["width", "f32", "bad", "--symmetry", "magic"], /argument 'magic' is invalid/],
      ["an output containing the input", ["width", "f32", "."], /the output contains the input checkpoint/],
      [
        "a depth above the layer limit (it ran for minutes before)",
        ["depth", "f32", "bad", "--layers", "100000"],
        /^staged: depth growth: layers 100000 gives 8\.7e7 parameters \(349 MB as F32\); the limit is layers ≤ 10000\n$/,
      ],
      [
        "a width factor above the size limits",
        ["width", "f32", "bad", "--factor", "1000000"],
        /^staged: width growth: factor 1000000 gives d_model 8000000, heads 2000000, ffn 32000000 and 1\.5e15 parameters \(6\.1 PB as F32\); the limits are/,
      ],
      [
        "a grown tensor larger than one array holds",
        ["width", "f32", "bad", "--factor", "8192"],
        /^staged: width growth: tensor transformer\.h\.0\.attn\.c_attn\.weight \[65536, 196608\] has 1\.3e10 values; one array holds at most 4294967295\n$/,
      ],
    ];
    for (const [label, args, message] of cases) {
      it(label, async () => {
        const paths = args.map((a, i) => (i > 0 && i < 3 ? at(a) : a));
        const before = await fingerprint(at("f32"));
        const t0 = performance.now();
        const r = staged("grow", ...paths);
        expect(performance.now() - t0).toBeLessThan(30_000); // at once: generous for a loaded machine
        expect(r.status).toBe(1);
        expect(r.stderr).toMatch(message);
        expect(r.stderr.trim().split("\n")).toHaveLength(1);
        expect(await fingerprint(at("f32"))).toBe(before);
        expect((await readdir(root)).some((f) => f === "bad" || f.startsWith(".bad"))).toBe(false);
      });
    }

    it("a growth whose output exceeds the free disk space, with both sizes", async () => {
      // 500 layers of d_model 8, × 4000: 6.1e12 parameters, 24.6 TB to write (within the model limits).
      ok("init", at("deep"), "--layers", "500", "--d-model", "8", "--heads", "2");
      const r = staged("grow", "width", at("deep"), at("bad"), "--factor", "4000");
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(
        new RegExp(`^staged: ${at("bad")}: writing 24\\.6 TB \\(6\\.1e12 parameters\\) needs more than the .* free on the filesystem of ${root}\n$`),
      );
      expect((await readdir(root)).some((f) => f === "bad" || f.startsWith(".bad"))).toBe(false);
    });

    it("--force replaces an existing output but never the input, even through a symlink", async () => {
      expect(json("grow", "width", at("f32"), at("w2"), "--force", "--moments", "reset").after).toMatchObject({ dModel: 16 });
      expect(staged("grow", "width", at("f32"), at("f32"), "--force").status).toBe(1);
      await symlink(at("f32"), at("f32-link"));
      const before = await fingerprint(at("f32"));
      const r = staged("grow", "width", at("f32-link"), at("f32"), "--force");
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/the output is the input/);
      expect(await fingerprint(at("f32"))).toBe(before);
    });

    it("a checkpoint of another architecture and mismatched moments", async () => {
      await mkdir(at("rwkv"));
      await writeFile(join(at("rwkv"), "config.json"), JSON.stringify({ model_type: "rwkv", hidden_size: 8 }));
      let r = staged("grow", "width", at("rwkv"), at("bad"));
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/rwkv\/config.json: unknown architecture model_type "rwkv" \(registered: gpt2, llama\)/);
      const input = await checkpoint("mismatch");
      const s = initTrainingState("gpt2", { ...config, n_embd: 4 }, 1);
      await writeCheckpoint(
        input,
        "optimizer",
        [...s.params].map(([n, t]) => ({ name: `exp_avg.${n}`, tensor: t })),
      );
      r = staged("grow", "depth", input, at("bad"));
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/optimizer.safetensors: .*exp_avg/);
      expect((await readdir(root)).includes("bad")).toBe(false);
    });
  });
});

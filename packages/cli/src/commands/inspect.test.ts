import { mkdir, mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Tensor, gpt2, writeCheckpoint } from "@staged/core";
import { TEST_CONFIG as config, json, ok, staged, testCheckpoint } from "../testing.js";

let root: string;
const at = (name: string) => join(root, name);
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-inspect-cli-"));
  await testCheckpoint(at("f32"));
});
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

describe("staged inspect", () => {
  it("reports a checkpoint in JSON", () => {
    expect(json("inspect", at("f32"))).toMatchObject({
      architecture: "gpt2", layers: 2, dModel: 8, heads: 2, ffn: 32, vocab: 32, context: 16, parameters: 32 * 8 + 16 * 8 + 2 * (12 * 64 + 13 * 8) + 16,
      dtype: "float32", hasOptimizerState: true, step: 5, tokensSeen: 320, stages: [],
    });
    expect(ok("inspect", at("f32")).stdout).toMatch(/gpt2: 2 layers, d_model 8, 2 heads × 4, ffn 32/);
  });

  it("reads foreign HF checkpoints: no prefix, stored lm_head, legacy buffers, F16, sharded", async () => {
    const weights = gpt2.init(config, 2);
    const variants: [string, { prefix: boolean; extra: boolean; dtype: "F32" | "F16"; shard?: number }][] = [
      ["hf-plain", { prefix: false, extra: false, dtype: "F32" }],
      ["hf-extra", { prefix: true, extra: true, dtype: "F32" }],
      ["hf-f16-sharded", { prefix: false, extra: true, dtype: "F16", shard: 3000 }],
    ];
    for (const [name, v] of variants) {
      await mkdir(at(name));
      await writeFile(join(at(name), "config.json"), JSON.stringify(config));
      const entries = [...weights].map(([n, t]) => ({ name: v.prefix ? n : n.replace(/^transformer\./, ""), tensor: t.withDType(v.dtype) }));
      if (v.extra) {
        entries.push({ name: "lm_head.weight", tensor: weights.get("transformer.wte.weight")!.withDType(v.dtype) });
        entries.push({ name: "h.0.attn.bias", tensor: Tensor.zeros("F32", [1, 1, 16, 16]) }, { name: "h.0.attn.masked_bias", tensor: Tensor.zeros("F32", []) });
      }
      await writeCheckpoint(at(name), "model", entries, { maxShardBytes: v.shard });
      expect(json("inspect", at(name))).toMatchObject({
        layers: 2, dModel: 8, parameters: [...weights.values()].reduce((n, t) => n + t.size, 0),
        dtype: v.dtype === "F16" ? "float16" : "float32", hasOptimizerState: false, step: 0, tokensSeen: 0, stages: [],
      });
    }
  });

  it("names the file and the problem on bad input, with a stack trace only under --debug", async () => {
    const broken = await testCheckpoint(at("broken"));
    await truncate(join(broken, "model.safetensors"), 100);
    let r = staged("inspect", broken);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/^staged: .*broken\/model.safetensors: /);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    r = staged("inspect", broken, "--debug");
    expect(r.stderr.split("\n").length).toBeGreaterThan(2);
    r = staged("inspect", at("missing"));
    expect(r.stderr).toMatch(/missing: not a checkpoint directory/);
  });
});

import { mkdir, mkdtemp, open, rm, stat, truncate, writeFile } from "node:fs/promises";
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
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("staged inspect", () => {
  it("reports a checkpoint in JSON", () => {
    expect(json("inspect", at("f32"))).toMatchObject({
      architecture: "gpt2",
      layers: 2,
      dModel: 8,
      heads: 2,
      ffn: 32,
      vocab: 32,
      context: 16,
      parameters: 32 * 8 + 16 * 8 + 2 * (12 * 64 + 13 * 8) + 16,
      dtype: "float32",
      hasOptimizerState: true,
      step: 5,
      tokensSeen: 320,
      stages: [],
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
        entries.push(
          { name: "h.0.attn.bias", tensor: Tensor.zeros("F32", [1, 1, 16, 16]) },
          { name: "h.0.attn.masked_bias", tensor: Tensor.zeros("F32", []) },
        );
      }
      await writeCheckpoint(at(name), "model", entries, { maxShardBytes: v.shard });
      expect(json("inspect", at(name))).toMatchObject({
        layers: 2,
        dModel: 8,
        parameters: [...weights.values()].reduce((n, t) => n + t.size, 0),
        dtype: v.dtype === "F16" ? "float16" : "float32",
        hasOptimizerState: false,
        step: 0,
        tokensSeen: 0,
        stages: [],
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

  it("refuses a config above the size limits at once, from the header alone", async () => {
    await mkdir(at("huge"));
    await writeFile(join(at("huge"), "config.json"), JSON.stringify({ model_type: "gpt2", n_layer: 100_000_000 }));
    await writeFile(join(at("huge"), "model.safetensors"), new Uint8Array(16));
    const t0 = performance.now();
    const r = staged("inspect", at("huge"));
    const ms = performance.now() - t0;
    expect(r.status).toBe(1);
    expect(r.stderr).toBe(
      `staged: ${join(at("huge"), "config.json")}: n_layer 100000000 gives 7.1e14 parameters (2.8 PB as F32); ` +
        "the limits are n_layer ≤ 10000 and 1e13 parameters\n",
    );
    // The process's own start included: before the check, this took 50 s and ended in a heap dump.
    expect(ms).toBeLessThan(30_000); // generous for a loaded machine
  });

  it("inspects a 6.7B-parameter checkpoint by its headers only (a sparse 13 GB file)", async () => {
    const big = { model_type: "gpt2", n_layer: 32, n_embd: 4096, n_head: 32, vocab_size: 50257, n_positions: 2048 };
    const dir = at("big");
    await mkdir(dir);
    await writeFile(join(dir, "config.json"), JSON.stringify(big));
    // A safetensors header describing every tensor as BF16; the data is a hole, never written or read.
    const header: Record<string, unknown> = {};
    let offset = 0;
    for (const p of gpt2.params(big)) {
      const bytes = p.shape.reduce((a, b) => a * b, 2);
      header[p.name] = { dtype: "BF16", shape: p.shape, data_offsets: [offset, offset + bytes] };
      offset += bytes;
    }
    const json8 = JSON.stringify(header).padEnd(Math.ceil(JSON.stringify(header).length / 8) * 8, " ");
    const prefix = new Uint8Array(8);
    new DataView(prefix.buffer).setBigUint64(0, BigInt(json8.length), true);
    const file = join(dir, "model.safetensors");
    const fh = await open(file, "w");
    try {
      await fh.write(prefix);
      await fh.write(json8);
      await fh.truncate(8 + json8.length + offset);
    } finally {
      await fh.close();
    }
    expect((await stat(file)).size).toBeGreaterThan(13e9);
    const t0 = performance.now();
    const info = json("inspect", dir);
    expect(performance.now() - t0).toBeLessThan(30_000); // at once: generous for a loaded machine
    expect(info).toMatchObject({ layers: 32, dModel: 4096, parameters: gpt2.parameterCount(big), dtype: "bfloat16", hasOptimizerState: false });
    expect(info.parameters).toBeGreaterThan(6.6e9);
  });
});

import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { json, staged } from "../testing.js";

let root: string;
const at = (name: string) => join(root, name);
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-init-cli-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("staged init", () => {
  it("creates a checkpoint and says nothing on stderr when it writes little", () => {
    const r = staged("--json", "init", at("small"), "--layers", "1", "--d-model", "16", "--heads", "2", "--context", "16");
    expect(r.status).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ layers: 1, dModel: 16, parameters: 256 * 16 + 16 * 16 + 12 * 256 + 13 * 16 + 32 });
    expect(r.stderr).toBe("");
  });

  it("--arch llama with grouped-query attention writes a config transformers loads as LlamaForCausalLM", async () => {
    const out = json(
      "init",
      at("llama"),
      "--arch",
      "llama",
      "--layers",
      "2",
      "--d-model",
      "32",
      "--heads",
      "4",
      "--kv-heads",
      "2",
      "--context",
      "16",
    );
    expect(out).toMatchObject({ architecture: "llama", heads: 4, kvHeads: 2, gatedMlp: true, tied: false });
    const config = JSON.parse(await readFile(join(at("llama"), "config.json"), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({
      model_type: "llama",
      architectures: ["LlamaForCausalLM"],
      num_key_value_heads: 2,
      hidden_size: 32,
      tie_word_embeddings: false,
    });
    expect(json("inspect", at("llama"))).toMatchObject({ kvHeads: 2, parameters: out.parameters });
    for (const [args, message] of [
      [["--arch", "llama", "--heads", "4", "--kv-heads", "3"], /^staged: --kv-heads 3 does not divide --heads 4$/],
      [["--heads", "4", "--kv-heads", "2"], /^staged: --kv-heads: gpt2 has one key\/value head per query head/],
      [["--arch", "bert", "--heads", "4"], /^staged: option '--arch <name>' argument 'bert' is invalid\. Allowed choices are gpt2, llama\.$/],
    ] as const) {
      const r = staged("init", at("bad"), "--layers", "1", "--d-model", "32", ...args);
      expect(r.status).toBe(1);
      expect(r.stderr.trim()).toMatch(message);
    }
    await rm(at("llama"), { recursive: true });
  });

  describe("checks sizes and resources before allocating: one line, exit 1, nothing written", () => {
    const cases: [string, string[], RegExp][] = [
      [
        "a d_model whose model is above the limits (it allocated for 20 s before)",
        ["--layers", "2", "--d-model", "1000000", "--heads", "1"],
        /^staged: --d-model 1000000 gives ffn 4000000 and 2\.4e13 parameters \(96\.0 TB as F32\); the limits are ffn ≤ 1048576 and 1e13 parameters$/,
      ],
      [
        "too many layers",
        ["--layers", "100000", "--d-model", "8", "--heads", "1"],
        /^staged: --layers 100000 gives 8\.7e7 parameters \(.* as F32\); the limit is --layers ≤ 10000$/,
      ],
      [
        "a model within the limits whose weights exceed the free memory",
        ["--layers", "100", "--d-model", "30000", "--heads", "100"],
        /^staged: .*big: initializing 1\.1e12 parameters needs 4\.3 TB of memory \(F32\); .* is free \(os\.freemem, of .* in all\)$/,
      ],
      [
        "a tensor larger than one array holds",
        ["--layers", "1", "--d-model", "1024", "--heads", "8", "--vocab", "10000000"],
        /^staged: .*big: tensor transformer\.wte\.weight \[10000000, 1024\] has 1e10 values; one array holds at most 4294967295$/,
      ],
    ];
    for (const [label, args, message] of cases) {
      it(label, async () => {
        const t0 = performance.now();
        const r = staged("init", at("big"), ...args);
        expect(r.status).toBe(1);
        expect(r.stderr.trim()).toMatch(message);
        expect(performance.now() - t0).toBeLessThan(30_000); // at once: generous for a loaded machine
        expect(await readdir(root)).toEqual(["small"]);
      });
    }

    it("an existing directory, before allocating", () => {
      const r = staged("init", at("small"), "--layers", "1", "--d-model", "16", "--heads", "2");
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(/small: already exists \(refusing to overwrite\)\n$/);
    });
  });

  it("--dropout writes the architecture's dropout fields (default 0); outside [0, 1) is refused", async () => {
    const read = async (name: string) => JSON.parse(await readFile(join(at(name), "config.json"), "utf8")) as Record<string, unknown>;
    expect(await read("small")).toMatchObject({ embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 });
    expect(json("init", at("dropout"), "--layers", "1", "--d-model", "16", "--heads", "2", "--context", "16", "--dropout", "0.1")).toMatchObject({
      dropout: 0.1,
    });
    expect(await read("dropout")).toMatchObject({ embd_pdrop: 0.1, attn_pdrop: 0.1, resid_pdrop: 0.1 });
    json("init", at("dropout-llama"), "--arch", "llama", "--layers", "1", "--d-model", "16", "--heads", "2", "--context", "16", "--dropout", "0.25");
    expect((await read("dropout-llama")).attention_dropout).toBe(0.25);
    for (const v of ["1", "-0.1", "x"]) {
      const r = staged("init", at("bad"), "--layers", "1", "--d-model", "16", "--heads", "2", "--dropout", v);
      expect(r.status).toBe(1);
      expect(r.stderr.trim()).toBe(`staged: option '--dropout <p>' argument '${v}' is invalid. --dropout must be a number in [0, 1).`);
    }
    await Promise.all(["dropout", "dropout-llama"].map((n) => rm(at(n), { recursive: true })));
  });

  it("still writes a model of the usual sizes", () => {
    expect(json("init", at("gpt2ish"), "--layers", "2", "--d-model", "64", "--heads", "4", "--vocab", "512", "--context", "64").parameters).toBe(
      512 * 64 + 64 * 64 + 2 * (12 * 64 * 64 + 13 * 64) + 128,
    );
  });
});

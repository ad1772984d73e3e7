// A Llama-family checkpoint written by another tool (HF names without the `model.` prefix, rotary buffers,
// BF16, sharded, grouped-query attention; a tied qwen2 with q/k/v biases) goes through the whole project:
// inspect, grow in width and depth with the loss kept, train, save, from the CLI and from the packages' APIs.
import { spawnSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Tensor, llama, loadTrainingState, saveTrainingState, writeCheckpoint } from "@staged/core";
import { growWidth } from "@staged/grow-width";
import { growDepth } from "@staged/grow-depth";
import { evaluate, train } from "@staged/trainer-ort";

const BIN = fileURLToPath(new URL("../../packages/cli/dist/bin.js", import.meta.url));
const staged = (...args: string[]) => {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 120_000 });
  if (r.status !== 0) throw new Error(`staged ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r;
};

let dir: string, data: string;
const configs: [string, Record<string, unknown>][] = [
  [
    "llama-gqa-bf16",
    {
      model_type: "llama",
      hidden_size: 32,
      intermediate_size: 64,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      vocab_size: 256,
      max_position_embeddings: 32,
      torch_dtype: "bfloat16",
    },
  ],
  [
    "qwen2-tied",
    {
      model_type: "qwen2",
      hidden_size: 32,
      intermediate_size: 48,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 1,
      vocab_size: 256,
      max_position_embeddings: 32,
      tie_word_embeddings: true,
    },
  ],
];

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-llama-e2e-"));
  data = join(dir, "data.txt");
  await writeFile(data, "the quick brown fox jumps over the lazy dog; a llama grows wide and deep. ".repeat(60));
  for (const [name, config] of configs) {
    const path = join(dir, name);
    await mkdir(path);
    await writeFile(join(path, "config.json"), JSON.stringify(config));
    const dtype = name.includes("bf16") ? "BF16" : "F32";
    const entries = [...llama.init(config, 11)].map(([n, t]) => ({ name: n.replace(/^model\./, ""), tensor: t.withDType(dtype) }));
    for (let i = 0; i < 2; i++)
      entries.push({ name: `layers.${i}.self_attn.rotary_emb.inv_freq`, tensor: Tensor.fromArray([4], [1, 0.1, 0.01, 0.001]) });
    await writeCheckpoint(path, "model", entries, { maxShardBytes: dtype === "BF16" ? 20_000 : undefined, metadata: { format: "pt" } });
  }
}, 60_000);
afterAll(() => rm(dir, { recursive: true, force: true }));

const lossOf = async (state: Parameters<typeof evaluate>[0]) => (await evaluate(state, { data, context: 16, maxBlocks: 8, threads: 1 })).loss;
const close = (a: number, b: number) => expect(Math.abs(a - b)).toBeLessThan(2e-6 * Math.max(1, Math.abs(b)));

describe.each(configs)("%s", (name) => {
  it("from the APIs: load, grow width ×2 and depth ×2 with the loss kept, train, save, reload", async () => {
    const src = await loadTrainingState(join(dir, name));
    const before = await lossOf(src);
    const grown = growDepth(growWidth(src, { factor: 2 }), { factor: 2 });
    expect(grown.shape).toMatchObject({ layers: 4, dModel: 64, heads: 8, kvHeads: name.startsWith("qwen2") ? 2 : 4 });
    close(await lossOf(grown), before);
    const out = join(dir, `${name}-api`);
    const { result } = await train(grown, { data, steps: 2, batch: 2, context: 16, threads: 1, saveDir: out });
    expect(Number.isFinite(result.loss)).toBe(true);
    await src.close();
    const back = await loadTrainingState(out);
    expect(back.progress.step).toBe(2);
    expect(back.shape.layers).toBe(4);
    expect(JSON.parse(await readFile(join(out, "config.json"), "utf8")).architectures).toEqual([
      name.startsWith("qwen2") ? "Qwen2ForCausalLM" : "LlamaForCausalLM",
    ]);
    await back.close();
  }, 120_000);

  it("from the CLI: inspect, grow width and depth, train, eval", async () => {
    const info = JSON.parse(staged("--json", "inspect", join(dir, name)).stdout) as Record<string, unknown>;
    expect(info).toMatchObject({ architecture: "llama", layers: 2, dModel: 32, gatedMlp: true });
    const wide = join(dir, `${name}-wide`),
      deep = join(dir, `${name}-deep`);
    staged("grow", "width", join(dir, name), wide, "--factor", "2");
    staged("grow", "depth", wide, deep, "--layer-map", "0,1,0,1");
    const trained = JSON.parse(
      staged("--json", "train", deep, "--data", data, "--steps", "2", "--batch", "2", "--context", "16", "--threads", "1").stdout,
    ) as { step: number };
    expect(trained.step).toBe(2);
    const ev = JSON.parse(staged("--json", "eval", deep, "--data", data, "--context", "16", "--max-blocks", "4", "--threads", "1").stdout) as {
      loss: number;
    };
    expect(Number.isFinite(ev.loss)).toBe(true);
  }, 120_000);
});

describe("a grown Llama checkpoint saved and reloaded keeps its loss", () => {
  it("BF16 growth is a byte-exact copy of the stored values", async () => {
    const src = await loadTrainingState(join(dir, "llama-gqa-bf16"));
    const grown = growDepth(src, { factor: 2 });
    await saveTrainingState(join(dir, "bf16-deep"), grown);
    const back = await loadTrainingState(join(dir, "bf16-deep"));
    close(await lossOf(back), await lossOf(src));
    await Promise.all([src.close(), back.close()]);
  }, 60_000);
});

// Runs examples/grow-hf-checkpoint.sh on a checkpoint shaped like a foreign HF GPT-2 download:
// GPT2Model names (no `transformer.` prefix), legacy attn.bias buffers, F16, sharded, its own tokenizer.json.
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, expect, it } from "vitest";
import { Tensor, gpt2, loadTrainingState, writeCheckpoint } from "@staged/core";
import { tinyBpeTokenizerJson } from "@staged/trainer-ort";

const script = join(dirname(fileURLToPath(import.meta.url)), "..", "grow-hf-checkpoint.sh");
const config = { model_type: "gpt2", architectures: ["GPT2LMHeadModel"], n_layer: 2, n_embd: 32, n_head: 2, vocab_size: 300, n_positions: 64 };
let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-hf-example-"));
  const hf = join(root, "hf");
  await mkdir(hf);
  await writeFile(join(hf, "config.json"), JSON.stringify(config));
  await writeFile(join(hf, "tokenizer.json"), tinyBpeTokenizerJson());
  const entries = [...gpt2.init(config, 4)].map(([name, t]) => ({ name: name.replace(/^transformer\./, ""), tensor: t.withDType("F16") }));
  for (let i = 0; i < config.n_layer; i++) entries.push({ name: `h.${i}.attn.bias`, tensor: Tensor.zeros("F32", [1, 1, 64, 64]) });
  await writeCheckpoint(hf, "model", entries, { maxShardBytes: 40_000, metadata: { format: "pt" } });
}, 30_000);
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

it("grows a foreign HF checkpoint exactly and trains it on with its own tokenizer", async () => {
  const hf = join(root, "hf");
  const before = await readFile(join(hf, "model.safetensors.index.json"));
  const out = execFileSync("bash", [script, hf, join(root, "run"), "4"], {
    encoding: "utf8",
    env: { ...process.env, CONTEXT: "32" },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const change = /loss on \d+ tokens of brown: ([\d.]+) → ([\d.]+)/.exec(out);
  expect(change, out).not.toBeNull();
  expect(Math.abs(Number(change![2]) - Number(change![1]))).toBeLessThan(1e-4);
  const wide = await loadTrainingState(join(root, "run", "wide"));
  expect(wide.shape).toMatchObject({ layers: 2, dModel: 64, heads: 4 });
  expect(wide.tokenizer).toEqual({ kind: "hf", file: "tokenizer.json" });
  expect(wide.progress.step).toBe(4);
  expect(wide.progress.stages.map((s) => s.operator)).toEqual(["width"]);
  await wide.close();
  expect(await readFile(join(hf, "model.safetensors.index.json"))).toEqual(before);
}, 120_000);

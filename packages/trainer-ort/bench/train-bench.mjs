#!/usr/bin/env node
// Training throughput of the whole trainer (`train()` of this package: sampling, the compiled ONNX step,
// bookkeeping) against the same training loop in plain PyTorch on the CPU (bench/torch_train.py), for two
// GPT-2 shapes with the byte vocabulary on the Brown corpus. Run after `pnpm build`; not part of the tests.
//
// Both sides: random sampler over the Brown training split, AdamW (lr 1e-3, wd 0.01 on 2-D weights),
// clip 1.0, `--threads` threads (default min(2, cores)), `--warmup` untimed steps (default 3) then `--steps`
// timed steps (default 20); tokens/s = timed steps · B · T / their total seconds (graph building, session
// creation, evaluation and saving excluded). PyTorch: Debian's python3-torch (`apt-get install -y
// python3-torch libopenblas0-pthread`), found as python3 or /usr/bin/python3; skipped when not importable.
//
// Usage: node bench/train-bench.mjs [--threads N] [--steps N] [--warmup N] [--only A|B] [--no-torch] [--json]
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { initTrainingState } from "@staged/core";
import { flopsPerToken } from "@staged/scheduler";
import { brownText, byteTokenizer, encodeTokenFile, train } from "../dist/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const threads = Number(arg("threads", String(Math.min(2, os.availableParallelism()))));
const steps = Number(arg("steps", "20"));
const warmup = Number(arg("warmup", "3"));
const only = arg("only", null);
const noTorch = process.argv.includes("--no-torch");
const asJson = process.argv.includes("--json");

const SHAPES = [
  { id: "A", layers: 4, d: 256, heads: 4, T: 128, B: 16, vocab: 256 },
  { id: "B", layers: 6, d: 384, heads: 6, T: 256, B: 8, vocab: 256 },
].filter((c) => !only || c.id === only);

const tmp = mkdtempSync(path.join(os.tmpdir(), "staged-train-bench-"));
const dataFile = path.join(tmp, "brown-train.bin");
const dataTokens = byteTokenizer().encode(await brownText("train"));
writeFileSync(dataFile, encodeTokenFile(dataTokens));

async function benchOurs(c) {
  const state = initTrainingState("gpt2", { n_layer: c.layers, n_embd: c.d, n_head: c.heads, vocab_size: c.vocab, n_positions: c.T }, 0);
  let warmSeconds = 0;
  const { result } = await train(state, {
    data: dataFile, steps: warmup + steps, batch: c.B, context: c.T, lr: 1e-3, weightDecay: 0.01, clip: 1.0,
    sampler: "random", seed: 0, threads, evalBlocks: 1,
  }, { onStep: (i) => { if (i.index === warmup) warmSeconds = i.stepSeconds; } });
  const sec = result.stepSeconds - warmSeconds;
  return { seconds: sec, tokensPerSecond: (steps * c.B * c.T) / sec, setupSeconds: result.setupSeconds, lastLoss: result.loss };
}

function findTorchPython() {
  for (const py of ["python3", "/usr/bin/python3"]) {
    if (spawnSync(py, ["-c", "import torch, numpy"], { stdio: "ignore" }).status === 0) return py;
  }
  return null;
}

function benchTorch(py, c) {
  const r = spawnSync(py, [path.join(here, "torch_train.py"), JSON.stringify({ ...c, threads, warmup, steps, data: dataFile })], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`torch_train.py failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop());
}

const py = noTorch ? null : findTorchPython();
const rows = [];
try {
  if (!asJson) console.log(`train-bench: ${threads} threads, ${os.cpus()[0]?.model ?? "cpu"}, ${warmup} warm-up + ${steps} timed steps, Brown train split (${dataTokens.length} byte tokens)`);
  for (const c of SHAPES) {
    const name = `L${c.layers} d${c.d} H${c.heads} T${c.T} B${c.B}`;
    const ours = await benchOurs(c);
    const fpt = flopsPerToken({ layers: c.layers, dModel: c.d, heads: c.heads, headDim: c.d / c.heads, ffn: 4 * c.d, vocab: c.vocab, context: c.T }, c.T);
    const torch = py ? benchTorch(py, c) : null;
    const row = {
      shape: name, ours: ours.tokensPerSecond, oursGflops: (ours.tokensPerSecond * fpt) / 1e9, oursSetupSeconds: ours.setupSeconds,
      torch: torch?.tokensPerSecond ?? null, torchVersion: torch?.torch ?? null,
      ratio: torch ? ours.tokensPerSecond / torch.tokensPerSecond : null,
      lastLoss: { ours: ours.lastLoss, torch: torch?.lastLoss ?? null },
    };
    rows.push(row);
    if (!asJson) {
      console.log(`${name}: staged ${row.ours.toFixed(0)} tokens/s (${row.oursGflops.toFixed(1)} GFLOP/s, setup ${ours.setupSeconds.toFixed(1)} s)` +
        (torch ? ` | torch ${torch.torch} ${row.torch.toFixed(0)} tokens/s | staged/torch ${row.ratio.toFixed(2)}×`
               : noTorch ? "" : " | torch: python3 with torch not found"));
    }
  }
  if (asJson) console.log(JSON.stringify({ threads, warmup, steps, rows }));
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

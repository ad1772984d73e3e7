#!/usr/bin/env node
// Micro benchmark of the compiled training step (run after `pnpm build`): tokens/s and achieved GFLOP/s
// for two GPT-2 shapes, the machine's fp32 MatMul GFLOP/s through onnxruntime, and, when python3 has
// torch, the same training configuration in PyTorch (bench/torch_step.py) as a ratio.
//
// FLOPs per step = tokens · (6·N_matrix + 6·L·T·d): N_matrix counts the weights of every matrix product
// (per layer 4d² + 2·d·ffn, plus the vocab×d output layer; embeddings' lookups are not matrix products),
// the second term is Kaplan et al.'s attention count (QKᵀ and PV, forward + backward). tokens = B·T.
//
// Usage: node bench/step-bench.mjs [--threads N] [--steps N] [--no-torch] [--only A|B] [--profile]
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import ort from "onnxruntime-node";
import { gpt2 } from "@staged/core";
import { GraphBuilder, createEngine } from "../dist/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const threads = Number(arg("threads", String(Math.min(2, os.availableParallelism()))));
const steps = Number(arg("steps", "5"));
const only = arg("only", null);
const noTorch = process.argv.includes("--no-torch");

const CONFIGS = [
  { id: "A", layers: 4, d: 256, heads: 4, T: 128, B: 16, vocab: 256 },
  { id: "B", layers: 6, d: 384, heads: 6, T: 256, B: 8, vocab: 256 },
].filter((c) => !only || c.id === only);

function flopsPerStep(c) {
  const ffn = 4 * c.d;
  const nMatrix = c.layers * (4 * c.d * c.d + 2 * c.d * ffn) + c.vocab * c.d;
  return c.B * c.T * (6 * nMatrix + 6 * c.layers * c.T * c.d);
}

async function matmulPeak(n = 1536, reps = 5) {
  const b = new GraphBuilder();
  const x = b.input("a", "float32", [n, n]);
  const y = b.input("b", "float32", [n, n]);
  b.output(b.matmul(x, y), "c");
  const s = await ort.InferenceSession.create(b.serialize(), { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: "all" });
  const rnd = () => Float32Array.from({ length: n * n }, () => Math.random() - 0.5);
  const feeds = { a: new ort.Tensor("float32", rnd(), [n, n]), b: new ort.Tensor("float32", rnd(), [n, n]) };
  const out = { c: new ort.Tensor("float32", new Float32Array(n * n), [n, n]) };
  await s.run(feeds, out);
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) await s.run(feeds, out);
  const sec = (performance.now() - t0) / 1000 / reps;
  await s.release();
  return (2 * n ** 3) / sec / 1e9;
}

async function benchOrt(c) {
  const config = { n_layer: c.layers, n_embd: c.d, n_head: c.heads, vocab_size: c.vocab, n_positions: c.T };
  const weights = new Map([...gpt2.init(config, 0)].map(([n, t]) => [n, t.f32]));
  const t0 = performance.now();
  const profile = process.argv.includes("--profile");
  const engine = await createEngine("gpt2", config, weights, undefined, { batch: c.B, context: c.T, threads, clip: 1.0, weightDecay: 0.1, ...(profile ? { profile: true } : {}) });
  const compileSec = (performance.now() - t0) / 1000;
  const ids = () => Int32Array.from({ length: c.B * c.T }, () => Math.floor(Math.random() * c.vocab));
  let loss = 0;
  for (let i = 0; i < 2; i++) loss = (await engine.step(ids(), 1e-3, i + 1)).loss;
  const times = [];
  for (let i = 0; i < steps; i++) {
    const batch = ids();
    const s0 = performance.now();
    loss = (await engine.step(batch, 1e-3, i + 3)).loss;
    times.push((performance.now() - s0) / 1000);
  }
  await engine.release();
  times.sort((a, b) => a - b);
  const sec = times[Math.floor(times.length / 2)];
  return { sec, tokensPerSec: (c.B * c.T) / sec, gflops: flopsPerStep(c) / sec / 1e9, compileSec, loss };
}

function findTorchPython() {
  for (const py of ["python3", "/usr/bin/python3"]) {
    const r = spawnSync(py, ["-c", "import torch"], { stdio: "ignore" });
    if (r.status === 0) return py;
  }
  return null;
}

function benchTorch(py, c) {
  const r = spawnSync(py, [path.join(here, "torch_step.py"), JSON.stringify({ ...c, threads, steps })], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`torch_step.py failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop());
}

const fmt = (x, d = 1) => x.toFixed(d);
console.log(`onnxruntime-node ${ort.env.versions?.node ?? "?"}, ${threads} intra-op threads, ${os.cpus()[0]?.model ?? "cpu"}; median of ${steps} steps after 2 warm-up steps`);
const peak = await matmulPeak();
console.log(`fp32 MatMul 1536³ through onnxruntime: ${fmt(peak)} GFLOP/s`);
const py = noTorch ? null : findTorchPython();
for (const c of CONFIGS) {
  const name = `L${c.layers} d${c.d} H${c.heads} T${c.T} B${c.B} V${c.vocab}`;
  const o = await benchOrt(c);
  let line = `${name}: ort ${fmt(o.sec * 1000, 0)} ms/step, ${fmt(o.tokensPerSec, 0)} tokens/s, ${fmt(o.gflops)} GFLOP/s (${fmt((100 * o.gflops) / peak, 0)}% of MatMul), compile+session ${fmt(o.compileSec, 1)} s`;
  if (py) {
    const t = benchTorch(py, c);
    line += ` | torch ${fmt(t.sec * 1000, 0)} ms/step, ${fmt(t.tokensPerSec, 0)} tokens/s | ort/torch ${fmt(o.tokensPerSec / t.tokensPerSec, 2)}×`;
  } else if (!noTorch) line += " | torch: python3 with torch not found";
  console.log(line);
}
if (process.argv.includes("--profile")) {
  // onnxruntime writes its profile JSON to the working directory; summarize by op type.
  const files = readdirSync(".").filter((f) => f.startsWith("onnxruntime_profile_") && f.endsWith(".json"));
  for (const f of files) {
    const events = JSON.parse(readFileSync(f, "utf8")).filter((e) => e.cat === "Node" && e.name.endsWith("_kernel_time"));
    const runs = JSON.parse(readFileSync(f, "utf8")).filter((e) => e.name === "model_run").length;
    const byOp = new Map();
    for (const e of events) byOp.set(e.args.op_name, (byOp.get(e.args.op_name) ?? 0) + e.dur);
    const total = [...byOp.values()].reduce((a, b) => a + b, 0);
    console.log(`profile ${f}: ${runs} runs, kernel time per run ${fmt(total / runs / 1000, 1)} ms`);
    for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 15)) console.log(`  ${op.padEnd(22)} ${fmt(us / runs / 1000, 1).padStart(7)} ms  ${fmt((100 * us) / total, 1)}%`);
    // Node names start with the compiler's section (forward/backward/optimizer); a fused node keeps one of its names.
    const bySection = new Map();
    for (const e of events) {
      // Names without a section are nodes onnxruntime's optimizer inserted (layout Transposes).
      const section = e.name.includes("/") ? e.name.split("/")[0] : "inserted";
      const key = `${section} ${["Gemm", "MatMul", "FusedMatMul"].includes(e.args.op_name) ? "matmul" : "other"}`;
      bySection.set(key, (bySection.get(key) ?? 0) + e.dur);
    }
    console.log("  by section: " + [...bySection].sort().map(([k, us]) => `${k} ${fmt(us / runs / 1000, 1)} ms`).join(", "));
    if (existsSync(f) && !process.env.KEEP_PROFILE) rmSync(f);
  }
}

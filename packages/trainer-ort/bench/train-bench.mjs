#!/usr/bin/env node
// Training throughput (run after `pnpm build`; a script, not a test). Per shape and architecture (GPT-2, and a
// Llama of the same layers, width, heads, context and batch: 2 query heads per key/value head, SwiGLU with
// intermediate_size 4·d, untied output layer, as core's llama.initConfig makes it), byte vocabulary:
//   engine  — the compiled ONNX step alone, on random ids;
//   trainer — this package's whole `train()` loop (sampling, step, bookkeeping) on the Brown training split;
//   torch   — the same loop in plain PyTorch on the CPU (bench/torch_train.py, the same architecture), and trainer/torch.
// Plus the machine's fp32 MatMul GFLOP/s through onnxruntime, measured in the same run, as the peak that
// the achieved GFLOP/s are a fraction of.
//
// All three: AdamW (lr 1e-3, wd 0.01 on 2-D weights), clip 1.0, `--threads` threads (default min(2, cores)),
// `--warmup` untimed steps (3), then `--steps` timed steps (20); tokens/s = timed steps · B · T / their
// seconds (graph building, session creation and evaluation excluded). GFLOP/s = tokens/s · flopsPerToken of
// @staged/scheduler, the formula the trainer counts compute with. PyTorch: Debian's python3-torch with
// libopenblas0-pthread, found as python3 or /usr/bin/python3; skipped when not importable.
//
// Usage: node bench/train-bench.mjs [--threads N] [--steps N] [--warmup N] [--only A|B] [--arch gpt2|llama] [--no-torch] [--json]
//        [--profile]   (onnxruntime's per-node profile of the engine step, by op type and compiler section)
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { performance } from "node:perf_hooks";
import ort from "onnxruntime-node";
import { createDefaultRegistry, initTrainingState } from "@staged/core";
import { flopsPerToken } from "@staged/scheduler";
import { GraphBuilder, brownText, byteTokenizer, createEngine, encodeTokenFile, train } from "../dist/index.js";

const here = path.dirname(fileURLToPath(import.meta.url));
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const flag = (name) => process.argv.includes(`--${name}`);
const threads = Number(arg("threads", String(Math.min(2, os.availableParallelism()))));
const steps = Number(arg("steps", "20"));
const warmup = Number(arg("warmup", "3"));
const only = arg("only", null);
const onlyArch = arg("arch", null);
const [noTorch, asJson, profile] = [flag("no-torch"), flag("json"), flag("profile")];

const SHAPES = [
  { id: "A", layers: 4, d: 256, heads: 4, T: 128, B: 16, vocab: 256 },
  { id: "B", layers: 6, d: 384, heads: 6, T: 256, B: 8, vocab: 256 },
].filter((c) => !only || c.id === only);
const registry = createDefaultRegistry();
const ARCHS = [
  // Dropout 0 said explicitly (HF's GPT-2 default is 0.1): the torch side has none. Its cost: bench/dropout-bench.mjs.
  {
    arch: "gpt2",
    config: (c) => ({
      n_layer: c.layers,
      n_embd: c.d,
      n_head: c.heads,
      vocab_size: c.vocab,
      n_positions: c.T,
      embd_pdrop: 0,
      attn_pdrop: 0,
      resid_pdrop: 0,
    }),
    torch: () => ({}),
  },
  {
    arch: "llama",
    config: (c) =>
      registry
        .get("architecture", "llama")
        .initConfig({ layers: c.layers, dModel: c.d, heads: c.heads, kvHeads: c.heads / 2, vocab: c.vocab, context: c.T }, false),
    torch: (config) => ({
      kvHeads: config.num_key_value_heads,
      ffn: config.intermediate_size,
      eps: config.rms_norm_eps,
      theta: config.rope_theta,
      tied: config.tie_word_embeddings,
    }),
  },
].filter((a) => !onlyArch || a.arch === onlyArch);
const OPTIM = { lr: 1e-3, weightDecay: 0.01, clip: 1.0 };

async function matmulPeak(n = 1536, reps = 5) {
  const b = new GraphBuilder();
  b.output(b.matmul(b.input("a", "float32", [n, n]), b.input("b", "float32", [n, n])), "c");
  const s = await ort.InferenceSession.create(b.serialize(), { intraOpNumThreads: threads, interOpNumThreads: 1, graphOptimizationLevel: "all" });
  const rnd = () =>
    new ort.Tensor(
      "float32",
      Float32Array.from({ length: n * n }, () => Math.random() - 0.5),
      [n, n],
    );
  const feeds = { a: rnd(), b: rnd() };
  const out = { c: new ort.Tensor("float32", new Float32Array(n * n), [n, n]) };
  await s.run(feeds, out);
  const t0 = performance.now();
  for (let i = 0; i < reps; i++) await s.run(feeds, out);
  const sec = (performance.now() - t0) / 1000 / reps;
  await s.release();
  return (2 * n ** 3) / sec / 1e9;
}

async function benchEngine(c, a) {
  const config = a.config(c);
  const weights = new Map([...registry.get("architecture", a.arch).init(config, 0)].map(([n, t]) => [n, t.f32]));
  const t0 = performance.now();
  const engine = await createEngine(a.arch, config, weights, undefined, {
    batch: c.B,
    context: c.T,
    threads,
    clip: OPTIM.clip,
    weightDecay: OPTIM.weightDecay,
    profile,
  });
  const setupSeconds = (performance.now() - t0) / 1000;
  const batches = Array.from({ length: warmup + steps }, () => Int32Array.from({ length: c.B * c.T }, () => Math.floor(Math.random() * c.vocab)));
  let t1 = performance.now();
  for (let i = 0; i < batches.length; i++) {
    if (i === warmup) t1 = performance.now();
    await engine.step(batches[i], OPTIM.lr, i + 1);
  }
  const seconds = (performance.now() - t1) / 1000;
  await engine.release();
  return { seconds, setupSeconds };
}

async function benchTrainer(c, a, dataFile) {
  const state = initTrainingState(a.arch, a.config(c), 0);
  let warmSeconds = 0;
  const { result } = await train(
    state,
    {
      data: dataFile,
      steps: warmup + steps,
      batch: c.B,
      context: c.T,
      ...OPTIM,
      sampler: "random",
      seed: 0,
      threads,
      evalBlocks: 1,
      saveDir: null,
    },
    {
      onStep: (i) => {
        if (i.index === warmup) warmSeconds = i.stepSeconds;
      },
    },
  );
  return { seconds: result.stepSeconds - warmSeconds, setupSeconds: result.setupSeconds, lastLoss: result.loss };
}

function findTorchPython() {
  for (const py of ["python3", "/usr/bin/python3"]) {
    if (spawnSync(py, ["-c", "import torch, numpy"], { stdio: "ignore" }).status === 0) return py;
  }
  return null;
}

function benchTorch(py, c, a, dataFile) {
  const spec = { ...c, arch: a.arch, ...a.torch(a.config(c)), threads, warmup, steps, data: dataFile };
  const r = spawnSync(py, [path.join(here, "torch_train.py"), JSON.stringify(spec)], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`torch_train.py failed: ${r.stderr}`);
  return JSON.parse(r.stdout.trim().split("\n").pop());
}

// onnxruntime writes one profile JSON per session to the working directory. Node names start with the
// compiler's section (forward/backward/optimizer); names without one were inserted by onnxruntime.
function profileSummary() {
  const lines = [];
  for (const f of readdirSync(".").filter((f) => /^onnxruntime_profile_.*\.json$/.test(f))) {
    const all = JSON.parse(readFileSync(f, "utf8"));
    const runs = all.filter((e) => e.name === "model_run").length;
    const byOp = new Map(),
      bySection = new Map();
    const add = (m, k, us) => m.set(k, (m.get(k) ?? 0) + us);
    for (const e of all.filter((e) => e.cat === "Node" && e.name.endsWith("_kernel_time"))) {
      add(byOp, e.args.op_name, e.dur);
      const kind = ["Gemm", "MatMul", "FusedMatMul"].includes(e.args.op_name) ? "matmul" : "other";
      add(bySection, `${e.name.includes("/") ? e.name.split("/")[0] : "inserted"} ${kind}`, e.dur);
    }
    if (!process.env.KEEP_PROFILE) rmSync(f);
    if (runs === 0) continue;
    const ms = (us) => (us / runs / 1000).toFixed(1);
    const total = [...byOp.values()].reduce((a, b) => a + b, 0);
    lines.push(`profile ${f}: ${runs} runs, kernel time per run ${ms(total)} ms`);
    for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]).slice(0, 15))
      lines.push(`  ${op.padEnd(22)} ${ms(us).padStart(7)} ms  ${((100 * us) / total).toFixed(1)}%`);
    lines.push(
      "  by section: " +
        [...bySection]
          .sort()
          .map(([k, us]) => `${k} ${ms(us)} ms`)
          .join(", "),
    );
  }
  return lines;
}

const tmp = mkdtempSync(path.join(os.tmpdir(), "staged-train-bench-"));
try {
  const dataFile = path.join(tmp, "brown-train.bin");
  const dataTokens = byteTokenizer().encode(await brownText("train"));
  writeFileSync(dataFile, encodeTokenFile(dataTokens));
  const py = noTorch ? null : findTorchPython();
  const log = (s) => {
    if (!asJson) console.log(s);
  };
  log(
    `train-bench: onnxruntime-node ${ort.env.versions?.node ?? "?"}, ${threads} threads, ${os.cpus()[0]?.model ?? "cpu"}, ` +
      `${warmup} warm-up + ${steps} timed steps, Brown train split (${dataTokens.length} byte tokens), load ${os
        .loadavg()
        .map((x) => x.toFixed(2))
        .join(" ")}`,
  );
  const peak = await matmulPeak();
  log(`fp32 MatMul 1536³ through onnxruntime: ${peak.toFixed(1)} GFLOP/s`);
  if (!py && !noTorch) log("torch: no python3 that imports torch and numpy; torch columns skipped");

  const rows = [];
  for (const c of SHAPES)
    for (const a of ARCHS) {
      const fpt = flopsPerToken(registry.get("architecture", a.arch).parseConfig(a.config(c)).shape, c.T);
      const rate = (r) => {
        const tokensPerSecond = (steps * c.B * c.T) / r.seconds,
          gflops = (tokensPerSecond * fpt) / 1e9;
        return { ...r, tokensPerSecond, gflops, fractionOfPeak: gflops / peak };
      };
      const engine = rate(await benchEngine(c, a));
      const prof = profile ? profileSummary() : undefined;
      const trainer = rate(await benchTrainer(c, a, dataFile));
      const t = py ? benchTorch(py, c, a, dataFile) : null;
      const torch = t && { version: t.torch, ...rate({ seconds: t.seconds, lastLoss: t.lastLoss }) };
      const kv = a.torch(a.config(c)).kvHeads;
      const shape = `${a.arch} L${c.layers} d${c.d} H${c.heads}${kv ? ` KV${kv}` : ""} T${c.T} B${c.B} V${c.vocab}`;
      rows.push({
        arch: a.arch,
        shape,
        flopsPerToken: fpt,
        engine,
        trainer,
        torch,
        ratio: torch ? trainer.tokensPerSecond / torch.tokensPerSecond : null,
        profile: prof,
      });

      const line = (name, r, extra) =>
        log(
          `  ${name.padEnd(12)} ${r.tokensPerSecond.toFixed(0).padStart(6)} tokens/s  ${r.gflops.toFixed(1).padStart(6)} GFLOP/s  ` +
            `${(100 * r.fractionOfPeak).toFixed(0).padStart(3)}% of MatMul  (${extra})`,
        );
      log(`${shape} (${(fpt / 1e6).toFixed(2)} MFLOP/token)`);
      line("engine step", engine, `compile + session ${engine.setupSeconds.toFixed(1)} s`);
      line("train()", trainer, `setup ${trainer.setupSeconds.toFixed(1)} s, last loss ${trainer.lastLoss.toFixed(3)}`);
      if (torch) line("torch", torch, `torch ${torch.version}, last loss ${torch.lastLoss.toFixed(3)}`);
      if (torch) log(`  train()/torch ${rows.at(-1).ratio.toFixed(2)}×`);
      for (const l of prof ?? []) log(l);
    }
  if (asJson)
    console.log(JSON.stringify({ threads, warmup, steps, cpu: os.cpus()[0]?.model ?? null, loadavg: os.loadavg(), matmulGflops: peak, rows }));
} finally {
  rmSync(tmp, { recursive: true, force: true });
}

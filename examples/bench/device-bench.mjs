// Issue 18's GPU benchmark, one command: training throughput of trainer-ort on a device against the same machine's CPU
// provider and PyTorch on the same shapes, in the same run, and the device's steps against the CPU's.
//
// For each model (GPT-2 124M and a Llama of ≈100M by default, T512, B8, random token ids, AdamW at LR 6e-4):
//   1. the device (--device webgpu|cuda|cpu): --steps training steps after --warmup untimed ones; tokens/s;
//   2. the CPU provider on every core (on one thread where the device is the CPU): the same weights and ids, --cpu-steps steps (default --steps): tokens/s, and
//      per step the relative difference of the loss and of the gradient norm, then the parameters after the last
//      common step (max |Δ| over the tensor's max |value|);
//   3. PyTorch (device-bench-torch.py beside this file, with Hugging Face transformers): the same config, batch and
//      context, fp32 with TF32 off and bf16 autocast: tokens/s (skipped, with the reason, where python3, torch or
//      transformers is missing);
//   4. where onnxruntime places the step's nodes (stepPlacement): the nodes not on the device's provider, named;
//   5. mixed precision on the device (float16 matrices, float32 state, dynamic loss scale; --no-mixed skips it): the
//      same steps, tokens/s and the loss against the CPU's fp32 one;
//   6. the provider's matmul peak (chained 4096³ products through this project's GraphBuilder: float32 MatMul, float32
//      Gemm with a transposed weight as in a Linear, float16 MatMul), and PyTorch's on the same device.
// Prints a Markdown table (stdout) and, with --json <file>, writes every number. Progress lines go to stderr.
//
// Usage (after `pnpm build`):
//   node examples/bench/device-bench.mjs [--device webgpu] [--models gpt2-124m,llama-100m] [--context 512] [--batch 8]
//        [--steps 20] [--warmup 2] [--cpu-steps 20] [--threads <cores>] [--python python3] [--no-torch] [--no-peak] [--no-mixed]
//        [--peak-n 4096] [--no-resident] [--json out.json]
//   --no-resident: the device's state is downloaded and uploaded every step (as before resident state), for comparison.
//   --models also takes gpt2-tiny and llama-tiny (seconds on any machine: a check of the script itself).
// On a GPU machine, onnxruntime-node's WebGPU provider needs libvulkan1 and the driver's Vulkan ICD (e.g.
// VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json); see packages/trainer-ort/README.md.
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import os from "node:os";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { Rng, initTrainingState } from "@staged/core";
import { DEVICES, createEngine, matmulPeak, placementFallbacks, stepPlacement } from "@staged/trainer-ort";

const MODELS = {
  "gpt2-124m": ["gpt2", { model_type: "gpt2", n_layer: 12, n_embd: 768, n_head: 12, vocab_size: 50257, n_positions: 1024 }],
  "llama-100m": [
    "llama",
    {
      model_type: "llama",
      hidden_size: 768,
      intermediate_size: 2048,
      num_hidden_layers: 12,
      num_attention_heads: 12,
      num_key_value_heads: 4,
      vocab_size: 32000,
      max_position_embeddings: 2048,
      tie_word_embeddings: true,
    },
  ],
  "gpt2-tiny": ["gpt2", { model_type: "gpt2", n_layer: 2, n_embd: 64, n_head: 2, vocab_size: 256, n_positions: 128 }],
  "llama-tiny": [
    "llama",
    {
      model_type: "llama",
      hidden_size: 64,
      intermediate_size: 128,
      num_hidden_layers: 2,
      num_attention_heads: 4,
      num_key_value_heads: 2,
      vocab_size: 256,
      max_position_embeddings: 128,
    },
  ],
};

const { values: a } = parseArgs({
  options: {
    device: { type: "string", default: "webgpu" },
    models: { type: "string", default: "gpt2-124m,llama-100m" },
    context: { type: "string", default: "512" },
    batch: { type: "string", default: "8" },
    steps: { type: "string", default: "20" },
    warmup: { type: "string", default: "2" },
    "cpu-steps": { type: "string" },
    threads: { type: "string" },
    python: { type: "string", default: "python3" },
    "no-torch": { type: "boolean", default: false },
    "no-peak": { type: "boolean", default: false },
    "no-mixed": { type: "boolean", default: false },
    "no-resident": { type: "boolean", default: false },
    "peak-n": { type: "string", default: "4096" },
    json: { type: "string" },
  },
});
const fail = (msg) => {
  console.error(`device-bench: ${msg}`);
  process.exit(2);
};
const int = (name, min) => {
  const v = Number(a[name]);
  if (!Number.isInteger(v) || v < min) fail(`--${name} must be an integer ≥ ${min}, got ${JSON.stringify(a[name])}`);
  return v;
};
if (!DEVICES.includes(a.device)) fail(`--device must be one of ${DEVICES.join(", ")}, got ${JSON.stringify(a.device)}`);
const models = a.models.split(",");
for (const m of models) if (!MODELS[m]) fail(`unknown model ${JSON.stringify(m)} (models: ${Object.keys(MODELS).join(", ")})`);
const T = int("context", 2),
  B = int("batch", 1),
  steps = int("steps", 1),
  warmup = int("warmup", 0),
  cpuSteps = a["cpu-steps"] === undefined ? steps : int("cpu-steps", 0),
  threads = a.threads === undefined ? os.availableParallelism() : int("threads", 1),
  peakN = int("peak-n", 1);
// The reference run: the CPU provider on every core; where the device is the CPU itself, on one thread (a result must
// not depend on the thread count).
const cpuThreads = a.device === "cpu" ? 1 : threads;
const LR = 6e-4;
const log = (s) => console.error(`[device-bench] ${s}`);

/** The ids of step s: uniform over the vocabulary, the same for every engine. */
const idsOf = (vocab, s) => {
  const r = new Rng(1000 + s);
  return Int32Array.from({ length: B * T }, () => r.int(vocab));
};

async function weightsOf(arch, config) {
  const s = initTrainingState(arch, config, 0);
  const w = new Map();
  for (const [n, t] of s.params) w.set(n, Float32Array.from((await t.read()).f32));
  return w;
}

/** Steps on one engine: per step loss and grad norm, and the timed steps' tokens/s. */
async function trainOn(device, arch, config, w, n, vocab, threads, precision = "fp32") {
  const t0 = performance.now();
  const e = await createEngine(arch, config, new Map([...w].map(([k, v]) => [k, v.slice()])), undefined, {
    batch: B,
    context: T,
    device,
    threads,
    clip: 1,
    precision,
    // The device's state stays there between steps (the engine's default on WebGPU) unless --no-resident.
    ...(device === a.device && a["no-resident"] ? { resident: false } : {}),
  });
  const compileSeconds = (performance.now() - t0) / 1000;
  const trace = [];
  let timed = 0,
    seconds = 0;
  for (let s = 0; s < n; s++) {
    const ts = performance.now();
    const r = await e.step(idsOf(vocab, s), LR, s + 1);
    const dt = (performance.now() - ts) / 1000;
    trace.push(r);
    if (s >= Math.min(warmup, n - 1)) {
      timed++;
      seconds += dt;
    }
    log(
      `${device}${precision === "mixed" ? " mixed" : ""} step ${s + 1}/${n}: loss ${r.loss.toFixed(5)}, grad norm ${r.gradNorm.toFixed(5)}, ${((B * T) / dt).toFixed(0)} tok/s`,
    );
  }
  await e.sync();
  const params = new Map([...e.params()].map(([k, v]) => [k, v.slice()]));
  const lossScale = e.lossScale();
  await e.release();
  return { device, resident: e.resident, compileSeconds, trace, tokensPerSecond: timed ? (timed * B * T) / seconds : null, params, lossScale };
}

function agreement(x, y) {
  const n = Math.min(x.trace.length, y.trace.length);
  if (n === 0) return null;
  const rel = (p, q) => Math.abs(p - q) / Math.max(Math.abs(q), 1e-30);
  let loss = 0,
    gradNorm = 0;
  for (let s = 0; s < n; s++) {
    loss = Math.max(loss, rel(x.trace[s].loss, y.trace[s].loss));
    gradNorm = Math.max(gradNorm, rel(x.trace[s].gradNorm, y.trace[s].gradNorm));
  }
  let params = 0,
    worst = "";
  if (x.trace.length === y.trace.length) {
    for (const [k, v] of y.params) {
      const u = x.params.get(k);
      let d = 0,
        m = 0;
      for (let i = 0; i < v.length; i++) {
        d = Math.max(d, Math.abs(u[i] - v[i]));
        m = Math.max(m, Math.abs(v[i]));
      }
      if (d / Math.max(m, 1e-30) > params) [params, worst] = [d / Math.max(m, 1e-30), k];
    }
  }
  return { steps: n, loss, gradNorm, params: x.trace.length === y.trace.length ? { maxRelative: params, worst } : null };
}

function torchRun(name, arch, config, extra) {
  const script = fileURLToPath(new URL("./device-bench-torch.py", import.meta.url));
  const spec = { arch, config, batch: B, context: T, steps, warmup, lr: LR, threads, device: a.device === "cpu" ? "cpu" : "cuda", ...extra };
  log(`PyTorch ${name}: ${JSON.stringify(extra)}`);
  const p = spawnSync(a.python, [script, JSON.stringify(spec)], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"], timeout: 600_000 });
  if (p.error) return { skipped: `${a.python}: ${p.error.message}` };
  if (p.status !== 0) return { skipped: `device-bench-torch.py exited ${p.status}` };
  try {
    return JSON.parse(p.stdout.trim().split("\n").pop());
  } catch {
    return { skipped: `device-bench-torch.py printed no JSON` };
  }
}

const started = performance.now();
let failed = false;
const results = {
  device: a.device,
  host: { cpus: os.cpus()[0]?.model ?? "?", cores: os.availableParallelism(), threads },
  B,
  T,
  steps,
  warmup,
  models: [],
};
if (!a["no-peak"]) {
  // The products a step is made of: MatMul and Gemm with a transposed weight (a Linear) in float32, and MatMul in
  // float16 (mixed precision's; not on the CPU, which has no float16 kernels and would time casts).
  const kinds = [
    { op: "MatMul", dtype: "float32" },
    { op: "Gemm", dtype: "float32" },
    ...(a.device === "cpu" || a["no-mixed"] ? [] : [{ op: "MatMul", dtype: "float16" }]),
  ];
  results.peak = { ort: [] };
  for (const k of kinds) {
    log(`matmul peak on ${a.device}: chained ${peakN}³ ${k.dtype} ${k.op}s`);
    results.peak.ort.push(
      await matmulPeak({ device: a.device, threads, n: peakN, ...k }).then(
        ({ output: _o, input: _i, ...r }) => r,
        (e) => {
          console.error(`device-bench: ${k.dtype} ${k.op} peak on ${a.device}: ${e.message}`);
          return { ...k, error: e.message };
        },
      ),
    );
  }
  if (!a["no-torch"]) results.peak.torch = torchRun("peak", "peak", {}, { peak: true, n: peakN, threads });
}
for (const name of models) {
  const [arch, config] = MODELS[name];
  log(`${name}: ${arch}, B${B} T${T}, ${steps} steps on ${a.device}${a.device === "cpu" ? "" : `, ${cpuSteps} on the CPU`}`);
  // Where onnxruntime puts the step's nodes: any not on the device's provider is named (a copy to the host and back).
  const placement = await stepPlacement(arch, config, { batch: B, context: T, device: a.device, threads }).then(
    (sessions) => {
      const off = placementFallbacks(sessions, a.device);
      for (const p of off) log(`${name}: ${p.count} node(s) on ${p.provider}: ${p.nodes.map((n) => `${n.op} (${n.name})`).join(", ") || "all"}`);
      return { sessions: sessions.map((s) => s.map((p) => ({ provider: p.provider, count: p.count }))), off };
    },
    (e) => ({ error: e.message }),
  );
  const w = await weightsOf(arch, config);
  const vocab = Number(config.vocab_size);
  // A device that cannot run the step (no adapter, no CUDA provider) is reported, and the rest still measured.
  const dev = await trainOn(a.device, arch, config, w, steps, vocab, threads).catch((e) => {
    console.error(`device-bench: ${name} on ${a.device}: ${e.message}`);
    failed = true;
    return { error: e.message, trace: [], tokensPerSecond: null };
  });
  const mixed = a["no-mixed"]
    ? null
    : await trainOn(a.device, arch, config, w, steps, vocab, threads, "mixed").catch((e) => {
        console.error(`device-bench: ${name} mixed precision on ${a.device}: ${e.message}`);
        return { error: e.message, trace: [], tokensPerSecond: null };
      });
  const cpu = cpuSteps === 0 ? null : await trainOn("cpu", arch, config, w, cpuSteps, vocab, cpuThreads);
  const r = {
    model: name,
    params: [...w.values()].reduce((s, v) => s + v.length, 0),
    device: dev.error
      ? { error: dev.error }
      : { tokensPerSecond: dev.tokensPerSecond, resident: dev.resident, compileSeconds: dev.compileSeconds, trace: dev.trace },
    cpu: cpu && { tokensPerSecond: cpu.tokensPerSecond, compileSeconds: cpu.compileSeconds, trace: cpu.trace },
    agreement: cpu && !dev.error ? agreement(dev, cpu) : null,
    mixed:
      mixed && (mixed.error ? { error: mixed.error } : { tokensPerSecond: mixed.tokensPerSecond, trace: mixed.trace, lossScale: mixed.lossScale }),
    mixedAgreement: cpu && mixed && !mixed.error ? agreement(mixed, cpu) : null,
    placement,
  };
  if (!a["no-torch"]) {
    r.torch = {
      fp32: torchRun(name, arch, config, { dtype: "fp32" }),
      bf16: a.device === "cpu" ? { skipped: "bf16 autocast is measured on the GPU only" } : torchRun(name, arch, config, { dtype: "bf16" }),
    };
  }
  results.models.push(r);
}
results.seconds = (performance.now() - started) / 1000;

const f = (x, d = 0) => (x === null || x === undefined ? "—" : x.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d }));
const tps = (t) => (t?.skipped ? `skipped (${t.skipped})` : f(t?.tokensPerSecond));
const lines = [
  `| model (B${B}, T${T}) | trainer-ort ${a.device}, tok/s | trainer-ort ${a.device} mixed, tok/s (max rel. Δ loss vs CPU fp32) | CPU provider (${cpuThreads} thread${cpuThreads > 1 ? "s" : ""}), tok/s | PyTorch fp32 (TF32 off), tok/s | PyTorch bf16 autocast, tok/s | ${a.device} / PyTorch fp32 | ${a.device} / CPU | ${a.device} vs CPU (max rel. Δ loss / grad norm / params) | step nodes off ${a.device} |`,
  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
];
for (const r of results.models) {
  const d = r.device.tokensPerSecond ?? null;
  const t32 = r.torch?.fp32?.tokensPerSecond;
  const ag = r.agreement;
  lines.push(
    `| ${r.model} (${(r.params / 1e6).toFixed(1)}M) | ${r.device.error ? "failed (stderr)" : f(d)} | ` +
      `${!r.mixed ? "—" : r.mixed.error ? "failed (stderr)" : `${f(r.mixed.tokensPerSecond)} (${r.mixedAgreement ? r.mixedAgreement.loss.toExponential(1) : "—"})`} | ${f(r.cpu?.tokensPerSecond)} | ${tps(r.torch?.fp32)} | ${tps(r.torch?.bf16)} | ` +
      `${t32 && d ? `${((100 * d) / t32).toFixed(1)}%` : "—"} | ${r.cpu?.tokensPerSecond && d ? `${(d / r.cpu.tokensPerSecond).toFixed(1)}×` : "—"} | ` +
      `${ag ? `${ag.loss.toExponential(1)} / ${ag.gradNorm.toExponential(1)} / ${ag.params ? `${ag.params.maxRelative.toExponential(1)} (${ag.steps} steps)` : "—"}` : "—"} | ${r.placement.error ? "—" : r.placement.off.reduce((n, p) => n + p.count, 0)} |`,
  );
}
if (results.peak) {
  const p = results.peak;
  const ours = p.ort.map((r) => `${r.dtype} ${r.op} ${r.error ? "failed (stderr)" : `${r.tflops.toPrecision(3)} TFLOP/s`}`).join(", ");
  lines.push(
    "",
    `Matmul peak (chained ${peakN}³ products): trainer-ort ${a.device} ${ours}` +
      (p.torch
        ? `; PyTorch ${p.torch.skipped ? `skipped (${p.torch.skipped})` : `${p.torch.fp32Tflops.toPrecision(3)} fp32 (TF32 off)${p.torch.fp16Tflops ? `, ${p.torch.fp16Tflops.toFixed(1)} fp16` : ""}`}`
        : ""),
  );
}
lines.push("", `${results.seconds.toFixed(0)} s in all on ${results.host.cpus} (${results.host.cores} cores).`);
console.log(lines.join("\n"));
if (a.json) writeFileSync(a.json, JSON.stringify(results, null, 2) + "\n");
if (failed || results.peak?.ort.some((r) => r.error)) process.exitCode = 1;

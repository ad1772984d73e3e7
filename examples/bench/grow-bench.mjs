// Benchmark: stream width ×2 and depth ×2 of a ~500 MB F32 checkpoint with AdamW moments.
// Reports seconds, output MB/s against a plain copy of the same output bytes (fs.copyFile, same run),
// and the growing process's peak resident memory against the largest output tensor.
// Usage: node bench/grow-bench.mjs [--layers 12 --d-model 512 --vocab 8192] [--json]
import { spawnSync } from "node:child_process";
import { copyFile, mkdir, mkdtemp, readdir, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { Tensor, initTrainingState, loadTrainingState, saveTrainingState } from "@staged/core";
import { growWidth } from "@staged/grow-width";
import { growDepth } from "@staged/grow-depth";

const args = process.argv.slice(2);
const arg = (name, fallback) => { const i = args.indexOf(`--${name}`); return i >= 0 ? args[i + 1] : fallback; };

if (args[0] === "--child") {
  // Runs in its own process so that maxRSS measures the growth alone.
  const [, op, input, output] = args;
  const t0 = performance.now();
  const state = await loadTrainingState(input);
  const grown = op === "width" ? growWidth(state, { factor: 2, moments: "consistent" }) : growDepth(state, { factor: 2, init: "identity" });
  await saveTrainingState(output, grown);
  await state.close();
  const largest = Math.max(...[...grown.params.values()].map((t) => t.shape.reduce((a, b) => a * b, 1) * 4));
  console.log(JSON.stringify({ seconds: (performance.now() - t0) / 1000, maxRssBytes: process.resourceUsage().maxRSS * 1024, largestOutputTensorBytes: largest }));
  process.exit(0);
}

const layers = Number(arg("layers", 12)), dModel = Number(arg("d-model", 512)), vocab = Number(arg("vocab", 8192));
const json = args.includes("--json");
const log = (s) => { if (!json) console.error(s); };
const work = await mkdtemp(join(tmpdir(), "staged-grow-bench-"));
const dirBytes = async (dir) => { let n = 0; for (const f of await readdir(dir)) n += (await stat(join(dir, f))).size; return n; };

try {
  const config = { model_type: "gpt2", n_layer: layers, n_embd: dModel, n_head: dModel / 64, vocab_size: vocab, n_positions: 1024 };
  const s = initTrainingState("gpt2", config, 0);
  const moment = (c) => new Map([...s.params].map(([n, t]) => [n, { dtype: "F32", shape: t.shape, read: async () => new Tensor("F32", t.shape, (await t.read()).f32.map((v) => Math.abs(v) * c)) }]));
  const input = join(work, "in");
  await saveTrainingState(input, { ...s, optimizer: { ...s.optimizer, step: 100, expAvg: moment(0.1), expAvgSq: moment(0.01) } });
  const inBytes = await dirBytes(input);
  log(`input: L${layers} d${dModel} vocab ${vocab}, ${(inBytes / 1e6).toFixed(0)} MB with moments`);
  const results = {};
  for (const op of ["width", "depth"]) {
    const output = join(work, op);
    const child = spawnSync(process.execPath, [fileURLToPath(import.meta.url), "--child", op, input, output], { encoding: "utf8" });
    if (child.status !== 0) throw new Error(`${op} growth failed: ${child.stderr}`);
    const r = JSON.parse(child.stdout);
    const outBytes = await dirBytes(output);
    // The reference: copy exactly the bytes the growth wrote.
    const copyDir = join(work, `${op}-copy`);
    await mkdir(copyDir);
    const t0 = performance.now();
    for (const f of await readdir(output)) await copyFile(join(output, f), join(copyDir, f));
    const copySeconds = (performance.now() - t0) / 1000;
    const mbps = outBytes / 1e6 / r.seconds, copyMbps = outBytes / 1e6 / copySeconds;
    results[op] = {
      outputMB: outBytes / 1e6, seconds: r.seconds, mbPerSecond: mbps, copyMbPerSecond: copyMbps, ratioToCopy: mbps / copyMbps,
      peakRssMB: r.maxRssBytes / 1e6, largestOutputTensorMB: r.largestOutputTensorBytes / 1e6,
      memoryTargetMB: (3 * r.largestOutputTensorBytes) / 1e6 + 300,
    };
    log(`${op} ×2: ${(outBytes / 1e6).toFixed(0)} MB in ${r.seconds.toFixed(2)} s = ${mbps.toFixed(0)} MB/s; plain copy ${copyMbps.toFixed(0)} MB/s (ratio ${(mbps / copyMbps).toFixed(2)}); ` +
      `peak RSS ${(r.maxRssBytes / 1e6).toFixed(0)} MB (target < 3 × ${(r.largestOutputTensorBytes / 1e6).toFixed(0)} MB + 300 MB)`);
    await rm(output, { recursive: true }); await rm(copyDir, { recursive: true });
  }
  if (json) console.log(JSON.stringify({ inputMB: inBytes / 1e6, ...results }));
} finally {
  await rm(work, { recursive: true, force: true });
}

// Growth of a Hugging Face Trainer checkpoint at GPT-2 124M scale, against the physical reference (a plain `cp -r` of
// the same checkpoint), with the peak memory of each command (issue 19: lazy and streamed, memory bounded).
//
//   pnpm build && node examples/bench/trainer-checkpoint.mjs <work dir> [--layers 12 --d-model 768]
//
// Makes <work>/checkpoint-100: GPT-2 (vocabulary 50257, context 1024) with AdamW moments, saved as a Trainer checkpoint
// at step 100 of a linear schedule; then times `cp -r` of it, `staged inspect`, `staged grow width --factor 2` and
// `staged grow depth --factor 2` (each output a Trainer checkpoint) with /usr/bin/time, and writes
// <work>/trainer-checkpoint.json with the figures.
import { execFileSync, spawnSync } from "node:child_process";
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { createDefaultRegistry, initTrainingState, mapValues, saveTrainingState } from "@staged/core";
import { HF_TRAINER_FORMAT, hfTrainerFormat } from "@staged/hf-trainer";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { layers: { type: "string", default: "12" }, "d-model": { type: "string", default: "768" } },
});
if (positionals.length !== 1) {
  console.error("usage: node examples/bench/trainer-checkpoint.mjs <work dir> [--layers L --d-model D]");
  process.exit(2);
}
const work = resolve(positionals[0]);
mkdirSync(work, { recursive: true });
const bin = new URL("../../packages/cli/dist/bin.js", import.meta.url).pathname;
const d = Number(values["d-model"]),
  layers = Number(values.layers);
const src = join(work, "checkpoint-100");

const t0 = performance.now();
rmSync(src, { recursive: true, force: true });
const s = initTrainingState("gpt2", { model_type: "gpt2", n_layer: layers, n_embd: d, n_head: d / 64, vocab_size: 50257, n_positions: 1024 }, 0);
// Moments derived from the weights (values do not matter here, their bytes do), computed one tensor at a time.
const moment = (c) => mapValues(s.params, (v) => v * c);
const registry = createDefaultRegistry().register("checkpointFormat", hfTrainerFormat);
await saveTrainingState(
  src,
  {
    ...s,
    optimizer: { ...s.optimizer, step: 100, expAvg: moment(0.01), expAvgSq: moment(1e-4) },
    schedule: { kind: "linear", peakLr: 6e-4, warmupSteps: 10, totalSteps: 1000, restarts: [] },
    progress: { ...s.progress, step: 100 },
  },
  { registry, format: HF_TRAINER_FORMAT },
);
const made = (performance.now() - t0) / 1000;

const du = (p) => Number(execFileSync("du", ["-sb", p], { encoding: "utf8" }).split("\t")[0]);
const results = { source: { path: src, bytes: du(src), madeSeconds: made }, runs: [] };
for (const [name, cmd, args, output] of [
  ["cp -r", "cp", ["-r", src, join(work, "copy")], join(work, "copy")],
  ["staged inspect", process.execPath, [bin, "inspect", src]],
  ["staged grow width --factor 2", process.execPath, [bin, "grow", "width", src, join(work, "wide"), "--progress", "none"], join(work, "wide")],
  [
    "staged grow depth --factor 2",
    process.execPath,
    [bin, "grow", "depth", src, join(work, "deep"), "--factor", "2", "--progress", "none"],
    join(work, "deep"),
  ],
]) {
  if (output) rmSync(output, { recursive: true, force: true });
  execFileSync("sync");
  // /usr/bin/time: wall seconds and peak resident set (KiB) of the command; the last line of its stderr.
  const r = spawnSync("/usr/bin/time", ["-f", "TIME %e %M", cmd, ...args], { encoding: "utf8", stdio: ["ignore", "ignore", "pipe"] });
  const m = /TIME ([\d.]+) (\d+)\s*$/.exec(r.stderr);
  if (r.status !== 0 || !m) throw new Error(`${name} failed: ${r.stderr}`);
  const row = { command: name, seconds: Number(m[1]), peakRssMB: Math.round(Number(m[2]) / 1024), ...(output ? { outputBytes: du(output) } : {}) };
  results.runs.push(row);
  console.error(JSON.stringify(row));
  if (output && output !== join(work, "wide")) rmSync(output, { recursive: true, force: true });
}
writeFileSync(join(work, "trainer-checkpoint.json"), JSON.stringify(results, null, 2) + "\n");
console.log(JSON.stringify(results));

#!/usr/bin/env node
// Generation speed through transformers.js on the export (run after `pnpm build`; a script, not a test).
// Per model — a GPT-2 and a Llama (2 query heads per key/value head, SwiGLU, untied output layer, as core's
// llama.initConfig makes them) of the same layers, width, heads and context, byte vocabulary, fresh weights —
// the checkpoint is saved, `staged generate`'s path is taken (export into the cache beside it, timed; then
// transformers.js' pipeline("text-generation") loaded, timed), and greedy generation of `--new` tokens after
// a prompt of about `--prompt` tokens is timed at batch 1 and batch 8 (eight prompts of different lengths,
// left-padded):
//   first token — from the call to the first new token: the prompt's forward pass (no cache yet) and one step;
//   tokens/s    — new tokens per second after the first: batch · (steps − 1) / the seconds they took;
//   cold        — the first call after loading (onnxruntime's first run of each shape), reported apart.
// The median of `--runs` warm calls (default 3). `--threads` (default: all cores) onnxruntime threads.
//
// Usage: node bench/generate-bench.mjs [--layers L] [--d-model D] [--heads H] [--context T] [--prompt P] [--new N]
//        [--runs R] [--threads N] [--dtype fp32|fp16] [--arch gpt2|llama] [--json]
import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { performance } from "node:perf_hooks";
import { createDefaultRegistry, initTrainingState, parameterCount, saveTrainingState } from "@staged/core";
import { ensureExport, loadGenerator } from "../dist/index.js";

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const layers = Number(arg("layers", "12")),
  dModel = Number(arg("d-model", "768")),
  heads = Number(arg("heads", "12"));
const context = Number(arg("context", "1024")),
  promptTokens = Number(arg("prompt", "32")),
  newTokens = Number(arg("new", "64"));
const runs = Number(arg("runs", "3")),
  threads = Number(arg("threads", String(os.availableParallelism())));
const dtype = arg("dtype", "fp32"),
  onlyArch = arg("arch", null),
  asJson = process.argv.includes("--json");

const text = "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of foolishness. ";
const prompts = Array.from({ length: 8 }, (_, i) => text.slice(i * 3, i * 3 + promptTokens - i));
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const registry = createDefaultRegistry();

const results = [];
for (const arch of ["gpt2", "llama"].filter((a) => !onlyArch || a === onlyArch)) {
  const plugin = registry.get("architecture", arch);
  const shape = { layers, dModel, heads, vocab: 256, context, ...(arch === "llama" ? { kvHeads: Math.max(1, heads / 2) } : {}) };
  const state = initTrainingState(arch, plugin.initConfig(shape, arch === "gpt2"), 0);
  const root = mkdtempSync(path.join(os.tmpdir(), "staged-generate-bench-"));
  try {
    const dir = path.join(root, "ckpt");
    await saveTrainingState(dir, state);
    let t = performance.now();
    await ensureExport(dir, { dtype });
    const exportSeconds = (performance.now() - t) / 1000;
    t = performance.now();
    const g = await loadGenerator(dir, { dtype, threads });
    const loadSeconds = (performance.now() - t) / 1000;
    const one = [],
      eight = [];
    const cold = await g.generate(prompts[0], { maxNewTokens: newTokens });
    const coldBatch = await g.generateBatch(prompts, { maxNewTokens: newTokens });
    for (let r = 0; r < runs; r++) {
      one.push((await g.generate(prompts[0], { maxNewTokens: newTokens })).timing);
      eight.push((await g.generateBatch(prompts, { maxNewTokens: newTokens })).timing);
    }
    await g.dispose();
    const summary = (ts) => ({
      firstTokenMs: median(ts.map((x) => x.firstTokenSeconds)) * 1000,
      tokensPerSecond: median(ts.map((x) => x.tokensPerSecond)),
    });
    results.push({
      arch,
      dtype,
      layers,
      dModel,
      heads,
      kvHeads: shape.kvHeads ?? heads,
      context,
      parameters: parameterCount(state),
      promptTokens: cold.promptIds.length,
      newTokens,
      threads,
      exportSeconds,
      loadSeconds,
      batch1: { ...summary(one), coldFirstTokenMs: cold.timing.firstTokenSeconds * 1000 },
      batch8: { ...summary(eight), coldFirstTokenMs: coldBatch.timing.firstTokenSeconds * 1000 },
    });
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
}

if (asJson) {
  console.log(JSON.stringify({ machine: { cpus: os.cpus()[0]?.model, cores: os.availableParallelism(), node: process.version }, results }, null, 2));
} else {
  console.log(
    `generation through transformers.js, ${threads} threads, ${os.cpus()[0]?.model} (${os.availableParallelism()} cores); greedy, ${newTokens} new tokens, median of ${runs}`,
  );
  for (const r of results) {
    console.log(
      `${r.arch} ${r.layers}×${r.dModel}, ${r.heads} heads (${r.kvHeads} kv), context ${r.context}, ${(r.parameters / 1e6).toFixed(1)}M parameters, ${r.dtype}: ` +
        `export ${r.exportSeconds.toFixed(1)} s, load ${r.loadSeconds.toFixed(1)} s`,
    );
    for (const [name, b] of [
      ["batch 1", r.batch1],
      ["batch 8", r.batch8],
    ]) {
      console.log(
        `  ${name}: first token ${b.firstTokenMs.toFixed(0)} ms (cold ${b.coldFirstTokenMs.toFixed(0)} ms), then ${b.tokensPerSecond.toFixed(1)} tokens/s` +
          ` (prompt ~${r.promptTokens} tokens)`,
      );
    }
  }
}

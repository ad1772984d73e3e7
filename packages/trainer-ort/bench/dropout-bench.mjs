#!/usr/bin/env node
// The cost of dropout in the training step (run after `pnpm build`; a script, not a test): for L4 d256 H4 T128
// B16 with the byte vocabulary (train-bench's shape A), as GPT-2 (embd_pdrop, attn_pdrop and resid_pdrop all
// P: 13 masks, 8.9M entries per step, those of the attention probabilities drawn on and below the diagonal) and as a Llama (attention_dropout P: 4 masks on the attention
// probabilities), two engines of the same weights, one with dropout 0 and one with P, `--threads` threads
// (default min(2, cores)). After `--warmup` steps each (3), `--steps` steps of each engine in alternation (12),
// so that both see the same load; per engine the median step time (wall clock) and the median CPU time of the
// process per step (user + system, all threads: steadier than the wall clock on a loaded machine), and for the
// dropout engine the median time of drawing its masks in JS alone (part of its step).
//
// Usage: node bench/dropout-bench.mjs [--p 0.1] [--threads N] [--steps N] [--warmup N] [--arch gpt2|llama] [--json]
import os from "node:os";
import { performance } from "node:perf_hooks";
import { createDefaultRegistry } from "@staged/core";
import { adamwDefaults, compileTrainStep, createEngine, dropoutMasks, modelGraph } from "../dist/index.js";

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : process.argv[i + 1];
};
const p = Number(arg("p", "0.1"));
const threads = Number(arg("threads", String(Math.min(2, os.availableParallelism()))));
const steps = Number(arg("steps", "12"));
const warmup = Number(arg("warmup", "3"));
const onlyArch = arg("arch", null);
const asJson = process.argv.includes("--json");

const c = { layers: 4, d: 256, heads: 4, T: 128, B: 16, vocab: 256 };
const registry = createDefaultRegistry();
const shape = (dropout) => ({ layers: c.layers, dModel: c.d, heads: c.heads, vocab: c.vocab, context: c.T, dropout });
const ARCHS = [
  { arch: "gpt2", config: (dropout) => registry.get("architecture", "gpt2").initConfig(shape(dropout), true) },
  { arch: "llama", config: (dropout) => registry.get("architecture", "llama").initConfig({ ...shape(dropout), kvHeads: c.heads / 2 }, false) },
].filter((a) => !onlyArch || a.arch === onlyArch);
const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

const pct = (x) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)}%`;
const rows = [];
const log = (s) => {
  if (!asJson) console.log(s);
};
log(
  `dropout-bench: p ${p}, ${threads} threads, ${os.cpus()[0]?.model ?? "cpu"}, L${c.layers} d${c.d} H${c.heads} T${c.T} B${c.B}, ` +
    `${warmup} warm-up + ${steps} alternating steps, load ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")}`,
);
for (const a of ARCHS) {
  const base = a.config(0),
    dropped = a.config(p);
  const weights = new Map([...registry.get("architecture", a.arch).init(base, 0)].map(([n, t]) => [n, t.f32]));
  const opts = { batch: c.B, context: c.T, threads };
  const engines = [await createEngine(a.arch, base, weights, undefined, opts), await createEngine(a.arch, dropped, weights, undefined, opts)];
  const batches = Array.from({ length: warmup + steps }, () => Int32Array.from({ length: c.B * c.T }, () => Math.floor(Math.random() * c.vocab)));
  const times = [[], []],
    cpu = [[], []];
  for (let i = 0; i < warmup + steps; i++) {
    for (const [j, e] of engines.entries()) {
      const t0 = performance.now(),
        c0 = process.cpuUsage();
      await e.step(batches[i], 1e-3, i + 1);
      const c = process.cpuUsage(c0);
      if (i >= warmup) {
        times[j].push(performance.now() - t0);
        cpu[j].push((c.user + c.system) / 1000);
      }
    }
  }
  await Promise.all(engines.map((e) => e.release()));
  // The masks alone, as the engine draws them for this graph.
  const graph = compileTrainStep(a.arch, dropped, { batch: c.B, context: c.T }, adamwDefaults(modelGraph(a.arch).params(dropped)));
  const masks = dropoutMasks(graph.dropout);
  const drawMs = [];
  for (let i = 0; i < warmup + steps; i++) {
    const t0 = performance.now();
    masks.draw(i, 0);
    if (i >= warmup) drawMs.push(performance.now() - t0);
  }
  const entries = graph.dropout.reduce((s, d) => s + d.shape.reduce((x, y) => x * y, 1), 0);
  const row = {
    arch: a.arch,
    p,
    masks: graph.dropout.length,
    maskEntries: entries,
    stepMs0: median(times[0]),
    stepMsP: median(times[1]),
    cpuMs0: median(cpu[0]),
    cpuMsP: median(cpu[1]),
    drawMs: median(drawMs),
  };
  row.overhead = row.stepMsP / row.stepMs0 - 1;
  row.cpuOverhead = row.cpuMsP / row.cpuMs0 - 1;
  rows.push(row);
  log(
    `${a.arch}: ${row.masks} masks (${(entries / 1e6).toFixed(1)}M entries); median step ${row.stepMs0.toFixed(0)} ms at dropout 0, ` +
      `${row.stepMsP.toFixed(0)} ms at ${p} (${pct(row.overhead)}), of which drawing the masks ${row.drawMs.toFixed(1)} ms; ` +
      `CPU time per step ${row.cpuMs0.toFixed(0)} vs ${row.cpuMsP.toFixed(0)} ms (${pct(row.cpuOverhead)})`,
  );
}
if (asJson) console.log(JSON.stringify({ threads, warmup, steps, p, cpu: os.cpus()[0]?.model ?? null, loadavg: os.loadavg(), rows }));

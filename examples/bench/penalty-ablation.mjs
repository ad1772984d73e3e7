// The post-growth penalty, ablated: grow one small checkpoint (a stage-0 of `staged run`, saved at its growth)
// with each remedy, train every grown model the same steps on the same batches, and measure how far the
// validation loss rises above its value before the growth and how many FLOPs it takes to get back.
//
//   node examples/bench/penalty-ablation.mjs <small-checkpoint> [--steps 400] [--every 20] [--op width|depth]
//        [--lr 1e-3] [--batch 16] [--context 128] [--blocks 64] [--out results.json]
//
// Not a test: it trains (about 20 s per variant on 2 cores for a 2-layer d128 model).
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { createDefaultRegistry, loadTrainingState } from "@staged/core";
import { widthGrowth } from "@staged/grow-width";
import { depthGrowth } from "@staged/grow-depth";
import { evaluate, train } from "@staged/trainer-ort";

const { values: a, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    steps: { type: "string", default: "400" },
    every: { type: "string", default: "20" },
    op: { type: "string", default: "width" },
    lr: { type: "string", default: "1e-3" },
    batch: { type: "string", default: "16" },
    context: { type: "string", default: "128" },
    blocks: { type: "string", default: "64" },
    data: { type: "string", default: "brown" },
    out: { type: "string" },
    threads: { type: "string" },
    only: { type: "string" },
  },
});
const src = positionals[0];
if (!src) {
  console.error("usage: penalty-ablation.mjs <small-checkpoint> [--steps N] [--op width|depth] ...");
  process.exit(1);
}
const steps = Number(a.steps),
  every = Number(a.every),
  lr = Number(a.lr),
  batch = Number(a.batch),
  context = Number(a.context),
  blocks = Number(a.blocks);
const threads = a.threads ? Number(a.threads) : undefined;

// Each variant: growth options, the LR re-warmup after the growth, and the LR scale of the grown model.
// The first row of each list is the small model trained on without growing: the reference a grown model should beat.
const SMALL = { name: "(small model, not grown)", grow: null, rewarmup: 0, lrScale: 1 };
// The same at half the LR: a grown model at a lower LR must beat this, or the gain is the LR's, not the growth's.
const SMALL_HALF = { name: "(small model, not grown, LR × 1/2)", grow: null, rewarmup: 0, lrScale: 0.5 };
const WIDTH = [
  SMALL,
  SMALL_HALF,
  { name: "consistent moments, rewarmup 100 (run default before)", grow: { moments: "consistent" }, rewarmup: 100, lrScale: 1 },
  { name: "no rewarmup", grow: { moments: "consistent" }, rewarmup: 0, lrScale: 1 },
  { name: "rewarmup 400", grow: { moments: "consistent" }, rewarmup: 400, lrScale: 1 },
  { name: "paper moments", grow: { moments: "paper" }, rewarmup: 100, lrScale: 1 },
  { name: "reset moments", grow: { moments: "reset" }, rewarmup: 100, lrScale: 1 },
  { name: "LR × 1/2 (muP-style for width x2)", grow: { moments: "consistent" }, rewarmup: 100, lrScale: 0.5 },
  { name: "LR × 1/2, no rewarmup", grow: { moments: "consistent" }, rewarmup: 0, lrScale: 0.5 },
  { name: "split symmetry", grow: { moments: "consistent", symmetry: "split" }, rewarmup: 100, lrScale: 1 },
  { name: "LR × 1/2 + split symmetry", grow: { moments: "consistent", symmetry: "split" }, rewarmup: 100, lrScale: 0.5 },
  { name: "LR × 1/2 + noise symmetry 1e-3", grow: { moments: "consistent", symmetry: "noise", noiseStd: 1e-3 }, rewarmup: 100, lrScale: 0.5 },
  { name: "LR × 1/2 + split + reset moments", grow: { moments: "reset", symmetry: "split" }, rewarmup: 100, lrScale: 0.5 },
  { name: "noise symmetry 1e-3 (not exact)", grow: { moments: "consistent", symmetry: "noise", noiseStd: 1e-3 }, rewarmup: 100, lrScale: 1 },
];
const DEPTH = [
  SMALL,
  SMALL_HALF,
  { name: "identity, copied moments, rewarmup 100", grow: { init: "identity", moments: "copy" }, rewarmup: 100, lrScale: 1 },
  { name: "no rewarmup", grow: { init: "identity", moments: "copy" }, rewarmup: 0, lrScale: 1 },
  { name: "reset moments (new layers)", grow: { init: "identity", moments: "reset" }, rewarmup: 100, lrScale: 1 },
  { name: "copy init (not exact)", grow: { init: "copy", moments: "copy" }, rewarmup: 100, lrScale: 1 },
  { name: "LR × 1/2", grow: { init: "identity", moments: "copy" }, rewarmup: 100, lrScale: 0.5 },
];
const variants = (a.op === "depth" ? DEPTH : WIDTH).filter((_, i) => !a.only || a.only.split(",").map(Number).includes(i));
const registry = createDefaultRegistry().register("growth", widthGrowth).register("growth", depthGrowth);
const plugin = registry.get("growth", a.op);
const work = await mkdtemp(join(tmpdir(), "penalty-"));
const rows = [];
try {
  for (const v of variants) {
    const small = await loadTrainingState(src, { registry });
    const ev = { data: a.data, stream: "training-validation", context, maxBlocks: blocks, batch, threads };
    const before = (await evaluate(small, ev)).loss;
    const grown = v.grow ? await plugin.grow(small, { factor: 2, ...v.grow, rewarmup: v.rewarmup, registry }) : small;
    const after = (await evaluate(grown, ev)).loss;
    const points = [];
    const t0 = performance.now();
    const { result } = await train(
      grown,
      {
        data: a.data,
        steps,
        batch,
        context,
        lr: lr * v.lrScale,
        evalEvery: every,
        evalBlocks: blocks,
        saveDir: join(work, String(rows.length)),
        threads,
      },
      {
        onEval: (e) => {
          points.push({ step: e.step, flops: e.flops, valLoss: e.valLoss });
        },
      },
    );
    await small.close();
    const f0 = points[0].flops - (points[1].flops - points[0].flops) * 1;
    // The largest rise over the loss before the growth, and the first point after that peak back at or below it.
    const peak = points.reduce((m, p, i) => (p.valLoss > points[m].valLoss ? i : m), 0);
    const maxRise = points[peak].valLoss - before;
    const back = maxRise <= 0 ? { step: points[0].step - every, flops: f0 } : points.slice(peak + 1).find((p) => p.valLoss <= before);
    const row = {
      variant: v.name,
      exact: Math.abs(after - before) < 1e-4,
      lossBefore: before,
      lossAfter: after,
      maxRise,
      recoverSteps: back ? back.step - (points[0].step - every) : null,
      recoverFlops: back ? back.flops - f0 : null,
      final: result.valLoss,
      seconds: (performance.now() - t0) / 1000,
      points,
    };
    rows.push(row);
    console.error(
      `${v.name}: before ${before.toFixed(4)}, after growth ${after.toFixed(4)}, max rise ${maxRise >= 0 ? "+" : ""}${maxRise.toFixed(4)}, ` +
        `back after ${row.recoverSteps ?? "never (within " + steps + ")"} steps, final ${result.valLoss.toFixed(4)} (${row.seconds.toFixed(0)} s)`,
    );
  }
} finally {
  await rm(work, { recursive: true, force: true });
}
console.log(`| variant (${a.op} growth of ${src}) | exact | max rise (nats) | steps to recover | val loss after ${steps} steps |`);
console.log("| --- | --- | --- | --- | --- |");
for (const r of rows) {
  console.log(
    `| ${r.variant} | ${r.exact ? "yes" : "no"} | ${r.maxRise >= 0 ? "+" : ""}${r.maxRise.toFixed(4)} | ${r.recoverSteps ?? `> ${steps}`} | ${r.final.toFixed(4)} |`,
  );
}
if (a.out) await writeFile(a.out, JSON.stringify({ source: src, op: a.op, steps, every, lr, batch, context, blocks, rows }, null, 2) + "\n");

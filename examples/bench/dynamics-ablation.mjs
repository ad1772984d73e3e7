// Growth dynamics, ablated: grow one small checkpoint (a stage-0 of `staged run`, saved at its growth) with each
// variant and seed, train every grown model the same steps, and write each as a run directory with the
// result.json of `staged run` (the small model's curve before the growth, the grown model's after), so that
// `staged report <dirs> <baseline dirs>` compares them with the target trained from scratch: FLOPs to each loss,
// the post-growth rise, and the dynamics ratio (loss decrease per FLOP after the growth against the target's at
// the same loss).
//
//   node examples/bench/dynamics-ablation.mjs <small-checkpoint> --out <dir> [--variants a,b,...] [--seeds 0,1]
//        [--steps 1500] [--every 50] [--blocks 256] [--batch 16] [--context 128] [--threads 1] [--list]
//        [--data brown|<file>] [--val-data <file>]   (the training and validation data, as `staged train`'s)
//        [--cooldown N [--cooldown-blocks K]]   (then N steps with the LR decaying to 0, and the loss on the validation split)
//        [--rewarmup 100]   (the LR re-warmup after a growth, steps; the runs' own warmup)
//
// Resumable: a (variant, seed) whose result.json exists is skipped. The seed is the growth's (split, noise) and the
// sampler's after the growth. Width variants also record how far the copies have drifted apart every `--chunk`
// steps (result.json's `divergence`: ‖W₁₁ − W₂₂‖/‖W₁₁‖ of the two diagonal blocks of the first and last layers'
// MLP input matrices, and of the token embedding's two column copies; 0 = still exact copies).
// Not a test: about 3 minutes per variant and seed on one core (2-layer d128).
import { mkdir, readFile, rm } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { createDefaultRegistry, loadTrainingState, writeFileAtomic } from "@staged/core";
import { widthGrowth } from "@staged/grow-width";
import { depthGrowth } from "@staged/grow-depth";
import { readMetrics, withCooldown } from "@staged/scheduler";
import { curvePoints, RESULT_FILE, RESULT_FORMAT, RUN_FILE, RUN_FILES_VERSION } from "@staged/run";
import { evaluate, train } from "@staged/trainer-ort";

const { values: a, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    out: { type: "string" },
    variants: { type: "string" },
    seeds: { type: "string", default: "0" },
    steps: { type: "string", default: "1500" },
    every: { type: "string", default: "50" },
    blocks: { type: "string", default: "256" },
    batch: { type: "string", default: "16" },
    context: { type: "string", default: "128" },
    threads: { type: "string" },
    data: { type: "string", default: "brown" },
    "val-data": { type: "string" },
    list: { type: "boolean", default: false },
    chunk: { type: "string", default: "250" },
    cooldown: { type: "string", default: "0" },
    "cooldown-blocks": { type: "string" },
    rewarmup: { type: "string", default: "100" },
  },
});

// Each variant: the operator, its options, and the stage options (LR re-warmup, scale, which parameters, ramp).
// "w-" variants grow width ×2, "d-" variants depth ×2. The defaults of `staged run` first.
const R = Number(a.rewarmup); // the runs' warmup, the default re-warmup
const VARIANTS = {
  "w-default": { op: "width", grow: {}, stage: { rewarmup: R } },
  "w-lr1": { op: "width", grow: {}, stage: { rewarmup: R, lrScale: 1 } },
  "w-lr2": { op: "width", grow: {}, stage: { rewarmup: R, lrScale: 2 } },
  "w-ramp500": { op: "width", grow: {}, stage: { rewarmup: R, lrRamp: 500 } },
  "w-anti1e-2": { op: "width", grow: { symmetry: "antithetic", noiseStd: 1e-2 }, stage: { rewarmup: R } },
  // New heads and FFN units drawn as a fresh model's, writing 0 at first (exact); the old units read the copies' mean.
  "w-fresh": { op: "width", grow: { units: "fresh" }, stage: { rewarmup: R } },
  "w-fresh-lr1": { op: "width", grow: { units: "fresh" }, stage: { rewarmup: R, lrScale: 1 } },
  "w-anti1e-2-ramp500": { op: "width", grow: { symmetry: "antithetic", noiseStd: 1e-2 }, stage: { rewarmup: R, lrRamp: 500 } },
  "w-anti1e-2-lr1": { op: "width", grow: { symmetry: "antithetic", noiseStd: 1e-2 }, stage: { rewarmup: R, lrScale: 1 } },
  "w-anti3e-2-ramp500": { op: "width", grow: { symmetry: "antithetic", noiseStd: 3e-2 }, stage: { rewarmup: R, lrRamp: 500 } },
  "w-anti1e-2-fanin-ramp500": {
    op: "width",
    grow: { symmetry: "antithetic", noiseStd: 1e-2 },
    stage: { rewarmup: R, lrScaleParams: "fanIn", lrRamp: 500 },
  },
  "w-anti1e-2-fanin": { op: "width", grow: { symmetry: "antithetic", noiseStd: 1e-2 }, stage: { rewarmup: R, lrScaleParams: "fanIn" } },
  "w-noise1e-2-ramp500": { op: "width", grow: { symmetry: "noise", noiseStd: 1e-2 }, stage: { rewarmup: R, lrRamp: 500 } },
  "w-split-ramp500": { op: "width", grow: { symmetry: "split" }, stage: { rewarmup: R, lrRamp: 500 } },
  // Dropout from the growth on (config fields of the grown model; the small model and the baseline had none).
  "w-dropout0.1": { op: "width", grow: {}, stage: { rewarmup: R }, config: { resid_pdrop: 0.1, embd_pdrop: 0.1, attn_pdrop: 0.1 } },
  // No growth: the checkpoint itself (with --steps 0 --cooldown N: one point of the cooled-down frontier of a run).
  none: { op: null, grow: {}, stage: {} },
  "d-default": { op: "depth", grow: {}, stage: { rewarmup: R } },
  // Copied layers (not exact: the function changes), as in stacking (Gong et al. 2019; Du et al. 2024's G_stack).
  "d-copy": { op: "depth", grow: { init: "copy" }, stage: { rewarmup: R } },
  "d-lrhalf": { op: "depth", grow: {}, stage: { rewarmup: R, lrScale: 0.5 } },
};
if (a.list) {
  for (const [k, v] of Object.entries(VARIANTS)) console.log(k, JSON.stringify(v));
  process.exit(0);
}
const src = positionals[0];
if (!src || !a.out) {
  console.error("usage: dynamics-ablation.mjs <small-checkpoint> --out <dir> [--variants a,b] [--seeds 0,1] [--steps N] ...");
  process.exit(1);
}
const names = a.variants ? a.variants.split(",") : Object.keys(VARIANTS);
for (const n of names)
  if (!VARIANTS[n]) {
    console.error(`unknown variant ${n} (variants: ${Object.keys(VARIANTS).join(", ")})`);
    process.exit(1);
  }
const seeds = a.seeds.split(",").map(Number);
const steps = Number(a.steps),
  every = Number(a.every),
  blocks = Number(a.blocks),
  batch = Number(a.batch),
  context = Number(a.context);
const threads = a.threads ? Number(a.threads) : undefined;
const vd = a["val-data"] ? { valData: a["val-data"] } : {};
const registry = createDefaultRegistry().register("growth", widthGrowth).register("growth", depthGrowth);
const out = resolve(a.out);

// The small model's curve up to the growth (its metrics history), and the budget of the run it came from.
const history = curvePoints(await readMetrics(src));
const source = JSON.parse(await readFile(join(src, "..", RUN_FILE), "utf8").catch(() => "{}"));

/**
 * ‖W₁₁ − W₂₂‖/‖W₁₁‖ of a width-×2-grown matrix's two diagonal blocks in its [in, out] orientation (the first and
 * last layers' MLP input matrices), and of the token embedding's two column copies: how far the copies have drifted.
 */
async function copyDivergence(state) {
  const specs = registry.get("architecture", state.architecture).params(state.config);
  const layers = state.shape.layers;
  const pick = [
    specs.find((p) => p.role === "mlp.in.weight" && p.layer === 0),
    specs.find((p) => p.role === "mlp.in.weight" && p.layer === layers - 1),
    specs.find((p) => p.role === "embed.tokens"),
  ].filter(Boolean);
  const tensors = {};
  for (const p of pick) {
    const w = (await state.params.get(p.name).read()).f32;
    const [r, c] = p.shape;
    const at = p.layout === "linear" ? (i, j) => w[j * c + i] : (i, j) => w[i * c + j]; // (in, out)
    const [ins, outs] = p.layout === "linear" ? [c, r] : [r, c];
    const emb = p.role === "embed.tokens"; // [vocab, d]: the copies are column halves
    let diff = 0,
      norm = 0;
    for (let i = 0; i < (emb ? ins : ins / 2); i++) {
      for (let j = 0; j < outs / 2; j++) {
        const x = at(i, j),
          y = emb ? at(i, j + outs / 2) : at(i + ins / 2, j + outs / 2);
        diff += (x - y) ** 2;
        norm += x * x;
      }
    }
    tensors[p.name] = Number(Math.sqrt(diff / norm).toPrecision(3));
  }
  return { tensors };
}

for (const name of names) {
  for (const seed of seeds) {
    const v = VARIANTS[name];
    const dir = join(out, `${name}-s${seed}`);
    if (existsSync(join(dir, RESULT_FILE))) {
      console.error(`${name}-s${seed}: done already`);
      continue;
    }
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    const small = await loadTrainingState(src, { registry });
    const ev = { data: a.data, ...vd, stream: "training-validation", context, maxBlocks: blocks, batch, threads };
    const before = history.at(-1)?.valLoss ?? (await evaluate(small, ev)).loss;
    const g = v.op
      ? await registry.get("growth", v.op).grow(small, { factor: 2, ...v.grow, ...(v.op === "width" ? { seed } : {}), ...v.stage, registry })
      : small;
    const grown = v.config ? { ...g, config: { ...g.config, ...v.config } } : g;
    const after = v.op ? (await evaluate(grown, ev)).loss : before;
    const t0 = performance.now();
    const points = [],
      divergence = [];
    const chunk = Number(a.chunk);
    let state = grown;
    if (v.op === "width") divergence.push({ steps: 0, ...(await copyDivergence(state)) });
    for (let done = 0; done < steps; done += chunk) {
      const n = Math.min(chunk, steps - done);
      const r = await train(
        state,
        {
          data: a.data,
          ...vd,
          steps: n,
          batch,
          context,
          evalEvery: every,
          evalBlocks: blocks,
          saveDir: join(dir, "checkpoint"),
          threads,
          ...(done === 0 ? { seed: seed * 1000 + 17 } : {}),
        },
        {
          onEval: (e) => {
            points.push({ globalStep: e.globalStep, step: e.step, stage: 1, flops: e.flops, tokens: e.tokens, valLoss: e.valLoss });
          },
        },
      );
      if (state !== grown) await state.close?.();
      state = r.state;
      if (v.op === "width") divergence.push({ steps: done + n, ...(await copyDivergence(state)) });
      const el = (performance.now() - t0) / 1000;
      console.error(
        `${name}-s${seed}: ${done + n}/${steps} steps, val ${points.at(-1).valLoss.toFixed(4)}, ${el.toFixed(0)} s, ETA ${((el / (done + n)) * (steps - done - n)).toFixed(0)} s` +
          (v.op === "width" ? `, copies apart ${JSON.stringify(divergence.at(-1).tensors)}` : ""),
      );
    }
    // The common cooldown of `staged run` (spec cooldown): the LR decays linearly to 0 over N more steps, then the
    // loss on the whole validation split (or --cooldown-blocks), before and after.
    let final;
    const coolSteps = Number(a.cooldown);
    if (coolSteps > 0) {
      const fev = { ...ev, ...(a["cooldown-blocks"] ? { maxBlocks: Number(a["cooldown-blocks"]) } : { maxBlocks: undefined }) };
      const valLossBefore = (await evaluate(state, fev)).loss;
      const r = await train(
        { ...state, schedule: withCooldown(state.schedule, state.progress.step, coolSteps) },
        {
          data: a.data,
          ...vd,
          steps: coolSteps,
          batch,
          context,
          evalEvery: 0,
          evalBlocks: blocks,
          saveDir: join(dir, "checkpoint"),
          threads,
        },
      );
      const after = await evaluate(r.state, fev);
      final = { steps: coolSteps, flops: r.state.progress.flopsSeen, valLoss: after.loss, blocks: after.blocks, tokens: after.tokens, valLossBefore };
      console.error(
        `${name}-s${seed}: after a ${coolSteps}-step cooldown ${after.loss.toFixed(4)} on ${after.blocks} blocks (before it ${valLossBefore.toFixed(4)})`,
      );
    }
    if (state !== grown) await state.close?.();
    await small.close();
    const record = v.op ? grown.progress.stages.at(-1) : null;
    const result = {
      format: RESULT_FORMAT,
      version: RUN_FILES_VERSION,
      name: `${name}-s${seed}`,
      group: name,
      seed,
      done: true,
      budgetFlops: source.budget?.flops ?? (points.at(-1) ?? history.at(-1)).flops,
      points: [...history, ...points],
      ...(divergence.length ? { divergence } : {}),
      ...(final ? { final } : {}),
      growths: record
        ? [
            {
              stage: 1,
              operator: v.op,
              options: { ...record.options, rewarmup: v.stage.rewarmup ?? 0, continueAt: "keep" },
              flops: history.at(-1)?.flops ?? 0,
              globalStep: history.at(-1)?.globalStep ?? 0,
              timing: "ablation",
              valLossBefore: before,
              valLossAfter: after,
              paramsBefore: 0,
              paramsAfter: 0,
            },
          ]
        : [],
    };
    await writeFileAtomic(join(dir, RESULT_FILE), JSON.stringify(result) + "\n");
    await rm(join(dir, "checkpoint"), { recursive: true, force: true });
    console.error(
      `${name}-s${seed}: before ${before.toFixed(4)}, after growth ${after.toFixed(4)}, final ${(points.at(-1) ?? history.at(-1)).valLoss.toFixed(4)} ` +
        `(${((performance.now() - t0) / 1000).toFixed(0)} s)`,
    );
  }
}

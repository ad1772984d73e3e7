// The paper's result, measured here: does staged training reach the from-scratch baseline's loss with less
// compute? Everything goes through the `staged` command (run, plan fit, report):
//
//   1. pilots: short runs of four small GPT-2 sizes on Brown (the same tokens each); a Chinchilla law is fitted to them
//      (`staged plan fit`, which says when the fit is ill-determined);
//   2. the target: the candidate model that the fitted law says is compute-optimal for the budget;
//   3. runs: the target from scratch (baseline, several seeds), the staged schedules (width, depth,
//      width+depth) timed by the scheduler ("auto": the marginal-efficiency rule on the run's own validation
//      curve with the fitted law), the first models never grown (is the target really the better use of the
//      budget?), and ablations of the growth remedies and of the timing (one seed each; the equal-loss step over every seed);
//   4. the report: FLOPs to the baseline's final loss, the saving with its spread over seeds, the post-growth
//      penalties, and the plots (`staged report`), written to <out>/report.md, report.png, report.svg.
//
//   node examples/bench/staged-bench.mjs [--out runs/bench] [--budget 3e13] [--seeds 3] [--parallel 1]
//        [--threads 2] [--phase all|pilots|runs|report] [--quick] [--seed-list 1,2] [--groups baseline,width,...]
//        [--data brown|<file> [--val-data <file>]] [--batch 16] [--lr 1e-3] [--warmup 100] [--eval-every 50] [--cooldown 300]
//        [--frontier 0.5,0.625,0.75,0.875] (the baselines' cooled-down copies, fractions of the budget; above 1 they train on past it)
//        [--law <law.json>] (a law fitted before, instead of the pilots)
//
// --parallel runs that many `staged run --only <run>` processes at once (each with --threads). Every run
// resumes where it stopped, so the script can be interrupted and rerun. --quick is the demo's short version
// (one seed, width only, a small budget). Every run ends with a common cooldown; the saving is priced on the
// baseline's cooled-down frontier (see `common`). Not a test: the full benchmark takes hours on 2 cores.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { RESULT_FILE } from "@staged/run";

const here = dirname(fileURLToPath(import.meta.url));
const { values: a } = parseArgs({
  options: {
    out: { type: "string", default: "runs/bench" },
    budget: { type: "string" },
    seeds: { type: "string" },
    parallel: { type: "string", default: "1" },
    threads: { type: "string", default: "2" },
    phase: { type: "string", default: "all" },
    quick: { type: "boolean", default: false },
    cli: { type: "string" },
    "pilot-tokens": { type: "string" },
    skip: { type: "string" },
    "seed-list": { type: "string" },
    groups: { type: "string" },
    data: { type: "string", default: "brown" },
    "val-data": { type: "string" },
    batch: { type: "string", default: "16" },
    lr: { type: "string", default: "1e-3" },
    warmup: { type: "string", default: "100" },
    "eval-every": { type: "string" },
    cooldown: { type: "string" },
    frontier: { type: "string" },
    law: { type: "string" },
  },
});
const cli = a.cli ?? process.env.STAGED_CLI ?? join(here, "..", "..", "packages", "cli", "dist", "bin.js");
const out = resolve(a.out);
const quick = a.quick;
const budget = Number(a.budget ?? (quick ? 1e13 : 3e13));
const seeds = a["seed-list"] ? a["seed-list"].split(",").map(Number) : Array.from({ length: Number(a.seeds ?? (quick ? 1 : 3)) }, (_, i) => i);
// Only the runs of these groups (e.g. to spread the seeds of a benchmark over machines); default: all.
const groups = a.groups ? new Set(a.groups.split(",")) : null;
const wanted = (name) => !groups || groups.has(name.replace(/-s\d+$/, ""));
const parallel = Number(a.parallel),
  threads = Number(a.threads);
// Every pilot sees the same number of tokens, so each size's data term is measured over the same range.
const pilotTokens = Number(a["pilot-tokens"] ?? (quick ? 1e6 : 4e6));
const skip = a.skip ?? "0.3";

// Shared hyperparameters of every run (by default the issue's: Brown, bytes, context 128, batch 16, AdamW 1e-3), and the
// comparison the growth-dynamics ablation showed is needed (packages/run/README.md, "Growth dynamics, ablated"): every
// run ends with the same cooldown (LR linearly to 0) and is evaluated on the whole validation split; the baselines
// also cool down copies of themselves at fractions of the budget, their cooled-down frontier, which prices each
// run's cooled-down loss in the baseline's FLOPs (constant-LR curves compare LR noise floors, not models).
const common = {
  data: a.data === "brown" ? "brown" : resolve(a.data),
  ...(a["val-data"] ? { valData: resolve(a["val-data"]) } : {}),
  context: 128,
  batch: Number(a.batch),
  optimizer: { lr: Number(a.lr) },
  schedule: { kind: "constant", warmup: Number(a.warmup) },
  eval: { every: Number(a["eval-every"] ?? (quick ? 25 : 50)), blocks: quick ? 32 : 64 },
  cooldown: {
    steps: Number(a.cooldown ?? (quick ? 150 : 300)),
    frontier: a.frontier ? a.frontier.split(",").map(Number) : quick ? [0.5, 0.75] : [0.5, 0.625, 0.75, 0.875],
  },
};
// The width growth the ablation found best among the function-preserving ones: the LR kept (× 1, not × 1/2) and
// antithetic noise 1e-2 to break the copies' symmetry.
const WIDTH = { grow: "width", at: "auto", lrScale: 1, options: { symmetry: "antithetic", noiseStd: 1e-2 } };
const gpt2 = (layers, dModel) => ({ layers, dModel, heads: dModel / 32 });
const label = (m) => `${m.layers}x${m.dModel}`;

function sh(args, { quiet = false } = {}) {
  return new Promise((res, rej) => {
    const p = spawn(process.execPath, [cli, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    p.stdout.on("data", (d) => {
      stdout += d;
    });
    p.stderr.on("data", (d) => {
      if (!quiet) process.stderr.write(d);
    });
    p.on("close", (code) => (code === 0 ? res(stdout) : rej(new Error(`staged ${args.join(" ")} exited ${code}`))));
  });
}

const failures = [];
async function pool(jobs) {
  const queue = [...jobs];
  const workers = Array.from({ length: Math.min(parallel, queue.length) }, async () => {
    // A failed run is reported and the others go on.
    while (queue.length)
      await queue
        .shift()()
        .catch((e) => {
          failures.push(e.message);
          console.error(`FAILED: ${e.message}`);
        });
  });
  await Promise.all(workers);
}

async function writeSpec(name, spec) {
  const file = join(out, "specs", `${name}.json`);
  await mkdir(dirname(file), { recursive: true });
  await writeFile(file, JSON.stringify(spec, null, 2) + "\n");
  return file;
}

/** Every run of a spec, one `staged run --only` per run, through the pool. */
async function runAll(specs) {
  const jobs = [];
  const seen = new Set();
  for (const { file, names } of specs) {
    for (const n of names) {
      if (seen.has(n)) continue; // the baseline appears in every spec; it is one run
      seen.add(n);
      jobs.push(() => sh(["run", file, "--out", join(out, "runs"), "--only", n, "--threads", String(threads)]));
    }
  }
  await pool(jobs);
}

const t0 = performance.now();
const phase = a.phase;
await mkdir(out, { recursive: true });

// 1. Pilots and the fitted law.
const pilots = quick ? [gpt2(2, 32), gpt2(1, 64), gpt2(2, 64), gpt2(2, 128)] : [gpt2(1, 64), gpt2(2, 64), gpt2(1, 128), gpt2(2, 128)];
const fitFile = join(out, "law.json");
// --law: a law fitted before (a `staged plan fit --law chinchilla` output, e.g. the full benchmark's), used instead of pilots.
if (a.law) await writeFile(fitFile, await readFile(resolve(a.law)));
else if (phase === "all" || phase === "pilots") {
  const specs = [];
  for (const m of pilots) {
    const name = `pilot-${label(m)}`;
    // The law is fitted to constant-LR curves: pilots need no cooldown.
    const file = await writeSpec(name, { ...common, cooldown: undefined, name, budget: { tokens: pilotTokens }, model: m, stages: [], seeds: [0] });
    specs.push({ file, names: [`${name}-s0`] });
  }
  await runAll(specs);
  const metrics = pilots.map((m) => join(out, "runs", `pilot-${label(m)}-s0`, "stage-0", "metrics.jsonl"));
  const fit = JSON.parse(await sh(["--json", "plan", "fit", ...metrics, "--law", "chinchilla", "--skip", skip, "--out", fitFile]));
  console.error(
    `law fitted on ${pilots.length} pilot sizes at ${pilotTokens.toExponential(2)} tokens each (first ${skip} of each curve left out): ` +
      `${Object.entries(fit.constants)
        .map(([k, v]) => `${k} ${Number(v).toPrecision(4)}`)
        .join(", ")}; rmse ${fit.rmse.toExponential(2)}` +
      (fit.warnings.length ? `; warnings: ${fit.warnings.join("; ")}` : "; well determined"),
  );
}

// 2. The target: compute-optimal for the budget under the fitted law, among models whose halves exist.
const { chinchillaLaw, computeOptimalChoice, flopsPerToken, nonEmbeddingParams } = await import("@staged/scheduler");
const shape = (m) => ({ layers: m.layers, dModel: m.dModel, heads: m.heads, headDim: 32, ffn: 4 * m.dModel, vocab: 256, context: 128 });
const model = (m) => ({ ...m, params: nonEmbeddingParams(shape(m)), flopsPerToken: flopsPerToken(shape(m), 128) });
const fitJson = JSON.parse(await readFile(fitFile, "utf8"));
const law = chinchillaLaw(fitJson.constants, fitJson.batchTokens);
// A target needs a smaller model to grow from: a half-width one with whole heads (32 dims each), which the ablations
// found the better start, else a half-depth one (2x32 grows from 1x32 by depth).
const growthOf = (m) => (Number.isInteger(m.dModel / 64) ? "width" : Number.isInteger(m.layers / 2) ? "depth" : null);
const growable = (m) => growthOf(m) !== null;
const sizes = quick ? [gpt2(2, 32), gpt2(2, 64), gpt2(2, 128)] : [gpt2(2, 64), gpt2(2, 128), gpt2(4, 128), gpt2(4, 256)];
const candidates = sizes.filter(growable).map(model);
const choice = computeOptimalChoice(law, candidates, budget);
const target = choice.best;
const notGrowable = sizes.filter((m) => !growable(m)).map(model);
console.error(
  `budget ${budget.toExponential(2)} FLOPs: predicted final losses ${choice.losses.map((l) => `${label(l.model)} ${l.loss.toFixed(4)}`).join(", ")} → target ${label(target)}` +
    notGrowable.map((m) => `; ${label(m)} ${law.loss(m.params, budget / m.flopsPerToken).toFixed(4)} has no half to grow from`).join(""),
);

// 3. The runs.
const half = { width: gpt2(target.layers, target.dModel / 2), depth: gpt2(target.layers / 2, target.dModel) };
const DEPTH = { name: "depth", model: half.depth, stages: [{ grow: "depth", at: "auto" }] };
const byWidth = growthOf(target) === "width";
const schedules = byWidth
  ? [
      { name: "width", model: half.width, stages: [WIDTH] },
      ...(quick || target.layers < 2
        ? []
        : [DEPTH, { name: "width-depth", model: gpt2(target.layers / 2, target.dModel / 2), stages: [WIDTH, { grow: "depth", at: "auto" }] }]),
    ]
  : [DEPTH];
// Ablations of the width schedule (one seed), each changing one choice: the timing (the law's plan, a fixed 25%),
// and the package defaults the ablation replaced (LR × 1/2, no symmetry breaking).
const ablations =
  quick || !byWidth
    ? []
    : [
        { name: "width-plan", stages: [{ ...WIDTH, at: "plan" }] },
        { name: "width-at-25pct", stages: [{ ...WIDTH, at: { fraction: 0.25 } }] },
        { name: "width-defaults", stages: [{ grow: "width", at: "auto" }] },
        // The seed's equal-loss step (issue 17): the grown model continues from the step at which the law's target reaches
        // its loss. Under the constant LR it changes only the re-warmup's place and the batch order, so it runs over the
        // benchmark's seeds, to be compared with the width schedule's spread.
        { name: "width-equal-step", stages: [{ ...WIDTH, continueAt: "law" }], seeds },
      ];
// The target from scratch at half the LR: the control of the constant-LR comparisons (a growth that halved the LR
// lowered a constant-LR loss by itself); with the common cooldown it is only run on request (--groups).
const lrControl = { name: "scratch-lr-half", model: gpt2(target.layers, target.dModel), stages: [], lr: common.optimizer.lr / 2 };
const specs = [];
for (const s of schedules) {
  const spec = {
    ...common,
    name: s.name,
    budget: { flops: budget },
    model: s.model,
    stages: s.stages,
    law: fitFile,
    seeds,
    baseline: { seeds },
    noGrowth: { seeds: seeds.slice(0, quick ? 1 : 2) },
  };
  specs.push({
    file: await writeSpec(s.name, spec),
    names: [
      ...seeds.map((x) => `baseline-s${x}`),
      ...seeds.map((x) => `${s.name}-s${x}`),
      ...spec.noGrowth.seeds.map((x) => `no-growth-${label(s.model)}-s${x}`),
    ],
  });
}
if (groups?.has(lrControl.name)) {
  const spec = {
    ...common,
    optimizer: { lr: lrControl.lr },
    name: lrControl.name,
    budget: { flops: budget },
    model: lrControl.model,
    stages: [],
    seeds,
  };
  specs.push({ file: await writeSpec(lrControl.name, spec), names: seeds.map((x) => `${lrControl.name}-s${x}`) });
}
for (const ab of ablations) {
  const abSeeds = ab.seeds ?? [0];
  const spec = { ...common, name: ab.name, budget: { flops: budget }, model: half.width, stages: ab.stages, law: fitFile, seeds: abSeeds };
  specs.push({ file: await writeSpec(ab.name, spec), names: abSeeds.map((x) => `${ab.name}-s${x}`) });
}
if (phase === "all" || phase === "runs") {
  // Baselines first (every comparison needs them), then the schedules, the controls, the ablations.
  const order = (n) => (n.startsWith("baseline") ? 0 : schedules.some((s) => n.startsWith(`${s.name}-s`)) ? 1 : n.startsWith("no-growth") ? 2 : 3);
  const flat = specs.flatMap((s) => s.names.filter(wanted).map((n) => ({ file: s.file, n }))).sort((x, y) => order(x.n) - order(y.n));
  await runAll(flat.map(({ file, n }) => ({ file, names: [n] })));
}

// 4. The report: against the baseline (the issue's hyperparameters) and against the target from scratch at
// the grown model's LR; the headline saving is the smaller of the two.
if (phase === "all" || phase === "report") {
  const runsDir = join(out, "runs");
  const dirs = (prefixes) => prefixes.flatMap((p) => seeds.map((x) => join(runsDir, `${p}-s${x}`))).filter((d) => existsSync(join(d, RESULT_FILE)));
  const main = [
    ...dirs(["baseline", ...schedules.map((s) => s.name), lrControl.name]),
    ...schedules.flatMap((s) => dirs([`no-growth-${label(s.model)}`])),
  ];
  const title = `Staged vs from scratch: GPT-2 ${label(target)} on ${a.data === "brown" ? "Brown" : a.data}, batch ${common.batch}, ${budget.toExponential(1)} FLOPs`;
  const rep = JSON.parse(
    await sh(["--json", "report", ...main, "--plot", join(out, "report.png"), join(out, "report.svg"), "--title", title], { quiet: true }),
  );
  const text = await sh(["report", ...main], { quiet: true });
  const hasControl = dirs([lrControl.name]).length > 0;
  const vsControl = hasControl ? await sh(["report", ...main, "--baseline", lrControl.name], { quiet: true }) : "";
  let md =
    `# Staged training benchmark\n\nBudget ${budget.toExponential(2)} FLOPs; target ${label(target)} (law-optimal among ` +
    `${candidates.map(label).join(", ")}); seeds ${seeds.join(", ")}.\n\n## Against the baseline (LR ${common.optimizer.lr})\n\n${text}`;
  if (hasControl) md += `\n## Against the target from scratch at LR ${lrControl.lr} (the grown width's LR)\n\n${vsControl}`;
  const abl = [
    ...dirs(["width"]).slice(0, 1),
    ...ablations.flatMap((x) => (x.seeds ?? [0]).map((n) => join(runsDir, `${x.name}-s${n}`))).filter((d) => existsSync(join(d, RESULT_FILE))),
    ...dirs(["baseline"]),
  ];
  if (ablations.length && abl.length > seeds.length + 1) {
    md += `\n## Ablations (width schedule, seed 0 unless named, one default changed each)\n\n${await sh(["report", ...abl], { quiet: true })}`;
  }
  await writeFile(join(out, "report.md"), md);
  console.log(md);
  // The headline: after the common cooldown, the FLOPs the baseline needs (on its cooled-down frontier) to reach each
  // group's cooled-down loss, against the FLOPs the group spent.
  const cooledOf = (r, group) => r?.report.groups.find((g) => g.group === group)?.cooled ?? null;
  const pct = (x) => (x === null || x === undefined ? "—" : `${x < 0 ? "−" : "+"}${Math.abs(100 * x).toFixed(1)}%`);
  const line = (c) =>
    c?.frontier
      ? `cooled-down loss ${c.valLoss.mean.toFixed(4)} with ${c.flops.toExponential(3)} FLOPs; the baseline needs ${c.frontier.flops.toExponential(3)}` +
        `${c.frontier.extrapolated ? " (extrapolated past its frontier)" : ""}: saving ${pct(c.frontier.saving)} [per seed ${c.frontier.perSeed.map(pct).join(", ")}]`
      : c
        ? `cooled-down loss ${c.valLoss.mean.toFixed(4)} (vs the baseline ${c.vsBaseline >= 0 ? "+" : ""}${c.vsBaseline.toFixed(4)}); not on the baseline's frontier`
        : "no cooled-down result";
  for (const s of schedules) console.log(`measured saving of the ${s.name} schedule after the common cooldown: ${line(cooledOf(rep, s.name))}`);
  // Is the target really the compute-optimal model for this budget? The first models never grown say.
  for (const s of schedules) {
    const g = `no-growth-${label(s.model)}`;
    const c = cooledOf(rep, g);
    if (!c) continue;
    // Against the wrong target a saving says little: then the staged run is compared with the better fixed size.
    const staged = cooledOf(rep, s.name);
    const vsSmall = staged ? staged.valLoss.mean - c.valLoss.mean : null;
    const nats = (x) => `${Math.abs(x).toFixed(4)} nats ${x < 0 ? "below" : "above"}`;
    console.log(
      c.vsBaseline < 0
        ? `the ${label(s.model)} model alone, never grown, ends below the baseline after the cooldown (${line(c)}): ` +
            `at this budget ${label(target)} is NOT compute-optimal (the law's choice was wrong), so the saving above is against ` +
            `the wrong target` +
            (vsSmall === null ? "" : `; against the better fixed size, the ${s.name} run ends ${nats(vsSmall)} the never-grown ${label(s.model)}`)
        : `the ${label(s.model)} model alone, never grown, ends above the baseline after the cooldown (${line(c)}): ${label(target)} is the better use of this budget`,
    );
  }
  if (failures.length) console.log(`${failures.length} run(s) failed: ${failures.join("; ")}`);
  console.log(`(${((performance.now() - t0) / 60000).toFixed(1)} min)`);
}

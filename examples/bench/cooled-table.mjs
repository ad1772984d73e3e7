// Losses after a common cooldown, against a cooled-down frontier: every run directory given holds a result.json
// with `final` (the loss on the validation split after the same cooldown: `staged run` with a spec `cooldown`, or
// examples/bench/dynamics-ablation.mjs --cooldown). Runs are grouped by result.json's group (seeds together);
// `--frontier <dirs>` are the cooled-down points of one model trained from scratch (variant `none` of
// dynamics-ablation.mjs on each snapshot of a run, and `staged run` baselines), which say how many FLOPs that model
// needs to reach a cooled-down loss: interpolated linearly in log FLOPs between the two points around it.
//
//   node examples/bench/cooled-table.mjs <run dirs...> --frontier <dirs...> [--start <dir>] [--json]
//
// Prints a Markdown table: group, runs, cooled-down loss (mean [min, max]), total FLOPs (cooldown included), the
// frontier's FLOPs to that loss, and the saving 1 − FLOPs(group) / FLOPs(frontier). With `--start`, the cooled-down
// point of the model the runs grew from (at their growth), also the cooled dynamics ratio: the training FLOPs the
// frontier's model needs from the start's cooled loss to the group's, over the FLOPs the group trained from its
// growth (cooldowns excluded on both sides; 1 = the grown model continues like the model from scratch). Not a test.
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { join } from "node:path";
import { frontierFlops as frontierFlopsOf, readRunResult, RESULT_FILE } from "@staged/run";

const argv = process.argv.slice(2);
const json = argv.includes("--json");
const at = argv.indexOf("--frontier");
if (at < 0) {
  console.error("usage: cooled-table.mjs <run dirs...> --frontier <dirs...> [--json]");
  process.exit(1);
}
const st = argv.indexOf("--start");
const startDir = st < 0 ? null : argv[st + 1];
const rest = argv.filter((a, i) => a !== "--json" && (st < 0 || (i !== st && i !== st + 1)));
const runDirs = rest.slice(0, rest.indexOf("--frontier"));
const frontierDirs = rest.slice(rest.indexOf("--frontier") + 1);

/** Every result.json with a `final` in a directory or its subdirectories. */
async function results(dir) {
  if (existsSync(join(dir, RESULT_FILE))) {
    const r = await readRunResult(join(dir, RESULT_FILE));
    return r.final ? [r] : [];
  }
  const out = [];
  for (const e of await readdir(dir, { withFileTypes: true })) if (e.isDirectory()) out.push(...(await results(join(dir, e.name))));
  return out;
}
const load = async (dirs) => (await Promise.all(dirs.map(results))).flat();

// Each point: FLOPs with and without its cooldown (the last curve point before it), and the cooled-down loss.
const frontier = (await load(frontierDirs))
  .map((r) => ({ flops: r.final.flops, trained: r.points.at(-1).flops, loss: r.final.valLoss }))
  .sort((a, b) => a.flops - b.flops);
if (frontier.length < 2) {
  console.error(`the frontier needs at least 2 cooled-down points, got ${frontier.length}`);
  process.exit(1);
}

/** FLOPs (`key`: with the cooldown, or trained before it) at which the frontier reaches `loss` (@staged/run's frontierFlops: linear in log FLOPs between its points); null outside its range. */
function frontierFlops(loss, key = "flops") {
  const at = frontierFlopsOf(
    frontier.map((p) => ({ flops: p[key], loss: p.loss })),
    loss,
  );
  return at && !at.extrapolated ? at.flops : null;
}
const start = startDir ? ((await results(startDir))[0] ?? null) : null;
if (startDir && !start) {
  console.error(`${startDir}: no result.json with a cooled-down point`);
  process.exit(1);
}
const fromStart = start ? frontierFlops(start.final.valLoss, "trained") : null;
/** The cooled dynamics ratio of one run grown from the start's model (null without --start or outside the frontier). */
function ratioOf(r) {
  const g = r.growths[0],
    to = frontierFlops(r.final.valLoss, "trained");
  if (!start || !g || fromStart === null || to === null) return null;
  return (to - fromStart) / (r.points.at(-1).flops - g.flops);
}

const groups = new Map();
for (const r of await load(runDirs)) {
  if (!groups.has(r.group)) groups.set(r.group, []);
  groups.get(r.group).push(r);
}
const rows = [...groups]
  .sort(([a], [b]) => a.localeCompare(b))
  .map(([group, runs]) => {
    const losses = runs.map((r) => r.final.valLoss);
    const mean = losses.reduce((s, x) => s + x, 0) / losses.length;
    const flops = runs.reduce((s, r) => s + r.final.flops, 0) / runs.length;
    const need = frontierFlops(mean);
    const perSeed = runs.map((r) => {
      const f = frontierFlops(r.final.valLoss);
      return f === null ? null : 1 - r.final.flops / f;
    });
    const ratios = runs.map(ratioOf).filter((x) => x !== null);
    return {
      group,
      runs: runs.length,
      seeds: runs.map((r) => r.seed),
      loss: { mean, min: Math.min(...losses), max: Math.max(...losses) },
      flops,
      frontierFlops: need,
      saving: need === null ? null : 1 - flops / need,
      perSeed,
      ratio: ratios.length ? { mean: ratios.reduce((a, b) => a + b, 0) / ratios.length, min: Math.min(...ratios), max: Math.max(...ratios) } : null,
    };
  });
if (json) {
  console.log(JSON.stringify({ frontier, start: start && { loss: start.final.valLoss, frontierTrainedFlops: fromStart }, groups: rows }, null, 2));
} else {
  const pct = (x) => (x === null ? "—" : `${(100 * x).toFixed(1)}%`);
  console.log(
    `| group | runs | cooled-down loss | total FLOPs | frontier's FLOPs to it | saving [per seed] |${start ? " cooled dynamics ratio |" : ""}`,
  );
  console.log(`| --- | --- | --- | --- | --- | --- |${start ? " --- |" : ""}`);
  for (const r of rows) {
    const ratio = r.ratio ? `${r.ratio.mean.toFixed(2)} [${r.ratio.min.toFixed(2)}, ${r.ratio.max.toFixed(2)}]` : "—";
    console.log(
      `| ${r.group} | ${r.runs} | ${r.loss.mean.toFixed(4)} [${r.loss.min.toFixed(4)}, ${r.loss.max.toFixed(4)}] | ${r.flops.toExponential(3)} | ` +
        `${r.frontierFlops === null ? "outside the frontier" : r.frontierFlops.toExponential(3)} | ${pct(r.saving)} [${r.perSeed.map(pct).join(", ")}] |` +
        (start ? ` ${ratio} |` : ""),
    );
  }
  if (start)
    console.log(
      `\nStart: cooled-down loss ${start.final.valLoss.toFixed(4)} at the growth, which the frontier's model reaches after ${fromStart === null ? "— (outside the frontier)" : fromStart.toExponential(3)} training FLOPs.`,
    );
  console.log(
    `\nFrontier (cooled-down loss by total FLOPs): ${frontier.map((p) => `${p.flops.toExponential(2)} → ${p.loss.toFixed(4)}`).join(", ")}`,
  );
}

/**
 * The report of a set of runs: FLOPs to reach a validation loss, savings of each group over the baseline
 * across seeds, and the loss penalty of each growth. Pure functions over `RunResult`s (see types.ts).
 */
import type { CurvePoint, RunResult } from "./types.js";

/** A validation loss the report measures the FLOPs to reach. */
export interface ReportTarget {
  /** e.g. "baseline mean final", "baseline worst final", "loss 3.5". */
  label: string;
  loss: number;
}

/** The FLOPs one run needed to reach one target. */
export interface SeedReach {
  name: string;
  seed: number;
  /** `flopsToReach(points, target.loss)`: null when the run never reached the target for good. */
  flops: number | null;
}

/** A non-baseline group's FLOPs saving over the baseline at one target. */
export interface Saving {
  /** 1 − mean(group)/mean(baseline), each mean over the seeds that reached the target; null if either has none. */
  saving: number | null;
  /** Per seed of the group (in seed order): 1 − flops(seed)/mean(baseline); null where the seed did not reach it (or no baseline seed did). */
  perSeed: (number | null)[];
  /** The smallest and largest of the non-null per-seed savings; null when there are none. */
  min: number | null;
  max: number | null;
  /**
   * True when every seed of the group reached the target and the group's largest per-seed FLOPs is below the
   * baseline's smallest, a baseline seed that never reached it counting as infinite FLOPs: every seed of the
   * group beat every baseline seed. A plain, bootstrap-free statement that the saving is outside the seed noise.
   */
  outsideNoise: boolean;
}

/** One group at one target. */
export interface GroupReach {
  target: ReportTarget;
  /** One entry per run of the group, in seed order. */
  perSeed: SeedReach[];
  /** Mean FLOPs over the seeds that reached the target; null when none did. */
  mean: number | null;
  reached: number;
  total: number;
  /** Against the baseline; null for the baseline group itself. */
  saving: Saving | null;
}

/** The loss penalty of one growth of one staged run (see `growthPenalty`). */
export interface GrowthPenalty {
  /** The stage the growth starts. */
  stage: number;
  operator: string;
  /** The small model's validation loss just before the growth. */
  before: number;
  /**
   * The largest validation loss of the new stage minus `before`, over all the stage's points (a re-warmed LR
   * can raise the loss after the first points were fine, so the rise is not cut at the first recovery):
   * signed, so negative when the stage never rises above `before`; Infinity if a loss is not finite. Null when
   * the stage has no validation point.
   */
  maxRise: number | null;
  /** max(0, maxRise); null with maxRise. */
  penalty: number | null;
  /**
   * FLOPs from the growth to the first point after the largest rise that is back at or below `before`
   * (0 when the stage never rises above it); null if it never gets back within the stage.
   */
  recoverFlops: number | null;
  /** Likewise in global optimizer steps. */
  recoverSteps: number | null;
}

/** One growth (by index) of a group, over the group's runs that have it. */
export interface GroupGrowth {
  /** The index into each run's `growths` (0 for the first growth). */
  index: number;
  /** The stage it starts (from the first run having it). */
  stage: number;
  /** The operator; the distinct operators joined by "/" if the seeds differ. */
  operator: string;
  /** How many of the group's runs have this growth. */
  runs: number;
  /** Mean of the non-null maxRise / penalty over those runs; null when none. */
  meanMaxRise: number | null;
  meanPenalty: number | null;
  /** Mean recoverFlops / recoverSteps over the runs that recovered; null when none did. */
  meanRecoverFlops: number | null;
  meanRecoverSteps: number | null;
  /** How many of those runs recovered. */
  recovered: number;
  /** Each run's penalty, in seed order. */
  perRun: (GrowthPenalty & { name: string; seed: number })[];
  /** The dynamics after the growth against the baseline at equal loss, one entry per window of the report; empty for the baseline group. */
  dynamics: GroupDynamics[];
}

/** One baseline seed's side of a growth's dynamics (see `growthDynamics`). */
export interface BaselineDynamics {
  name: string;
  seed: number;
  /** C_b: the FLOPs at which the baseline's smoothed curve first reaches L_g; null if it never does or starts below it. */
  flops: number | null;
  /** L_b(C_b + W) on the smoothed curve; null when C_b is null or C_b + W is past the curve's last point. */
  lossAfter: number | null;
  /** D_b = L_g − L_b(C_b + W); null with lossAfter. */
  decrease: number | null;
  /** D_grown / D_b; null when either is null or D_b ≤ 0. */
  ratio: number | null;
  /** Δ = L_grown(C_g + W) − L_b(C_b + W) in nats (negative: the grown model is ahead); null when either is null. */
  delta: number | null;
}

/** How one staged run continues after one growth, against each baseline seed at the same loss (see `growthDynamics`). */
export interface GrowthDynamics {
  /** W as a fraction of the run's budget, and in FLOPs. */
  window: number;
  windowFlops: number;
  /** C_g: the run's FLOPs at the growth. */
  flops: number;
  /** L_g: the smoothed validation loss just before the growth; null when it has none. */
  loss: number | null;
  /** L_grown(C_g + W) on the new stage's smoothed curve; null when C_g + W is outside the stage's points. */
  lossAfter: number | null;
  /** D_grown = L_g − L_grown(C_g + W); null with lossAfter. */
  decrease: number | null;
  /** One entry per baseline run, in seed order. */
  perBaseline: BaselineDynamics[];
  /** The non-null ratios / deltas over the baseline seeds; null when there are none. */
  ratio: Spread | null;
  delta: Spread | null;
}

/** One growth of a group, one window: the group's `GrowthDynamics` summarized over its seeds. */
export interface GroupDynamics {
  /** W as a fraction of the runs' budget. */
  window: number;
  /** How many of the group's runs have this growth. */
  runs: number;
  /** Mean L_g over those runs that have one; null when none. */
  meanLoss: number | null;
  /**
   * mean: the mean over the group's runs of each run's mean over the baseline seeds; min, max: over every
   * (run, baseline seed) pair. Null when no run has a value.
   */
  ratio: Spread | null;
  delta: Spread | null;
  /** How many runs have a ratio / a delta. */
  ratioRuns: number;
  deltaRuns: number;
  /** Each run's dynamics, in seed order. */
  perRun: (GrowthDynamics & { name: string; seed: number })[];
}

/** min, mean and max of some values. */
export interface Spread {
  mean: number;
  min: number;
  max: number;
}

/** One group of runs (runs that differ only in their seed). */
export interface GroupReport {
  group: string;
  baseline: boolean;
  /** The group's runs, in seed order. */
  runs: { name: string; seed: number; done: boolean }[];
  /** How many of them reached their budget. */
  done: number;
  /** The last validation loss of each run that has a point; null when none has. */
  finalLoss: Spread | null;
  /** Mean over the runs that have a point of the FLOPs at their last validation point; null when none has. */
  meanTotalFlops: number | null;
  /**
   * After the spec's common cooldown (result.json `final`), over the runs that finished it: the loss on the final
   * validation blocks, its difference from the baseline's mean (null for the baseline group), the loss on the
   * same blocks before the cooldown, the cooldown's steps and the blocks; null when no run has one.
   */
  cooled: {
    runs: number;
    valLoss: Spread;
    vsBaseline: number | null;
    before: Spread;
    steps: number;
    blocks: number;
    /** Mean FLOPs of the runs with their cooldown. */
    flops: number;
    /**
     * Against the baseline's cooled-down frontier (spec cooldown.frontier): the FLOPs the model from scratch needs to
     * reach this group's mean cooled-down loss (its cooldown included), and the saving 1 − flops / that; per seed too.
     * `extrapolated`: the loss lies beyond the frontier's last point, so its last two points were extended (a power
     * law in FLOPs). Null without a frontier of at least two points, or for a loss above its first point.
     */
    frontier: { flops: number; saving: number; perSeed: (number | null)[]; extrapolated: boolean } | null;
  } | null;
  /** One entry per target of the report, in the report's target order. */
  reach: GroupReach[];
  /** One entry per growth index that any run of the group has. */
  growths: GroupGrowth[];
}

/** What `compareRuns` returns. */
export interface RunReport {
  /** The baseline group's name. */
  baseline: string;
  targets: ReportTarget[];
  /** The dynamics windows W, as fractions of each run's budget. */
  windows: number[];
  /** The baseline group first, then the others in name order. */
  groups: GroupReport[];
  /** The baseline's cooled-down frontier (cooledFrontier), empty without one. */
  frontier: FrontierPoint[];
}

/** Options of `compareRuns`. */
export interface CompareOptions {
  /** The baseline group's name (default "baseline"). */
  baseline?: string;
  /** Target losses; default: the baseline's mean final and worst (largest) final validation loss. */
  losses?: number[];
  /** The dynamics windows W as fractions of each staged run's budget (default `DEFAULT_DYNAMICS_WINDOWS`). */
  windows?: number[];
}

/**
 * The default dynamics windows, as fractions of the run's budget: 10% the main one; 5% still fits between two
 * close growths and in the last stretch of a late one; 25% shows what a short window hides (a grown model that
 * starts like the target and slows later, or catches up).
 */
export const DEFAULT_DYNAMICS_WINDOWS: readonly number[] = [0.05, 0.1, 0.25];

const mean = (xs: readonly number[]): number | null => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : null);
const present = <T>(xs: readonly (T | null)[]): T[] => xs.filter((x): x is T => x !== null);

/** Throw unless the points' FLOPs are finite and non-decreasing. */
function checkPoints(points: readonly CurvePoint[], what = "points"): void {
  for (let i = 0; i < points.length; i++) {
    const f = points[i]!.flops;
    if (!Number.isFinite(f)) throw new Error(`${what}: point ${i} has non-finite flops (${f})`);
    if (i > 0 && f < points[i - 1]!.flops) {
      throw new Error(`${what}: points are not in increasing flops order (point ${i}: ${f} < point ${i - 1}: ${points[i - 1]!.flops})`);
    }
  }
}

/**
 * The FLOPs at which a validation curve reaches `loss` for good (a sustained crossing): with i the first index
 * such that points[i].valLoss <= loss and every later point is <= loss too, the FLOPs linearly interpolated
 * (FLOPs against valLoss) between points[i-1] and points[i] at `loss`; points[0].flops when i is 0, and
 * points[i].flops when points[i-1].valLoss is not finite. A dip below `loss` that later goes back above it
 * does not count; a non-finite (NaN) loss counts as above. Null when the curve does not end at or below `loss`.
 * Throws when the points are not in non-decreasing FLOPs order.
 */
export function flopsToReach(points: readonly CurvePoint[], loss: number): number | null {
  checkPoints(points);
  if (Number.isNaN(loss)) throw new Error("flopsToReach: the target loss is NaN");
  let i = points.length;
  while (i > 0 && points[i - 1]!.valLoss <= loss) i--;
  if (i === points.length) return null;
  const b = points[i]!;
  if (i === 0) return b.flops;
  const a = points[i - 1]!;
  if (!Number.isFinite(a.valLoss)) return b.flops;
  const t = (a.valLoss - loss) / (a.valLoss - b.valLoss); // a.valLoss > loss >= b.valLoss: in (0, 1]
  return a.flops + t * (b.flops - a.flops);
}

/**
 * The loss penalty of growth `growthIndex` of a staged run: how far the validation loss of the new stage
 * (the points with stage === growth.stage, in order) rises above the loss just before the growth, and how
 * long (FLOPs, global steps from the growth) until the first point back at or below it. See `GrowthPenalty`.
 */
export function growthPenalty(result: RunResult, growthIndex: number): GrowthPenalty {
  const g = result.growths[growthIndex];
  if (!g) throw new Error(`${result.name}: no growth #${growthIndex} (the run has ${result.growths.length})`);
  const before = g.valLossBefore;
  const stagePoints = result.points.filter((p) => p.stage === g.stage);
  let maxRise: number | null = null;
  let peak = -1;
  stagePoints.forEach((p, i) => {
    const rise = Number.isFinite(p.valLoss) ? p.valLoss - before : Infinity;
    if (maxRise === null || rise > maxRise) {
      maxRise = rise;
      peak = i;
    }
  });
  const rise = maxRise as number | null;
  const recovered = rise === null ? null : rise <= 0 ? g : (stagePoints.slice(peak + 1).find((p) => p.valLoss <= before) ?? null);
  return {
    stage: g.stage,
    operator: g.operator,
    before,
    maxRise: rise,
    penalty: rise === null ? null : Math.max(0, rise),
    recoverFlops: recovered ? recovered.flops - g.flops : null,
    recoverSteps: recovered ? recovered.globalStep - g.globalStep : null,
  };
}

/**
 * A validation curve smoothed for the dynamics: the points with a finite loss, each loss replaced by the value
 * at the point's FLOPs of the least-squares line (loss against FLOPs) through the points within ±`halfWidth`
 * FLOPs of it (the point included; their mean when they all have the same FLOPs).
 *
 * Why a local linear fit over a FLOPs window rather than a moving average of a few points: the line is exact on
 * a locally straight curve, also one-sided at a curve's ends (a stage's end, the end of a run), where a moving
 * average lags by half its width times the slope; and a width in FLOPs smooths every curve over the same compute
 * whatever its evaluation interval (a grown model evaluates every N steps of more FLOPs than the small one, so
 * k points would span different amounts of compute). On a convex curve it reads high by about
 * curvature × halfWidth² / 6, the same for the two curves compared at equal loss.
 * Throws when the points are not in non-decreasing FLOPs order.
 */
export function smoothCurve(points: readonly CurvePoint[], halfWidth: number): CurvePoint[] {
  checkPoints(points);
  if (!(halfWidth >= 0)) throw new Error(`smoothCurve: the half-width must be ≥ 0, got ${halfWidth}`);
  const pts = points.filter((p) => Number.isFinite(p.valLoss));
  let lo = 0;
  let hi = 0;
  return pts.map((p) => {
    while (pts[lo]!.flops < p.flops - halfWidth) lo++;
    while (hi < pts.length && pts[hi]!.flops <= p.flops + halfWidth) hi++;
    return { ...p, valLoss: lineAt(pts.slice(lo, hi), p.flops) };
  });
}

/** The least-squares line of valLoss against flops through `points` (at least one), at `flops`. */
function lineAt(points: readonly CurvePoint[], flops: number): number {
  const mx = mean(points.map((p) => p.flops))!;
  const my = mean(points.map((p) => p.valLoss))!;
  let sxx = 0;
  let sxy = 0;
  for (const p of points) {
    sxx += (p.flops - mx) ** 2;
    sxy += (p.flops - mx) * (p.valLoss - my);
  }
  return sxx > 0 ? my + (sxy / sxx) * (flops - mx) : my;
}

/**
 * The loss of a curve at `flops`, linearly interpolated in FLOPs between the points around it; null outside
 * [first point, last point] (never extrapolated) or without points. Throws when the points are not in
 * non-decreasing FLOPs order.
 */
export function lossAtFlops(points: readonly CurvePoint[], flops: number): number | null {
  checkPoints(points);
  const i = points.findIndex((p) => p.flops >= flops);
  if (i < 0 || !(flops >= points[0]!.flops)) return null;
  const b = points[i]!;
  if (b.flops === flops || i === 0) return b.valLoss;
  const a = points[i - 1]!;
  return a.valLoss + ((flops - a.flops) / (b.flops - a.flops)) * (b.valLoss - a.valLoss);
}

/**
 * The FLOPs at which a curve first reaches `loss` (unlike `flopsToReach`, a later rise above it does not
 * matter): with i the first index with points[i].valLoss <= loss, the FLOPs linearly interpolated between
 * points[i-1] and points[i] (the inverse of `lossAtFlops`), points[i].flops when points[i-1]'s loss is not
 * finite. Null when the curve never reaches `loss`, or starts below it (the crossing is before the curve).
 */
export function flopsToFirstReach(points: readonly CurvePoint[], loss: number): number | null {
  checkPoints(points);
  const i = points.findIndex((p) => p.valLoss <= loss);
  if (i < 0) return null;
  const b = points[i]!;
  if (i === 0) return b.valLoss === loss ? b.flops : null;
  const a = points[i - 1]!;
  if (!Number.isFinite(a.valLoss)) return b.flops;
  return a.flops + ((a.valLoss - loss) / (a.valLoss - b.valLoss)) * (b.flops - a.flops);
}

/**
 * How staged run `result` continues after growth `growthIndex`, against each baseline run at the same loss,
 * over a window of W = `window` × result.budgetFlops FLOPs. Every curve is smoothed with `smoothCurve` over
 * ±W/4 (the smoothing at C and at C + W then never share a point) and read with `lossAtFlops`:
 *
 * - L_g: the smoothed curve of the stage before the growth (its points only) at its last point, the loss just
 *   before the growth at C_g = growth.flops; growth.valLossBefore when that stage has no point;
 * - D_grown = L_g − L_grown(C_g + W), on the new stage's own points (a window past the stage's end — the next
 *   growth or the end of the run — gives null);
 * - per baseline run b: C_b = `flopsToFirstReach`(b's smoothed curve, L_g), D_b = L_g − L_b(C_b + W),
 *   ratio = D_grown / D_b (1: the grown model continues exactly like the target from scratch at equal loss),
 *   Δ = L_grown(C_g + W) − L_b(C_b + W).
 *
 * Throws when the run has no such growth or the window is not a positive number.
 */
export function growthDynamics(result: RunResult, growthIndex: number, baselines: readonly RunResult[], window: number): GrowthDynamics {
  const g = result.growths[growthIndex];
  if (!g) throw new Error(`${result.name}: no growth #${growthIndex} (the run has ${result.growths.length})`);
  if (!(window > 0) || !Number.isFinite(window)) throw new Error(`the dynamics window must be a positive fraction of the budget, got ${window}`);
  const w = window * result.budgetFlops;
  const smooth = (points: readonly CurvePoint[]) => smoothCurve(points, w / 4);
  const before = smooth(result.points.filter((p) => p.stage === g.stage - 1)).at(-1)?.valLoss ?? g.valLossBefore;
  const loss = Number.isFinite(before) ? before : null;
  const lossAfter = lossAtFlops(smooth(result.points.filter((p) => p.stage === g.stage)), g.flops + w);
  const decrease = loss === null || lossAfter === null ? null : loss - lossAfter;
  const perBaseline = baselines.map((b): BaselineDynamics => {
    const curve = smooth(b.points);
    const flops = loss === null ? null : flopsToFirstReach(curve, loss);
    const bAfter = flops === null ? null : lossAtFlops(curve, flops + w);
    const bDecrease = bAfter === null ? null : loss! - bAfter;
    return {
      name: b.name,
      seed: b.seed,
      flops,
      lossAfter: bAfter,
      decrease: bDecrease,
      ratio: decrease === null || bDecrease === null || !(bDecrease > 0) ? null : decrease / bDecrease,
      delta: lossAfter === null || bAfter === null ? null : lossAfter - bAfter,
    };
  });
  return {
    window,
    windowFlops: w,
    flops: g.flops,
    loss,
    lossAfter,
    decrease,
    perBaseline,
    ratio: spreadOf(present(perBaseline.map((b) => b.ratio))),
    delta: spreadOf(present(perBaseline.map((b) => b.delta))),
  };
}

/** Per-run spreads summarized over runs: the mean of the means, the min of the mins, the max of the maxes. */
function spreadOfSpreads(xs: readonly Spread[]): Spread | null {
  if (!xs.length) return null;
  return { mean: mean(xs.map((x) => x.mean))!, min: Math.min(...xs.map((x) => x.min)), max: Math.max(...xs.map((x) => x.max)) };
}

function groupDynamics(having: readonly RunResult[], k: number, baselines: readonly RunResult[], window: number): GroupDynamics {
  const perRun = having.map((r) => ({ name: r.name, seed: r.seed, ...growthDynamics(r, k, baselines, window) }));
  const ratios = present(perRun.map((d) => d.ratio));
  const deltas = present(perRun.map((d) => d.delta));
  return {
    window,
    runs: perRun.length,
    meanLoss: mean(present(perRun.map((d) => d.loss))),
    ratio: spreadOfSpreads(ratios),
    delta: spreadOfSpreads(deltas),
    ratioRuns: ratios.length,
    deltaRuns: deltas.length,
    perRun,
  };
}

function spreadOf(xs: readonly number[]): Spread | null {
  if (!xs.length) return null;
  return { mean: mean(xs)!, min: Math.min(...xs), max: Math.max(...xs) };
}

/** The growths of a group's runs by index; their dynamics against `baselines` per window (none when `baselines` is null). */
function groupGrowths(runs: readonly RunResult[], baselines: readonly RunResult[] | null, windows: readonly number[]): GroupGrowth[] {
  const count = Math.max(0, ...runs.map((r) => r.growths.length));
  const out: GroupGrowth[] = [];
  for (let k = 0; k < count; k++) {
    const having = runs.filter((r) => r.growths.length > k);
    const perRun = having.map((r) => ({ name: r.name, seed: r.seed, ...growthPenalty(r, k) }));
    const recoveredRuns = perRun.filter((p) => p.recoverFlops !== null);
    out.push({
      index: k,
      stage: perRun[0]!.stage,
      operator: [...new Set(perRun.map((p) => p.operator))].join("/"),
      runs: perRun.length,
      meanMaxRise: mean(present(perRun.map((p) => p.maxRise))),
      meanPenalty: mean(present(perRun.map((p) => p.penalty))),
      meanRecoverFlops: mean(present(recoveredRuns.map((p) => p.recoverFlops))),
      meanRecoverSteps: mean(present(recoveredRuns.map((p) => p.recoverSteps))),
      recovered: recoveredRuns.length,
      perRun,
      dynamics: baselines ? windows.map((w) => groupDynamics(having, k, baselines, w)) : [],
    });
  }
  return out;
}

/**
 * Compare groups of runs (runs of a group differ only in their seed) with the baseline group: for each target
 * loss, each run's FLOPs to reach it (`flopsToReach`), the group mean over the seeds that reached it, and each
 * other group's saving (see `Saving`); per group, the final validation loss, the mean total FLOPs (at the last
 * validation point) and the penalty of each growth (see `growthPenalty`); for each growth of the non-baseline
 * groups, its dynamics against the baseline runs at equal loss for each of `options.windows` (see
 * `growthDynamics`, `GroupDynamics`).
 *
 * Targets: `options.losses` (labelled "loss <value>"), else the mean of the baseline runs' final validation
 * losses ("baseline mean final", which the worse baseline seeds may not reach) and the largest of them
 * ("baseline worst final", which every baseline seed reaches); only the first when the two are equal.
 * Throws when there is no baseline group (naming the groups present), when a group has a seed twice, when the
 * default targets are asked for and no baseline run has a validation point, when a window is not a positive
 * number, or when a run's points are not in increasing FLOPs order.
 */
export function compareRuns(results: readonly RunResult[], options: CompareOptions = {}): RunReport {
  const baseline = options.baseline ?? "baseline";
  const byGroup = new Map<string, RunResult[]>();
  for (const r of results) {
    checkPoints(r.points, r.name);
    let runs = byGroup.get(r.group);
    if (!runs) byGroup.set(r.group, (runs = []));
    runs.push(r);
  }
  const names = [...byGroup.keys()].sort();
  if (!byGroup.has(baseline)) {
    throw new Error(`no baseline group "${baseline}" among the results (groups: ${names.length ? names.join(", ") : "none"})`);
  }
  for (const [group, runs] of byGroup) {
    runs.sort((a, b) => a.seed - b.seed);
    for (let i = 1; i < runs.length; i++) {
      if (runs[i]!.seed === runs[i - 1]!.seed)
        throw new Error(`group "${group}" has seed ${runs[i]!.seed} twice (${runs[i - 1]!.name}, ${runs[i]!.name})`);
    }
  }
  const windows = [...(options.windows?.length ? options.windows : DEFAULT_DYNAMICS_WINDOWS)];
  for (const w of windows) {
    if (!(w > 0) || !Number.isFinite(w)) throw new Error(`dynamics window ${w} is not a positive fraction of the budget`);
  }
  const finalOf = (r: RunResult): number | null => (r.points.length ? r.points[r.points.length - 1]!.valLoss : null);
  const baseFrontier = cooledFrontier(byGroup.get(baseline)!);

  let targets: ReportTarget[];
  if (options.losses?.length) {
    targets = options.losses.map((loss) => {
      if (!Number.isFinite(loss)) throw new Error(`target loss ${loss} is not a finite number`);
      return { label: `loss ${loss}`, loss };
    });
  } else {
    const finals = present(byGroup.get(baseline)!.map(finalOf));
    if (!finals.length) throw new Error(`no run of the baseline group "${baseline}" has a validation point`);
    const meanFinal = mean(finals)!;
    const worst = Math.max(...finals);
    targets = [{ label: "baseline mean final", loss: meanFinal }];
    if (worst !== meanFinal) targets.push({ label: "baseline worst final", loss: worst });
  }

  const reachOf = (runs: readonly RunResult[], target: ReportTarget): Omit<GroupReach, "saving"> => {
    const perSeed = runs.map((r) => ({ name: r.name, seed: r.seed, flops: flopsToReach(r.points, target.loss) }));
    const got = present(perSeed.map((s) => s.flops));
    return { target, perSeed, mean: mean(got), reached: got.length, total: perSeed.length };
  };
  const baseReach = targets.map((t) => reachOf(byGroup.get(baseline)!, t));

  const groups: GroupReport[] = [baseline, ...names.filter((n) => n !== baseline)].map((group) => {
    const runs = byGroup.get(group)!;
    const isBase = group === baseline;
    const reach: GroupReach[] = targets.map((target, t) => {
      const base = baseReach[t]!;
      if (isBase) return { ...base, saving: null };
      const r = reachOf(runs, target);
      const perSeed = r.perSeed.map((s) => (s.flops === null || base.mean === null ? null : 1 - s.flops / base.mean));
      const got = present(perSeed);
      const baseMin = base.reached === base.total ? Math.min(...present(base.perSeed.map((s) => s.flops))) : Infinity;
      const groupMax = r.reached === r.total ? Math.max(...present(r.perSeed.map((s) => s.flops))) : Infinity;
      return {
        ...r,
        saving: {
          saving: r.mean === null || base.mean === null ? null : 1 - r.mean / base.mean,
          perSeed,
          min: got.length ? Math.min(...got) : null,
          max: got.length ? Math.max(...got) : null,
          outsideNoise: r.total > 0 && groupMax < baseMin,
        },
      };
    });
    const withPoints = runs.filter((r) => r.points.length);
    const finals = present(runs.map((r) => r.final ?? null));
    const cooledMean = (rs: readonly RunResult[]) => mean(present(rs.map((r) => r.final?.valLoss ?? null)));
    const baseCooled = cooledMean(byGroup.get(baseline)!);
    const meanCooledFlops = finals.length ? mean(finals.map((f) => f.flops))! : 0;
    const onFrontier = (loss: number, flops: number) => {
      const at = frontierFlops(baseFrontier, loss);
      return at ? { ...at, saving: 1 - flops / at.flops } : null;
    };
    const groupOnFrontier = isBase || !finals.length ? null : onFrontier(mean(finals.map((f) => f.valLoss))!, meanCooledFlops);
    return {
      group,
      baseline: isBase,
      runs: runs.map((r) => ({ name: r.name, seed: r.seed, done: r.done })),
      done: runs.filter((r) => r.done).length,
      finalLoss: spreadOf(present(runs.map(finalOf))),
      meanTotalFlops: mean(withPoints.map((r) => r.points[r.points.length - 1]!.flops)),
      cooled: finals.length
        ? {
            runs: finals.length,
            valLoss: spreadOf(finals.map((f) => f.valLoss))!,
            before: spreadOf(finals.map((f) => f.valLossBefore))!,
            vsBaseline: isBase || baseCooled === null ? null : cooledMean(runs)! - baseCooled,
            steps: finals[0]!.steps,
            blocks: finals[0]!.blocks,
            flops: meanCooledFlops,
            frontier: groupOnFrontier && {
              flops: groupOnFrontier.flops,
              saving: groupOnFrontier.saving,
              extrapolated: groupOnFrontier.extrapolated,
              perSeed: runs.map((r) => (r.final ? (onFrontier(r.final.valLoss, r.final.flops)?.saving ?? null) : null)),
            },
          }
        : null,
      reach,
      growths: groupGrowths(runs, isBase ? null : byGroup.get(baseline)!, windows),
    };
  });
  return { baseline, targets, windows, groups, frontier: baseFrontier };
}

/** One point of a cooled-down frontier: total FLOPs (the cooldown included) and the loss after the cooldown. */
export interface FrontierPoint {
  flops: number;
  loss: number;
}

/**
 * The cooled-down frontier of runs of one model from scratch (the baseline): each run's `frontier` points and its
 * `final`, averaged over the runs point by point (the runs of one spec have the same points), in FLOPs order. Runs
 * without all of them are left out; empty when none has a frontier.
 */
export function cooledFrontier(runs: readonly RunResult[]): FrontierPoint[] {
  const full = runs.filter((r) => r.final && r.frontier?.length);
  if (!full.length) return [];
  const n = Math.max(...full.map((r) => r.frontier!.length));
  const all = full.filter((r) => r.frontier!.length === n).map((r) => [...r.frontier!, r.final!]);
  return all[0]!
    .map((_, i) => ({
      flops: mean(all.map((p) => p[i]!.flops))!,
      loss: mean(all.map((p) => p[i]!.valLoss))!,
    }))
    .sort((a, b) => a.flops - b.flops);
}

/**
 * The FLOPs at which a cooled-down frontier reaches `loss`: its first crossing, linear in log FLOPs between the two
 * points around it; beyond its last point, the last two points extended as a power law (`extrapolated`). Null for a
 * loss above its first point, or with fewer than two points.
 */
export function frontierFlops(frontier: readonly FrontierPoint[], loss: number): { flops: number; extrapolated: boolean } | null {
  if (frontier.length < 2 || !(loss <= frontier[0]!.loss)) return null;
  for (let i = 1; i < frontier.length; i++) {
    const a = frontier[i - 1]!,
      b = frontier[i]!;
    if (a.loss >= loss && b.loss <= loss) {
      const t = a.loss === b.loss ? 0 : (a.loss - loss) / (a.loss - b.loss);
      return { flops: Math.exp(Math.log(a.flops) + t * (Math.log(b.flops) - Math.log(a.flops))), extrapolated: false };
    }
  }
  const a = frontier.at(-2)!,
    b = frontier.at(-1)!;
  if (!(b.loss < a.loss)) return null;
  const slope = (Math.log(b.loss) - Math.log(a.loss)) / (Math.log(b.flops) - Math.log(a.flops)); // < 0
  return { flops: Math.exp(Math.log(b.flops) + (Math.log(loss) - Math.log(b.loss)) / slope), extrapolated: true };
}

/** FLOPs as `3.21e13`. */
export function formatFlops(n: number): string {
  return n.toExponential(2).replace("e+", "e");
}

const signedPct = (f: number) => `${f < 0 ? "-" : ""}${Math.abs(f * 100).toFixed(1)}`;
/** A loss difference in nats, signed: +0.0123, -0.0040. */
const signed = (x: number) => {
  const t = x.toFixed(4);
  return t === "-0.0000" ? "+0.0000" : x >= 0 ? `+${t}` : t;
};
/** A window fraction as a percentage: 0.1 → 10%, 0.025 → 2.5%. */
const windowPct = (w: number) => `${Number((w * 100).toFixed(2))}%`;
const cell = (s: string) => s.replace(/\|/g, "\\|");

function table(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const line = (cells: readonly string[]) => `| ${cells.map(cell).join(" | ")} |`;
  return [line(header), line(header.map(() => "---")), ...rows.map(line)].join("\n");
}

/**
 * A Markdown report (pipe tables, pasteable into a README): one row per group with its runs, final
 * validation loss (mean ± half the range over seeds), mean FLOPs to each target and the saving against the
 * baseline with its per-seed range, then a table of the growth penalties and one of the growths' dynamics at
 * equal loss (ratio and Δ per window, mean [min, max]), each followed by a line of definitions.
 */
export function formatReport(report: RunReport): string {
  const header = ["group", "runs", "final val loss"];
  for (const t of report.targets) header.push(`FLOPs to ${t.loss.toFixed(4)} (${t.label})`, "saving vs baseline");
  const rows = report.groups.map((g) => {
    const runs = `${g.runs.length}${g.done < g.runs.length ? ` (${g.done} done)` : ""}`;
    const fl = g.finalLoss;
    const row = [g.group, runs, fl ? `${fl.mean.toFixed(4)} ± ${((fl.max - fl.min) / 2).toFixed(4)}` : "—"];
    for (const r of g.reach) {
      const count = r.reached < r.total ? ` (${r.reached}/${r.total} reached)` : "";
      row.push(r.mean === null ? `never (0/${r.total})` : `${formatFlops(r.mean)}${count}`);
      const s = r.saving;
      if (!s) row.push("(baseline)");
      else if (s.saving === null) row.push(s.outsideNoise ? "only this group reached it *" : "—");
      else row.push(`${signedPct(s.saving)}% [${signedPct(s.min!)}, ${signedPct(s.max!)}]${s.outsideNoise ? " *" : ""}`);
    }
    return row;
  });
  const parts = [
    table(header, rows),
    "",
    `Saving = 1 − mean FLOPs(group) / mean FLOPs(${report.baseline}), means over the seeds that reached the target (for good: ` +
      "the validation loss stays at or below it); [min, max] = per-seed savings against the baseline mean; " +
      "* = every seed of the group reached it with fewer FLOPs than every baseline seed.",
  ];
  const cooled = report.groups.filter((g) => g.cooled);
  if (cooled.length) {
    const c0 = cooled[0]!.cooled!;
    parts.push(
      "",
      table(
        [
          "group",
          "runs cooled down",
          "val loss after the cooldown",
          `vs ${report.baseline}`,
          "before the cooldown (same blocks)",
          "FLOPs with it",
          `${report.baseline}'s FLOPs to that loss`,
          "saving [per seed]",
        ],
        cooled.map((g) => {
          const c = g.cooled!,
            sp = (x: Spread) => `${x.mean.toFixed(4)} [${x.min.toFixed(4)}, ${x.max.toFixed(4)}]`;
          const f = c.frontier;
          const pct = (x: number | null) => (x === null ? "—" : `${signedPct(x)}%`);
          return [
            g.group,
            `${c.runs}/${g.runs.length}`,
            sp(c.valLoss),
            c.vsBaseline === null ? (g.baseline ? "(baseline)" : "—") : signed(c.vsBaseline),
            sp(c.before),
            formatFlops(c.flops),
            f ? `${formatFlops(f.flops)}${f.extrapolated ? " (extrapolated)" : ""}` : "—",
            f ? `${pct(f.saving)} [${f.perSeed.map(pct).join(", ")}]` : "—",
          ];
        }),
      ),
      "",
      `After the budget every run trained ${c0.steps} more steps with the LR decaying linearly to 0 and was evaluated on ` +
        `${c0.blocks} validation blocks; mean [min, max] over the runs that finished it. ` +
        (report.frontier.length >= 2
          ? `The ${report.baseline}'s FLOPs to a loss come from its cooled-down frontier (the same cooldown from copies at ` +
            `${report.frontier.map((p) => formatFlops(p.flops)).join(", ")} FLOPs with it: ${report.frontier.map((p) => p.loss.toFixed(4)).join(", ")}), ` +
            "linear in log FLOPs between its points and extended as a power law beyond the last; saving = 1 − FLOPs(group) / those FLOPs."
          : "No cooled-down frontier of the baseline (spec cooldown.frontier): no saving is computed from these losses."),
    );
  }
  const growthRows: string[][] = [];
  for (const g of report.groups) {
    for (const gr of g.growths) {
      const recover =
        gr.meanRecoverFlops === null
          ? "never"
          : `${formatFlops(gr.meanRecoverFlops)}${gr.recovered < gr.runs ? ` (${gr.recovered}/${gr.runs} recovered)` : ""}`;
      const rise = gr.meanMaxRise === null ? "—" : signed(gr.meanMaxRise);
      growthRows.push([g.group, String(gr.index + 1), gr.operator, String(gr.runs), rise, recover]);
    }
  }
  if (growthRows.length) {
    parts.push(
      "",
      table(["group", "growth #", "operator", "runs", "max rise (nats)", "FLOPs to recover"], growthRows),
      "",
      "Max rise = the new stage's highest validation loss minus the loss just before the growth, mean over seeds; " +
        "FLOPs to recover = from the growth to the first validation point after that peak back at or below the loss " +
        "before (0 when it never rose), mean over the seeds that recovered.",
    );
  }
  const dynamicsRows: string[][] = [];
  for (const g of report.groups) {
    for (const gr of g.growths) {
      if (!gr.dynamics.length) continue;
      const row = [g.group, String(gr.index + 1), gr.operator, gr.dynamics[0]!.meanLoss === null ? "—" : gr.dynamics[0]!.meanLoss.toFixed(4)];
      for (const d of gr.dynamics) {
        const of = (n: number) => (n < d.runs ? ` (${n}/${d.runs})` : "");
        row.push(d.ratio ? `${d.ratio.mean.toFixed(2)} [${d.ratio.min.toFixed(2)}, ${d.ratio.max.toFixed(2)}]${of(d.ratioRuns)}` : "—");
        row.push(d.delta ? `${signed(d.delta.mean)} [${signed(d.delta.min)}, ${signed(d.delta.max)}]${of(d.deltaRuns)}` : "—");
      }
      dynamicsRows.push(row);
    }
  }
  if (dynamicsRows.length) {
    const header = ["group", "growth #", "operator", "loss at growth"];
    for (const w of report.windows) header.push(`ratio, W ${windowPct(w)}`, `Δ (nats), W ${windowPct(w)}`);
    parts.push(
      "",
      table(header, dynamicsRows),
      "",
      `Dynamics at equal loss: L_g = the loss just before the growth, at C_g FLOPs; C_b = the FLOPs at which a ${report.baseline} run ` +
        "first reaches L_g; ratio = (L_g − L(C_g + W)) / (L_g − L_b(C_b + W)), the grown run's loss decrease over the next W FLOPs " +
        "against the baseline's from the same loss (1 = it continues like the target from scratch); Δ = L(C_g + W) − L_b(C_b + W) " +
        "(negative: the grown run is ahead). W = a fraction of the run's budget; curves smoothed by a linear fit over ±W/4 FLOPs; " +
        "mean over the baseline runs, then over the group's seeds; [min, max] over every (seed, baseline run) pair; " +
        "— : the window runs past the stage's or the baseline's last point.",
    );
  }
  return parts.join("\n") + "\n";
}

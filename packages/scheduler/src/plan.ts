import type { CurvePoint, ScalingLaw } from "./laws.js";
import { THRESHOLDS, detectThreshold } from "./slope.js";

/** Growth operators the planner knows, with the factor each applies to the non-embedding parameters. */
export const GROWTH_FACTORS = Object.freeze({
  /** Width ×2 (hidden, heads, FFN): every d² term ×4. */
  width: 4,
  /** Depth ×2 (layers): ×2. */
  depth: 2,
});
export type GrowthOperator = keyof typeof GROWTH_FACTORS;

/** The optimizer steps of a simulated curve: Python's range(from, to, every) (the seed: 4000..90000 by 10). */
export interface StepGrid {
  from: number;
  to: number;
  every: number;
}
export const DEFAULT_GRID: Readonly<StepGrid> = Object.freeze({ from: 4000, to: 90000, every: 10 });

export function gridSteps(grid: StepGrid = DEFAULT_GRID): number[] {
  const { from, to, every } = grid;
  if (![from, to, every].every(Number.isFinite) || from <= 0 || every <= 0 || to <= from) {
    throw new Error(`invalid step grid ${JSON.stringify(grid)}: need 0 < from < to and every > 0`);
  }
  const steps: number[] = [];
  for (let s = from; s < to; s += every) steps.push(s);
  return steps;
}

/** The simulated learning curve of a model with n parameters under a law (C = 6·N·B_crit(L)·S for Kaplan). */
export function simulateCurve(law: ScalingLaw, n: number, grid: StepGrid = DEFAULT_GRID): CurvePoint[] {
  return law.curve(n, gridSteps(grid));
}

/** Index of the point whose loss is nearest to `loss` (the seed's `min(enumerate(...), key=abs(l − loss))`). */
export function nearestLossIndex(curve: readonly { loss: number }[], loss: number): number {
  let best = 0;
  for (let i = 1; i < curve.length; i++) {
    if (Math.abs(curve[i]!.loss - loss) < Math.abs(curve[best]!.loss - loss)) best = i;
  }
  return best;
}

export interface PlanOptions {
  law: ScalingLaw;
  /** Non-embedding parameters of the final (target) model. */
  targetParams: number;
  /** The growth operators in order, e.g. ["width"] or ["width", "depth"]. */
  operators: readonly GrowthOperator[];
  /** Override the growth thresholds: one number for every stage, or one per operator. */
  thresholdGrow?: number | readonly number[] | undefined;
  /** Override the optimality threshold (default −0.052). */
  thresholdOpt?: number | undefined;
  grid?: StepGrid | undefined;
}

/** One growth event of a plan. */
export interface PlannedGrowth {
  operator: GrowthOperator;
  factor: number;
  paramsBefore: number;
  paramsAfter: number;
  threshold: number;
  /** The step (of the model before growth) at which its slope crosses the threshold: grow here. */
  growAtStep: number;
  lossAtGrowth: number;
  computeAtGrowth: number;
  /** The grown model's step at equal loss: it continues from here. */
  continueAtStep: number;
  /** growAtStep / continueAtStep. */
  constantOp: number;
  /** Compute the grown model would have needed from scratch to reach lossAtGrowth. */
  computeSkipped: number;
}

export interface Plan {
  law: string;
  targetParams: number;
  stages: PlannedGrowth[];
  thresholdOpt: number;
  /** The final model's step at the optimality threshold (the step counter at the end of the staged run). */
  optimalityStep: number;
  lossAtOptimality: number;
  /** Compute of training the target model from scratch to its optimality point. */
  scratchCompute: number;
  /** Compute of the staged run to the same point. */
  stagedCompute: number;
  /** (scratch − staged) / scratch; for one growth the seed's (C_large(equal loss) − C_small(growth)) / C_large(optimality). */
  computeSaving: number;
  /** Optimizer steps the staged run actually takes (sum over stages). */
  stagedSteps: number;
  /** The simulated curves by model size, for plotting. */
  curves: { params: number; points: CurvePoint[] }[];
}

function describeGrid(grid: StepGrid): string {
  return `steps ${grid.from}–${grid.to}`;
}

/**
 * Plan a staged run under a scaling law, with the seed code's procedure on simulated curves: train the
 * smallest model until its slope crosses the operator's threshold; grow; the grown model continues from the
 * step where its own curve has the same loss; repeat; stop the final model at the optimality threshold.
 * Sizes are derived backwards from targetParams (width ÷4, depth ÷2 per stage).
 */
export function planStages(options: PlanOptions): Plan {
  const { law, operators } = options;
  const grid = options.grid ?? DEFAULT_GRID;
  const target = options.targetParams;
  if (!(target > 0) || !Number.isFinite(target)) throw new Error(`target params must be a finite number > 0, got ${target}`);
  if (!operators.length) throw new Error("at least one growth operator is needed (width or depth)");
  for (const op of operators) {
    if (!(op in GROWTH_FACTORS))
      throw new Error(`unknown growth operator ${JSON.stringify(op)} (operators: ${Object.keys(GROWTH_FACTORS).join(", ")})`);
  }
  const thresholdOpt = options.thresholdOpt ?? THRESHOLDS.optimality;
  const growThresholds = operators.map((op, i) => {
    const t = options.thresholdGrow;
    if (t === undefined) return THRESHOLDS[op];
    if (typeof t === "number") return t;
    if (t.length !== operators.length) throw new Error(`${t.length} growth thresholds for ${operators.length} growth stages`);
    return t[i]!;
  });
  for (const t of [...growThresholds, thresholdOpt]) {
    if (!Number.isFinite(t) || t >= 0) throw new Error(`thresholds are negative slopes, got ${t}`);
  }

  // Model sizes, smallest first.
  const sizes = [target];
  for (let i = operators.length - 1; i >= 0; i--) sizes.unshift(sizes[0]! / GROWTH_FACTORS[operators[i]!]);
  const curves = sizes.map((n) => ({ params: n, points: simulateCurve(law, n, grid) }));

  const detect = (k: number, threshold: number, what: string): number => {
    const hit = detectThreshold(curves[k]!.points, threshold);
    if (!hit.reached || !hit.settled) {
      throw new Error(`the ${what} threshold ${threshold} is not reached by the ${fmt(sizes[k]!)}-parameter model within ${describeGrid(grid)}`);
    }
    // simulated curves have no spikes, so the cleaned index is the curve index
    return curves[k]!.points.indexOf(hit.point);
  };

  const stages: PlannedGrowth[] = [];
  let startIndex = 0; // where the current model starts on its own curve
  let staged = 0;
  let stagedSteps = 0;
  for (let k = 0; k < operators.length; k++) {
    const cur = curves[k]!.points;
    const next = curves[k + 1]!.points;
    const g = Math.max(detect(k, growThresholds[k]!, `${operators[k]} growth`), startIndex);
    const at = cur[g]!;
    const e = nearestLossIndex(next, at.loss);
    if (e === 0 && next[0]!.loss < at.loss) {
      throw new Error(
        `the ${fmt(sizes[k + 1]!)}-parameter model is already below the loss at growth (${at.loss.toFixed(4)}) at step ${next[0]!.step}; lower the grid's start`,
      );
    }
    const eq = next[e]!;
    staged += at.compute - cur[startIndex]!.compute * (k === 0 ? 0 : 1);
    stagedSteps += at.step - (k === 0 ? 0 : cur[startIndex]!.step);
    stages.push({
      operator: operators[k]!,
      factor: GROWTH_FACTORS[operators[k]!],
      paramsBefore: sizes[k]!,
      paramsAfter: sizes[k + 1]!,
      threshold: growThresholds[k]!,
      growAtStep: at.step,
      lossAtGrowth: at.loss,
      computeAtGrowth: at.compute,
      continueAtStep: eq.step,
      constantOp: at.step / eq.step,
      computeSkipped: eq.compute,
    });
    startIndex = e;
  }
  const last = curves[curves.length - 1]!.points;
  const o = Math.max(detect(curves.length - 1, thresholdOpt, "optimality"), startIndex);
  staged += last[o]!.compute - last[startIndex]!.compute;
  stagedSteps += last[o]!.step - last[startIndex]!.step;
  const scratch = last[o]!.compute;
  return {
    law: law.name,
    targetParams: target,
    stages,
    thresholdOpt,
    optimalityStep: last[o]!.step,
    lossAtOptimality: last[o]!.loss,
    scratchCompute: scratch,
    stagedCompute: staged,
    computeSaving: (scratch - staged) / scratch,
    stagedSteps,
    curves,
  };
}

/** A single growth; the result's fields are the plan's, flattened with its one stage. */
export function planGrowth(
  options: Omit<PlanOptions, "operators" | "thresholdGrow"> & {
    operator: GrowthOperator;
    thresholdGrow?: number;
  },
): Plan & PlannedGrowth {
  const plan = planStages({ ...options, operators: [options.operator], thresholdGrow: options.thresholdGrow });
  return { ...plan, ...plan.stages[0]! };
}

/**
 * `constant_op` of an operator under a law: the ratio of the small model's step at its growth threshold to the
 * large model's step at equal loss. With Kaplan's law and the seed's thresholds it is ≈ 2.717 for width
 * whatever the target size.
 */
export function constantOp(
  law: ScalingLaw,
  targetParams: number,
  operator: GrowthOperator,
  options: { thresholdGrow?: number; grid?: StepGrid } = {},
): number {
  return planGrowth({ law, targetParams, operator, ...options }).constantOp;
}

function fmt(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toPrecision(3)}B` : n >= 1e6 ? `${(n / 1e6).toPrecision(3)}M` : n.toPrecision(3);
}

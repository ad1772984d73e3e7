/**
 * What a finished (or running) staged or baseline run records in `<out>/<run>/result.json`: everything
 * `staged report` needs, independent of the checkpoints.
 */

/** One validation point of a run's learning curve. */
export interface CurvePoint {
  /** Monotone optimizer-update count over the whole run, all stages together (never goes back). */
  globalStep: number;
  /** The schedule step (progress.step), which a growth may set back (continueAt). */
  step: number;
  /** The stage (0: the first model; k: after k growths). */
  stage: number;
  /** Training FLOPs spent so far by the whole run. */
  flops: number;
  tokens: number;
  valLoss: number;
}

/** One growth of a staged run. */
export interface GrowthEvent {
  /** The stage the growth starts (1 for the first growth). */
  stage: number;
  operator: string;
  /** The growth's options as given to the operator (factor, moments, symmetry, rewarmup, lrScale, ...). */
  options: Record<string, unknown>;
  /** The run's FLOPs and global step when it grew. */
  flops: number;
  globalStep: number;
  /** Why it grew then: "step", "flops", "auto", "plan". */
  timing: string;
  /** The validation loss of the small model just before the growth and of the grown model right after. */
  valLossBefore: number;
  valLossAfter: number;
  /** Non-embedding parameters before and after. */
  paramsBefore: number;
  paramsAfter: number;
}

export interface RunResult {
  format: "staged-run-result";
  version: 1;
  /** e.g. "staged-width-s0", "baseline-s1". */
  name: string;
  /** Runs of one group differ only in their seed: "baseline", "staged", "width", "no-growth" ... */
  group: string;
  seed: number;
  /** Whether the run reached its budget. */
  done: boolean;
  budgetFlops: number;
  points: CurvePoint[];
  growths: GrowthEvent[];
  /** The common cooldown after the budget (spec `cooldown`), when the spec has one and the run finished it. */
  final?: FinalEvaluation | undefined;
  /** Baseline runs with a spec `cooldown.frontier`: the same cooldown from copies of the run at those fractions of the budget. */
  frontier?: FinalEvaluation[] | undefined;
}

/** The end of a run: the LR decayed linearly to 0 over `steps` steps after the budget, then one evaluation. */
export interface FinalEvaluation {
  /** Cooldown steps, and the run's FLOPs when they are done (the budget's plus theirs). */
  steps: number;
  flops: number;
  /** The loss on `blocks` validation blocks (`tokens` tokens) after the cooldown. */
  valLoss: number;
  blocks: number;
  tokens: number;
  /** The loss on the same blocks before the cooldown (at the budget), for the cooldown's own effect. */
  valLossBefore: number;
}

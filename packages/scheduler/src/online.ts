import { SLOPE_WINDOW, SPIKE_TOLERANCE, type LossPoint } from "./slope.js";

export interface OnlineDetectorOptions {
  /** The slope threshold (e.g. THRESHOLDS.width). */
  threshold: number;
  /** Steps of the small model per step of the grown one at equal loss; gives `continueAtStep`. */
  constantOp?: number;
  window?: number;
  spikeTolerance?: number;
}

export interface OnlineDecision<P extends LossPoint = LossPoint> {
  /** Index, among the kept (spike-free) points, of the threshold point: the offline detector's index. */
  index: number;
  /** The threshold point (the offline detector's point). */
  point: P;
  slope: number;
  /** The step of the newest point when the decision was made: grow now, at this step. */
  growAtStep: number;
  /** round(growAtStep / constantOp): the step the grown model continues from (when constantOp is given). */
  continueAtStep?: number;
}

/**
 * The growth detector for a live run: feed it validation points as they arrive; it says when the smoothed
 * log-log slope has risen above the threshold and from which step the grown model continues.
 *
 * It computes what the offline {@link detectThreshold} computes — spike removal, the window-5 running mean of
 * log10(loss), slopes against log10(compute) — evaluating a slope only once the running means it needs are
 * final (window/2 + 1 points later; {@link finish} evaluates the rest with the end reflection). It decides at
 * the first slope above the threshold after the slope has been at or below it. The offline detector starts
 * from the steepest slope of the whole curve instead; the two agree whenever the curve does not get steeper
 * again after the detection point, which is the case for learning curves that flatten.
 */
export class OnlineGrowthDetector<P extends LossPoint = LossPoint> {
  readonly threshold: number;
  readonly constantOp: number | undefined;
  private readonly window: number;
  private readonly tolerance: number;
  private readonly kept: P[] = [];
  private readonly logLoss: number[] = [];
  private prevLoss = Infinity;
  private nextSlope = 0;
  private steepest = Infinity;
  private result: OnlineDecision<P> | null = null;
  private finished = false;

  constructor(options: OnlineDetectorOptions) {
    if (!Number.isFinite(options.threshold)) throw new Error(`threshold must be a finite number, got ${options.threshold}`);
    if (options.constantOp !== undefined && !(options.constantOp > 0)) throw new Error(`constantOp must be > 0, got ${options.constantOp}`);
    this.threshold = options.threshold;
    this.constantOp = options.constantOp;
    this.window = options.window ?? SLOPE_WINDOW;
    if (!Number.isInteger(this.window) || this.window < 1 || this.window % 2 === 0)
      throw new Error(`window must be a positive odd integer, got ${this.window}`);
    this.tolerance = options.spikeTolerance ?? SPIKE_TOLERANCE;
  }

  /** The decision, once made (it does not change afterwards). */
  get decision(): OnlineDecision<P> | null {
    return this.result;
  }

  /** Points kept so far (spikes dropped). */
  get points(): readonly P[] {
    return this.kept;
  }

  /** Add the next validation point; returns the decision once the threshold is crossed, else null. */
  push(point: P): OnlineDecision<P> | null {
    if (this.finished) throw new Error("the detector has finished; create a new one");
    const { step, compute, loss } = point;
    if (!(loss > 0) || !Number.isFinite(loss)) throw new Error(`step ${step}: loss must be a finite number > 0, got ${loss}`);
    if (!(compute > 0) || !Number.isFinite(compute)) throw new Error(`step ${step}: compute must be a finite number > 0, got ${compute}`);
    const last = this.kept[this.kept.length - 1];
    if (last && !(compute > last.compute)) throw new Error(`step ${step}: compute must increase (last ${last.compute}, got ${compute})`);
    if (loss > this.prevLoss && (loss - this.prevLoss) / this.prevLoss > this.tolerance) return this.result; // spike
    this.prevLoss = loss;
    this.kept.push(point);
    this.logLoss.push(Math.log10(loss));
    if (this.result) return this.result;
    // Slope i needs the running means at i and i + 1, final once point i + 1 + half exists.
    const half = (this.window - 1) / 2;
    while (!this.result && this.nextSlope + 1 + half <= this.kept.length - 1) this.evaluate(this.nextSlope++, false);
    return this.result;
  }

  /** The run has ended: evaluate the remaining slopes with the end reflection, as the offline detector does. */
  finish(): OnlineDecision<P> | null {
    this.finished = true;
    while (!this.result && this.nextSlope + 1 <= this.kept.length - 1) this.evaluate(this.nextSlope++, true);
    return this.result;
  }

  private evaluate(i: number, atEnd: boolean): void {
    const half = (this.window - 1) / 2;
    // The running means at i and i+1 over a prefix long enough that the end reflection does not reach them
    // (or the whole curve once it has ended): identical to the offline values.
    const hi = atEnd ? this.logLoss.length : Math.min(this.logLoss.length, i + 2 + half);
    const y = runningMeanAt(this.logLoss, hi, this.window, [i, i + 1]);
    const d = (y[1]! - y[0]!) / (Math.log10(this.kept[i + 1]!.compute) - Math.log10(this.kept[i]!.compute));
    if (d > this.threshold && this.steepest <= this.threshold) {
      const growAtStep = this.kept[this.kept.length - 1]!.step;
      this.result = {
        index: i,
        point: this.kept[i]!,
        slope: d,
        growAtStep,
        ...(this.constantOp ? { continueAtStep: Math.round(growAtStep / this.constantOp) } : {}),
      };
    }
    this.steepest = Math.min(this.steepest, d);
  }
}

/** The running means at `indices` of values[0..n), reflecting at both ends of that prefix (scipy's "reflect"). */
function runningMeanAt(values: readonly number[], n: number, size: number, indices: readonly number[]): number[] {
  const half = (size - 1) / 2;
  const period = 2 * n;
  return indices.map((i) => {
    let sum = 0;
    for (let k = -half; k <= half; k++) {
      const j = (((i + k) % period) + period) % period;
      sum += values[j < n ? j : period - 1 - j]!;
    }
    return sum / size;
  });
}

/**
 * The online decision for a curve so far (`staged plan check`): its points fed to an OnlineGrowthDetector in order
 * (none after the decision); for a `finished` run also the last slopes (finish, with the end reflection). Null: not yet.
 */
export function decideOnCurve<P extends LossPoint>(
  points: readonly P[],
  options: OnlineDetectorOptions & { finished?: boolean },
): OnlineDecision<P> | null {
  const { finished, ...detectorOptions } = options;
  const detector = new OnlineGrowthDetector<P>(detectorOptions);
  for (const p of points) if (!detector.decision) detector.push(p);
  return detector.decision ?? (finished ? detector.finish() : null);
}

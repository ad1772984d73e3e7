/**
 * Growth timing on a learning curve, as in the seed code (allenai/staged-training, notebooks/remove_oracle):
 * the slope of log10(loss) against log10(compute) flattens as training becomes inefficient; grow (or stop) at
 * the first point after the steepest one where the slope rises above a threshold.
 */

/** The seed code's thresholds on d log10(loss) / d log10(compute). */
export const THRESHOLDS = Object.freeze({
  /** Grow the width when the small model's slope rises above this. */
  width: -0.0475,
  /** Grow the depth when the small model's slope rises above this. */
  depth: -0.0575,
  /** Stop the last stage (compute-optimal point) when the slope rises above this. */
  optimality: -0.052,
});

/** The seed's running-mean window (points). */
export const SLOPE_WINDOW = 5;
/** A point more than this fraction above the last kept point is a spike and is dropped. */
export const SPIKE_TOLERANCE = 0.01;

/** A point of a curve as the detectors see it. */
export interface LossPoint {
  step: number;
  compute: number;
  loss: number;
}

/** Index i of an array of length n after half-sample reflection at both ends (scipy's mode "reflect"). */
function reflect(i: number, n: number): number {
  const period = 2 * n;
  const j = ((i % period) + period) % period;
  return j < n ? j : period - 1 - j;
}

/**
 * Centered running mean with reflection at both ends — scipy's `uniform_filter1d(x, size)` in its default
 * "reflect" mode, which the seed code applies to log10(loss). `size` must be odd.
 */
export function runningMean(values: readonly number[], size = SLOPE_WINDOW): number[] {
  if (!Number.isInteger(size) || size < 1 || size % 2 === 0) throw new Error(`runningMean: size must be a positive odd integer, got ${size}`);
  const n = values.length;
  const half = (size - 1) / 2;
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    let sum = 0;
    for (let k = -half; k <= half; k++) sum += values[reflect(i + k, n)]!;
    out[i] = sum / size;
  }
  return out;
}

/**
 * The seed's `remove_loss_spikes`: walk the curve keeping a point unless its loss is more than `tolerance`
 * (relative) above the last kept point's loss. Returns the kept points in order.
 */
export function removeSpikes<P extends { loss: number }>(points: readonly P[], tolerance = SPIKE_TOLERANCE): P[] {
  let prev = Infinity;
  const kept: P[] = [];
  for (const p of points) {
    if (p.loss > prev && (p.loss - prev) / prev > tolerance) continue;
    prev = p.loss;
    kept.push(p);
  }
  return kept;
}

/**
 * Slopes d log10(loss) / d log10(compute) between consecutive points, with log10(loss) smoothed by
 * {@link runningMean} (window 5) over the whole curve. Element i is the slope from point i to point i + 1.
 */
export function logLogSlopes(points: readonly LossPoint[], window = SLOPE_WINDOW): number[] {
  validatePoints(points);
  const x = points.map((p) => Math.log10(p.compute));
  const y = runningMean(
    points.map((p) => Math.log10(p.loss)),
    window,
  );
  const d: number[] = [];
  for (let i = 0; i + 1 < points.length; i++) d.push((y[i + 1]! - y[i]!) / (x[i + 1]! - x[i]!));
  return d;
}

export interface ThresholdHit {
  /** Index (into the points given) of the point where the slope first rises above the threshold. */
  index: number;
  /** Whether the threshold was crossed; if not, `index` is the last slope's index, as the seed returns. */
  reached: boolean;
  /** Index of the steepest slope, where the search starts. */
  steepest: number;
  /** The slope at `index`. */
  slope: number;
  /**
   * False when the slope at `index` uses running means reflected at the end of the curve (the last window/2 + 1
   * slopes): such a crossing can be an artifact of the curve ending rather than of training flattening.
   */
  settled: boolean;
}

/**
 * The seed's `_get_index_of_point_at_first_derivative_threshold` on points that are already clean: the
 * first index at or after the steepest slope where the slope is above `threshold`. Needs ≥ 2 points.
 */
export function thresholdIndex(points: readonly LossPoint[], threshold: number, window = SLOPE_WINDOW): ThresholdHit {
  if (!Number.isFinite(threshold)) throw new Error(`threshold must be a finite number, got ${threshold}`);
  if (points.length < 2) throw new Error(`a slope needs at least 2 points, got ${points.length}`);
  const d = logLogSlopes(points, window);
  let steepest = 0;
  for (let i = 1; i < d.length; i++) if (d[i]! < d[steepest]!) steepest = i;
  const half = (window - 1) / 2;
  const settled = (i: number) => i + 1 + half <= points.length - 1;
  for (let i = steepest; i < d.length; i++) {
    if (d[i]! > threshold) return { index: i, reached: true, steepest, slope: d[i]!, settled: settled(i) };
  }
  return { index: d.length - 1, reached: false, steepest, slope: d[d.length - 1]!, settled: false };
}

export interface DetectedPoint<P extends LossPoint = LossPoint> extends ThresholdHit {
  /** The point itself (from the cleaned curve). */
  point: P;
  /** The curve after spike removal, which `index` refers to. */
  cleaned: P[];
}

/**
 * The whole offline procedure on a logged or simulated curve: remove spikes, smooth log-loss, find the first
 * point after the steepest one whose slope rises above `threshold`.
 */
export function detectThreshold<P extends LossPoint>(
  points: readonly P[],
  threshold: number,
  options: { window?: number; spikeTolerance?: number } = {},
): DetectedPoint<P> {
  const cleaned = removeSpikes(points, options.spikeTolerance ?? SPIKE_TOLERANCE);
  const hit = thresholdIndex(cleaned, threshold, options.window ?? SLOPE_WINDOW);
  return { ...hit, point: cleaned[hit.index]!, cleaned };
}

function validatePoints(points: readonly LossPoint[]): void {
  points.forEach((p, i) => {
    if (!(p.loss > 0) || !Number.isFinite(p.loss)) throw new Error(`point ${i} (step ${p.step}): loss must be a finite number > 0, got ${p.loss}`);
    if (!(p.compute > 0) || !Number.isFinite(p.compute))
      throw new Error(`point ${i} (step ${p.step}): compute must be a finite number > 0, got ${p.compute}`);
    if (i > 0 && !(p.compute > points[i - 1]!.compute)) throw new Error(`point ${i} (step ${p.step}): compute must increase along the curve`);
  });
}

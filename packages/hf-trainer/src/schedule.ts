import type { LrScheduleSpec } from "@staged/core";
import { createLrSchedule } from "@staged/scheduler";

/** The LR the schedule gives at `step` (the LR of update step + 1), as Trainer recorded it. */
export interface LrPoint {
  step: number;
  lr: number;
}

/**
 * Trainer's schedules that @staged/scheduler has as kinds with the same formulas (transformers' optimization.py:
 * get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup with 0.5 cycles, get_constant_schedule_with_warmup;
 * "constant" is the last with no warmup).
 */
const KINDS = ["linear", "cosine", "constant"] as const;

/** Two LRs are the same point when they agree to this relative tolerance (both are float64 products of one formula). */
const TOLERANCE = 1e-9;

/**
 * The schedule Trainer trains with, found from the learning rates it recorded: LambdaLR saves no lambdas (its state
 * has `lr_lambdas: [{}]`), and training_args.bin, which names the schedule, is a pickle no weights-only reader may
 * open. The kinds above are tried with every warmup length that one of the points implies; the schedule is the one
 * candidate that gives every point, or null when none or several do (a custom lambda, or too few points).
 */
export function inferSchedule(points: readonly LrPoint[], peakLr: number, totalSteps: number): LrScheduleSpec | null {
  if (!(peakLr > 0) || points.length === 0) return null;
  const warmups = new Set<number>([0]);
  for (const { step: s, lr } of points) {
    const f = lr / peakLr;
    if (!(f > 0 && f < 1)) continue;
    warmups.add(Math.round(s / f)); // in the warmup: s / w = f
    if (totalSteps > s) {
      warmups.add(Math.round(totalSteps - (totalSteps - s) / f)); // linear decay: (T − s) / (T − w) = f
      const p = Math.acos(2 * f - 1) / Math.PI; // cosine decay: (s − w) / (T − w) = p
      if (p < 1) warmups.add(Math.round((s - p * totalSteps) / (1 - p)));
    }
  }
  const fits: LrScheduleSpec[] = [];
  for (const kind of KINDS) {
    for (const w of warmups) {
      if (!(Number.isInteger(w) && w >= 0 && (kind === "constant" || w <= totalSteps)) || (kind !== "constant" && totalSteps < 1)) continue;
      const spec: LrScheduleSpec = {
        kind,
        peakLr,
        warmupSteps: w,
        totalSteps: kind === "constant" ? Math.max(totalSteps, w) : totalSteps,
        restarts: [],
      };
      if (scheduleFits(spec, points)) fits.push(spec);
    }
  }
  // Several fits that agree at every step up to the last (a constant schedule whose warmup no point shows) are one.
  const last = Math.max(totalSteps, ...points.map((p) => p.step));
  const distinct = fits.filter((a, i) => !fits.slice(0, i).some((b) => sameOnSteps(a, b, last)));
  return distinct.length === 1 ? distinct[0]! : null;
}

function sameOnSteps(a: LrScheduleSpec, b: LrScheduleSpec, last: number): boolean {
  const fa = createLrSchedule(a),
    fb = createLrSchedule(b);
  for (let s = 0; s <= last; s++) if (Math.abs(fa(s) - fb(s)) > TOLERANCE * a.peakLr) return false;
  return true;
}

/** Whether a schedule gives every point. */
export function scheduleFits(spec: LrScheduleSpec, points: readonly LrPoint[]): boolean {
  const f = createLrSchedule(spec);
  return points.every((p) => Math.abs(f(p.step) - p.lr) <= TOLERANCE * spec.peakLr);
}

/**
 * The LRs Trainer logged, as points of the schedule at the current base LR: the LR logged at step s is the one update
 * s used, the schedule at s − 1 (fixtures/hf-trainer/README.md), and an entry logged before a growth that scaled every
 * LR (`lrScale` in its record) is scaled by it, so all points are of one schedule.
 */
export function loggedLrPoints(log: readonly Record<string, unknown>[], growths: readonly { index: number; scale: number }[]): LrPoint[] {
  const points: LrPoint[] = [];
  log.forEach((e, i) => {
    if (typeof e.step !== "number" || e.step < 1 || typeof e.learning_rate !== "number") return;
    const scale = growths.filter((g) => g.index > i).reduce((a, g) => a * g.scale, 1);
    points.push({ step: e.step - 1, lr: scale === 1 ? e.learning_rate : e.learning_rate * scale });
  });
  return points;
}

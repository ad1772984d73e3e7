import type { ChinchillaLaw } from "./laws.js";

/**
 * Growth timing in a run's own units, from the compute-efficiency argument behind staged training.
 *
 * A growth from a small model s to a large model l at loss L replaces the compute the large model would
 * have needed to reach L from scratch, C_l(L), by what the small model spent, C_s(L); the saving
 * C_l(L) − C_s(L) is largest where dC_l/dL = dC_s/dL, i.e. where the small model's marginal loss reduction
 * per FLOP, dL/dC, has fallen to the large model's at the same loss. Grow when
 *
 *     dL_s/dC (measured on the run's own validation curve)  ≥  dL_l/dC at L (the law's large model)
 *
 * (both negative). In log-log slopes this is slope_s ≥ slope_l(L) · C_s / C_l(L): the threshold on the
 * small model's slope that the seed's fixed constants (−0.0475 width, −0.0575 depth) stand for, here derived
 * for the law and the two shapes in use. Compute is counted as the trainer counts it (FLOPs per token of
 * each shape at the run's context, from {@link flopsPerToken}), tokens are the run's batch × context per step.
 *
 * The law is a Chinchilla-form L(N, D) = E + A/N^α + B/D^β, fitted on pilot runs at this scale
 * ({@link fitChinchilla}); N is the non-embedding parameter count ({@link nonEmbeddingParams}).
 */
export interface RunModel {
  /** Non-embedding parameters (the law's N). */
  params: number;
  /** Training FLOPs per token of this shape at the run's context (the trainer's count). */
  flopsPerToken: number;
}

export interface RunUnits {
  /** Tokens per optimizer step (batch × context). */
  batchTokens: number;
}

/** The law's large model at loss `loss`: tokens, FLOPs, step and marginal efficiency dL/dC (null if it never gets there). */
export function largeModelAt(
  law: ChinchillaLaw,
  model: RunModel,
  units: RunUnits,
  loss: number,
): { tokens: number; flops: number; step: number; dLdC: number } | null {
  const tokens = law.tokensToLoss(model.params, loss);
  if (!Number.isFinite(tokens)) return null;
  const { B, beta } = law.constants;
  const dLdD = -beta * B * tokens ** (-beta - 1);
  return { tokens, flops: tokens * model.flopsPerToken, step: tokens / units.batchTokens, dLdC: dLdD / model.flopsPerToken };
}

/** A validation point as the detector sees it: the run's FLOPs and the stage's step. */
export interface EfficiencyPoint {
  step: number;
  compute: number;
  loss: number;
}

export interface MarginalDetectorOptions {
  law: ChinchillaLaw;
  small: RunModel;
  large: RunModel;
  units: RunUnits;
  /**
   * Points of the local fit: log L is fitted linearly in log C over the last `window` validation points
   * (default 8), which smooths the evaluation noise; the fitted value and slope give L̂ and dL/dC.
   */
  window?: number;
  /** Consecutive evaluations the condition must hold (default 3): one noisy point does not trigger growth. */
  patience?: number;
  /** FLOPs the stage's model spent before its first point here (a grown model's compute counts from 0 otherwise). */
  computeOffset?: number;
  /**
   * Decide only once the smoothed loss is at or below this (default: no limit): the range where the law was
   * fitted ({@link fitLossCeiling}). Early learning curves have plateaus the law does not describe, on which a
   * flat local slope would otherwise look like the small model being spent.
   */
  maxLoss?: number;
}

export interface MarginalDecision {
  /** The stage step of the newest point: grow now. */
  growAtStep: number;
  /** The smoothed loss L̂ and the small model's dL/dC there. */
  loss: number;
  smallDLdC: number;
  /** The law's large model at L̂: dL/dC, and the step at the run's batch where it reaches L̂ (the grown model's continueAt). */
  largeDLdC: number;
  continueAtStep: number;
  /** The saving the law predicts at this point: (C_l(L̂) − C_s) / C_l(L̂). */
  predictedSaving: number;
  /** The equivalent log-log slope threshold slope_l(L̂) · C_s / C_l(L̂), for comparison with the seed's constants. */
  slopeThreshold: number;
}

/**
 * The online growth decision of a live run: feed it the small model's validation points; it returns the
 * decision once the small model's measured dL/dC has risen to the law's large-model dL/dC at the same loss
 * for `patience` evaluations in a row.
 */
export class MarginalGrowthDetector {
  private readonly points: EfficiencyPoint[] = [];
  private streak = 0;
  private result: MarginalDecision | null = null;
  private readonly window: number;
  private readonly patience: number;
  /** The last evaluation's figures (null until `window` points exist): for progress lines and logs. */
  last: { loss: number; smallDLdC: number; largeDLdC: number | null } | null = null;

  constructor(private readonly o: MarginalDetectorOptions) {
    this.window = o.window ?? 8;
    this.patience = o.patience ?? 3;
    if (!Number.isInteger(this.window) || this.window < 3) throw new Error(`window must be an integer ≥ 3, got ${this.window}`);
    if (!Number.isInteger(this.patience) || this.patience < 1) throw new Error(`patience must be an integer ≥ 1, got ${this.patience}`);
    for (const [k, m] of [
      ["small", o.small],
      ["large", o.large],
    ] as const) {
      if (!(m.params > 0) || !(m.flopsPerToken > 0)) throw new Error(`${k} model: params and flopsPerToken must be > 0`);
    }
    if (!(o.units.batchTokens > 0)) throw new Error(`batchTokens must be > 0, got ${o.units.batchTokens}`);
  }

  get decision(): MarginalDecision | null {
    return this.result;
  }

  push(point: EfficiencyPoint): MarginalDecision | null {
    if (this.result) return this.result;
    const compute = point.compute + (this.o.computeOffset ?? 0);
    if (!(point.loss > 0) || !Number.isFinite(point.loss)) throw new Error(`step ${point.step}: loss must be a finite number > 0, got ${point.loss}`);
    const prev = this.points[this.points.length - 1];
    if (!(compute > 0) || (prev && !(compute > prev.compute))) throw new Error(`step ${point.step}: compute must be > 0 and increase`);
    this.points.push({ ...point, compute });
    if (this.points.length < this.window) return null;
    const fit = localPowerLaw(this.points.slice(-this.window), compute);
    const large = largeModelAt(this.o.law, this.o.large, this.o.units, fit.loss);
    this.last = { loss: fit.loss, smallDLdC: fit.dLdC, largeDLdC: large?.dLdC ?? null };
    // The large model never reaches L̂ under the law: the small model is still the better use of compute.
    // Above maxLoss the law is not backed by data: no decision there either.
    if (!large || (this.o.maxLoss !== undefined && fit.loss > this.o.maxLoss)) {
      this.streak = 0;
      return null;
    }
    this.streak = fit.dLdC >= large.dLdC ? this.streak + 1 : 0;
    if (this.streak >= this.patience) {
      this.result = {
        growAtStep: point.step,
        loss: fit.loss,
        smallDLdC: fit.dLdC,
        largeDLdC: large.dLdC,
        continueAtStep: Math.round(large.step),
        predictedSaving: (large.flops - compute) / large.flops,
        slopeThreshold: (large.dLdC * compute) / fit.loss,
      };
    }
    return this.result;
  }
}

/** Least-squares line of ln L on ln C over the points, evaluated at C: the smoothed loss and its dL/dC. */
export function localPowerLaw(points: readonly EfficiencyPoint[], at: number): { loss: number; slope: number; dLdC: number } {
  const n = points.length;
  if (n < 2) throw new Error(`a local fit needs at least 2 points, got ${n}`);
  let sx = 0,
    sy = 0,
    sxx = 0,
    sxy = 0;
  for (const p of points) {
    const x = Math.log(p.compute),
      y = Math.log(p.loss);
    sx += x;
    sy += y;
    sxx += x * x;
    sxy += x * y;
  }
  const den = n * sxx - sx * sx;
  const slope = den > 0 ? (n * sxy - sx * sy) / den : 0;
  const intercept = (sy - slope * sx) / n;
  const loss = Math.exp(intercept + slope * Math.log(at));
  return { loss, slope, dLdC: (slope * loss) / at };
}

export interface GrowthPlanInRunUnits {
  /** Step of the small model (at the run's batch) at which to grow, and its FLOPs and loss there. */
  growAtStep: number;
  flopsAtGrowth: number;
  lossAtGrowth: number;
  /** Step of the large model at equal loss (the grown model's continueAt). */
  continueAtStep: number;
  /** FLOPs the large model would need from scratch to the loss at growth. */
  largeFlops: number;
  /** (largeFlops − flopsAtGrowth) / largeFlops. */
  predictedSaving: number;
}

/**
 * The law-based plan of one growth, before any training: the small model's simulated curve
 * L_s(D) = E + A/N_s^α + B/D^β (D = step · batchTokens, C = D · flopsPerToken) grows at the step where its
 * dL/dC has risen to the large model's at the same loss (bisection on the step; the difference is monotone
 * for a Chinchilla-form law). Null when the law never makes growth worth it within `maxSteps`.
 */
export function planGrowthInRunUnits(
  law: ChinchillaLaw,
  small: RunModel,
  large: RunModel,
  units: RunUnits,
  maxSteps = 1e9,
): GrowthPlanInRunUnits | null {
  const { B, beta } = law.constants;
  const at = (step: number) => {
    const d = step * units.batchTokens;
    const loss = law.loss(small.params, d);
    const smallDLdC = (-beta * B * d ** (-beta - 1)) / small.flopsPerToken;
    const l = largeModelAt(law, large, units, loss);
    return { loss, d, l, diff: l ? smallDLdC - l.dLdC : -Infinity };
  };
  let lo = 1,
    hi = maxSteps;
  if (at(hi).diff < 0) return null;
  if (at(lo).diff >= 0) lo = hi = 1;
  while (hi - lo > 1) {
    // geometric bisection, always strictly between lo and hi
    const mid = Math.min(hi - 1, Math.max(lo + 1, Math.floor(Math.sqrt(lo * hi))));
    if (at(mid).diff >= 0) hi = mid;
    else lo = mid;
  }
  const p = at(hi);
  if (!p.l) return null;
  const flopsAtGrowth = p.d * small.flopsPerToken;
  return {
    growAtStep: hi,
    flopsAtGrowth,
    lossAtGrowth: p.loss,
    continueAtStep: Math.round(p.l.step),
    largeFlops: p.l.flops,
    predictedSaving: (p.l.flops - flopsAtGrowth) / p.l.flops,
  };
}

/**
 * The compute-optimal choice among candidate models for a budget under the law: the one with the lowest
 * predicted loss L(N, C / flopsPerToken), with every candidate's predicted loss.
 */
export function computeOptimalChoice<M extends RunModel>(
  law: ChinchillaLaw,
  candidates: readonly M[],
  budgetFlops: number,
): { best: M; losses: { model: M; loss: number; tokens: number }[] } {
  if (!candidates.length) throw new Error("no candidate models");
  if (!(budgetFlops > 0)) throw new Error(`budget must be > 0 FLOPs, got ${budgetFlops}`);
  const losses = candidates.map((model) => {
    const tokens = budgetFlops / model.flopsPerToken;
    return { model, tokens, loss: law.loss(model.params, tokens) };
  });
  const best = losses.reduce((a, b) => (b.loss < a.loss ? b : a));
  return { best: best.model, losses };
}

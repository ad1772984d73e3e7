import { levenbergMarquardt } from "ml-levenberg-marquardt";
import {
  CHINCHILLA_CONSTANTS,
  DEFAULT_BATCH_TOKENS,
  KAPLAN_CONSTANTS,
  chinchillaLaw,
  kaplanLaw,
  type ChinchillaConstants,
  type ChinchillaLaw,
  type KaplanConstants,
  type KaplanLaw,
} from "./laws.js";

/** One observation for a fit: a model of `params` non-embedding parameters at `step` (and `tokens`) had `loss`. */
export interface Observation {
  params: number;
  step: number;
  tokens: number;
  loss: number;
}

/** A learning curve of one model size, e.g. read from a trainer's metrics.jsonl. */
export interface LearningCurve {
  params: number;
  points: { step: number; tokens: number; loss: number }[];
  /** Where it came from (a file name), for messages. */
  source?: string;
}

/** What `staged plan fit` writes and `--law fit.json` reads. */
export interface FitResult {
  format: "staged-scaling-fit";
  version: 1;
  form: "kaplan" | "chinchilla";
  constants: Record<string, number>;
  /** Tokens per step the curves used (Chinchilla curves are simulated with it). */
  batchTokens: number;
  observations: number;
  /** Root mean square of loss − fitted loss. */
  rmse: number;
  /** Largest |loss − fitted loss|. */
  maxAbsResidual: number;
  /** Per point: params, step, loss, fitted, residual. */
  residuals: { params: number; step: number; loss: number; fitted: number; residual: number }[];
  sources?: string[];
  /**
   * Each fitted parameter (in the fit's own coordinates: logarithms for the scale constants) with its
   * standard error from the Gauss–Newton covariance σ²·(JᵀJ)⁻¹ (σ² = SSE / (n − p)), and whether it ended on
   * a bound of the search. Points along one curve are correlated, so the errors are lower bounds.
   */
  parameters?: { name: string; value: number; stdError: number; atBound: boolean }[];
  /** Why the fit is ill-determined (a parameter on its bound, a relative error above 50%, too few sizes); empty when none. */
  warnings?: string[];
}

/** The fields of a fit file that name its law: all a law file needs (a fit's, or one written by hand for a run spec). */
export type LawFile = Pick<FitResult, "format" | "version" | "form" | "constants" | "batchTokens">;

/** A law file for a law given by its form and constants: what a run spec's `law` and `staged plan --law` read. */
export function lawFile(form: FitResult["form"], constants: Record<string, number>, batchTokens: number): LawFile {
  return { format: "staged-scaling-fit", version: 1, form, constants, batchTokens };
}

export function observationsOf(curves: readonly LearningCurve[]): Observation[] {
  const out: Observation[] = [];
  for (const c of curves) {
    if (!(c.params > 0)) throw new Error(`${c.source ?? "a curve"}: params must be > 0, got ${c.params}`);
    for (const p of c.points) {
      if (!(p.loss > 0) || !(p.step > 0) || !(p.tokens > 0)) continue; // step 0 has no defined law value
      out.push({ params: c.params, step: p.step, tokens: p.tokens, loss: p.loss });
    }
  }
  return out;
}

interface Model {
  names: string[];
  starts: number[][];
  min: number[];
  max: number[];
  f: (p: number[]) => (o: Observation) => number;
  jac: (p: number[]) => (o: Observation) => number[];
}

// Kaplan, parameters [ln N_c, α_N, ln S_c, α_S]: L = (N_c/N)^α_N + (2·S_c/S)^α_S (S_min = S/2, as the seed).
const KAPLAN_MODEL: Model = {
  names: ["ln Nc", "alphaN", "ln Sc", "alphaS"],
  starts: [
    [Math.log(KAPLAN_CONSTANTS.Nc), KAPLAN_CONSTANTS.alphaN, Math.log(KAPLAN_CONSTANTS.Sc), KAPLAN_CONSTANTS.alphaS],
    [Math.log(1e10), 0.1, Math.log(1e3), 0.5],
    [Math.log(1e15), 0.05, Math.log(1e4), 1],
  ],
  min: [Math.log(1e3), 1e-3, Math.log(1e-3), 1e-3],
  max: [Math.log(1e30), 2, Math.log(1e12), 5],
  f:
    ([lnNc, aN, lnSc, aS]) =>
    (o) =>
      Math.exp(aN! * (lnNc! - Math.log(o.params))) + Math.exp(aS! * (lnSc! + Math.LN2 - Math.log(o.step))),
  jac:
    ([lnNc, aN, lnSc, aS]) =>
    (o) => {
      const u = lnNc! - Math.log(o.params);
      const v = lnSc! + Math.LN2 - Math.log(o.step);
      const a = Math.exp(aN! * u);
      const b = Math.exp(aS! * v);
      return [aN! * a, u * a, aS! * b, v * b];
    },
};

// Chinchilla, parameters [E, ln A, α, ln B, β]: L = E + A/N^α + B/D^β.
const CHINCHILLA_MODEL: Model = {
  names: ["E", "ln A", "alpha", "ln B", "beta"],
  starts: [
    [
      CHINCHILLA_CONSTANTS.E,
      Math.log(CHINCHILLA_CONSTANTS.A),
      CHINCHILLA_CONSTANTS.alpha,
      Math.log(CHINCHILLA_CONSTANTS.B),
      CHINCHILLA_CONSTANTS.beta,
    ],
    [1, Math.log(100), 0.3, Math.log(100), 0.3],
    [0.5, Math.log(1e3), 0.5, Math.log(1e3), 0.4],
    [2, Math.log(50), 0.2, Math.log(50), 0.2],
  ],
  min: [0, -10, 1e-3, -10, 1e-3],
  max: [20, 30, 2, 30, 2],
  f:
    ([E, lnA, al, lnB, be]) =>
    (o) =>
      E! + Math.exp(lnA! - al! * Math.log(o.params)) + Math.exp(lnB! - be! * Math.log(o.tokens)),
  jac:
    ([, lnA, al, lnB, be]) =>
    (o) => {
      const ln = Math.log(o.params);
      const ld = Math.log(o.tokens);
      const a = Math.exp(lnA! - al! * ln);
      const b = Math.exp(lnB! - be! * ld);
      return [1, a, -ln * a, b, -ld * b];
    },
};

function sse(model: Model, p: number[], obs: readonly Observation[]): number {
  const f = model.f(p);
  let s = 0;
  for (const o of obs) s += (o.loss - f(o)) ** 2;
  return s;
}

/** Levenberg–Marquardt from several starting points; the best fit wins. */
function runFit(model: Model, obs: readonly Observation[], extraStarts: number[][] = []): number[] {
  if (obs.length < model.names.length + 1) {
    throw new Error(`a ${model.names.length}-parameter law needs at least ${model.names.length + 1} points, got ${obs.length}`);
  }
  const x = obs.map((_, i) => i);
  const y = obs.map((o) => o.loss);
  let best: number[] | null = null;
  let bestErr = Infinity;
  for (const start of [...extraStarts, ...model.starts]) {
    let p: number[];
    try {
      p = levenbergMarquardt(
        { x, y },
        (q) => {
          const f = model.f(q);
          return (i) => f(obs[i]!);
        },
        {
          initialValues: start,
          minValues: model.min,
          maxValues: model.max,
          damping: 1e-2,
          maxIterations: 2000,
          errorTolerance: 1e-14,
          improvementThreshold: 1e-6,
          jacobianFunction: (q) => {
            const j = model.jac(q);
            return (i) => j(obs[i]!);
          },
        },
      ).parameterValues;
    } catch {
      continue;
    }
    const err = sse(model, p, obs);
    if (Number.isFinite(err) && err < bestErr) {
      bestErr = err;
      best = p;
    }
  }
  if (!best) throw new Error("the fit did not converge from any starting point");
  return best;
}

/** Solve the symmetric system M x = b by Gaussian elimination with partial pivoting; null when singular. */
function invert(m: number[][]): number[][] | null {
  const n = m.length;
  const a = m.map((row, i) => [...row, ...Array.from({ length: n }, (_, j) => (i === j ? 1 : 0))]);
  for (let c = 0; c < n; c++) {
    let piv = c;
    for (let r = c + 1; r < n; r++) if (Math.abs(a[r]![c]!) > Math.abs(a[piv]![c]!)) piv = r;
    const scale = Math.max(...m.map((row) => Math.abs(row[c]!)));
    if (!(Math.abs(a[piv]![c]!) > 1e-14 * scale)) return null;
    [a[c], a[piv]] = [a[piv]!, a[c]!];
    const d = a[c]![c]!;
    for (let j = 0; j < 2 * n; j++) a[c]![j]! /= d;
    for (let r = 0; r < n; r++) {
      if (r === c) continue;
      const f = a[r]![c]!;
      if (f !== 0) for (let j = 0; j < 2 * n; j++) a[r]![j]! -= f * a[c]![j]!;
    }
  }
  return a.map((row) => row.slice(n));
}

/** Standard errors and bound hits of a fit, and the warnings they call for. */
export function fitDiagnostics(
  model: { names: string[]; min: number[]; max: number[]; jac: Model["jac"] },
  p: number[],
  obs: readonly Observation[],
  sse: number,
): { parameters: NonNullable<FitResult["parameters"]>; warnings: string[] } {
  const k = p.length,
    n = obs.length;
  const jac = model.jac(p);
  const jtj = Array.from({ length: k }, () => new Array<number>(k).fill(0));
  for (const o of obs) {
    const g = jac(o);
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) jtj[i]![j]! += g[i]! * g[j]!;
  }
  const inv = invert(jtj);
  const sigma2 = n > k ? sse / (n - k) : NaN;
  const warnings: string[] = [];
  const parameters = model.names.map((name, i) => {
    const value = p[i]!;
    const stdError = inv ? Math.sqrt(Math.max(0, sigma2 * inv[i]![i]!)) : Infinity;
    const span = model.max[i]! - model.min[i]!;
    const atBound = Math.abs(value - model.min[i]!) <= 1e-6 * span || Math.abs(model.max[i]! - value) <= 1e-6 * span;
    if (atBound) warnings.push(`${name} ended on its bound (${value.toPrecision(4)}): the data do not determine it`);
    else if (!(stdError <= 0.5 * Math.max(Math.abs(value), 1e-12)))
      warnings.push(`${name} = ${value.toPrecision(4)} ± ${stdError.toPrecision(2)}: ill-determined (error above 50%)`);
    return { name, value, stdError, atBound };
  });
  if (!inv) warnings.push("the fit's Jacobian is singular: some parameters are not identified by these curves");
  const sizes = new Set(obs.map((o) => o.params)).size;
  if (sizes < 3)
    warnings.push(`only ${sizes} model size${sizes === 1 ? "" : "s"}: the size exponent and the irreducible loss are confounded (use ≥ 3 sizes)`);
  return { parameters, warnings };
}

function summarize(
  form: "kaplan" | "chinchilla",
  model: Model,
  p: number[],
  obs: readonly Observation[],
  constants: Record<string, number>,
  batchTokens: number,
  sources?: string[],
): FitResult {
  const f = model.f(p);
  const residuals = obs.map((o) => {
    const fitted = f(o);
    return { params: o.params, step: o.step, loss: o.loss, fitted, residual: o.loss - fitted };
  });
  const rmse = Math.sqrt(residuals.reduce((s, r) => s + r.residual ** 2, 0) / residuals.length);
  return {
    ...lawFile(form, constants, batchTokens),
    observations: obs.length,
    rmse,
    maxAbsResidual: Math.max(...residuals.map((r) => Math.abs(r.residual))),
    residuals,
    ...fitDiagnostics(model, p, obs, sse(model, p, obs)),
    ...(sources ? { sources } : {}),
  };
}

function medianBatch(obs: readonly Observation[]): number {
  const b = obs.map((o) => o.tokens / o.step).sort((a, c) => a - c);
  return b.length ? b[Math.floor(b.length / 2)]! : DEFAULT_BATCH_TOKENS;
}

/**
 * Fit Kaplan's L(N, S) = (N_c/N)^α_N + (2·S_c/S)^α_S (S at the critical batch size, as the seed simulates) to
 * observed curves by nonlinear least squares on the loss. B* and α_B cannot be identified from curves at one
 * batch size and keep the seed's values unless given.
 */
export function fitKaplan(curves: readonly LearningCurve[], fixed: Partial<Pick<KaplanConstants, "Bstar" | "alphaB">> = {}): FitResult {
  const obs = observationsOf(curves);
  const p = runFit(KAPLAN_MODEL, obs);
  const constants: KaplanConstants = {
    Nc: Math.exp(p[0]!),
    alphaN: p[1]!,
    Sc: Math.exp(p[2]!),
    alphaS: p[3]!,
    Bstar: fixed.Bstar ?? KAPLAN_CONSTANTS.Bstar,
    alphaB: fixed.alphaB ?? KAPLAN_CONSTANTS.alphaB,
  };
  return summarize("kaplan", KAPLAN_MODEL, p, obs, { ...constants }, medianBatch(obs), sourcesOf(curves));
}

/**
 * The curves without the first `fraction` of each one's tokens: the early part of a learning curve (warmup, the
 * plateau before the model learns more than unigram statistics) is not the power law the laws describe, and
 * points there pull a fit off (Hoffmann et al. likewise fit only beyond the start of training).
 */
export function skipStart(curves: readonly LearningCurve[], fraction: number): LearningCurve[] {
  if (!(fraction >= 0 && fraction < 1)) throw new Error(`the skipped fraction must be in [0, 1), got ${fraction}`);
  return curves.map((c) => {
    const last = Math.max(0, ...c.points.map((p) => p.tokens));
    return { ...c, points: c.points.filter((p) => p.tokens >= fraction * last) };
  });
}

/** Fit Hoffmann et al.'s L(N, D) = E + A/N^α + B/D^β to observed curves (D = tokens) by nonlinear least squares. */
export function fitChinchilla(curves: readonly LearningCurve[]): FitResult {
  const obs = observationsOf(curves);
  // Extra start: E just under the smallest loss seen.
  const minLoss = Math.min(...obs.map((o) => o.loss));
  const p = runFit(CHINCHILLA_MODEL, obs, [[0.8 * minLoss, Math.log(100), 0.3, Math.log(100), 0.3]]);
  const constants: ChinchillaConstants = { E: p[0]!, A: Math.exp(p[1]!), alpha: p[2]!, B: Math.exp(p[3]!), beta: p[4]! };
  return summarize("chinchilla", CHINCHILLA_MODEL, p, obs, { ...constants }, medianBatch(obs), sourcesOf(curves));
}

export function fitLaw(
  form: "kaplan" | "chinchilla",
  curves: readonly LearningCurve[],
  options: { skipFraction?: number | undefined } = {},
): FitResult {
  const used = options.skipFraction ? skipStart(curves, options.skipFraction) : curves;
  if (form === "kaplan") return fitKaplan(used);
  if (form === "chinchilla") return fitChinchilla(used);
  throw new Error(`unknown law form ${JSON.stringify(form)} (forms: kaplan, chinchilla)`);
}

function sourcesOf(curves: readonly LearningCurve[]): string[] | undefined {
  const s = curves.map((c) => c.source).filter((x): x is string => Boolean(x));
  return s.length ? s : undefined;
}

/** The law a fit describes, usable wherever the built-in laws are (named "fit:<form>"). */
export function lawFromFit(fit: LawFile, source = "fit"): KaplanLaw | ChinchillaLaw {
  if (!fit || typeof fit !== "object" || fit.format !== "staged-scaling-fit") {
    throw new Error(`${source}: not a scaling-law fit (expected format "staged-scaling-fit")`);
  }
  const c = fit.constants ?? {};
  const need = (keys: string[]) => {
    for (const k of keys) {
      if (typeof c[k] !== "number" || !Number.isFinite(c[k])) throw new Error(`${source}: constant ${k} is missing or not a number`);
    }
  };
  if (fit.form === "kaplan") {
    need(["Nc", "alphaN", "Sc", "alphaS", "Bstar", "alphaB"]);
    return kaplanLaw(c as unknown as KaplanConstants, `fit:kaplan`);
  }
  if (fit.form === "chinchilla") {
    need(["E", "A", "alpha", "B", "beta"]);
    return chinchillaLaw(c as unknown as ChinchillaConstants, fit.batchTokens > 0 ? fit.batchTokens : DEFAULT_BATCH_TOKENS, `fit:chinchilla`);
  }
  throw new Error(`${source}: unknown law form ${JSON.stringify(fit.form)} (forms: kaplan, chinchilla)`);
}

/**
 * The highest loss below which the fit describes every model size it saw: for each size the highest loss of
 * its fitted points, then the lowest of those. Above it (early training: warmup, plateaus the power law does
 * not have, or points a fit skipped) the law is extrapolating, and decisions taken from it there are not
 * backed by data. Null when the fit has no residuals.
 */
export function fitLossCeiling(fit: FitResult): number | null {
  const highest = new Map<number, number>();
  for (const r of fit.residuals ?? []) highest.set(r.params, Math.max(highest.get(r.params) ?? -Infinity, r.loss));
  return highest.size ? Math.min(...highest.values()) : null;
}

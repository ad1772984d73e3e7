import type { ScalingLawPlugin } from "@staged/core";

/** One point of a learning curve: optimizer step, tokens seen, training FLOPs spent, loss. */
export interface CurvePoint {
  step: number;
  tokens: number;
  compute: number;
  loss: number;
}

/**
 * A scaling law: loss as a function of parameters N (non-embedding, Kaplan's sense) and training progress.
 * Every law can simulate the learning curve of a size at given steps, which is what the planner uses.
 */
export interface ScalingLaw extends ScalingLawPlugin {
  readonly name: string;
  readonly form: "kaplan" | "chinchilla";
  /** Loss at convergence (infinite data) of a model with n parameters. */
  lossAtConvergence(n: number): number;
  /** The simulated learning curve of a model with n parameters at these optimizer steps. */
  curve(n: number, steps: readonly number[]): CurvePoint[];
  /** The law's constants, serializable (what a fit file stores). */
  readonly constants: Readonly<Record<string, number>>;
}

function positive(what: string, v: number): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) throw new Error(`${what} must be a finite number > 0, got ${v}`);
  return v;
}

// ---------------------------------------------------------------------------------------------------------
// Kaplan et al. 2020

/** Kaplan et al. 2020 constants (Table 5, Appendix A), as the seed code uses them. */
export interface KaplanConstants {
  /** N_c, non-embedding parameters. */
  Nc: number;
  alphaN: number;
  /** S_c, steps. */
  Sc: number;
  alphaS: number;
  /** B*, tokens. */
  Bstar: number;
  alphaB: number;
}

/** The seed code's constants: N_c = 8.8e13, α_N = 0.076, S_c = 2.1e3, α_S = 0.76, B* = 2.1e8, α_B = 0.21. */
export const KAPLAN_CONSTANTS: Readonly<KaplanConstants> = Object.freeze({
  Nc: 8.8e13,
  alphaN: 0.076,
  Sc: 2.1e3,
  alphaS: 0.76,
  Bstar: 2.1e8,
  alphaB: 0.21,
});

/** One PF-day in FLOPs (10^15 · 24 · 3600). */
export const PF_DAY = 8.64e19;

export interface KaplanLaw extends ScalingLaw {
  readonly form: "kaplan";
  readonly constants: Readonly<KaplanConstants>;
  /** Eq. 1.6 with S_min: L(N, S_min) = (N_c/N)^α_N + (S_c/S_min)^α_S. */
  lossAtMinSteps(n: number, sMin: number): number;
  /**
   * L(N, S) at the critical batch size, where S_min = S/2 (eq. 5.4): (N_c/N)^α_N + (2·S_c/S)^α_S — the form the
   * seed code simulates and fits.
   */
  loss(n: number, steps: number): number;
  /** B_crit(L) = B* / L^(1/α_B), in tokens (eq. 5.3). */
  criticalBatch(loss: number): number;
  /** S_min(S) = S/(1 + B_crit(L)/B) (eq. 5.4): the steps training at batch B is worth at the critical batch. */
  minSteps(steps: number, batch: number, loss: number): number;
  /** C = 6·N·B·S. */
  compute(n: number, batch: number, steps: number): number;
  /** Steps at the critical batch size for a model of n parameters to reach `loss` (Infinity if unreachable). */
  stepsToLoss(n: number, loss: number): number;
  /**
   * The compute-efficient frontier (Kaplan eqs. 1.7–1.8 with Table 6's fits, C in PF-days): the optimal size
   * N = 1.3e9·C^0.73 and the loss L = (3.1e8/C)^0.050 for a compute budget C_min.
   */
  frontier(computePfDays: number): { params: number; loss: number; steps: number; batch: number };
}

/** Kaplan et al. 2020, optionally with other (for example fitted) constants. */
export function kaplanLaw(constants: Partial<KaplanConstants> = {}, name = "kaplan"): KaplanLaw {
  const c: KaplanConstants = { ...KAPLAN_CONSTANTS, ...constants };
  for (const [k, v] of Object.entries(c)) positive(`kaplan ${k}`, v);
  const lossAtConvergence = (n: number) => (c.Nc / positive("N", n)) ** c.alphaN;
  const lossAtMinSteps = (n: number, sMin: number) => lossAtConvergence(n) + (c.Sc / positive("S_min", sMin)) ** c.alphaS;
  const loss = (n: number, steps: number) => lossAtMinSteps(n, positive("steps", steps) / 2);
  const criticalBatch = (l: number) => c.Bstar / positive("loss", l) ** (1 / c.alphaB);
  return {
    name,
    form: "kaplan",
    constants: Object.freeze({ ...c }),
    lossAtConvergence,
    lossAtMinSteps,
    loss,
    criticalBatch,
    minSteps: (steps, batch, l) => steps / (1 + criticalBatch(l) / positive("batch", batch)),
    compute: (n, batch, steps) => 6 * n * batch * steps,
    stepsToLoss(n, l) {
      const gap = l - lossAtConvergence(n);
      return gap <= 0 ? Infinity : (2 * c.Sc) / gap ** (1 / c.alphaS);
    },
    frontier(computePfDays) {
      positive("compute", computePfDays);
      return {
        params: 1.3e9 * computePfDays ** 0.73,
        loss: (3.1e8 / computePfDays) ** 0.05,
        batch: 2.0e6 * computePfDays ** 0.24,
        steps: 5.4e3 * computePfDays ** 0.03,
      };
    },
    curve(n, steps) {
      return steps.map((s) => {
        const l = loss(n, s);
        const b = criticalBatch(l);
        return { step: s, tokens: b * s, compute: 6 * n * b * s, loss: l };
      });
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Hoffmann et al. 2022

/** Hoffmann et al. 2022 ("Chinchilla"), approach 3: L(N, D) = E + A/N^α + B/D^β. */
export interface ChinchillaConstants {
  E: number;
  A: number;
  B: number;
  alpha: number;
  beta: number;
}

/** The paper's constants: E = 1.69, A = 406.4, B = 410.7, α = 0.34, β = 0.28. */
export const CHINCHILLA_CONSTANTS: Readonly<ChinchillaConstants> = Object.freeze({
  E: 1.69,
  A: 406.4,
  B: 410.7,
  alpha: 0.34,
  beta: 0.28,
});

/** Tokens per optimizer step used to turn steps into tokens where a law counts tokens (the seed's 512 × 1024). */
export const DEFAULT_BATCH_TOKENS = 512 * 1024;

export interface ChinchillaLaw extends ScalingLaw {
  readonly form: "chinchilla";
  readonly constants: Readonly<ChinchillaConstants>;
  /** Tokens per step this law's curves assume. */
  readonly batchTokens: number;
  /** L(N, D) = E + A/N^α + B/D^β. */
  loss(n: number, tokens: number): number;
  /** Tokens for a model of n parameters to reach `loss` (Infinity if unreachable). */
  tokensToLoss(n: number, loss: number): number;
  /**
   * The compute-optimal N and D for a budget of C = 6·N·D FLOPs (the closed form of minimizing L under the
   * constraint): N = G·(C/6)^a, D = (C/6)^b / G with a = β/(α+β), b = α/(α+β), G = (αA/(βB))^(1/(α+β)).
   */
  computeOptimal(flops: number): { params: number; tokens: number; loss: number };
}

export function chinchillaLaw(constants: Partial<ChinchillaConstants> = {}, batchTokens = DEFAULT_BATCH_TOKENS, name = "chinchilla"): ChinchillaLaw {
  const c: ChinchillaConstants = { ...CHINCHILLA_CONSTANTS, ...constants };
  for (const k of ["A", "B", "alpha", "beta"] as const) positive(`chinchilla ${k}`, c[k]);
  if (!Number.isFinite(c.E) || c.E < 0) throw new Error(`chinchilla E must be a finite number ≥ 0, got ${c.E}`);
  positive("batchTokens", batchTokens);
  const loss = (n: number, d: number) => c.E + c.A / positive("N", n) ** c.alpha + c.B / positive("tokens", d) ** c.beta;
  return {
    name,
    form: "chinchilla",
    constants: Object.freeze({ ...c }),
    batchTokens,
    loss,
    lossAtConvergence: (n) => c.E + c.A / positive("N", n) ** c.alpha,
    tokensToLoss(n, l) {
      const gap = l - c.E - c.A / n ** c.alpha;
      return gap <= 0 ? Infinity : (c.B / gap) ** (1 / c.beta);
    },
    computeOptimal(flops) {
      positive("compute", flops);
      const G = ((c.alpha * c.A) / (c.beta * c.B)) ** (1 / (c.alpha + c.beta));
      const a = c.beta / (c.alpha + c.beta);
      const b = c.alpha / (c.alpha + c.beta);
      const params = G * (flops / 6) ** a;
      const tokens = (flops / 6) ** b / G;
      return { params, tokens, loss: loss(params, tokens) };
    },
    curve(n, steps) {
      return steps.map((s) => {
        const d = s * batchTokens;
        return { step: s, tokens: d, compute: 6 * n * d, loss: loss(n, d) };
      });
    },
  };
}

/** The built-in laws with their published constants. */
export const kaplan: KaplanLaw = kaplanLaw();
export const chinchilla: ChinchillaLaw = chinchillaLaw();

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null;

/** Whether a value (a registered "scheduler" plugin, say) is a ScalingLaw: a form, constants, lossAtConvergence and curve. */
export function isScalingLaw(v: unknown): v is ScalingLaw {
  return (
    isObject(v) &&
    typeof v.name === "string" &&
    (v.form === "kaplan" || v.form === "chinchilla") &&
    isObject(v.constants) &&
    typeof v.lossAtConvergence === "function" &&
    typeof v.curve === "function"
  );
}

/** Whether a value is a Chinchilla-form law (what growth timing in a run's own units needs: loss(N, D), tokensToLoss, batchTokens). */
export function isChinchillaLaw(v: unknown): v is ChinchillaLaw {
  return (
    isScalingLaw(v) &&
    v.form === "chinchilla" &&
    typeof v.loss === "function" &&
    typeof v.tokensToLoss === "function" &&
    typeof v.computeOptimal === "function" &&
    typeof v.batchTokens === "number"
  );
}

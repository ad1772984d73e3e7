import { describe, expect, it } from "vitest";
import { chinchillaLaw } from "./laws.js";
import { MarginalGrowthDetector, computeOptimalChoice, largeModelAt, localPowerLaw, planGrowthInRunUnits } from "./marginal.js";

const law = chinchillaLaw({ E: 1.2, A: 60, alpha: 0.35, B: 90, beta: 0.3 });
const small = { params: 1e5, flopsPerToken: 8e5 };
const large = { params: 4e5, flopsPerToken: 2.8e6 };
const units = { batchTokens: 2048 };

describe("largeModelAt", () => {
  it("inverts the law and differentiates it in the run's units (against finite differences)", () => {
    const at = largeModelAt(law, large, units, 2.0)!;
    expect(law.loss(large.params, at.tokens)).toBeCloseTo(2.0, 12);
    expect(at.flops).toBeCloseTo(at.tokens * large.flopsPerToken, 0);
    expect(at.step).toBeCloseTo(at.tokens / 2048, 9);
    const h = at.tokens * 1e-6;
    const fd = (law.loss(large.params, at.tokens + h) - law.loss(large.params, at.tokens - h)) / (2 * h) / large.flopsPerToken;
    expect(at.dLdC / fd).toBeCloseTo(1, 6);
    // below the large model's floor E + A/N^α it never gets there
    expect(largeModelAt(law, large, units, 1.2 + 60 / 4e5 ** 0.35 - 1e-9)).toBeNull();
  });
});

describe("planGrowthInRunUnits", () => {
  it("grows where the small model's dL/dC meets the large model's at the same loss, which maximizes the saving", () => {
    const plan = planGrowthInRunUnits(law, small, large, units)!;
    expect(plan).not.toBeNull();
    const saving = (step: number) => {
      const d = step * units.batchTokens;
      const l = largeModelAt(law, large, units, law.loss(small.params, d));
      return l ? l.flops - d * small.flopsPerToken : -Infinity;
    };
    // The saving C_l(L) − C_s(L) is largest at the planned step (a grid around it is no better).
    for (const f of [0.5, 0.8, 0.95, 1.05, 1.25, 2])
      expect(saving(Math.round(plan.growAtStep * f))).toBeLessThanOrEqual(saving(plan.growAtStep) * (1 + 1e-9));
    expect(plan.predictedSaving).toBeGreaterThan(0);
    expect(plan.predictedSaving).toBeCloseTo(saving(plan.growAtStep) / plan.largeFlops, 9);
    expect(law.loss(large.params, plan.continueAtStep * units.batchTokens)).toBeCloseTo(plan.lossAtGrowth, 3);
  });

  it("terminates and agrees with a scan for every horizon (bisection bounds)", () => {
    const plan = planGrowthInRunUnits(law, small, large, units)!;
    for (const maxSteps of [plan.growAtStep, plan.growAtStep + 1, plan.growAtStep + 2, 3 * plan.growAtStep, 4 * plan.growAtStep + 3]) {
      expect(planGrowthInRunUnits(law, small, large, units, maxSteps)!.growAtStep).toBe(plan.growAtStep);
    }
    expect(planGrowthInRunUnits(law, small, large, units, plan.growAtStep - 1)).toBeNull();
  });

  it("says never when the large model is no better within the horizon", () => {
    expect(planGrowthInRunUnits(law, small, { params: 1.01e5, flopsPerToken: 1e9 }, units, 1000)).toBeNull();
  });
});

describe("MarginalGrowthDetector", () => {
  it("on the law's own curve, decides at the planned step (within the smoothing window and patience)", () => {
    const plan = planGrowthInRunUnits(law, small, large, units)!;
    const det = new MarginalGrowthDetector({ law, small, large, units, window: 5, patience: 1 });
    const every = Math.max(1, Math.round(plan.growAtStep / 200));
    let decided = null;
    for (let s = every; s < plan.growAtStep * 3 && !decided; s += every) {
      const d = s * units.batchTokens;
      decided = det.push({ step: s, compute: d * small.flopsPerToken, loss: law.loss(small.params, d) });
    }
    expect(decided).not.toBeNull();
    // the local fit lags by about half its window
    expect(Math.abs(decided!.growAtStep - plan.growAtStep)).toBeLessThanOrEqual(4 * every);
    expect(decided!.continueAtStep).toBeGreaterThan(0);
    expect(decided!.slopeThreshold).toBeLessThan(0);
  });

  it("a condition that holds for fewer than `patience` evaluations in a row does not trigger growth", () => {
    // Flat, then steep again, then flat: with patience 2 only the second flat stretch decides.
    const pts: [number, number][] = [
      [1, 3.0],
      [2, 3.0],
      [3, 3.0],
      [4, 2.6],
      [5, 2.3],
      [6, 2.3],
      [7, 2.3],
      [8, 2.3],
    ];
    const run = (patience: number) => {
      const det = new MarginalGrowthDetector({ law, small, large, units, window: 3, patience });
      for (const [s, l] of pts) {
        const d = det.push({ step: s, compute: s * 1e9, loss: l });
        if (d) return d.growAtStep;
      }
      return null;
    };
    expect(run(1)).toBe(3);
    expect(run(2)).toBe(8);
  });

  it("decides nothing above maxLoss (a plateau early in training is not the small model being spent)", () => {
    // A flat stretch at loss 3.0 (an early plateau), then a steady fall, then flat at 2.3.
    const pts: [number, number][] = [
      [1, 3.0],
      [2, 3.0],
      [3, 3.0],
      [4, 3.0],
      [5, 2.6],
      [6, 2.45],
      [7, 2.3],
      [8, 2.3],
      [9, 2.3],
      [10, 2.3],
    ];
    const run = (maxLoss?: number) => {
      const det = new MarginalGrowthDetector({ law, small, large, units, window: 3, patience: 2, ...(maxLoss === undefined ? {} : { maxLoss }) });
      for (const [s, l] of pts) {
        const d = det.push({ step: s, compute: s * 1e9, loss: l });
        if (d) return d.growAtStep;
      }
      return null;
    };
    expect(run()).toBe(4);
    expect(run(2.5)).toBe(10);
  });

  it("rejects bad input", () => {
    expect(() => new MarginalGrowthDetector({ law, small, large, units, window: 2 })).toThrow(/window/);
    const det = new MarginalGrowthDetector({ law, small, large, units });
    det.push({ step: 1, compute: 10, loss: 3 });
    expect(() => det.push({ step: 2, compute: 10, loss: 3 })).toThrow(/compute must be > 0 and increase/);
    expect(() => det.push({ step: 3, compute: 20, loss: NaN })).toThrow(/loss must be a finite number/);
  });
});

describe("localPowerLaw / computeOptimalChoice", () => {
  it("recovers an exact power law", () => {
    const pts = [1, 2, 4, 8].map((c, i) => ({ step: i, compute: c * 1e10, loss: 3 * (c * 1e10) ** -0.1 }));
    const f = localPowerLaw(pts, 8e10);
    expect(f.slope).toBeCloseTo(-0.1, 12);
    expect(f.loss).toBeCloseTo(3 * 8e10 ** -0.1, 12);
    expect(f.dLdC).toBeCloseTo((-0.1 * f.loss) / 8e10, 20);
  });

  it("picks the candidate of lowest predicted loss at the budget", () => {
    const { best, losses } = computeOptimalChoice(law, [small, large], 1e12);
    expect(losses).toHaveLength(2);
    expect(best).toBe(losses[0]!.loss < losses[1]!.loss ? small : large);
    // with a very large budget the larger model wins
    expect(computeOptimalChoice(law, [small, large], 1e18).best).toBe(large);
  });
});

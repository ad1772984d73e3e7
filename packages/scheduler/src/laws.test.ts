import { describe, expect, it } from "vitest";
import { CHINCHILLA_CONSTANTS, KAPLAN_CONSTANTS, chinchilla, chinchillaLaw, kaplan, kaplanLaw } from "./laws.js";

describe("Kaplan et al. 2020 with the seed's constants", () => {
  it("has the seed's constants", () => {
    expect(KAPLAN_CONSTANTS).toEqual({ Nc: 8.8e13, alphaN: 0.076, Sc: 2.1e3, alphaS: 0.76, Bstar: 2.1e8, alphaB: 0.21 });
  });
  it("matches hand-computed values", () => {
    // N = 1e8: (8.8e13/1e8)^0.076 = 880000^0.076 = exp(0.076·ln 880000) = 2.82996…
    expect(kaplan.lossAtConvergence(1e8)).toBeCloseTo(Math.exp(0.076 * Math.log(880000)), 12);
    expect(kaplan.lossAtConvergence(1e8)).toBeCloseTo(2.82996, 5);
    // S = 10000 at B_crit: S_min = 5000, (2100/5000)^0.76 = 0.42^0.76 = 0.51721…
    expect(kaplan.loss(1e8, 10000)).toBeCloseTo(2.82996 + 0.51721, 4);
    expect(kaplan.loss(1e8, 10000)).toBeCloseTo(kaplan.lossAtMinSteps(1e8, 5000), 12);
    // B_crit(3) = 2.1e8 / 3^(1/0.21) = 2.1e8 ≈ 1.12257e6 tokens
    expect(kaplan.criticalBatch(3)).toBeCloseTo(2.1e8 / 3 ** (1 / 0.21), 3);
    expect(kaplan.criticalBatch(3) / 1e6).toBeCloseTo(1.12257, 5);
    expect(kaplan.compute(1e8, 5e5, 1e4)).toBe(3e18);
    // S_min = S/(1 + B_crit/B): at B = B_crit it is S/2
    expect(kaplan.minSteps(1000, kaplan.criticalBatch(3), 3)).toBeCloseTo(500, 9);
    // steps to a loss inverts the loss
    const l = kaplan.loss(3e7, 12345);
    expect(kaplan.stepsToLoss(3e7, l)).toBeCloseTo(12345, 6);
    expect(kaplan.stepsToLoss(3e7, 1)).toBe(Infinity);
  });
  it("simulates learning curves with C = 6·N·B_crit(L)·S", () => {
    const [p] = kaplan.curve(1e8, [10000]);
    expect(p!.loss).toBeCloseTo(kaplan.loss(1e8, 10000), 12);
    expect(p!.compute).toBeCloseTo(6 * 1e8 * kaplan.criticalBatch(p!.loss) * 10000, -3);
    expect(p!.tokens).toBeCloseTo(kaplan.criticalBatch(p!.loss) * 10000, 3);
  });
  it("the compute-efficient frontier follows Table 6", () => {
    const f = kaplan.frontier(1);
    expect(f.params).toBeCloseTo(1.3e9, 0);
    expect(f.loss).toBeCloseTo(3.1e8 ** 0.05, 12);
    expect(kaplan.frontier(10).params / f.params).toBeCloseTo(10 ** 0.73, 9);
  });
  it("validates constants", () => {
    expect(() => kaplanLaw({ alphaN: -1 })).toThrow(/alphaN/);
    expect(() => kaplan.loss(0, 10)).toThrow(/N must be/);
  });
});

describe("Hoffmann et al. 2022", () => {
  it("has the paper's constants and matches hand-computed values", () => {
    expect(CHINCHILLA_CONSTANTS).toEqual({ E: 1.69, A: 406.4, B: 410.7, alpha: 0.34, beta: 0.28 });
    // N = 70e9, D = 1.4e12 (Chinchilla itself): 1.69 + 406.4/70e9^0.34 + 410.7/1.4e12^0.28
    const expected = 1.69 + 406.4 / Math.pow(70e9, 0.34) + 410.7 / Math.pow(1.4e12, 0.28);
    expect(chinchilla.loss(70e9, 1.4e12)).toBeCloseTo(expected, 12);
    expect(chinchilla.loss(70e9, 1.4e12)).toBeCloseTo(1.9367, 3);
    expect(chinchilla.lossAtConvergence(70e9)).toBeCloseTo(1.69 + 406.4 / Math.pow(70e9, 0.34), 12);
    expect(chinchilla.tokensToLoss(1e9, chinchilla.loss(1e9, 2e10))).toBeCloseTo(2e10, -2);
  });
  it("the compute-optimal split minimizes the loss at fixed C = 6ND", () => {
    const C = 5.76e23; // Chinchilla's budget
    const opt = chinchilla.computeOptimal(C);
    expect(6 * opt.params * opt.tokens).toBeCloseTo(C, -10);
    for (const f of [0.8, 1.25]) {
      const n = opt.params * f;
      expect(chinchilla.loss(n, C / (6 * n))).toBeGreaterThan(opt.loss);
    }
    // With the approach-3 constants the optimum for Chinchilla's budget is around 3.7e10 parameters.
    expect(opt.params).toBeGreaterThan(2e10);
    expect(opt.params).toBeLessThan(6e10);
  });
  it("curves count tokens as steps × batch tokens and C = 6·N·D", () => {
    const law = chinchillaLaw({}, 1000);
    const [p] = law.curve(1e6, [50]);
    expect(p).toEqual({ step: 50, tokens: 50000, compute: 6 * 1e6 * 50000, loss: law.loss(1e6, 50000) });
  });
});

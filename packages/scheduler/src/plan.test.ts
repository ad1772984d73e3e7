import { describe, expect, it } from "vitest";
import { chinchilla, kaplan } from "./laws.js";
import { constantOp, planGrowth, planStages, simulateCurve } from "./plan.js";

describe("constant_op (the seed's simulated Kaplan curves)", () => {
  it("reproduces 2.717 for width at any target size", () => {
    for (const target of [4e6, 4e7, 3.4e8, 4e9, 1.2e10]) {
      const c = constantOp(kaplan, target, "width");
      expect(Math.abs(c - 2.717)).toBeLessThan(0.003);
      expect(c.toFixed(2)).toBe("2.72");
    }
  });

  it("gives the seed's numbers for a 400M width growth (checked against the Python procedure)", () => {
    const p = planGrowth({ law: kaplan, targetParams: 4e8, operator: "width" });
    expect(p.growAtStep).toBe(26210);
    expect(p.continueAtStep).toBe(9640);
    expect(p.optimalityStep).toBe(25390);
    expect(p.constantOp).toBeCloseTo(26210 / 9640, 12);
    expect(p.lossAtGrowth).toBeCloseTo(3.078638888711129, 10);
    expect(p.computeSaving).toBeCloseTo(0.07756931820356591, 10);
    // saving = (C_large(equal loss) − C_small(growth)) / C_large(optimality)
    const large = simulateCurve(kaplan, 4e8);
    const small = simulateCurve(kaplan, 1e8);
    const at = (c: typeof large, s: number) => c.find((q) => q.step === s)!.compute;
    expect(p.computeSaving).toBeCloseTo((at(large, 9640) - at(small, 26210)) / at(large, 25390), 12);
  });

  it("depth: constant_op ≈ 1.62 with the depth threshold", () => {
    for (const target of [2e6, 2e8]) expect(constantOp(kaplan, target, "depth")).toBeCloseTo(1.617, 2);
    // The seed's 1.831 for depth is what the width threshold gives for a ×2 growth.
    expect(constantOp(kaplan, 2e8, "depth", { thresholdGrow: -0.0475 })).toBeCloseTo(1.831, 2);
  });
});

describe("multi-stage plans", () => {
  it("width then depth: sizes, equal-loss continuation and compute accounting", () => {
    const plan = planStages({ law: kaplan, targetParams: 8e8, operators: ["width", "depth"] });
    expect(plan.stages.map((s) => [s.operator, s.paramsBefore, s.paramsAfter])).toEqual([
      ["width", 1e8, 4e8],
      ["depth", 4e8, 8e8],
    ]);
    const [w, d] = plan.stages;
    expect(w!.growAtStep).toBe(26210);
    expect(w!.continueAtStep).toBe(9640);
    expect(d!.growAtStep).toBeGreaterThanOrEqual(w!.continueAtStep);
    const c = (n: number, s: number) => simulateCurve(kaplan, n).find((q) => q.step === s)!.compute;
    const staged =
      c(1e8, w!.growAtStep) + c(4e8, d!.growAtStep) - c(4e8, w!.continueAtStep) + c(8e8, plan.optimalityStep) - c(8e8, d!.continueAtStep);
    expect(plan.stagedCompute).toBeCloseTo(staged, -8);
    expect(plan.computeSaving).toBeCloseTo(1 - staged / c(8e8, plan.optimalityStep), 12);
    expect(plan.computeSaving).toBeGreaterThan(0);
    expect(plan.stagedSteps).toBe(w!.growAtStep + (d!.growAtStep - w!.continueAtStep) + (plan.optimalityStep - d!.continueAtStep));
  });

  it("rejects bad input with clear errors", () => {
    expect(() => planStages({ law: kaplan, targetParams: -1, operators: ["width"] })).toThrow(/target params/);
    expect(() => planStages({ law: kaplan, targetParams: 1e8, operators: [] })).toThrow(/at least one/);
    expect(() => planStages({ law: kaplan, targetParams: 1e8, operators: ["height" as never] })).toThrow(/unknown growth operator "height"/);
    expect(() => planStages({ law: kaplan, targetParams: 1e8, operators: ["width"], thresholdOpt: 0.1 })).toThrow(/negative/);
    expect(() => planStages({ law: kaplan, targetParams: 1e8, operators: ["width"], thresholdGrow: -0.001 })).toThrow(
      /threshold -0.001 is not reached by the 25.0M-parameter model within steps 4000–90000/,
    );
    expect(() => planStages({ law: kaplan, targetParams: 1e8, operators: ["width"], thresholdGrow: -0.5 })).toThrow(
      /already below the loss at growth/,
    );
    expect(() => planStages({ law: kaplan, targetParams: 1e8, operators: ["width"], grid: { from: 10, to: 5, every: 1 } })).toThrow(
      /invalid step grid/,
    );
  });

  it("works with the Chinchilla law too (whose curves the seed's thresholds were not tuned on)", () => {
    const p = planGrowth({ law: chinchilla, targetParams: 3e8, operator: "width" });
    expect(p.constantOp).toBeGreaterThan(1);
    expect(p.continueAtStep).toBeLessThan(p.growAtStep);
  });
});

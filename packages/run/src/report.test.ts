import { describe, expect, it } from "vitest";
import { compareRuns, flopsToReach, formatFlops, formatReport, growthPenalty } from "./report.js";
import type { CurvePoint, GrowthEvent, RunResult } from "./types.js";

/** Points from [flops, valLoss, stage?]; globalStep = flops / 10. */
function pts(rows: readonly (readonly [number, number, number?])[]): CurvePoint[] {
  return rows.map(([flops, valLoss, stage = 0]) => ({ globalStep: flops / 10, step: flops / 10, stage, flops, tokens: flops, valLoss }));
}

function growth(stage: number, flops: number, valLossBefore: number, operator = "width"): GrowthEvent {
  return { stage, operator, options: {}, flops, globalStep: flops / 10, timing: "auto", valLossBefore, valLossAfter: valLossBefore + 0.5, paramsBefore: 1e6, paramsAfter: 4e6 };
}

function run(group: string, seed: number, rows: readonly (readonly [number, number, number?])[], growths: GrowthEvent[] = [], done = true): RunResult {
  return { format: "staged-run-result", version: 1, name: `${group}-s${seed}`, group, seed, done, budgetFlops: 1e3, points: pts(rows), growths };
}

describe("flopsToReach", () => {
  const curve = pts([[100, 4.0], [200, 3.0], [300, 2.5]]);

  it("interpolates the FLOPs linearly in the loss between the points around the crossing", () => {
    expect(flopsToReach(curve, 3.5)).toBe(150);
    expect(flopsToReach(curve, 2.75)).toBe(250);
    expect(flopsToReach(curve, 3.8)).toBeCloseTo(120, 9);
  });

  it("gives a point's FLOPs when the loss is exactly the point's, and the first point's when it starts below", () => {
    expect(flopsToReach(curve, 3.0)).toBe(200);
    expect(flopsToReach(curve, 2.5)).toBe(300);
    expect(flopsToReach(curve, 4.0)).toBe(100);
    expect(flopsToReach(curve, 9)).toBe(100);
  });

  it("ignores a dip below the loss that goes back above it", () => {
    const dip = pts([[100, 4.0], [200, 3.0], [300, 3.6], [400, 2.9]]);
    // Crosses 3.2 at 180 first, but goes back to 3.6: the sustained crossing is between 300 and 400.
    expect(flopsToReach(dip, 3.2)).toBeCloseTo(300 + (100 * 0.4) / 0.7, 9);
    expect(flopsToReach(pts([[100, 4.0], [200, 3.0], [300, 3.6]]), 3.2)).toBeNull();
  });

  it("is null when the loss is never reached or there are no points", () => {
    expect(flopsToReach(curve, 2.4)).toBeNull();
    expect(flopsToReach([], 3)).toBeNull();
  });

  it("treats a NaN loss as above the target", () => {
    expect(flopsToReach(pts([[100, 4], [200, Number.NaN], [300, 2]]), 3)).toBe(300);
    expect(flopsToReach(pts([[100, 4], [200, 2], [300, Number.NaN]]), 3)).toBeNull();
  });

  it("accepts equal FLOPs and throws on points out of FLOPs order", () => {
    expect(flopsToReach(pts([[100, 4], [200, 3.5], [200, 3.0]]), 3.2)).toBe(200);
    expect(() => flopsToReach(pts([[100, 4], [300, 3], [200, 2]]), 3.5)).toThrow(/not in increasing flops order/);
  });
});

describe("growthPenalty", () => {
  const staged = run(
    "staged",
    0,
    [[100, 4.0], [200, 3.5], [210, 3.9, 1], [250, 3.7, 1], [300, 3.4, 1], [350, 3.8, 1], [400, 3.2, 1], [450, 3.3, 2], [500, 3.0, 2]],
    [growth(1, 200, 3.5), growth(2, 420, 3.2, "depth")],
  );

  it("measures the rise over the loss before the growth and the FLOPs and steps to get back to it", () => {
    const p = growthPenalty(staged, 0);
    expect(p.stage).toBe(1);
    expect(p.operator).toBe("width");
    expect(p.before).toBe(3.5);
    expect(p.maxRise).toBeCloseTo(0.4, 12); // 3.9 − 3.5
    expect(p.penalty).toBeCloseTo(0.4, 12);
    expect(p.recoverFlops).toBe(100); // 300 − 200: the first point after the peak back at 3.5 or below
    expect(p.recoverSteps).toBe(10);
    // a rise after a first recovery (the re-warmed LR) counts, and recovery is after it
    const late = run("staged", 4, [[100, 4], [200, 3.5], [220, 3.4, 1], [260, 3.8, 1], [300, 3.6, 1], [340, 3.45, 1]], [growth(1, 200, 3.5)]);
    const q = growthPenalty(late, 0);
    expect(q.maxRise).toBeCloseTo(0.3, 12);
    expect(q.recoverFlops).toBe(140);
  });

  it("reports no recovery when the stage never gets back", () => {
    const p = growthPenalty(staged, 1);
    expect(p.maxRise).toBeCloseTo(0.1, 12); // 3.3 − 3.2 at 450; 3.0 at 500 recovers
    expect(p.recoverFlops).toBe(80);
    const never = run("staged", 1, [[100, 4], [200, 3.5], [250, 3.9, 1], [300, 3.6, 1]], [growth(1, 200, 3.5)]);
    const q = growthPenalty(never, 0);
    expect(q.maxRise).toBeCloseTo(0.4, 12);
    expect(q.recoverFlops).toBeNull();
    expect(q.recoverSteps).toBeNull();
  });

  it("keeps a negative rise signed and the penalty at zero; null without points in the stage", () => {
    const better = run("staged", 2, [[100, 4], [200, 3.5], [250, 3.3, 1], [300, 3.6, 1]], [growth(1, 200, 3.5)]);
    const p = growthPenalty(better, 0);
    expect(p.maxRise).toBeCloseTo(0.1, 12); // 3.6 at 300
    const never = run("staged", 5, [[100, 4], [200, 3.5], [250, 3.3, 1], [300, 3.2, 1]], [growth(1, 200, 3.5)]);
    const n = growthPenalty(never, 0);
    expect(n.maxRise).toBeCloseTo(-0.2, 12);
    expect(n.penalty).toBe(0);
    expect(n.recoverFlops).toBe(0);
    const empty = growthPenalty(run("staged", 3, [[100, 4], [200, 3.5]], [growth(1, 200, 3.5)]), 0);
    expect(empty.maxRise).toBeNull();
    expect(empty.penalty).toBeNull();
    expect(empty.recoverFlops).toBeNull();
  });

  it("throws on a growth the run does not have", () => {
    expect(() => growthPenalty(staged, 2)).toThrow(/staged-s0: no growth #2 \(the run has 2\)/);
  });
});

describe("compareRuns", () => {
  // Each reaches loss 3.0 at the midpoint of its two points' FLOPs.
  const reachAt = (group: string, seed: number, at: number) => run(group, seed, [[at - 50, 3.5], [at + 50, 2.5]]);
  const results = [
    reachAt("staged", 1, 80),
    reachAt("baseline", 1, 120),
    reachAt("width", 0, 90),
    reachAt("staged", 0, 70),
    reachAt("baseline", 0, 100),
    reachAt("width", 1, 130),
  ];

  it("computes the saving over the baseline, its per-seed range and whether it is outside the seed noise", () => {
    const rep = compareRuns(results, { losses: [3.0] });
    expect(rep.baseline).toBe("baseline");
    expect(rep.targets).toEqual([{ label: "loss 3", loss: 3 }]);
    expect(rep.groups.map((g) => g.group)).toEqual(["baseline", "staged", "width"]);
    const [base, staged, width] = rep.groups;
    expect(base!.baseline).toBe(true);
    expect(base!.runs.map((r) => r.seed)).toEqual([0, 1]);
    expect(base!.reach[0]!.perSeed.map((s) => s.flops)).toEqual([100, 120]);
    expect(base!.reach[0]!.mean).toBe(110);
    expect(base!.reach[0]!.saving).toBeNull();
    const s = staged!.reach[0]!;
    expect(s.perSeed.map((p) => p.flops)).toEqual([70, 80]);
    expect(s.mean).toBe(75);
    expect(s.reached).toBe(2);
    expect(s.total).toBe(2);
    expect(s.saving!.saving).toBeCloseTo(1 - 75 / 110, 12);
    expect(s.saving!.perSeed[0]).toBeCloseTo(1 - 70 / 110, 12);
    expect(s.saving!.min).toBeCloseTo(1 - 80 / 110, 12);
    expect(s.saving!.max).toBeCloseTo(1 - 70 / 110, 12);
    expect(s.saving!.outsideNoise).toBe(true);
    const w = width!.reach[0]!;
    expect(w.saving!.saving).toBeCloseTo(0, 12); // mean 110 = baseline mean
    expect(w.saving!.min).toBeCloseTo(1 - 130 / 110, 12);
    expect(w.saving!.outsideNoise).toBe(false); // 130 is not below 100
  });

  it("averages over the seeds that reached the target and counts them; a seed that did not is not outside the noise", () => {
    const rep = compareRuns([...results.filter((r) => r.group === "baseline"), reachAt("staged", 0, 70), run("staged", 1, [[50, 3.5], [100, 3.2]])], { losses: [3.0] });
    const s = rep.groups[1]!.reach[0]!;
    expect(s.perSeed.map((p) => p.flops)).toEqual([70, null]);
    expect(s.mean).toBe(70);
    expect(s.reached).toBe(1);
    expect(s.total).toBe(2);
    expect(s.saving!.perSeed).toEqual([1 - 70 / 110, null]);
    expect(s.saving!.outsideNoise).toBe(false);
  });

  it("defaults to the baseline's mean and worst final losses", () => {
    const rep = compareRuns([
      run("baseline", 0, [[100, 3.0], [200, 2.5]]),
      run("baseline", 1, [[100, 3.0], [200, 2.7]]),
      run("staged", 0, [[100, 2.9], [150, 2.4]]),
    ]);
    expect(rep.targets.map((t) => t.label)).toEqual(["baseline mean final", "baseline worst final"]);
    expect(rep.targets[0]!.loss).toBeCloseTo(2.6, 12);
    expect(rep.targets[1]!.loss).toBe(2.7);
    const base = rep.groups[0]!;
    expect(base.reach[0]!.reached).toBe(1); // the worse seed never gets to the mean
    expect(base.reach[1]!.reached).toBe(2); // every seed gets to the worst
    expect(base.reach[1]!.perSeed[0]!.flops).toBeCloseTo(160, 9);
    expect(base.reach[1]!.perSeed[1]!.flops).toBeCloseTo(200, 9);
    expect(base.reach[0]!.perSeed[0]!.flops).toBeCloseTo(180, 9);
    expect(base.reach[0]!.perSeed[1]!.flops).toBeNull();
    expect(base.finalLoss!.mean).toBeCloseTo(2.6, 12);
    expect(base.finalLoss!.min).toBe(2.5);
    expect(base.finalLoss!.max).toBe(2.7);
    expect(base.meanTotalFlops).toBe(200);
    expect(rep.groups[1]!.meanTotalFlops).toBe(150);
    // One baseline seed: one target.
    expect(compareRuns([run("baseline", 0, [[100, 3.0], [200, 2.5]])]).targets).toEqual([{ label: "baseline mean final", loss: 2.5 }]);
  });

  it("summarizes the penalty of each growth over the seeds", () => {
    const a = run("staged", 0, [[100, 4.0], [200, 3.5], [210, 3.9, 1], [300, 3.4, 1]], [growth(1, 200, 3.5)]);
    const b = run("staged", 1, [[100, 4.0], [200, 3.5], [210, 3.7, 1], [400, 3.4, 1]], [growth(1, 200, 3.5)]);
    const c = run("staged", 2, [[100, 4.0], [200, 3.5], [210, 3.8, 1], [400, 3.6, 1]], [growth(1, 200, 3.5)]);
    const rep = compareRuns([run("baseline", 0, [[100, 4], [400, 3.3]]), a, b, c]);
    const gr = rep.groups[1]!.growths;
    expect(gr).toHaveLength(1);
    expect(gr[0]!.operator).toBe("width");
    expect(gr[0]!.runs).toBe(3);
    expect(gr[0]!.meanMaxRise).toBeCloseTo((0.4 + 0.2 + 0.3) / 3, 12);
    expect(gr[0]!.recovered).toBe(2);
    expect(gr[0]!.meanRecoverFlops).toBe(150); // (100 + 200) / 2
    expect(gr[0]!.meanRecoverSteps).toBe(15);
    expect(rep.groups[0]!.growths).toEqual([]);
  });

  it("throws without a baseline group, naming the groups present, and on a seed given twice", () => {
    expect(() => compareRuns(results.filter((r) => r.group !== "baseline"))).toThrow('no baseline group "baseline" among the results (groups: staged, width)');
    expect(compareRuns(results, { baseline: "width", losses: [3] }).groups[0]!.group).toBe("width");
    expect(() => compareRuns([...results, reachAt("staged", 0, 75)])).toThrow(/group "staged" has seed 0 twice/);
    expect(() => compareRuns([run("baseline", 0, [[200, 3], [100, 2]])])).toThrow(/baseline-s0: points are not in increasing flops order/);
  });
});

describe("formatReport", () => {
  it("writes Markdown tables with the FLOPs, the savings and the growth penalties", () => {
    const results = [
      run("baseline", 0, [[50, 3.5], [150, 2.5]]),
      run("baseline", 1, [[70, 3.5], [170, 2.5]]),
      run("staged", 0, [[20, 3.5], [100, 3.5], [105, 3.9, 1], [110, 3.5, 1], [120, 2.5, 1]], [growth(1, 100, 3.5)], false),
      run("staged", 1, [[30, 3.5], [110, 3.5], [115, 3.7, 1], [120, 3.5, 1], [125, 2.5, 1]], [growth(1, 110, 3.5)]),
    ];
    const rep = compareRuns(results, { losses: [3.0] });
    // staged reaches 3.0 at 115 and 122.5: mean 118.75 against 110.
    const text = formatReport(rep);
    const lines = text.split("\n");
    expect(lines[0]).toBe("| group | runs | final val loss | FLOPs to 3.0000 (loss 3) | saving vs baseline |");
    expect(lines[1]).toBe("| --- | --- | --- | --- | --- |");
    expect(lines[2]).toBe("| baseline | 2 | 2.5000 ± 0.0000 | 1.10e2 | (baseline) |");
    const pct = (f: number) => (f * 100).toFixed(1);
    expect(lines[3]).toBe(`| staged | 2 (1 done) | 2.5000 ± 0.0000 | 1.19e2 | ${pct(1 - 118.75 / 110)}% [${pct(1 - 122.5 / 110)}, ${pct(1 - 115 / 110)}] |`);
    expect(text).toContain("| group | growth # | operator | runs | max rise (nats) | FLOPs to recover |");
    expect(text).toContain("| staged | 1 | width | 2 | +0.3000 | 1.00e1 |"); // rises 0.4 and 0.2; both back at 3.5 10 FLOPs after growing
  });

  it("marks an outside-the-noise saving and unreached targets", () => {
    const rep = compareRuns(
      [run("baseline", 0, [[50, 3.5], [150, 2.5]]), run("baseline", 1, [[70, 3.5], [170, 2.5]]), run("fast", 0, [[20, 3.5], [120, 2.5]]), run("slow", 0, [[20, 3.5], [120, 3.2]])],
      { losses: [3.0] },
    );
    const text = formatReport(rep);
    expect(text).toContain(`| fast | 1 | 2.5000 ± 0.0000 | 7.00e1 | 36.4% [36.4, 36.4] * |`);
    expect(text).toContain("| slow | 1 | 3.2000 ± 0.0000 | never (0/1) | — |");
    expect(text).not.toContain("growth #");
  });

  it("writes FLOPs as 3.21e13", () => {
    expect(formatFlops(3.2109e13)).toBe("3.21e13");
    expect(formatFlops(5e-3)).toBe("5.00e-3");
  });
});

import { describe, expect, it } from "vitest";
import {
  frontierFlops,
  compareRuns,
  DEFAULT_DYNAMICS_WINDOWS,
  flopsToFirstReach,
  flopsToReach,
  formatFlops,
  formatReport,
  growthDynamics,
  growthPenalty,
  lossAtFlops,
  smoothCurve,
} from "./report.js";
import type { CurvePoint, GrowthEvent, RunResult } from "./types.js";

/** Points from [flops, valLoss, stage?]; globalStep = flops / 10. */
function pts(rows: readonly (readonly [number, number, number?])[]): CurvePoint[] {
  return rows.map(([flops, valLoss, stage = 0]) => ({ globalStep: flops / 10, step: flops / 10, stage, flops, tokens: flops, valLoss }));
}

function growth(stage: number, flops: number, valLossBefore: number, operator = "width"): GrowthEvent {
  return {
    stage,
    operator,
    options: {},
    flops,
    globalStep: flops / 10,
    timing: "auto",
    valLossBefore,
    valLossAfter: valLossBefore + 0.5,
    paramsBefore: 1e6,
    paramsAfter: 4e6,
  };
}

function run(
  group: string,
  seed: number,
  rows: readonly (readonly [number, number, number?])[],
  growths: GrowthEvent[] = [],
  done = true,
): RunResult {
  return { format: "staged-run-result", version: 1, name: `${group}-s${seed}`, group, seed, done, budgetFlops: 1e3, points: pts(rows), growths };
}

describe("flopsToReach", () => {
  const curve = pts([
    [100, 4.0],
    [200, 3.0],
    [300, 2.5],
  ]);

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
    const dip = pts([
      [100, 4.0],
      [200, 3.0],
      [300, 3.6],
      [400, 2.9],
    ]);
    // Crosses 3.2 at 180 first, but goes back to 3.6: the sustained crossing is between 300 and 400.
    expect(flopsToReach(dip, 3.2)).toBeCloseTo(300 + (100 * 0.4) / 0.7, 9);
    expect(
      flopsToReach(
        pts([
          [100, 4.0],
          [200, 3.0],
          [300, 3.6],
        ]),
        3.2,
      ),
    ).toBeNull();
  });

  it("is null when the loss is never reached or there are no points", () => {
    expect(flopsToReach(curve, 2.4)).toBeNull();
    expect(flopsToReach([], 3)).toBeNull();
  });

  it("treats a NaN loss as above the target", () => {
    expect(
      flopsToReach(
        pts([
          [100, 4],
          [200, Number.NaN],
          [300, 2],
        ]),
        3,
      ),
    ).toBe(300);
    expect(
      flopsToReach(
        pts([
          [100, 4],
          [200, 2],
          [300, Number.NaN],
        ]),
        3,
      ),
    ).toBeNull();
  });

  it("accepts equal FLOPs and throws on points out of FLOPs order", () => {
    expect(
      flopsToReach(
        pts([
          [100, 4],
          [200, 3.5],
          [200, 3.0],
        ]),
        3.2,
      ),
    ).toBe(200);
    expect(() =>
      flopsToReach(
        pts([
          [100, 4],
          [300, 3],
          [200, 2],
        ]),
        3.5,
      ),
    ).toThrow(/not in increasing flops order/);
  });
});

describe("growthPenalty", () => {
  const staged = run(
    "staged",
    0,
    [
      [100, 4.0],
      [200, 3.5],
      [210, 3.9, 1],
      [250, 3.7, 1],
      [300, 3.4, 1],
      [350, 3.8, 1],
      [400, 3.2, 1],
      [450, 3.3, 2],
      [500, 3.0, 2],
    ],
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
    const late = run(
      "staged",
      4,
      [
        [100, 4],
        [200, 3.5],
        [220, 3.4, 1],
        [260, 3.8, 1],
        [300, 3.6, 1],
        [340, 3.45, 1],
      ],
      [growth(1, 200, 3.5)],
    );
    const q = growthPenalty(late, 0);
    expect(q.maxRise).toBeCloseTo(0.3, 12);
    expect(q.recoverFlops).toBe(140);
  });

  it("reports no recovery when the stage never gets back", () => {
    const p = growthPenalty(staged, 1);
    expect(p.maxRise).toBeCloseTo(0.1, 12); // 3.3 − 3.2 at 450; 3.0 at 500 recovers
    expect(p.recoverFlops).toBe(80);
    const never = run(
      "staged",
      1,
      [
        [100, 4],
        [200, 3.5],
        [250, 3.9, 1],
        [300, 3.6, 1],
      ],
      [growth(1, 200, 3.5)],
    );
    const q = growthPenalty(never, 0);
    expect(q.maxRise).toBeCloseTo(0.4, 12);
    expect(q.recoverFlops).toBeNull();
    expect(q.recoverSteps).toBeNull();
  });

  it("keeps a negative rise signed and the penalty at zero; null without points in the stage", () => {
    const better = run(
      "staged",
      2,
      [
        [100, 4],
        [200, 3.5],
        [250, 3.3, 1],
        [300, 3.6, 1],
      ],
      [growth(1, 200, 3.5)],
    );
    const p = growthPenalty(better, 0);
    expect(p.maxRise).toBeCloseTo(0.1, 12); // 3.6 at 300
    const never = run(
      "staged",
      5,
      [
        [100, 4],
        [200, 3.5],
        [250, 3.3, 1],
        [300, 3.2, 1],
      ],
      [growth(1, 200, 3.5)],
    );
    const n = growthPenalty(never, 0);
    expect(n.maxRise).toBeCloseTo(-0.2, 12);
    expect(n.penalty).toBe(0);
    expect(n.recoverFlops).toBe(0);
    const empty = growthPenalty(
      run(
        "staged",
        3,
        [
          [100, 4],
          [200, 3.5],
        ],
        [growth(1, 200, 3.5)],
      ),
      0,
    );
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
  const reachAt = (group: string, seed: number, at: number) =>
    run(group, seed, [
      [at - 50, 3.5],
      [at + 50, 2.5],
    ]);
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
    const rep = compareRuns(
      [
        ...results.filter((r) => r.group === "baseline"),
        reachAt("staged", 0, 70),
        run("staged", 1, [
          [50, 3.5],
          [100, 3.2],
        ]),
      ],
      { losses: [3.0] },
    );
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
      run("baseline", 0, [
        [100, 3.0],
        [200, 2.5],
      ]),
      run("baseline", 1, [
        [100, 3.0],
        [200, 2.7],
      ]),
      run("staged", 0, [
        [100, 2.9],
        [150, 2.4],
      ]),
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
    expect(
      compareRuns([
        run("baseline", 0, [
          [100, 3.0],
          [200, 2.5],
        ]),
      ]).targets,
    ).toEqual([{ label: "baseline mean final", loss: 2.5 }]);
  });

  it("compares the losses after the common cooldown, with the loss before it, over the runs that finished it", () => {
    const fin = (r: RunResult, valLoss: number, valLossBefore: number): RunResult => ({
      ...r,
      final: { steps: 50, flops: 260, valLoss, blocks: 400, tokens: 51200, valLossBefore },
    });
    const rep = compareRuns([
      fin(
        run("baseline", 0, [
          [100, 3.0],
          [200, 2.5],
        ]),
        2.3,
        2.5,
      ),
      fin(
        run("baseline", 1, [
          [100, 3.0],
          [200, 2.7],
        ]),
        2.4,
        2.7,
      ),
      fin(
        run("staged", 0, [
          [100, 2.9],
          [200, 2.4],
        ]),
        2.2,
        2.4,
      ),
      run("staged", 1, [
        [100, 2.9],
        [200, 2.6],
      ]),
      run("other", 0, [
        [100, 2.9],
        [200, 2.6],
      ]),
    ]);
    const [base, other, staged] = rep.groups;
    expect(base!.cooled).toMatchObject({ runs: 2, steps: 50, blocks: 400, vsBaseline: null });
    expect(base!.cooled!.valLoss.mean).toBeCloseTo(2.35, 12);
    expect(staged!.cooled!.runs).toBe(1);
    expect(staged!.cooled!.vsBaseline).toBeCloseTo(-0.15, 12);
    expect(staged!.cooled!.before).toEqual({ mean: 2.4, min: 2.4, max: 2.4 });
    expect(other!.cooled).toBeNull();
    const text = formatReport(rep);
    expect(text).toContain("| staged | 1/2 | 2.2000 [2.2000, 2.2000] | -0.1500 | 2.4000 [2.4000, 2.4000] |");
    expect(text).toContain("trained 50 more steps with the LR decaying linearly to 0 and was evaluated on 400 validation blocks");
    expect(formatReport(compareRuns([run("baseline", 0, [[100, 3.0]])]))).not.toContain("cooldown");
  });

  it("prices a cooled-down loss on the baseline's cooled-down frontier: FLOPs to it, the saving, per seed", () => {
    const ev = (flops: number, valLoss: number) => ({ steps: 50, flops, valLoss, blocks: 400, tokens: 51200, valLossBefore: valLoss + 0.1 });
    const base = (seed: number, d: number): RunResult => ({
      ...run("baseline", seed, [
        [100, 3.0],
        [200, 2.5],
      ]),
      frontier: [ev(100, 2.8 + d), ev(150, 2.6 + d)],
      final: ev(200, 2.4 + d),
    });
    const rep = compareRuns([
      base(0, -0.01),
      base(1, 0.01),
      {
        ...run("staged", 0, [
          [100, 2.9],
          [200, 2.4],
        ]),
        final: ev(200, 2.5),
      },
      {
        ...run("staged", 1, [
          [100, 2.9],
          [200, 2.4],
        ]),
        final: ev(200, 2.7),
      },
      {
        ...run("better", 0, [
          [100, 2.9],
          [200, 2.4],
        ]),
        final: ev(200, 2.3),
      },
      {
        ...run("worse", 0, [
          [100, 2.9],
          [200, 2.4],
        ]),
        final: ev(200, 2.9),
      },
    ]);
    expect(rep.frontier).toEqual([
      { flops: 100, loss: 2.8 },
      { flops: 150, loss: 2.6 },
      { flops: 200, loss: 2.4 },
    ]);
    const g = (name: string) => rep.groups.find((x) => x.group === name)!.cooled!;
    // Mean 2.6: exactly the frontier's 150 FLOPs, so the staged runs' 200 FLOPs are 1/3 more (saving −33.3%).
    expect(g("staged").frontier!.flops).toBeCloseTo(150, 9);
    expect(g("staged").frontier!.saving).toBeCloseTo(1 - 200 / 150, 9);
    expect(g("staged").frontier!.extrapolated).toBe(false);
    // Per seed: 2.5 lies halfway in loss between 150 and 200, linear in log FLOPs: √(150·200).
    expect(g("staged").frontier!.perSeed[0]).toBeCloseTo(1 - 200 / Math.sqrt(150 * 200), 9);
    expect(g("staged").frontier!.perSeed[1]).toBeCloseTo(1 - 200 / Math.exp(Math.log(100) + 0.5 * Math.log(1.5)), 9);
    // Below the last point: the last two extended as a power law, said so.
    const b = g("better").frontier!;
    const slope = Math.log(2.4 / 2.6) / Math.log(200 / 150);
    expect(b.extrapolated).toBe(true);
    expect(b.flops).toBeCloseTo(200 * Math.exp(Math.log(2.3 / 2.4) / slope), 6);
    expect(b.saving).toBeGreaterThan(0);
    expect(g("worse").frontier).toBeNull(); // above the frontier's first point
    const text = formatReport(rep);
    expect(text).toContain("| staged | 2/2 | 2.6000 [2.5000, 2.7000] | +0.2000 | 2.7000 [2.6000, 2.8000] | 2.00e2 | 1.50e2 | -33.3% [");
    expect(text).toMatch(/\| better \|.*\(extrapolated\) \| \d+\.\d%/);
    expect(text).toContain("cooled-down frontier (the same cooldown from copies at 1.00e2, 1.50e2, 2.00e2 FLOPs with it: 2.8000, 2.6000, 2.4000)");
    expect(frontierFlops([{ flops: 1, loss: 2 }], 2)).toBeNull();
  });

  it("summarizes the penalty of each growth over the seeds", () => {
    const a = run(
      "staged",
      0,
      [
        [100, 4.0],
        [200, 3.5],
        [210, 3.9, 1],
        [300, 3.4, 1],
      ],
      [growth(1, 200, 3.5)],
    );
    const b = run(
      "staged",
      1,
      [
        [100, 4.0],
        [200, 3.5],
        [210, 3.7, 1],
        [400, 3.4, 1],
      ],
      [growth(1, 200, 3.5)],
    );
    const c = run(
      "staged",
      2,
      [
        [100, 4.0],
        [200, 3.5],
        [210, 3.8, 1],
        [400, 3.6, 1],
      ],
      [growth(1, 200, 3.5)],
    );
    const rep = compareRuns([
      run("baseline", 0, [
        [100, 4],
        [400, 3.3],
      ]),
      a,
      b,
      c,
    ]);
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
    expect(() => compareRuns(results.filter((r) => r.group !== "baseline"))).toThrow(
      'no baseline group "baseline" among the results (groups: staged, width)',
    );
    expect(compareRuns(results, { baseline: "width", losses: [3] }).groups[0]!.group).toBe("width");
    expect(() => compareRuns([...results, reachAt("staged", 0, 75)])).toThrow(/group "staged" has seed 0 twice/);
    expect(() =>
      compareRuns([
        run("baseline", 0, [
          [200, 3],
          [100, 2],
        ]),
      ]),
    ).toThrow(/baseline-s0: points are not in increasing flops order/);
  });
});

/** A run from a loss function per stage: points every `step` FLOPs from 0 to `end`, stage k after the k-th of `growAt`. */
function curveRun(
  group: string,
  seed: number,
  loss: (flops: number, stage: number) => number,
  growAt: number[] = [],
  end = 1000,
  step = 10,
  budget = 1000,
): RunResult {
  const rows: [number, number, number][] = [];
  for (let i = 0; i * step <= end + 1e-9; i++) {
    const f = i * step;
    const stage = growAt.filter((c) => f > c).length;
    rows.push([f, loss(f, stage), stage]);
  }
  const growths = growAt.map((c, k) => growth(k + 1, c, loss(c, k)));
  return { ...run(group, seed, rows, growths), budgetFlops: budget };
}

/** Deterministic uniform noise in [−amp, amp] (a linear congruential generator). */
function noise(seed: number, amp: number): () => number {
  let x = seed + 1;
  return () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return ((x / 2 ** 32) * 2 - 1) * amp;
  };
}

describe("smoothCurve, lossAtFlops, flopsToFirstReach", () => {
  it("smoothCurve is exact on a straight line, also at the ends, and drops non-finite losses", () => {
    const line = pts([
      [0, 5],
      [10, 4.9],
      [20, 4.8],
      [30, Number.NaN],
      [40, 4.6],
      [50, 4.5],
    ]);
    const s = smoothCurve(line, 15);
    expect(s.map((p) => p.flops)).toEqual([0, 10, 20, 40, 50]);
    s.forEach((p) => expect(p.valLoss).toBeCloseTo(5 - p.flops / 100, 12));
    expect(smoothCurve(line, 0).map((p) => p.valLoss)).toEqual([5, 4.9, 4.8, 4.6, 4.5]);
    expect(() => smoothCurve(line, -1)).toThrow(/half-width/);
  });

  it("smoothCurve takes out most of the noise: a local linear fit over ±halfWidth FLOPs", () => {
    const next = noise(7, 0.01);
    const noisy = pts(Array.from({ length: 201 }, (_, i) => [i * 10, 3 - i * 0.001 + next()] as const));
    const err = (c: readonly CurvePoint[]) => Math.max(...c.slice(20, -20).map((p) => Math.abs(p.valLoss - (3 - p.flops * 1e-4))));
    expect(err(noisy)).toBeGreaterThan(0.009);
    expect(err(smoothCurve(noisy, 100))).toBeLessThan(0.005); // 21 points: the noise / ~4.6
    // three equal-FLOPs points: their mean
    expect(
      smoothCurve(
        pts([
          [10, 1],
          [10, 2],
          [10, 3],
        ]),
        5,
      ).map((p) => p.valLoss),
    ).toEqual([2, 2, 2]);
  });

  it("lossAtFlops interpolates linearly in FLOPs and is null outside the curve", () => {
    const c = pts([
      [100, 4],
      [200, 3],
      [300, 2.5],
    ]);
    expect(lossAtFlops(c, 150)).toBe(3.5);
    expect(lossAtFlops(c, 100)).toBe(4);
    expect(lossAtFlops(c, 300)).toBe(2.5);
    expect(lossAtFlops(c, 99)).toBeNull();
    expect(lossAtFlops(c, 301)).toBeNull();
    expect(lossAtFlops([], 1)).toBeNull();
  });

  it("flopsToFirstReach takes the first crossing, inverse of lossAtFlops, and is null when the curve starts below or never gets there", () => {
    const dip = pts([
      [100, 4.0],
      [200, 3.0],
      [300, 3.6],
      [400, 2.9],
    ]);
    expect(flopsToFirstReach(dip, 3.5)).toBe(150);
    expect(flopsToFirstReach(dip, 3.2)).toBeCloseTo(180, 9); // flopsToReach: the sustained crossing after 300
    expect(lossAtFlops(dip, flopsToFirstReach(dip, 3.2)!)).toBeCloseTo(3.2, 12);
    expect(flopsToFirstReach(dip, 4.0)).toBe(100);
    expect(flopsToFirstReach(dip, 4.5)).toBeNull();
    expect(flopsToFirstReach(dip, 2.5)).toBeNull();
  });
});

describe("growthDynamics", () => {
  // Budget 1000 FLOPs; window 0.1 → W = 100. Baseline 0: 5 − C/500, reaches 4.0 at 500; baseline 1: 5 − C/400, at 400.
  const base0 = curveRun("baseline", 0, (c) => 5 - c / 500);
  const base1 = curveRun("baseline", 1, (c) => 5 - c / 400);
  // The small model: 5 − C/300, grown at 300 at loss 4.0.
  const small = (c: number) => 5 - c / 300;

  it("gives ratio 1 and Δ 0 for a grown run that is the baseline shifted in FLOPs", () => {
    const shifted = curveRun("staged", 0, (c, s) => (s === 0 ? small(c) : 5 - (c + 200) / 500), [300]);
    const d = growthDynamics(shifted, 0, [base0], 0.1);
    expect(d.window).toBe(0.1);
    expect(d.windowFlops).toBe(100);
    expect(d.flops).toBe(300);
    expect(d.loss).toBeCloseTo(4.0, 12);
    expect(d.lossAfter).toBeCloseTo(3.8, 12);
    expect(d.decrease).toBeCloseTo(0.2, 12);
    const b = d.perBaseline[0]!;
    expect(b.name).toBe("baseline-s0");
    expect(b.flops).toBeCloseTo(500, 9);
    expect(b.lossAfter).toBeCloseTo(3.8, 12);
    expect(b.ratio).toBeCloseTo(1, 9);
    expect(b.delta).toBeCloseTo(0, 12);
    expect(d.ratio!.mean).toBeCloseTo(1, 9);
  });

  it("gives 0.5 for a grown run that decreases half as fast, per baseline seed, with the mean, min and max", () => {
    const half = curveRun("staged", 0, (c, s) => (s === 0 ? small(c) : 4 - (c - 300) / 1000), [300]);
    const d = growthDynamics(half, 0, [base0, base1], 0.1);
    expect(d.decrease).toBeCloseTo(0.1, 12);
    expect(d.perBaseline.map((b) => b.flops)).toEqual([expect.closeTo(500, 9), expect.closeTo(400, 9)]);
    expect(d.perBaseline[0]!.ratio).toBeCloseTo(0.5, 9); // 0.1 / 0.2
    expect(d.perBaseline[1]!.ratio).toBeCloseTo(0.4, 9); // 0.1 / 0.25
    expect(d.perBaseline[0]!.delta).toBeCloseTo(0.1, 12); // 3.9 − 3.8
    expect(d.perBaseline[1]!.delta).toBeCloseTo(0.15, 12); // 3.9 − 3.75
    expect(d.ratio!.mean).toBeCloseTo(0.45, 9);
    expect(d.ratio!.min).toBeCloseTo(0.4, 9);
    expect(d.ratio!.max).toBeCloseTo(0.5, 9);
    expect(d.delta!.mean).toBeCloseTo(0.125, 12);
  });

  it("measures on the shape of real curves: shifted → 1 and 0, half the decrease → 0.5, with 0.01 noise on every point", () => {
    // Budget 1e4, W = 1000, points every 10 FLOPs. The baseline: 2 + 3/sqrt(1 + C/100); the small model runs along
    // it 1.5× as fast and grows at 2000 (loss = the baseline's at 3000).
    const lb = (c: number) => 2 + 3 / Math.sqrt(1 + c / 100);
    const withNoise = (seed: number, amp: number, f: (c: number, s: number) => number) => {
      const next = noise(seed, amp);
      return (c: number, s: number) => f(c, s) + next();
    };
    const make = (amp: number, post: (c: number) => number, seed = 0) => {
      const bases = [0, 1, 2].map((b) =>
        curveRun(
          "baseline",
          b,
          withNoise(10 + b, amp, (c) => lb(c)),
          [],
          10_000,
          10,
          10_000,
        ),
      );
      const staged = curveRun(
        "staged",
        seed,
        withNoise(seed, amp, (c, s) => (s === 0 ? lb(1.5 * c) : post(c))),
        [2000],
        10_000,
        10,
        10_000,
      );
      return growthDynamics(staged, 0, bases, 0.1);
    };
    // Without noise, the smoothing's own bias: L_g is a one-sided fit at the end of a convex curve, ~5e-4 nats
    // low (curvature × (W/4)² / 12), against decreases of ~0.07 nats over W: about 1% of the ratio.
    const shifted = make(0, (c) => lb(c + 1000));
    expect(Math.abs(shifted.ratio!.mean - 1)).toBeLessThan(0.015);
    expect(Math.abs(shifted.delta!.mean)).toBeLessThan(1e-3);
    const half = make(0, (c) => lb(3000) - (lb(3000) - lb(c + 1000)) / 2);
    expect(Math.abs(half.ratio!.mean - 0.5)).toBeLessThan(0.015);
    for (const seed of [0, 1, 2]) {
      const noisy = make(0.01, (c) => lb(c + 1000), seed);
      // D ≈ 0.07 nats over W against noise ±0.01 on every point: measured within 0.05 of the answer (seeds 0–2)
      expect(Math.abs(noisy.ratio!.mean - 1)).toBeLessThan(0.07);
      expect(Math.abs(noisy.delta!.mean)).toBeLessThan(0.005);
      const noisyHalf = make(0.01, (c) => lb(3000) - (lb(3000) - lb(c + 1000)) / 2, seed);
      expect(Math.abs(noisyHalf.ratio!.mean - 0.5)).toBeLessThan(0.06);
    }
  });

  it("is null where the window runs past the end of the stage or of a baseline curve, never extrapolated", () => {
    const shifted = curveRun("staged", 0, (c, s) => (s === 0 ? small(c) : 5 - (c + 200) / 500), [300]);
    const past = growthDynamics(shifted, 0, [base0], 0.8); // C_g + W = 1100 > 1000
    expect(past.lossAfter).toBeNull();
    expect(past.decrease).toBeNull();
    expect(past.perBaseline[0]!.flops).toBeCloseTo(500, 9);
    expect(past.perBaseline[0]!.lossAfter).toBeNull(); // C_b + W = 1300
    expect(past.perBaseline[0]!.ratio).toBeNull();
    expect(past.ratio).toBeNull();
    expect(past.delta).toBeNull();
    // One baseline ends before C_b + W: the spread is over the other.
    const short = curveRun("baseline", 2, (c) => 5 - c / 400, [], 550);
    const d = growthDynamics(shifted, 0, [base0, short], 0.2); // W = 200: 500 → 700 fine, 400 → 600 past 550
    expect(d.perBaseline[1]!.flops).toBeCloseTo(400, 9);
    expect(d.perBaseline[1]!.lossAfter).toBeNull();
    expect(d.ratio!.mean).toBeCloseTo(1, 9);
    expect(d.ratio!.min).toBeCloseTo(1, 9);
    // A second growth 50 FLOPs later ends the stage: W = 100 runs past it although the run goes on.
    const twice = curveRun("staged", 0, (c, s) => (s === 0 ? small(c) : 5 - (c + 200) / 500), [300, 350]);
    expect(growthDynamics(twice, 0, [base0], 0.1).lossAfter).toBeNull();
    expect(growthDynamics(twice, 0, [base0], 0.04).ratio!.mean).toBeCloseTo(1, 9);
    // A baseline that never gets down to L_g, or starts below it: no C_b.
    const high = curveRun("baseline", 3, () => 4.5);
    const low = curveRun("baseline", 4, (c) => 3.5 - c / 1e4);
    expect(growthDynamics(shifted, 0, [high, low], 0.1).perBaseline.map((b) => [b.flops, b.ratio])).toEqual([
      [null, null],
      [null, null],
    ]);
  });

  it("takes L_g from the stage before the growth, else valLossBefore, and throws on a missing growth or a bad window", () => {
    const noBefore = run(
      "staged",
      0,
      [
        [310, 3.9, 1],
        [400, 3.8, 1],
        [500, 3.7, 1],
      ],
      [growth(1, 300, 4.0)],
    );
    expect(growthDynamics(noBefore, 0, [base0], 0.1).loss).toBe(4.0);
    expect(growthDynamics(noBefore, 0, [base0], 0.1).perBaseline[0]!.flops).toBeCloseTo(500, 9);
    expect(() => growthDynamics(noBefore, 1, [base0], 0.1)).toThrow(/staged-s0: no growth #1/);
    expect(() => growthDynamics(noBefore, 0, [base0], 0)).toThrow(/positive fraction/);
    expect(() => growthDynamics(noBefore, 0, [base0], Number.NaN)).toThrow(/positive fraction/);
  });
});

describe("compareRuns: dynamics", () => {
  const base0 = curveRun("baseline", 0, (c) => 5 - c / 500);
  const base1 = curveRun("baseline", 1, (c) => 5 - c / 400);
  const small = (c: number) => 5 - c / 300;
  const shifted = curveRun("staged", 0, (c, s) => (s === 0 ? small(c) : 5 - (c + 200) / 500), [300]);
  const half = curveRun("staged", 1, (c, s) => (s === 0 ? small(c) : 4 - (c - 300) / 1000), [300]);

  it("summarizes each growth's dynamics per window over the group's seeds; none for the baseline group", () => {
    const rep = compareRuns([base0, base1, shifted, half], { losses: [3.5] });
    expect(rep.windows).toEqual([...DEFAULT_DYNAMICS_WINDOWS]);
    expect(rep.windows).toEqual([0.05, 0.1, 0.25]);
    expect(rep.groups[0]!.growths).toEqual([]);
    const dyn = rep.groups[1]!.growths[0]!.dynamics;
    expect(dyn.map((d) => d.window)).toEqual([0.05, 0.1, 0.25]);
    const d = dyn[1]!;
    expect(d.runs).toBe(2);
    expect(d.ratioRuns).toBe(2);
    expect(d.meanLoss).toBeCloseTo(4, 12);
    // shifted: 1 against base0, 0.2/0.25 = 0.8 against base1 (mean 0.9); half: 0.5 and 0.4 (mean 0.45)
    expect(d.ratio!.mean).toBeCloseTo((0.9 + 0.45) / 2, 9);
    expect(d.ratio!.min).toBeCloseTo(0.4, 9);
    expect(d.ratio!.max).toBeCloseTo(1, 9);
    expect(d.perRun.map((r) => r.name)).toEqual(["staged-s0", "staged-s1"]);
    expect(compareRuns([base0, shifted], { windows: [0.2] }).groups[1]!.growths[0]!.dynamics.map((x) => x.window)).toEqual([0.2]);
    expect(() => compareRuns([base0, shifted], { windows: [0.1, -1] })).toThrow(/dynamics window -1 is not a positive fraction/);
  });

  it("formatReport writes the dynamics table: ratio and Δ per window, mean [min, max], the runs measured", () => {
    const text = formatReport(compareRuns([base0, base1, shifted, half], { losses: [3.5], windows: [0.1, 0.8] }));
    expect(text).toContain("| group | growth # | operator | loss at growth | ratio, W 10% | Δ (nats), W 10% | ratio, W 80% | Δ (nats), W 80% |");
    // Δ: shifted 0 and +0.05 (3.8 − 3.75), half +0.1 and +0.15: mean of means (0.025 + 0.125) / 2
    expect(text).toContain("| staged | 1 | width | 4.0000 | 0.68 [0.40, 1.00] | +0.0750 [+0.0000, +0.1500] | — | — |");
    expect(text).toContain("Dynamics at equal loss: L_g = the loss just before the growth");
    const one = formatReport(
      compareRuns([base0, shifted, curveRun("staged", 1, (c, s) => (s === 0 ? small(c) : 4 - (c - 300) / 1000), [300], 350)], {
        losses: [3.5],
        windows: [0.1],
      }),
    );
    expect(one).toContain("| staged | 1 | width | 4.0000 | 1.00 [1.00, 1.00] (1/2) | +0.0000 [+0.0000, +0.0000] (1/2) |");
  });
});

describe("formatReport", () => {
  it("writes Markdown tables with the FLOPs, the savings and the growth penalties", () => {
    const results = [
      run("baseline", 0, [
        [50, 3.5],
        [150, 2.5],
      ]),
      run("baseline", 1, [
        [70, 3.5],
        [170, 2.5],
      ]),
      run(
        "staged",
        0,
        [
          [20, 3.5],
          [100, 3.5],
          [105, 3.9, 1],
          [110, 3.5, 1],
          [120, 2.5, 1],
        ],
        [growth(1, 100, 3.5)],
        false,
      ),
      run(
        "staged",
        1,
        [
          [30, 3.5],
          [110, 3.5],
          [115, 3.7, 1],
          [120, 3.5, 1],
          [125, 2.5, 1],
        ],
        [growth(1, 110, 3.5)],
      ),
    ];
    const rep = compareRuns(results, { losses: [3.0] });
    // staged reaches 3.0 at 115 and 122.5: mean 118.75 against 110.
    const text = formatReport(rep);
    const lines = text.split("\n");
    expect(lines[0]).toBe("| group | runs | final val loss | FLOPs to 3.0000 (loss 3) | saving vs baseline |");
    expect(lines[1]).toBe("| --- | --- | --- | --- | --- |");
    expect(lines[2]).toBe("| baseline | 2 | 2.5000 ± 0.0000 | 1.10e2 | (baseline) |");
    const pct = (f: number) => (f * 100).toFixed(1);
    expect(lines[3]).toBe(
      `| staged | 2 (1 done) | 2.5000 ± 0.0000 | 1.19e2 | ${pct(1 - 118.75 / 110)}% [${pct(1 - 122.5 / 110)}, ${pct(1 - 115 / 110)}] |`,
    );
    expect(text).toContain("| group | growth # | operator | runs | max rise (nats) | FLOPs to recover |");
    expect(text).toContain("| staged | 1 | width | 2 | +0.3000 | 1.00e1 |"); // rises 0.4 and 0.2; both back at 3.5 10 FLOPs after growing
  });

  it("marks an outside-the-noise saving and unreached targets", () => {
    const rep = compareRuns(
      [
        run("baseline", 0, [
          [50, 3.5],
          [150, 2.5],
        ]),
        run("baseline", 1, [
          [70, 3.5],
          [170, 2.5],
        ]),
        run("fast", 0, [
          [20, 3.5],
          [120, 2.5],
        ]),
        run("slow", 0, [
          [20, 3.5],
          [120, 3.2],
        ]),
      ],
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

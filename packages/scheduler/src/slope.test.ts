import { describe, expect, it } from "vitest";
import { kaplan } from "./laws.js";
import { THRESHOLDS, detectThreshold, logLogSlopes, removeSpikes, runningMean, thresholdIndex } from "./slope.js";

describe("runningMean", () => {
  it("equals scipy's uniform_filter1d(size=5, mode='reflect')", () => {
    // values printed by scipy 1.17
    expect(runningMean([1, 2])).toEqual([1.6, 1.4].map((v) => expect.closeTo(v, 12)));
    expect(runningMean([1, 2, 4])).toEqual([2.0, 2.4, 2.6].map((v) => expect.closeTo(v, 12)));
    expect(runningMean([3, 1, 4, 1, 5, 9, 2, 6])).toEqual([2.4, 2.4, 2.8, 4.0, 4.2, 4.6, 5.6, 5.0].map((v) => expect.closeTo(v, 12)));
    expect(runningMean([7])).toEqual([7]);
    expect(() => runningMean([1, 2], 4)).toThrow(/odd/);
  });
});

describe("removeSpikes", () => {
  it("drops a point more than 1% above the last kept point, as the seed", () => {
    const pts = [5, 4.9, 4.96, 4.948, 5.2, 4.8, 4.85, 4.83].map((loss, i) => ({ step: i, loss }));
    // 4.96 is +1.22% over 4.9 → dropped; 4.948 is +0.98% → kept; 5.2 dropped; 4.85 is +1.04% over 4.8 → dropped
    expect(removeSpikes(pts).map((p) => p.loss)).toEqual([5, 4.9, 4.948, 4.8, 4.83]);
    expect(removeSpikes(pts, 0.05).map((p) => p.loss)).toEqual([5, 4.9, 4.96, 4.948, 4.8, 4.85, 4.83]);
  });
});

/** Kaplan's simulated curve for N on the seed's grid (steps 4000..90000 by 10). */
function simulated(n: number) {
  const steps: number[] = [];
  for (let s = 4000; s < 90000; s += 10) steps.push(s);
  return kaplan.curve(n, steps);
}

describe("threshold detection", () => {
  it("finds the first point after the steepest one whose slope rises above the threshold", () => {
    const curve = simulated(1e8);
    const d = logLogSlopes(curve);
    const hit = thresholdIndex(curve, THRESHOLDS.width);
    expect(hit.reached).toBe(true);
    expect(d[hit.index]).toBeGreaterThan(THRESHOLDS.width);
    expect(d[hit.index - 1]).toBeLessThanOrEqual(THRESHOLDS.width);
    for (let i = hit.steepest; i < hit.index; i++) expect(d[i]).toBeLessThanOrEqual(THRESHOLDS.width);
    // The seed's simulation of N = 1e8 grows at step 26210 (checked against the Python code).
    expect(curve[hit.index]!.step).toBe(26210);
    // The boundary reflection damps the first slopes; the search starts at the steepest one, not at 0.
    expect(d[0]).toBeGreaterThan(d[hit.steepest]!);
  });

  it("ignores spikes: a synthetic curve with spikes gives the clean curve's point", () => {
    const clean = simulated(3e7).filter((_, i) => i % 20 === 0); // a point every 200 steps
    // Insert a spike (3–8% above the previous point) after every 7th point, half-way in steps and compute.
    const spiky: typeof clean = [];
    clean.forEach((p, i) => {
      spiky.push(p);
      const q = clean[i + 1];
      if (q && i % 7 === 3) {
        spiky.push({
          step: p.step + 100,
          tokens: (p.tokens + q.tokens) / 2,
          compute: (p.compute + q.compute) / 2,
          loss: p.loss * (1.03 + (i % 5) / 100),
        });
      }
    });
    const hitClean = detectThreshold(clean, THRESHOLDS.depth);
    const hitSpiky = detectThreshold(spiky, THRESHOLDS.depth);
    expect(spiky.length - clean.length).toBeGreaterThan(50);
    expect(hitSpiky.cleaned).toEqual(clean);
    expect(hitClean.reached).toBe(true);
    expect(hitSpiky.index).toBe(hitClean.index);
    expect(hitSpiky.point.step).toBe(hitClean.point.step);
    // Without spike removal the drop after a spike becomes the "steepest" slope and the answer is far off.
    const raw = thresholdIndex(spiky, THRESHOLDS.depth);
    expect(Math.abs(spiky[raw.index]!.step - hitClean.point.step)).toBeGreaterThan(10000);
  });

  it("reports a threshold that is not reached, and rejects bad curves", () => {
    const curve = simulated(1e8).slice(0, 300);
    const hit = thresholdIndex(curve, -0.001);
    expect(hit.reached).toBe(false);
    expect(hit.index).toBe(curve.length - 2);
    expect(() => thresholdIndex(curve.slice(0, 1), -0.05)).toThrow(/at least 2 points/);
    expect(() =>
      logLogSlopes([
        { step: 1, compute: 2, loss: 3 },
        { step: 2, compute: 1, loss: 2 },
      ]),
    ).toThrow(/compute must increase/);
    expect(() =>
      logLogSlopes([
        { step: 1, compute: 2, loss: -3 },
        { step: 2, compute: 3, loss: 2 },
      ]),
    ).toThrow(/loss must be/);
  });
});

import { describe, expect, it } from "vitest";
import { kaplan } from "./laws.js";
import { OnlineGrowthDetector } from "./online.js";
import { THRESHOLDS, detectThreshold } from "./slope.js";

function steps(from: number, to: number, every: number): number[] {
  const s: number[] = [];
  for (let x = from; x < to; x += every) s.push(x);
  return s;
}

/** A deterministic pseudo-random generator (mulberry32). */
function rng(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("OnlineGrowthDetector", () => {
  it("agrees with the offline detector on a simulated curve", () => {
    const curve = kaplan.curve(1e8, steps(4000, 90000, 10));
    for (const threshold of [THRESHOLDS.width, THRESHOLDS.depth, THRESHOLDS.optimality]) {
      const offline = detectThreshold(curve, threshold);
      const det = new OnlineGrowthDetector({ threshold, constantOp: 2.717 });
      let decidedAt = -1;
      curve.forEach((p, i) => {
        if (det.push(p) && decidedAt < 0) decidedAt = i;
      });
      const d = det.decision!;
      expect(d.index).toBe(offline.index);
      expect(d.point).toEqual(offline.point);
      // It can only know once the running means it needs are final: window/2 + 1 points later.
      expect(decidedAt).toBe(offline.index + 3);
      expect(d.growAtStep).toBe(curve[decidedAt]!.step);
      expect(d.continueAtStep).toBe(Math.round(d.growAtStep / 2.717));
    }
  });

  it("agrees with the offline detector on noisy curves with spikes, point by point", () => {
    for (const seed of [1, 2, 3, 4, 5, 6, 7, 8]) {
      const r = rng(seed);
      const curve = kaplan.curve(3e7, steps(2000, 60000, 500)).map((p) => {
        const u = r();
        const noise = 1 + (r() - 0.5) * 0.0006; // ±0.03%
        return { step: p.step, compute: p.compute, loss: p.loss * noise * (u < 0.08 ? 1.03 + r() * 0.1 : 1) };
      });
      const offline = detectThreshold(curve, THRESHOLDS.depth);
      const det = new OnlineGrowthDetector({ threshold: THRESHOLDS.depth });
      for (const p of curve) det.push(p);
      det.finish();
      expect(det.points).toEqual(offline.cleaned);
      expect(det.decision?.index).toBe(offline.index);
      expect(det.decision?.point.step).toBe(offline.point.step);
    }
  });

  it("uses the end reflection only when told the run has finished", () => {
    const curve = kaplan.curve(1e8, steps(4000, 90000, 10));
    const offline = detectThreshold(curve, THRESHOLDS.width);
    const short = curve.slice(0, offline.index + 2); // the crossing needs the last point's end-reflected mean
    const det = new OnlineGrowthDetector({ threshold: THRESHOLDS.width });
    for (const p of short) expect(det.push(p)).toBeNull();
    const fin = det.finish();
    expect(fin?.index).toBe(detectThreshold(short, THRESHOLDS.width).index);
    expect(() => det.push(curve[offline.index + 2]!)).toThrow(/finished/);
  });

  it("validates its input", () => {
    expect(() => new OnlineGrowthDetector({ threshold: NaN })).toThrow(/threshold/);
    expect(() => new OnlineGrowthDetector({ threshold: -0.05, constantOp: 0 })).toThrow(/constantOp/);
    const det = new OnlineGrowthDetector({ threshold: -0.05 });
    det.push({ step: 1, compute: 10, loss: 5 });
    expect(() => det.push({ step: 2, compute: 5, loss: 4 })).toThrow(/compute must increase/);
    expect(() => det.push({ step: 2, compute: 20, loss: 0 })).toThrow(/loss must be/);
  });
});

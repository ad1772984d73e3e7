import { describe, expect, it } from "vitest";
import { Rng, streamKey } from "./rng.js";

describe("keyed streams and dropout masks", () => {
  it("a key names one stream: the same parts give the same draws, any other part other draws", () => {
    const draws = (...parts: number[]) => {
      const r = Rng.keyed(...parts);
      return Array.from({ length: 4 }, () => r.nextU32());
    };
    expect(draws(7, 3, 0)).toEqual(draws(7, 3, 0));
    const seen = new Set(
      [draws(7, 3, 0), draws(7, 3, 1), draws(7, 4, 0), draws(8, 3, 0), draws(3, 7, 0), draws(7, 3), draws(2 ** 40, 3, 0)].map(String),
    );
    expect(seen.size).toBe(7);
    expect(streamKey(11, 5)).toBe(streamKey(11, 5));
    expect(Number.isSafeInteger(streamKey(11, 5))).toBe(true);
    expect(new Set([streamKey(11, 5), streamKey(11, 6), streamKey(12, 5), streamKey(5, 11)]).size).toBe(4);
    expect(() => Rng.keyed(1.5)).toThrow("a stream key part must be a safe integer ≥ 0, got 1.5");
    expect(() => streamKey(-1)).toThrow(/got -1/);
  });

  it("fillDropout: 0 with probability p, else 1/(1 − p); the same stream as nextU32", () => {
    for (const p of [0.1, 0.5]) {
      const m = Rng.keyed(1, p * 10).fillDropout(new Float32Array(200_000), p);
      const scale = Math.fround(1 / (1 - p));
      expect(m.every((x) => x === 0 || x === scale)).toBe(true);
      const kept = m.reduce((s, x) => s + (x === 0 ? 0 : 1), 0) / m.length;
      // 5 standard deviations of the kept fraction.
      expect(Math.abs(kept - (1 - p))).toBeLessThan(5 * Math.sqrt((p * (1 - p)) / m.length));
    }
    expect(
      Rng.keyed(2)
        .fillDropout(new Float32Array(1000), 0)
        .every((x) => x === 1),
    ).toBe(true);
    const a = Rng.keyed(3),
      b = Rng.keyed(3);
    const m = a.fillDropout(new Float32Array(64), 0.25, 8, 40);
    expect(m.subarray(0, 8).every((x) => x === 0) && m.subarray(40).every((x) => x === 0)).toBe(true);
    for (let i = 8; i < 40; i++) expect(m[i]).toBe(b.nextU32() >= 2 ** 30 ? Math.fround(4 / 3) : 0);
    expect(a.nextU32()).toBe(b.nextU32());
    expect(() => a.fillDropout(new Float32Array(1), 1)).toThrow("dropout probability must be in [0, 1), got 1");
  });
});

import { describe, expect, it } from "vitest";
import { matmulPeak } from "./peak.js";

describe("matmulPeak", () => {
  it("runs the chained products through a session and returns A^(chain+1) with a rate", async () => {
    const n = 24,
      chain = 3;
    const r = await matmulPeak({ n, chain, reps: 2, threads: 1 });
    expect(r).toMatchObject({ device: "cpu", n, chain, flops: chain * 2 * n ** 3 });
    expect(r.seconds).toBeGreaterThan(0);
    expect(r.tflops).toBeCloseTo(r.flops / r.seconds / 1e12, 12);
    // The reference: the same power in float64.
    let x = Float64Array.from(r.input);
    for (let k = 0; k < chain; k++) {
      const y = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let l = 0; l < n; l++) for (let j = 0; j < n; j++) y[i * n + j]! += x[i * n + l]! * r.input[l * n + j]!;
      x = y;
    }
    const scale = Math.max(...x.map(Math.abs));
    for (let i = 0; i < n * n; i++) expect(Math.abs(r.output[i]! - x[i]!)).toBeLessThan(1e-5 * scale);
  });

  it("refuses a shape it cannot build", async () => {
    await expect(matmulPeak({ n: 0 })).rejects.toThrow(/^matmulPeak: n 0, chain 8 and reps 3 must be positive integers$/);
  });
});

import { describe, expect, it } from "vitest";
import { matmulPeak } from "./peak.js";

describe("matmulPeak", () => {
  // The reference: the same chain in float64 from the (rounded) input: A^(chain+1), or A·(Aᵀ)^chain for Gemm.
  const reference = (input: Float32Array, n: number, chain: number, transB: boolean) => {
    let x = Float64Array.from(input);
    for (let k = 0; k < chain; k++) {
      const y = new Float64Array(n * n);
      for (let i = 0; i < n; i++)
        for (let l = 0; l < n; l++) for (let j = 0; j < n; j++) y[i * n + j]! += x[i * n + l]! * input[transB ? j * n + l : l * n + j]!;
      x = y;
    }
    return x;
  };
  it.each([
    ["MatMul", "float32", 1e-5],
    ["Gemm", "float32", 1e-5],
    ["MatMul", "float16", 3e-3],
  ] as const)("%s in %s: runs the chained products through a session and returns their result with a rate", async (op, dtype, tol) => {
    const n = 24,
      chain = 3;
    const r = await matmulPeak({ n, chain, reps: 2, threads: 1, op, dtype });
    expect(r).toMatchObject({ device: "cpu", op, dtype, n, chain, flops: chain * 2 * n ** 3 });
    expect(r.seconds).toBeGreaterThan(0);
    expect(r.tflops).toBeCloseTo(r.flops / r.seconds / 1e12, 12);
    const x = reference(r.input, n, chain, op === "Gemm");
    const scale = Math.max(...x.map(Math.abs));
    for (let i = 0; i < n * n; i++) expect(Math.abs(r.output[i]! - x[i]!)).toBeLessThan(tol * scale);
    // A different op gives a different product (Aᵀ ≠ A): the check above can fail.
    if (op === "Gemm") expect(Math.abs(r.output[0]! - reference(r.input, n, chain, false)[0]!)).toBeGreaterThan(tol * scale);
  });

  it("refuses a shape it cannot build", async () => {
    await expect(matmulPeak({ n: 0 })).rejects.toThrow(/^matmulPeak: n 0, chain 8 and reps 3 must be positive integers$/);
  });
});

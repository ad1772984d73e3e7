import os from "node:os";
import ort from "onnxruntime-node";
import { Rng, f32ToStored, storedToF32 } from "@staged/core";
import { GraphBuilder } from "./graph/builder.js";
import { serializeModel } from "./graph/onnx.js";
import { createSession, type Device } from "./engine.js";

export interface MatmulPeakOptions {
  device?: Device;
  /** Intra-op threads (default: all cores). */
  threads?: number;
  /** The matrices' side (default 4096). */
  n?: number;
  /** Products chained in one graph run (default 8): x ← x·A, so the run is compute-bound, not copy-bound. */
  chain?: number;
  /** Timed runs after one untimed warm-up; the best is reported (default 3). */
  reps?: number;
  /**
   * The product (default "MatMul"): "Gemm" is x·Aᵀ through Gemm with transB, the form of a Linear layer's weight
   * (Llama's projections), so that a provider's two kernels can be told apart.
   */
  op?: "MatMul" | "Gemm";
  /** The element type of A and the products (default float32); float16 is what mixed precision's products use. */
  dtype?: "float32" | "float16";
}

export interface MatmulPeak {
  device: Device;
  op: "MatMul" | "Gemm";
  dtype: "float32" | "float16";
  n: number;
  chain: number;
  /** 2·n³ per product. */
  flops: number;
  /** The best run's wall time. */
  seconds: number;
  tflops: number;
  /** The chained product of the last run (row-major; A^(chain+1), or A·(Aᵀ)^chain for Gemm), in float32. */
  output: Float32Array;
  /** The input A (entries N(0, 1/n), seed 0; rounded to float16 for that dtype), so that a reader can check `output`. */
  input: Float32Array;
}

/**
 * The float32 matrix-product rate a provider reaches through this project's graphs: the physical reference a
 * training step's throughput is read against (a step is mostly products). One graph of `chain` chained n×n MatMuls
 * (GraphBuilder, the engine's session options), run `reps` times after a warm-up; A's entries are N(0, 1/n), so the
 * powers stay of order 1.
 */
export async function matmulPeak(options: MatmulPeakOptions = {}): Promise<MatmulPeak> {
  const device = options.device ?? "cpu";
  const n = options.n ?? 4096,
    chain = options.chain ?? 8,
    reps = options.reps ?? 3,
    op = options.op ?? "MatMul",
    dtype = options.dtype ?? "float32";
  if (!(Number.isInteger(n) && n >= 1 && Number.isInteger(chain) && chain >= 1 && Number.isInteger(reps) && reps >= 1))
    throw new Error(`matmulPeak: n ${n}, chain ${chain} and reps ${reps} must be positive integers`);
  const g = new GraphBuilder();
  const a = g.input("a", dtype, [n, n]);
  let x = a;
  for (let i = 0; i < chain; i++) x = op === "Gemm" ? g.gemm(x, a, null, { transB: true }) : g.matmul(x, a);
  g.output(x, "y");
  const session = await createSession(serializeModel(g), { device, threads: options.threads ?? os.availableParallelism() });
  let input = new Rng(0).fillNormal(new Float32Array(n * n), 0, 1 / Math.sqrt(n));
  let feed: ort.Tensor;
  if (dtype === "float16") {
    const bits = f32ToStored("F16", input);
    input = storedToF32("F16", bits);
    feed = new ort.Tensor("float16", new Uint16Array(bits.buffer, bits.byteOffset, n * n), [n, n]);
  } else feed = new ort.Tensor("float32", input, [n, n]);
  const read = (t: ort.Tensor): Float32Array => {
    if (dtype === "float32") return t.data as Float32Array;
    const d = t.data as Uint16Array;
    return storedToF32("F16", new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
  };
  try {
    let output = read((await session.run({ a: feed })).y!);
    let seconds = Infinity;
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      const y = (await session.run({ a: feed })).y!;
      seconds = Math.min(seconds, (performance.now() - t0) / 1000);
      output = read(y);
    }
    const flops = chain * 2 * n ** 3;
    return { device, op, dtype, n, chain, flops, seconds, tflops: flops / seconds / 1e12, output, input };
  } finally {
    await session.release();
  }
}

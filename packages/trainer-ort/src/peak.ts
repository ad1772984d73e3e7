import os from "node:os";
import ort from "onnxruntime-node";
import { Rng } from "@staged/core";
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
}

export interface MatmulPeak {
  device: Device;
  n: number;
  chain: number;
  /** 2·n³ per product. */
  flops: number;
  /** The best run's wall time. */
  seconds: number;
  tflops: number;
  /** The chained product A^(chain+1) of the last run (row-major), for a check of the result. */
  output: Float32Array;
  /** The input A (entries N(0, 1/n), seed 0), so that a reader can check `output`. */
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
    reps = options.reps ?? 3;
  if (!(Number.isInteger(n) && n >= 1 && Number.isInteger(chain) && chain >= 1 && Number.isInteger(reps) && reps >= 1))
    throw new Error(`matmulPeak: n ${n}, chain ${chain} and reps ${reps} must be positive integers`);
  const g = new GraphBuilder();
  const a = g.input("a", "float32", [n, n]);
  let x = a;
  for (let i = 0; i < chain; i++) x = g.matmul(x, a);
  g.output(x, "y");
  const session = await createSession(serializeModel(g), { device, threads: options.threads ?? os.availableParallelism() });
  const input = new Rng(0).fillNormal(new Float32Array(n * n), 0, 1 / Math.sqrt(n));
  const feeds = { a: new ort.Tensor("float32", input, [n, n]) };
  try {
    let output = (await session.run(feeds)).y!.data as Float32Array;
    let seconds = Infinity;
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      output = (await session.run(feeds)).y!.data as Float32Array;
      seconds = Math.min(seconds, (performance.now() - t0) / 1000);
    }
    const flops = chain * 2 * n ** 3;
    return { device, n, chain, flops, seconds, tflops: flops / seconds / 1e12, output, input };
  } finally {
    await session.release();
  }
}

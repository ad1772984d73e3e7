import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** A reference fixture written by scripts/make_fixtures.py (safetensors: F32 and I64 tensors + metadata). */
export interface Fixture {
  config: Record<string, unknown>;
  meta: Record<string, string>;
  hp: { lrs: number[]; betas: [number, number]; eps: number; weight_decay: number; clip: number };
  tensors: Map<string, { shape: number[]; data: Float32Array | BigInt64Array }>;
  f32(name: string): Float32Array;
  /** Batch s as int32 ids [B·T]. */
  ids(s: number): Int32Array;
  B: number;
  T: number;
}

export function loadFixture(name: string): Fixture {
  const buf = readFileSync(fileURLToPath(new URL(`../../fixtures/${name}.safetensors`, import.meta.url)));
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString("utf8")) as Record<
    string,
    { dtype: string; shape: number[]; data_offsets: [number, number] }
  > & { __metadata__: Record<string, string> };
  const tensors: Fixture["tensors"] = new Map();
  for (const [k, v] of Object.entries(header)) {
    if (k === "__metadata__") continue;
    const {
      dtype,
      shape,
      data_offsets: [a, b],
    } = v as { dtype: string; shape: number[]; data_offsets: [number, number] };
    const bytes = buf.subarray(8 + n + a, 8 + n + b);
    const copy = new Uint8Array(bytes).buffer;
    tensors.set(k, { shape, data: dtype === "F32" ? new Float32Array(copy) : new BigInt64Array(copy) });
  }
  const meta = header.__metadata__;
  const ids = tensors.get("ids")!;
  const [, B, T] = ids.shape as [number, number, number];
  return {
    config: JSON.parse(meta.config!),
    meta,
    hp: JSON.parse(meta.hyperparameters!),
    tensors,
    B,
    T,
    f32: (k) => {
      const t = tensors.get(k);
      if (!t || !(t.data instanceof Float32Array)) throw new Error(`fixture has no float tensor ${k}`);
      return t.data;
    },
    ids: (s) => Int32Array.from((ids.data as BigInt64Array).subarray(s * B * T, (s + 1) * B * T), Number),
  };
}

/** Largest violation of |a − e| ≤ atol + rtol·|e| (≤ 0 means every element passes), with its index. */
export function closeness(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol: number,
  atol: number,
): { worst: number; at: number; actual: number; expected: number } {
  if (actual.length !== expected.length) throw new Error(`length ${actual.length} vs ${expected.length}`);
  let worst = -Infinity,
    at = -1;
  for (let i = 0; i < actual.length; i++) {
    const excess = Math.abs(actual[i]! - expected[i]!) - (atol + rtol * Math.abs(expected[i]!));
    if (!(excess <= worst) || Number.isNaN(excess)) {
      worst = Number.isNaN(excess) ? Infinity : excess;
      at = i;
    }
  }
  return { worst, at, actual: actual[at]!, expected: expected[at]! };
}

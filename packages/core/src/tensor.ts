import { type DType, DTYPE_SIZES } from "./dtype.js";

export type TypedArray =
  | Float64Array | Float32Array | BigInt64Array | BigUint64Array
  | Int32Array | Uint32Array | Int16Array | Uint16Array | Int8Array | Uint8Array;

/** Typed array class holding each dtype in memory; F16 and BF16 are widened to float32. */
const ARRAY_OF: Record<DType, new (n: number) => TypedArray> = {
  F64: Float64Array, F32: Float32Array, F16: Float32Array, BF16: Float32Array,
  I64: BigInt64Array, U64: BigUint64Array, I32: Int32Array, U32: Uint32Array,
  I16: Int16Array, U16: Uint16Array, I8: Int8Array, U8: Uint8Array, BOOL: Uint8Array,
};

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** The most values one typed array holds in V8 (2³² − 1). */
const MAX_VALUES = 2 ** 32 - 1;

/**
 * A dense row-major tensor. `dtype` is the storage dtype: an F16/BF16 tensor holds float32 values
 * in memory and is rounded (to nearest even) only when written.
 */
export class Tensor<A extends TypedArray = TypedArray> {
  constructor(readonly dtype: DType, readonly shape: readonly number[], readonly data: A) {
    if (data.length !== numel(shape)) {
      throw new Error(`tensor data has ${data.length} values, shape [${shape.join(", ")}] needs ${numel(shape)}`);
    }
  }

  static zeros(dtype: DType, shape: readonly number[]): Tensor {
    const n = numel(shape);
    if (n > MAX_VALUES) throw new Error(`a tensor of shape [${shape.join(", ")}] has ${n} values, more than one array holds (${MAX_VALUES})`);
    return new Tensor(dtype, [...shape], new ARRAY_OF[dtype](n));
  }

  static fromArray(shape: readonly number[], values: ArrayLike<number>, dtype: DType = "F32"): Tensor<Float32Array> {
    return new Tensor(dtype, [...shape], Float32Array.from(values));
  }

  get size(): number { return this.data.length; }
  get byteLength(): number { return this.size * DTYPE_SIZES[this.dtype]; }

  /** Float values as a Float32Array; throws for integer tensors. */
  get f32(): Float32Array {
    if (!(this.data instanceof Float32Array)) throw new Error(`tensor of dtype ${this.dtype} is not float32 in memory`);
    return this.data;
  }

  reshape(shape: readonly number[]): Tensor<A> { return new Tensor(this.dtype, [...shape], this.data); }
  withDType(dtype: DType): Tensor {
    if (ARRAY_OF[dtype] !== this.data.constructor) throw new Error(`cannot relabel ${this.dtype} as ${dtype}`);
    return new Tensor(dtype, this.shape, this.data);
  }

  /** Multiply every value by s (float tensors). */
  scale(s: number): Tensor<Float32Array> {
    const src = this.f32;
    const out = new Float32Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = src[i]! * s;
    return new Tensor(this.dtype, this.shape, out);
  }

  /** Values [start, end) along `axis`. */
  slice(axis: number, start: number, end: number): Tensor<A> {
    const { outer, len, inner } = split(this.shape, axis);
    if (start < 0 || end > len || start > end) throw new Error(`slice [${start}, ${end}) out of range 0..${len} on axis ${axis}`);
    const width = end - start;
    const out = new (this.data.constructor as new (n: number) => A)(outer * width * inner);
    for (let o = 0; o < outer; o++) {
      out.set(this.data.subarray((o * len + start) * inner, (o * len + end) * inner) as never, o * width * inner);
    }
    return new Tensor(this.dtype, withAxis(this.shape, axis, width), out);
  }

  /** k copies side by side along `axis`: [x, x, ..., x]. */
  tile(axis: number, k: number): Tensor<A> {
    return concat(Array.from({ length: k }, () => this as Tensor<A>), axis);
  }

  /** Split into `parts` equal pieces along `axis`. */
  chunk(axis: number, parts: number): Tensor<A>[] {
    const len = this.shape[axis]!;
    if (len % parts !== 0) throw new Error(`axis ${axis} of length ${len} does not split into ${parts} parts`);
    const w = len / parts;
    return Array.from({ length: parts }, (_, i) => this.slice(axis, i * w, (i + 1) * w));
  }
}

function split(shape: readonly number[], axis: number): { outer: number; len: number; inner: number } {
  if (axis < 0 || axis >= shape.length) throw new Error(`axis ${axis} out of range for rank ${shape.length}`);
  return { outer: numel(shape.slice(0, axis)), len: shape[axis]!, inner: numel(shape.slice(axis + 1)) };
}

const withAxis = (shape: readonly number[], axis: number, len: number): number[] =>
  shape.map((d, i) => (i === axis ? len : d));

/** Concatenate along `axis`; all other dimensions and the dtype must agree. */
export function concat<A extends TypedArray>(parts: readonly Tensor<A>[], axis: number): Tensor<A> {
  const first = parts[0];
  if (!first) throw new Error("concat of no tensors");
  const { outer, inner } = split(first.shape, axis);
  for (const p of parts) {
    if (p.dtype !== first.dtype || p.shape.length !== first.shape.length ||
        p.shape.some((d, i) => i !== axis && d !== first.shape[i])) {
      throw new Error(`concat: shape [${p.shape}] ${p.dtype} does not match [${first.shape}] ${first.dtype} off axis ${axis}`);
    }
  }
  const total = parts.reduce((s, p) => s + p.shape[axis]!, 0);
  const out = new (first.data.constructor as new (n: number) => A)(outer * total * inner);
  for (let o = 0; o < outer; o++) {
    let at = o * total * inner;
    for (const p of parts) {
      const run = p.shape[axis]! * inner;
      out.set(p.data.subarray(o * run, (o + 1) * run) as never, at);
      at += run;
    }
  }
  return new Tensor(first.dtype, withAxis(first.shape, axis, total), out);
}

/**
 * Block matrix from a grid of 2-D blocks: `rows[i][j]` is block (i, j); `null` is a zero block
 * whose size is taken from its row and column. Block-diagonal is the special case with nulls off the diagonal.
 */
export function blockMatrix(rows: readonly (readonly (Tensor | null)[])[]): Tensor<Float32Array> {
  const heights = rows.map((r, i) => {
    const b = r.find((t) => t);
    if (!b) throw new Error(`block row ${i} has no non-zero block`);
    return b.shape[0]!;
  });
  const widths = rows[0]!.map((_, j) => {
    const b = rows.find((r) => r[j])?.[j];
    if (!b) throw new Error(`block column ${j} has no non-zero block`);
    return b.shape[1]!;
  });
  const dtype = rows.flat().find((t) => t)!.dtype;
  const H = heights.reduce((a, b) => a + b, 0);
  const W = widths.reduce((a, b) => a + b, 0);
  const out = new Float32Array(H * W);
  let r0 = 0;
  rows.forEach((row, i) => {
    let c0 = 0;
    row.forEach((b, j) => {
      if (b) {
        if (b.shape[0] !== heights[i] || b.shape[1] !== widths[j]) {
          throw new Error(`block (${i}, ${j}) is [${b.shape}], expected [${heights[i]}, ${widths[j]}]`);
        }
        const src = b.f32;
        const w = widths[j]!;
        for (let r = 0; r < heights[i]!; r++) out.set(src.subarray(r * w, (r + 1) * w), (r0 + r) * W + c0);
      }
      c0 += widths[j]!;
    });
    r0 += heights[i]!;
  });
  return new Tensor(dtype, [H, W], out);
}

/** Block-diagonal matrix of the given 2-D blocks. */
export function blockDiagonal(blocks: readonly Tensor[]): Tensor<Float32Array> {
  return blockMatrix(blocks.map((b, i) => blocks.map((_, j) => (i === j ? b : null))));
}

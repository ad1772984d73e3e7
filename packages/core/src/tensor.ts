import { type DType, DTYPE_SIZES, HOST_LITTLE_ENDIAN, decodeBF16, decodeF16, encodeBF16, encodeF16 } from "./dtype.js";

export type TypedArray =
  Float64Array | Float32Array | BigInt64Array | BigUint64Array | Int32Array | Uint32Array | Int16Array | Uint16Array | Int8Array | Uint8Array;

/** Typed array class holding each dtype in memory; F16 and BF16 are widened to float32. */
const ARRAY_OF: Record<DType, new (n: number) => TypedArray> = {
  F64: Float64Array,
  F32: Float32Array,
  F16: Float32Array,
  BF16: Float32Array,
  I64: BigInt64Array,
  U64: BigUint64Array,
  I32: Int32Array,
  U32: Uint32Array,
  I16: Int16Array,
  U16: Uint16Array,
  I8: Int8Array,
  U8: Uint8Array,
  BOOL: Uint8Array,
};

export const numel = (shape: readonly number[]): number => shape.reduce((a, b) => a * b, 1);

/** The most values one typed array holds in V8 (2³² − 1). */
const MAX_VALUES = 2 ** 32 - 1;

/**
 * A dense row-major tensor. `dtype` is the storage dtype: an F16/BF16 tensor holds float32 values
 * in memory and is rounded (to nearest even) only when written.
 */
export class Tensor<A extends TypedArray = TypedArray> {
  constructor(
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly data: A,
  ) {
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

  get size(): number {
    return this.data.length;
  }
  get byteLength(): number {
    return this.size * DTYPE_SIZES[this.dtype];
  }

  /** Float values as a Float32Array; throws for integer tensors. */
  get f32(): Float32Array {
    if (!(this.data instanceof Float32Array)) throw new Error(`tensor of dtype ${this.dtype} is not float32 in memory`);
    return this.data;
  }

  reshape(shape: readonly number[]): Tensor<A> {
    return new Tensor(this.dtype, [...shape], this.data);
  }
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
    return concat(
      Array.from({ length: k }, () => this as Tensor<A>),
      axis,
    );
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

const withAxis = (shape: readonly number[], axis: number, len: number): number[] => shape.map((d, i) => (i === axis ? len : d));

/** Concatenate along `axis`; all other dimensions and the dtype must agree. */
export function concat<A extends TypedArray>(parts: readonly Tensor<A>[], axis: number): Tensor<A> {
  const first = parts[0];
  if (!first) throw new Error("concat of no tensors");
  const { outer, inner } = split(first.shape, axis);
  for (const p of parts) {
    if (p.dtype !== first.dtype || p.shape.length !== first.shape.length || p.shape.some((d, i) => i !== axis && d !== first.shape[i])) {
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

// ---------------------------------------------------------------------------------------------
// Stored bytes: little-endian values of a dtype as a safetensors file holds them (F16/BF16 as 16-bit words, not
// widened). What growth does by copying (tiles, block matrices, zeros, layer copies) it does on these, element size
// = dtype size, with no decoding; only values it scales go through float32 (scaleStored), rounded as a Tensor's are.

/**
 * The size of the pieces stored bytes are streamed in (blockLayoutPieces, zeroPieces, SafetensorsFile.streamRaw): 4 MiB.
 * Measured on a 2-core VM, a writer recycling a few buffers of this size copies into the page cache twice as fast as
 * with 16 MiB ones (whose pages no longer fit the TLB's reach between two uses).
 */
export const PIECE_BYTES = 4 * 2 ** 20;

/**
 * Where each block of a tensor built from blocks of others comes from. The sources are [rows, cols] (a vector is one
 * row); each source row is cut into `parts` equal parts (a fused q|k|v along its last axis: each part is laid out by
 * itself, then the parts side by side). The result has `rowBands` bands of `rows` rows, and its row is, part by part,
 * `colBands` blocks of a part's width: block (s, t) is that part of the row of source `block(s, t)`, or zeros for -1.
 * Tiling k times along the rows is { rowBands: k, colBands: 1 }, along the columns { rowBands: 1, colBands: k };
 * a block-diagonal matrix { rowBands: k, colBands: k, block: (s, t) => (s === t ? 0 : -1) }.
 */
export interface BlockLayout {
  rows: number;
  cols: number;
  parts?: number;
  rowBands: number;
  colBands: number;
  block(s: number, t: number): number;
}

/** Shape of the result of a layout: [rowBands·rows, colBands·cols], or [colBands·cols] for one row of one band. */
export function layoutShape(l: BlockLayout, vector: boolean): number[] {
  return vector ? [l.colBands * l.cols] : [l.rowBands * l.rows, l.colBands * l.cols];
}

/** The layout that tiles a tensor `n` times along `axis` ([x, x, ..., x], as Tensor.tile), its parts each by itself. */
export function tileLayout(shape: readonly number[], axis: number, n: number, parts = 1): BlockLayout {
  const { outer, len, inner } = split(shape, axis);
  // Along the first axis the whole tensor repeats (whatever its parts); along another, each of the `outer` rows of
  // [outer, len·inner] repeats its part(s), which is right for parts of the last axis only.
  if (axis === 0 && shape.length > 1) return { rows: len, cols: inner, rowBands: n, colBands: 1, block: () => 0 };
  if (parts !== 1 && axis !== shape.length - 1)
    throw new Error(`tileLayout: parts split the last axis; a tile along axis ${axis} of rank ${shape.length} would cut them`);
  return { rows: outer, cols: len * inner, parts, rowBands: 1, colBands: n, block: () => 0 };
}

function checkLayout(sources: readonly Uint8Array[], elementSize: number, l: BlockLayout): { rowBytes: number; partBytes: number; parts: number } {
  const parts = l.parts ?? 1;
  for (const [k, v] of Object.entries({ rows: l.rows, cols: l.cols, parts, rowBands: l.rowBands, colBands: l.colBands })) {
    if (!Number.isInteger(v) || v < (k === "rows" || k === "cols" ? 0 : 1)) throw new Error(`block layout: ${k} must be a whole number, got ${v}`);
  }
  if (l.cols % parts !== 0) throw new Error(`block layout: ${l.cols} columns do not split into ${parts} parts`);
  const rowBytes = l.cols * elementSize;
  sources.forEach((s, i) => {
    if (s.length !== l.rows * rowBytes)
      throw new Error(
        `block layout: source ${i} has ${s.length} bytes, [${l.rows}, ${l.cols}] of ${elementSize}-byte values need ${l.rows * rowBytes}`,
      );
  });
  for (let s = 0; s < l.rowBands; s++) {
    for (let t = 0; t < l.colBands; t++) {
      const i = l.block(s, t);
      if (i !== -1 && (i < 0 || i >= sources.length || !Number.isInteger(i)))
        throw new Error(`block layout: block (${s}, ${t}) names source ${i} of ${sources.length}`);
    }
  }
  return { rowBytes, partBytes: rowBytes / parts, parts };
}

/** The pieces one after another in one new array. */
export function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Zeros of `byteLength` bytes in pieces of at most `maxPieceBytes`: views of one zeroed buffer, so they are read-only
 * to whoever takes them (a writer).
 */
export function* zeroPieces(byteLength: number, maxPieceBytes = PIECE_BYTES): Generator<Uint8Array> {
  if (byteLength <= 0) return;
  const zeros = new Uint8Array(Math.min(byteLength, Math.max(1, maxPieceBytes)));
  for (let at = 0; at < byteLength; at += zeros.length) yield zeros.subarray(0, Math.min(zeros.length, byteLength - at));
}

/**
 * The stored bytes of a layout of `sources` (stored bytes of `elementSize`-byte values), in order, in pieces of whole
 * rows of at most `maxPieceBytes` (one row when a row is larger). A band that is one source as it is comes as views of
 * it, a band of zeros as views of one zeroed buffer: the pieces are read-only to whoever takes them. Other pieces are
 * fresh arrays, or the memory `buffer(n)` gives (see LazyTensor.streamBytes).
 */
export function* blockLayoutPieces(
  sources: readonly Uint8Array[],
  elementSize: number,
  l: BlockLayout,
  maxPieceBytes = PIECE_BYTES,
  buffer?: (bytes: number) => Uint8Array,
): Generator<Uint8Array> {
  const { rowBytes, partBytes, parts } = checkLayout(sources, elementSize, l);
  const outRow = rowBytes * l.colBands;
  const bandBytes = outRow * l.rows;
  if (bandBytes === 0) return;
  const rowsPer = Math.max(1, Math.floor(maxPieceBytes / outRow));
  for (let s = 0; s < l.rowBands; s++) {
    const blocks = Array.from({ length: l.colBands }, (_, t) => l.block(s, t));
    if (blocks.every((i) => i === -1)) {
      yield* zeroPieces(bandBytes, rowsPer * outRow);
      continue;
    }
    const only = blocks.length === 1 ? sources[blocks[0]!]! : null;
    for (let r0 = 0; r0 < l.rows; r0 += rowsPer) {
      const n = Math.min(rowsPer, l.rows - r0);
      if (only) {
        yield only.subarray(r0 * rowBytes, (r0 + n) * rowBytes);
        continue;
      }
      // Memory from `buffer` holds anything: its zero blocks are zeroed here; a fresh array is zero already.
      const given = buffer?.(n * outRow);
      const out = given ?? new Uint8Array(n * outRow);
      for (let r = 0; r < n; r++) {
        const from = (r0 + r) * rowBytes;
        let at = r * outRow;
        for (let p = 0; p < parts; p++) {
          const a = from + p * partBytes,
            b = a + partBytes;
          for (let t = 0; t < blocks.length; t++) {
            const i = blocks[t]!;
            if (i !== -1) out.set(sources[i]!.subarray(a, b), at);
            else if (given) out.fill(0, at, at + partBytes);
            at += partBytes;
          }
        }
      }
      yield out;
    }
  }
}

/** The stored bytes of a layout of `sources` in one fresh buffer (see blockLayoutPieces). */
export function blockLayoutBytes(sources: readonly Uint8Array[], elementSize: number, l: BlockLayout): Uint8Array {
  const { rowBytes } = checkLayout(sources, elementSize, l);
  const out = new Uint8Array(l.rowBands * l.rows * rowBytes * l.colBands);
  let at = 0;
  for (const piece of blockLayoutPieces(sources, elementSize, l)) {
    out.set(piece, at);
    at += piece.length;
  }
  return out;
}

/** Float32 values of stored F32, F16 or BF16 bytes (exact). */
export function storedToF32(dtype: DType, bytes: Uint8Array): Float32Array {
  const n = bytes.length / DTYPE_SIZES[dtype];
  if (!Number.isInteger(n)) throw new RangeError(`${bytes.length} bytes are not whole ${dtype} values`);
  const out = new Float32Array(n);
  if (dtype === "F16") decodeF16(bytes, out);
  else if (dtype === "BF16") decodeBF16(bytes, out);
  else if (dtype === "F32") {
    if (HOST_LITTLE_ENDIAN) new Uint8Array(out.buffer).set(bytes);
    else {
      const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      for (let i = 0; i < n; i++) out[i] = dv.getFloat32(4 * i, true);
    }
  } else throw new Error(`stored ${dtype} values are not float32 in memory (F32, F16, BF16 are)`);
  return out;
}

/** Stored F32, F16 or BF16 bytes of float32 values (F16/BF16 rounded to nearest even, as a Tensor is on writing). */
export function f32ToStored(dtype: DType, values: Float32Array): Uint8Array {
  if (dtype === "F16" || dtype === "BF16") {
    const out = new Uint8Array(values.length * 2);
    (dtype === "F16" ? encodeF16 : encodeBF16)(values, out);
    return out;
  }
  if (dtype !== "F32") throw new Error(`stored ${dtype} values are not float32 in memory (F32, F16, BF16 are)`);
  if (HOST_LITTLE_ENDIAN) return new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
  const out = new Uint8Array(values.length * 4);
  const dv = new DataView(out.buffer);
  for (let i = 0; i < values.length; i++) dv.setFloat32(4 * i, values[i]!, true);
  return out;
}

/**
 * Stored bytes × s, computed as on a Tensor: decoded exactly, each value multiplied in float64 and stored as float32
 * (Tensor.scale), then `+ 0` when `plusZero` (which turns −0 into +0, as the matrices of width growth compute
 * `coefficient · value + 0`), rounded back to the dtype.
 */
export function scaleStored(dtype: DType, bytes: Uint8Array, s: number, plusZero = false): Uint8Array {
  const v = storedToF32(dtype, bytes);
  if (plusZero) for (let i = 0; i < v.length; i++) v[i] = s * v[i]! + 0;
  else for (let i = 0; i < v.length; i++) v[i] = v[i]! * s;
  return f32ToStored(dtype, v);
}

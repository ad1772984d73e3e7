/**
 * A tensor's stored bytes (little-endian values of its dtype, as a safetensors file holds them; F16/BF16 as 16-bit
 * words) and its values in memory, both ways. Only `DType` (F64, F32, F16, BF16, the integers, BOOL) has an
 * in-memory form; the other safetensors dtypes are refused naming the dtype.
 */
import { type DType, DTYPE_SIZES, HOST_LITTLE_ENDIAN, isDType, isSafetensorsDType, decodeBF16, decodeF16, encodeBF16, encodeF16 } from "../dtype.js";
import { Tensor, concatBytes, type TypedArray } from "../tensor.js";
import type { LazyTensor } from "../types.js";
import { describe } from "./errors.js";

/** Reverse the bytes of each `size`-byte element in place (big-endian hosts only). */
function swapBytes(bytes: Uint8Array, size: number): void {
  for (let i = 0; i < bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a]!;
      bytes[a] = bytes[b]!;
      bytes[b] = t;
    }
  }
}

/** Why a dtype has no decoded form. */
export const undecodable = (dtype: unknown): string =>
  isSafetensorsDType(dtype)
    ? `cannot decode a ${dtype} tensor: only ${Object.keys(DTYPE_SIZES).join(", ")} have an in-memory form (read its bytes with readRaw)`
    : `unknown dtype ${describe(dtype)}`;

type ArrayCtor = new (buffer: ArrayBufferLike, byteOffset: number, length: number) => TypedArray;
const VIEW_OF: Record<Exclude<DType, "F16" | "BF16">, ArrayCtor> = {
  F64: Float64Array,
  F32: Float32Array,
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

export const byteCount = (dtype: DType, shape: readonly number[]): number => {
  let n = DTYPE_SIZES[dtype];
  for (const d of shape) n *= d;
  return n;
};

/**
 * Bytes → tensor. With `owned`, `bytes` is a fresh buffer nobody else holds and is viewed in place
 * when its layout allows (no copy); otherwise the values are copied.
 */
export function decode(dtype: DType, shape: readonly number[], bytes: Uint8Array, owned: boolean): Tensor {
  if (!isDType(dtype)) throw new Error(undecodable(dtype));
  const size = DTYPE_SIZES[dtype];
  const expected = byteCount(dtype, shape);
  if (bytes.length !== expected) {
    throw new Error(`${bytes.length} bytes do not hold a ${dtype} tensor of shape [${shape.join(", ")}] (${expected} bytes)`);
  }
  const count = expected / size;
  if (dtype === "F16" || dtype === "BF16") {
    const out = new Float32Array(count);
    (dtype === "F16" ? decodeF16 : decodeBF16)(bytes, out);
    return new Tensor(dtype, [...shape], out);
  }
  let buf = bytes;
  if (!owned || bytes.byteOffset % size !== 0 || (!HOST_LITTLE_ENDIAN && size > 1)) {
    buf = bytes.slice(); // fresh, aligned ArrayBuffer
    if (!HOST_LITTLE_ENDIAN && size > 1) swapBytes(buf, size);
  }
  return new Tensor(dtype, [...shape], new VIEW_OF[dtype](buf.buffer, buf.byteOffset, count));
}

/** Little-endian bytes of `dtype`/`shape` → a tensor (F16/BF16 widened to float32 values). Copies. */
export function decodeTensor(dtype: DType, shape: readonly number[], bytes: Uint8Array): Tensor {
  return decode(dtype, shape, bytes, false);
}

function checkArray(t: Tensor): void {
  const want = t.dtype === "F16" || t.dtype === "BF16" ? Float32Array : VIEW_OF[t.dtype];
  if (!(t.data instanceof want)) {
    throw new Error(`a ${t.dtype} tensor must hold a ${want.name}, got ${t.data.constructor.name}`);
  }
}

/** Little-endian bytes of `t`, possibly a view of `t.data` (no copy) when the layout allows. */
export function tensorBytes(t: Tensor): Uint8Array {
  checkArray(t);
  const d = t.data;
  if (t.dtype === "F16" || t.dtype === "BF16") {
    const out = new Uint8Array(d.length * 2);
    (t.dtype === "F16" ? encodeF16 : encodeBF16)(d as Float32Array, out);
    return out;
  }
  const view = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  if (HOST_LITTLE_ENDIAN || DTYPE_SIZES[t.dtype] === 1) return view;
  const copy = view.slice();
  swapBytes(copy, DTYPE_SIZES[t.dtype]);
  return copy;
}

/** Little-endian bytes of `t` in its dtype (F16/BF16 rounded to nearest even), in a fresh buffer. */
export function encodeTensor(t: Tensor): Uint8Array {
  const bytes = tensorBytes(t);
  return bytes.buffer === t.data.buffer ? bytes.slice() : bytes;
}

/** Whether a tensor is a LazyTensor (read on demand) rather than values in memory. */
export const isLazy = (t: LazyTensor | Tensor): t is LazyTensor => typeof (t as Partial<LazyTensor>).read === "function";

/**
 * The stored bytes of a tensor (see LazyTensor.readBytes): its own when it has them, else its values encoded
 * (F16/BF16 rounded to nearest even), in a fresh buffer or one only the caller holds.
 */
export async function readStoredBytes(t: LazyTensor | Tensor): Promise<Uint8Array> {
  if (!isLazy(t)) return encodeTensor(t);
  if (t.readBytes) return t.readBytes();
  if (t.streamBytes) {
    const pieces: Uint8Array[] = [];
    for await (const p of t.streamBytes()) pieces.push(p);
    return pieces.length === 1 ? pieces[0]!.slice() : concatBytes(pieces);
  }
  return encodeTensor(await t.read());
}

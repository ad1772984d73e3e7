/**
 * Every dtype of the reference implementation's `Dtype` enum
 * (https://github.com/huggingface/safetensors, safetensors/src/tensor.rs, `enum Dtype` and
 * `Dtype::bitsize`), in the enum's order, which the reference writer relies on ("increasing
 * alignment order": it lays tensors out by descending position here, then by name), with each
 * element's size in bits. F4 and F6_* pack elements below a byte: a tensor of them is valid only
 * when its element count × bits is a whole number of bytes (the reference's `MisalignedSlice`).
 */
export const SAFETENSORS_DTYPE_BITS = {
  BOOL: 8,
  F4: 4,
  F6_E2M3: 6,
  F6_E3M2: 6,
  U8: 8,
  I8: 8,
  F8_E5M2: 8,
  F8_E4M3: 8,
  F8_E8M0: 8,
  F8_E4M3FNUZ: 8,
  F8_E5M2FNUZ: 8,
  I16: 16,
  U16: 16,
  F16: 16,
  BF16: 16,
  I32: 32,
  U32: 32,
  F32: 32,
  C64: 64,
  F64: 64,
  I64: 64,
  U64: 64,
} as const;

/**
 * A dtype a safetensors file may declare. Every one of them parses and reads as raw bytes
 * (`SafetensorsFile.readRaw`); only the `DType` subset has an in-memory form (typed array).
 */
export type SafetensorsDType = keyof typeof SAFETENSORS_DTYPE_BITS;

/** The reference's dtypes in its enum order (ascending alignment). */
export const SAFETENSORS_DTYPES = Object.keys(SAFETENSORS_DTYPE_BITS) as readonly SafetensorsDType[];

export const isSafetensorsDType = (s: unknown): s is SafetensorsDType => typeof s === "string" && Object.hasOwn(SAFETENSORS_DTYPE_BITS, s);

/** safetensors dtypes that have an in-memory form here (typed arrays), with their sizes in bytes. */
export const DTYPE_SIZES = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
} as const;

export type DType = keyof typeof DTYPE_SIZES;

export const isDType = (s: unknown): s is DType => typeof s === "string" && Object.hasOwn(DTYPE_SIZES, s);

/** Float dtypes hold values as Float32Array (F16/BF16 widen on read) or Float64Array. */
export const FLOAT_DTYPES: readonly DType[] = ["F64", "F32", "F16", "BF16"];
export const isFloatDType = (d: DType): boolean => FLOAT_DTYPES.includes(d);

/** Human names used by `inspect` and by HF's `torch_dtype` (PyTorch's names where it has the dtype). */
export const TORCH_NAMES: Record<SafetensorsDType, string> = {
  F64: "float64",
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
  I64: "int64",
  I32: "int32",
  I16: "int16",
  I8: "int8",
  U64: "uint64",
  U32: "uint32",
  U16: "uint16",
  U8: "uint8",
  BOOL: "bool",
  F8_E5M2: "float8_e5m2",
  F8_E4M3: "float8_e4m3fn",
  F8_E8M0: "float8_e8m0fnu",
  F8_E4M3FNUZ: "float8_e4m3fnuz",
  F8_E5M2FNUZ: "float8_e5m2fnuz",
  C64: "complex64",
  F4: "float4_e2m1fn_x2",
  F6_E2M3: "float6_e2m3",
  F6_E3M2: "float6_e3m2",
};

// Shared scratch for bit-level conversions.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** float32 → bfloat16 bits, round to nearest even; NaN stays a quiet NaN. */
export function f32ToBf16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  if ((bits & 0x7fffffff) > 0x7f800000) return ((bits >>> 16) | 0x40) & 0xffff;
  return ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
}

export function bf16BitsToF32(h: number): number {
  u32[0] = h << 16;
  return f32[0]!;
}

/** float32 → IEEE half bits, round to nearest even, overflow to ±Inf, subnormals kept. */
export function f32ToF16Bits(x: number): number {
  f32[0] = x;
  const bits = u32[0]!;
  const sign = (bits >>> 16) & 0x8000;
  const exp = (bits >>> 23) & 0xff;
  let mant = bits & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    const rest = mant & ((1 << shift) - 1);
    let h = mant >>> shift;
    if (rest > half || (rest === half && h & 1)) h++;
    return sign | h;
  }
  let h = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest === 0x1000 && h & 1)) h++; // may carry into the exponent: still correct
  return sign | h;
}

export function f16BitsToF32(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

// ---------------------------------------------------------------------------------------------
// Bulk conversions between little-endian F16/BF16 bytes and float32 values (hot loops: typed
// array views, no per-element closures or calls).

/** True when the host stores multi-byte numbers little-endian (the safetensors byte order). */
export const HOST_LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

let f16Table: Float32Array | null = null;

/** 65536-entry table: IEEE half bits → float32 value (built on first use, 256 KiB). */
export function f16Table32(): Float32Array {
  if (!f16Table) {
    const t = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) t[h] = f16BitsToF32(h);
    f16Table = t;
  }
  return f16Table;
}

function checkHalfLengths(fn: string, bytes: Uint8Array, values: Float32Array): void {
  if (bytes.length !== values.length * 2) {
    throw new RangeError(`${fn}: ${bytes.length} bytes do not hold ${values.length} 2-byte values`);
  }
}

/** The 16-bit words of little-endian `bytes`: a view when the host allows, else a copy. */
function halfWords(bytes: Uint8Array, n: number): Uint16Array {
  if (HOST_LITTLE_ENDIAN && (bytes.byteOffset & 1) === 0) return new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  const words = new Uint16Array(n);
  for (let i = 0, j = 0; i < n; i++, j += 2) words[i] = bytes[j]! | (bytes[j + 1]! << 8);
  return words;
}

/** Where to put 16-bit words bound for `out`: `out` itself when the host allows, else scratch for storeHalfWords. */
function halfWordsOut(out: Uint8Array, n: number): Uint16Array {
  return HOST_LITTLE_ENDIAN && (out.byteOffset & 1) === 0 ? new Uint16Array(out.buffer, out.byteOffset, n) : new Uint16Array(n);
}

function storeHalfWords(words: Uint16Array, out: Uint8Array): void {
  if (words.buffer === out.buffer) return;
  for (let i = 0; i < words.length; i++) {
    out[2 * i] = words[i]! & 0xff;
    out[2 * i + 1] = words[i]! >>> 8;
  }
}

/** Little-endian IEEE half bytes → float32 values (exact). `bytes.length` must be `2 * out.length`. */
export function decodeF16(bytes: Uint8Array, out: Float32Array): void {
  checkHalfLengths("decodeF16", bytes, out);
  const table = f16Table32();
  const src = halfWords(bytes, out.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]!]!;
}

/** Little-endian bfloat16 bytes → float32 values (exact, NaN payloads kept). */
export function decodeBF16(bytes: Uint8Array, out: Float32Array): void {
  checkHalfLengths("decodeBF16", bytes, out);
  const src = halfWords(bytes, out.length);
  const dst = new Uint32Array(out.buffer, out.byteOffset, out.length);
  for (let i = 0; i < src.length; i++) dst[i] = src[i]! << 16;
}

/**
 * float32 values → little-endian IEEE half bytes, round to nearest even, overflow to ±Inf,
 * subnormals kept, NaN → quiet NaN (same results as `f32ToF16Bits`).
 */
export function encodeF16(values: Float32Array, out: Uint8Array): void {
  checkHalfLengths("encodeF16", out, values);
  const n = values.length;
  const src = new Uint32Array(values.buffer, values.byteOffset, n);
  const dst = halfWordsOut(out, n);
  for (let i = 0; i < n; i++) {
    const bits = src[i]!;
    const sign = (bits >>> 16) & 0x8000;
    const exp = (bits >>> 23) & 0xff;
    const mant = bits & 0x7fffff;
    let h: number;
    if (exp >= 113) {
      if (exp === 0xff) h = sign | 0x7c00 | (mant !== 0 ? 0x200 : 0);
      else if (exp >= 143)
        h = sign | 0x7c00; // |x| >= 2^16: overflow
      else {
        // normal half: rebias the exponent, round 13 dropped mantissa bits (a carry into the exponent is correct)
        h = ((exp - 112) << 10) | (mant >>> 13);
        const rest = mant & 0x1fff;
        if (rest > 0x1000 || (rest === 0x1000 && (h & 1) !== 0)) h++;
        h |= sign;
      }
    } else if (exp < 102) {
      h = sign; // below half the smallest subnormal: ±0
    } else {
      // subnormal half
      const m = mant | 0x800000;
      const shift = 126 - exp; // 14..24
      const half = 1 << (shift - 1);
      const rest = m & ((1 << shift) - 1);
      h = m >>> shift;
      if (rest > half || (rest === half && (h & 1) !== 0)) h++;
      h |= sign;
    }
    dst[i] = h;
  }
  storeHalfWords(dst, out);
}

/** float32 values → little-endian bfloat16 bytes, round to nearest even, NaN → quiet NaN. */
export function encodeBF16(values: Float32Array, out: Uint8Array): void {
  checkHalfLengths("encodeBF16", out, values);
  const n = values.length;
  const src = new Uint32Array(values.buffer, values.byteOffset, n);
  const dst = halfWordsOut(out, n);
  for (let i = 0; i < n; i++) {
    const bits = src[i]!;
    dst[i] = (bits & 0x7fffffff) > 0x7f800000 ? ((bits >>> 16) | 0x40) & 0xffff : ((bits + 0x7fff + ((bits >>> 16) & 1)) >>> 16) & 0xffff;
  }
  storeHalfWords(dst, out);
}

// ---------------------------------------------------------------------------------------------
// Stored bytes (little-endian, F16/BF16 as 16-bit words): the finite check a save makes on them.

/** Bits of a float dtype's exponent field in its top word (16 bits for F16/BF16, 32 for F32 and F64's high half). */
const EXPONENT_MASK: Partial<Record<DType, number>> = { BF16: 0x7f80, F16: 0x7c00, F32: 0x7f800000, F64: 0x7ff00000 };

/** `n` aligned little-endian words of `size` bytes: a view of `bytes` when the host allows, else a copy. */
function wordsOf(bytes: Uint8Array, size: 2 | 4): Uint16Array | Uint32Array {
  const n = bytes.length / size;
  if (HOST_LITTLE_ENDIAN && bytes.byteOffset % size === 0) {
    return size === 2 ? new Uint16Array(bytes.buffer, bytes.byteOffset, n) : new Uint32Array(bytes.buffer, bytes.byteOffset, n);
  }
  const out = size === 2 ? new Uint16Array(n) : new Uint32Array(n);
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let i = 0; i < n; i++) out[i] = size === 2 ? dv.getUint16(2 * i, true) : dv.getUint32(4 * i, true);
  return out;
}

/**
 * The index of the first element of little-endian `bytes` of `dtype` that is NaN or ±Infinity (its exponent bits all
 * ones: BF16 (u16 & 0x7F80) === 0x7F80, F16 (u16 & 0x7C00) === 0x7C00, F32 (u32 & 0x7F800000) === 0x7F800000, F64 the
 * same on the high word), or -1 when every one is finite; always -1 for integer dtypes. A stored F16 cannot overflow:
 * what would is already ±Infinity. Branch-free first (adding the exponent's lowest bit to an all-ones exponent carries
 * into the sign bit, any other exponent does not), so a finite tensor costs one OR-accumulating pass.
 */
export function firstNonFiniteStored(dtype: DType, bytes: Uint8Array): number {
  const mask = EXPONENT_MASK[dtype];
  if (mask === undefined) return -1;
  const size = DTYPE_SIZES[dtype];
  if (bytes.length % size !== 0) throw new RangeError(`firstNonFiniteStored: ${bytes.length} bytes are not whole ${dtype} values`);
  const low = mask & -mask,
    top = size === 2 ? 0x8000 : 0x80000000;
  if (size === 2 && HOST_LITTLE_ENDIAN && bytes.byteOffset % 4 === 0 && allFinitePairs(bytes, mask, low)) return -1;
  // F64: the exponent is in the high (odd) 32-bit word of each little-endian value.
  const words = wordsOf(bytes, size === 2 ? 2 : 4);
  const first = size === 8 ? 1 : 0,
    step = size === 8 ? 2 : 1;
  const n = words.length;
  let acc = 0;
  if (step === 1) {
    const m = n - (n % 4);
    for (let i = 0; i < m; i += 4) {
      acc |= ((words[i]! & mask) + low) | ((words[i + 1]! & mask) + low) | ((words[i + 2]! & mask) + low) | ((words[i + 3]! & mask) + low);
    }
    for (let i = m; i < n; i++) acc |= (words[i]! & mask) + low;
  } else {
    for (let i = first; i < n; i += step) acc |= (words[i]! & mask) + low;
  }
  if ((acc & top) === 0) return -1;
  for (let i = first; i < n; i += step) if ((words[i]! & mask) === mask) return (i - first) / step;
  return -1;
}

/** Whether no 16-bit value of 4-byte-aligned little-endian `bytes` has an all-ones exponent: two values per 32-bit word. */
function allFinitePairs(bytes: Uint8Array, mask: number, low: number): boolean {
  const u = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.length >>> 2);
  const m2 = (mask | (mask << 16)) >>> 0,
    l2 = low | (low << 16);
  const n = u.length,
    m = n - (n % 4);
  let acc = 0;
  for (let i = 0; i < m; i += 4) acc |= ((u[i]! & m2) + l2) | ((u[i + 1]! & m2) + l2) | ((u[i + 2]! & m2) + l2) | ((u[i + 3]! & m2) + l2);
  for (let i = m; i < n; i++) acc |= (u[i]! & m2) + l2;
  // An odd count leaves the last value out of the words.
  if (bytes.length % 4 === 2) acc |= ((bytes[bytes.length - 2]! | (bytes[bytes.length - 1]! << 8)) & mask) + low;
  return (acc & 0x80008000) === 0;
}

/** Element `i` of little-endian `bytes` of a float `dtype`, as a number (for messages). */
export function storedValue(dtype: DType, bytes: Uint8Array, i: number): number {
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  switch (dtype) {
    case "F64":
      return dv.getFloat64(8 * i, true);
    case "F32":
      return dv.getFloat32(4 * i, true);
    case "F16":
      return f16BitsToF32(dv.getUint16(2 * i, true));
    case "BF16":
      return bf16BitsToF32(dv.getUint16(2 * i, true));
    default:
      throw new Error(`storedValue: ${dtype} is not a float dtype`);
  }
}

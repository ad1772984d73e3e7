import { describe, expect, it } from "vitest";
import {
  DTYPE_SIZES,
  SAFETENSORS_DTYPES,
  SAFETENSORS_DTYPE_BITS,
  TORCH_NAMES,
  bf16BitsToF32,
  decodeBF16,
  decodeF16,
  encodeBF16,
  encodeF16,
  f16BitsToF32,
  f16Table32,
  f32ToBf16Bits,
  f32ToF16Bits,
  firstNonFiniteStored,
  isDType,
  isSafetensorsDType,
  storedValue,
} from "./dtype.js";

const bitsOf = (x: number): number => new Uint32Array(new Float32Array([x]).buffer)[0]!;
const fromBits = (b: number): number => new Float32Array(new Uint32Array([b >>> 0]).buffer)[0]!;
const u16le = (bytes: Uint8Array, i: number): number => bytes[2 * i]! | (bytes[2 * i + 1]! << 8);

/** Deterministic spread of float32 bit patterns: every exponent, random mantissas and signs. */
function samplePatterns(): Uint32Array {
  const out: number[] = [];
  let s = 12345;
  const next = (): number => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s;
  };
  for (let exp = 0; exp < 256; exp++) {
    for (let k = 0; k < 64; k++) {
      const mant = k < 4 ? [0, 1, 0x7fffff, 0x400000][k]! : next() & 0x7fffff;
      out.push(((k & 1) << 31) | (exp << 23) | mant);
      // Exact rounding ties for F16 (13 dropped bits = 0x1000) and BF16 (16 dropped bits = 0x8000).
      out.push((exp << 23) | (next() & 0x7fe000) | 0x1000);
      out.push((exp << 23) | (next() & 0x7f0000) | 0x8000);
    }
  }
  return Uint32Array.from(out, (b) => b >>> 0);
}

describe("F16 bulk conversions", () => {
  it("table decodes all 65536 half bit patterns like f16BitsToF32", () => {
    const table = f16Table32();
    for (let h = 0; h < 65536; h++) {
      const want = f16BitsToF32(h);
      if (Number.isNaN(want)) expect(Number.isNaN(table[h])).toBe(true);
      else expect(Object.is(table[h], Math.fround(want))).toBe(true);
    }
  });

  it("decodeF16 matches the scalar conversion, aligned and unaligned", () => {
    const bytes = new Uint8Array(65536 * 2 + 1);
    const aligned = bytes.subarray(0, 65536 * 2);
    const unaligned = bytes.subarray(1);
    for (const view of [aligned, unaligned]) {
      for (let h = 0; h < 65536; h++) {
        view[2 * h] = h & 0xff;
        view[2 * h + 1] = h >>> 8;
      }
      const out = new Float32Array(65536);
      decodeF16(view, out);
      for (let h = 0; h < 65536; h++) {
        const want = f16BitsToF32(h);
        if (Number.isNaN(want)) expect(Number.isNaN(out[h])).toBe(true);
        else expect(Object.is(out[h], want)).toBe(true);
      }
    }
  });

  it("encodeF16 matches f32ToF16Bits on every exponent, ties included, aligned and unaligned", () => {
    const bits = samplePatterns();
    const values = new Float32Array(bits.buffer);
    const buf = new Uint8Array(values.length * 2 + 1);
    for (const out of [buf.subarray(0, values.length * 2), buf.subarray(1)]) {
      encodeF16(values, out);
      for (let i = 0; i < values.length; i++) expect(u16le(out, i)).toBe(f32ToF16Bits(values[i]!));
    }
  });

  it("edge values: subnormals, max, overflow, NaN, -0, ties to even", () => {
    const cases: [number, number][] = [
      [0, 0x0000],
      [-0, 0x8000],
      [1, 0x3c00],
      [-2, 0xc000],
      [65504, 0x7bff],
      [-65504, 0xfbff],
      [65519.99, 0x7bff], // below the midpoint to 65536: stays max
      [65520, 0x7c00], // midpoint, ties to even → Inf
      [1e6, 0x7c00],
      [-1e6, 0xfc00],
      [Infinity, 0x7c00],
      [-Infinity, 0xfc00],
      [2 ** -24, 0x0001], // smallest subnormal
      [2 ** -25, 0x0000], // half of it: tie to even → 0
      [3 * 2 ** -26, 0x0001], // above the tie
      [3 * 2 ** -25, 0x0002], // 1.5 ulp: tie → even (2)
      [2 ** -14, 0x0400], // smallest normal
      [2 ** -14 - 2 ** -24, 0x03ff], // largest subnormal
      [1 + 2 ** -11, 0x3c00], // tie between 1 and 1+2^-10 → even (1)
      [1 + 3 * 2 ** -11, 0x3c02], // tie → even (1 + 2^-9)
      [-(2 ** -30), 0x8000],
    ];
    const values = Float32Array.from(cases.map(([x]) => x));
    const out = new Uint8Array(values.length * 2);
    encodeF16(values, out);
    cases.forEach(([x, h], i) => expect([x, u16le(out, i)]).toEqual([x, h]));
    const back = new Float32Array(values.length);
    decodeF16(out, back);
    expect(Object.is(back[1], -0)).toBe(true);
    expect(back[4]).toBe(65504);
    expect(back[8]).toBe(Infinity);
    expect(back[12]).toBe(2 ** -24);

    const nan = new Uint8Array(2);
    encodeF16(Float32Array.of(NaN), nan);
    expect(u16le(nan, 0) & 0x7c00).toBe(0x7c00);
    expect(u16le(nan, 0) & 0x3ff).not.toBe(0);
    const nanBack = new Float32Array(1);
    decodeF16(nan, nanBack);
    expect(Number.isNaN(nanBack[0])).toBe(true);
  });

  it("rejects mismatched lengths", () => {
    expect(() => decodeF16(new Uint8Array(3), new Float32Array(2))).toThrow(/3 bytes do not hold 2/);
    expect(() => encodeF16(new Float32Array(2), new Uint8Array(2))).toThrow(RangeError);
  });
});

describe("BF16 bulk conversions", () => {
  it("encodeBF16 matches f32ToBf16Bits, aligned and unaligned", () => {
    const bits = samplePatterns();
    const values = new Float32Array(bits.buffer);
    const buf = new Uint8Array(values.length * 2 + 1);
    for (const out of [buf.subarray(0, values.length * 2), buf.subarray(1)]) {
      encodeBF16(values, out);
      for (let i = 0; i < values.length; i++) expect(u16le(out, i)).toBe(f32ToBf16Bits(values[i]!));
    }
  });

  it("rounds ties to even, overflows to Inf, keeps NaN quiet and -0", () => {
    const cases: [number, number][] = [
      [fromBits(0x3f808000), 0x3f80], // tie, even below
      [fromBits(0x3f818000), 0x3f82], // tie, odd below → up
      [fromBits(0x3f808001), 0x3f81], // above the tie
      [fromBits(0x3f807fff), 0x3f80], // below the tie
      [fromBits(0x7f7fffff), 0x7f80], // max float32 rounds to Inf
      [-0, 0x8000],
      [Infinity, 0x7f80],
      [-Infinity, 0xff80],
      [fromBits(0x00008000), 0x0000], // subnormal tie → even (0)
      [fromBits(0x00018000), 0x0002],
    ];
    const values = Float32Array.from(cases.map(([x]) => x));
    const out = new Uint8Array(values.length * 2);
    encodeBF16(values, out);
    cases.forEach(([x, h], i) => expect([bitsOf(x), u16le(out, i)]).toEqual([bitsOf(x), h]));

    const nan = new Uint8Array(2);
    encodeBF16(Float32Array.of(fromBits(0x7f800001)), nan); // signalling NaN → quiet, stays NaN
    expect(u16le(nan, 0)).toBe(0x7fc0);
  });

  it("decodeBF16 is exact for all 65536 patterns, aligned and unaligned", () => {
    const buf = new Uint8Array(65536 * 2 + 1);
    for (const view of [buf.subarray(0, 65536 * 2), buf.subarray(1)]) {
      for (let h = 0; h < 65536; h++) {
        view[2 * h] = h & 0xff;
        view[2 * h + 1] = h >>> 8;
      }
      const out = new Float32Array(65536);
      decodeBF16(view, out);
      const outBits = new Uint32Array(out.buffer);
      for (let h = 0; h < 65536; h++) {
        expect(outBits[h]).toBe((h << 16) >>> 0);
        const want = bf16BitsToF32(h);
        if (!Number.isNaN(want)) expect(Object.is(out[h], want)).toBe(true);
      }
    }
  });
});

describe("safetensors dtypes", () => {
  it("every in-memory dtype is a reference dtype of the same size; the rest are parse-only", () => {
    for (const [d, size] of Object.entries(DTYPE_SIZES)) expect(SAFETENSORS_DTYPE_BITS[d as keyof typeof DTYPE_SIZES]).toBe(8 * size);
    expect(SAFETENSORS_DTYPES.filter((d) => !isDType(d))).toEqual([
      "F4",
      "F6_E2M3",
      "F6_E3M2",
      "F8_E5M2",
      "F8_E4M3",
      "F8_E8M0",
      "F8_E4M3FNUZ",
      "F8_E5M2FNUZ",
      "C64",
    ]);
    expect(SAFETENSORS_DTYPES.every((d) => isSafetensorsDType(d) && typeof TORCH_NAMES[d] === "string")).toBe(true);
    for (const s of ["f32", "F8", "__proto__", "constructor", 4, null]) expect(isSafetensorsDType(s)).toBe(false);
  });
});

describe("finite check on stored bytes", () => {
  const le = (dtype: "F64" | "F32" | "F16" | "BF16", values: number[]): Uint8Array => {
    const size = DTYPE_SIZES[dtype];
    const out = new Uint8Array(values.length * size);
    const dv = new DataView(out.buffer);
    values.forEach((v, i) => {
      if (dtype === "F64") dv.setFloat64(8 * i, v, true);
      else if (dtype === "F32") dv.setFloat32(4 * i, v, true);
      else dv.setUint16(2 * i, dtype === "F16" ? f32ToF16Bits(v) : f32ToBf16Bits(v), true);
    });
    return out;
  };

  it("finds the first NaN or ±Infinity at any position, in every float dtype, aligned or not", () => {
    for (const dtype of ["F64", "F32", "F16", "BF16"] as const) {
      const big = dtype === "F16" ? 65504 : dtype === "BF16" ? 3.3895314e38 : 3.4e38;
      for (const n of [1, 3, 4, 5, 8, 13]) {
        const fine = Array.from({ length: n }, (_, i) => (i % 2 ? -big : 6e-8 * i));
        expect(firstNonFiniteStored(dtype, le(dtype, fine))).toBe(-1);
        for (let at = 0; at < n; at++) {
          for (const bad of [NaN, Infinity, -Infinity]) {
            const bytes = le(
              dtype,
              fine.map((v, i) => (i === at ? bad : v)),
            );
            expect(firstNonFiniteStored(dtype, bytes)).toBe(at);
            expect(storedValue(dtype, bytes, at)).toBe(bad);
            // The same bytes one byte into a larger buffer (a view the checker must not misread).
            const shifted = new Uint8Array(bytes.length + 1);
            shifted.set(bytes, 1);
            expect(firstNonFiniteStored(dtype, shifted.subarray(1))).toBe(at);
          }
        }
      }
    }
    // F16's largest finite value passes; what would round past it is already +Infinity in the stored bytes.
    expect(firstNonFiniteStored("F16", le("F16", [65504, 65520]))).toBe(1);
    expect(storedValue("F16", le("F16", [1, -2.5]), 1)).toBe(-2.5);
    expect(firstNonFiniteStored("I32", new Uint8Array(8).fill(0xff))).toBe(-1);
    expect(() => firstNonFiniteStored("F32", new Uint8Array(6))).toThrow(/not whole F32 values/);
  });
});

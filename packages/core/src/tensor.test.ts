import { describe, expect, it } from "vitest";
import { decodeTensor, encodeTensor } from "./safetensors/codec.js";
import {
  Tensor,
  blockDiagonal,
  blockLayoutBytes,
  blockLayoutPieces,
  blockMatrix,
  concat,
  concatBytes,
  f32ToStored,
  layoutShape,
  scaleStored,
  storedToF32,
  tileLayout,
  zeroPieces,
} from "./tensor.js";

const t = (shape: number[], values: number[]) => Tensor.fromArray(shape, values);

describe("Tensor", () => {
  it("slices along any axis", () => {
    const x = t([2, 3], [1, 2, 3, 4, 5, 6]);
    expect([...x.slice(1, 1, 3).data]).toEqual([2, 3, 5, 6]);
    expect(x.slice(1, 1, 3).shape).toEqual([2, 2]);
    expect([...x.slice(0, 1, 2).data]).toEqual([4, 5, 6]);
    expect(() => x.slice(1, 2, 4)).toThrow(/out of range/);
  });

  it("concatenates and tiles along an axis", () => {
    const a = t([2, 1], [1, 2]);
    const b = t([2, 2], [3, 4, 5, 6]);
    expect([...concat([a, b], 1).data]).toEqual([1, 3, 4, 2, 5, 6]);
    expect([...concat([a, a], 0).data]).toEqual([1, 2, 1, 2]);
    expect([...t([3], [1, 2, 3]).tile(0, 2).data]).toEqual([1, 2, 3, 1, 2, 3]);
    expect([...t([1, 2], [1, 2]).tile(1, 3).data]).toEqual([1, 2, 1, 2, 1, 2]);
    expect(() => concat([a, t([3, 1], [1, 2, 3])], 1)).toThrow(/does not match/);
  });

  it("chunks into equal parts", () => {
    const parts = t([2, 4], [1, 2, 3, 4, 5, 6, 7, 8]).chunk(1, 2);
    expect(parts.map((p) => [...p.data])).toEqual([
      [1, 2, 5, 6],
      [3, 4, 7, 8],
    ]);
    expect(() => t([3], [1, 2, 3]).chunk(0, 2)).toThrow(/does not split/);
  });

  it("assembles block-diagonal and block matrices", () => {
    const a = t([1, 2], [1, 2]);
    const b = t([2, 1], [3, 4]);
    const d = blockDiagonal([a, b]);
    expect(d.shape).toEqual([3, 3]);
    expect([...d.data]).toEqual([1, 2, 0, 0, 0, 3, 0, 0, 4]);
    const m = blockMatrix([
      [a, t([1, 1], [9])],
      [null, b],
    ]);
    expect([...m.data]).toEqual([1, 2, 9, 0, 0, 3, 0, 0, 4]);
  });

  it("scales, keeps the storage dtype, and checks sizes", () => {
    const h = new Tensor("BF16", [2], new Float32Array([1, 2]));
    expect(h.scale(0.5).dtype).toBe("BF16");
    expect([...h.scale(0.5).data]).toEqual([0.5, 1]);
    expect(() => new Tensor("F32", [3], new Float32Array(2))).toThrow(/needs 3/);
    expect(Tensor.zeros("I64", [2]).data).toBeInstanceOf(BigInt64Array);
    expect(() => Tensor.zeros("F32", [100000, 50000])).toThrow(
      "a tensor of shape [100000, 50000] has 5000000000 values, more than one array holds (4294967295)",
    );
  });
});

describe("stored bytes (growth's copies without decoding)", () => {
  const bytesOf = (x: Tensor) => encodeTensor(x);
  const pieces = (it: Iterable<Uint8Array>) => [...it];
  const joined = concatBytes;
  const m = t([2, 3], [1, 2, 3, 4, 5, 6]);
  const n = t([2, 3], [-1, -2, -3, -4, -5, -6]);

  it("tiles along either axis of a matrix and a vector, as Tensor.tile does, in pieces of whole rows", () => {
    for (const [shape, axis] of [
      [[2, 3], 0],
      [[2, 3], 1],
      [[6], 0],
      [[2, 1, 3], 1],
    ] as const) {
      const x = t([...shape], [1, 2, 3, 4, 5, 6]);
      for (const k of [1, 2, 3]) {
        const l = tileLayout(shape, axis, k);
        const expected = bytesOf(x.tile(axis, k));
        expect(blockLayoutBytes([bytesOf(x)], 4, l)).toEqual(expected);
        // Pieces of at most 12 bytes: one row each (rows are 12 bytes or longer), the same bytes.
        const small = pieces(blockLayoutPieces([bytesOf(x)], 4, l, 12));
        expect(small.length).toBe(l.rows * l.rowBands);
        expect(joined(small)).toEqual(expected);
      }
    }
    expect(layoutShape(tileLayout([2, 3], 1, 2), false)).toEqual([2, 6]);
    expect(layoutShape(tileLayout([6], 0, 2), true)).toEqual([12]);
  });

  it("tiles each part of a fused last axis by itself ([q, q, k, k, v, v]), as perPart then tile do", () => {
    const b = t([6], [1, 2, 3, 4, 5, 6]);
    const expected = concat(
      b.chunk(0, 3).map((p) => p.tile(0, 2)),
      0,
    );
    expect([...expected.f32]).toEqual([1, 2, 1, 2, 3, 4, 3, 4, 5, 6, 5, 6]);
    expect(blockLayoutBytes([bytesOf(b)], 4, tileLayout([6], 0, 2, 3))).toEqual(bytesOf(expected));
    const w = t([2, 6], [...Array(12).keys()]);
    expect(blockLayoutBytes([bytesOf(w)], 4, tileLayout([2, 6], 1, 2, 3))).toEqual(
      bytesOf(
        concat(
          w.chunk(1, 3).map((p) => p.tile(1, 2)),
          1,
        ),
      ),
    );
    expect(() => tileLayout([2, 3, 6], 1, 2, 3)).toThrow(/parts split the last axis/);
  });

  it("places blocks of several sources and zeros, as blockMatrix does, for 2-byte values too", () => {
    const l = { rows: 2, cols: 3, rowBands: 2, colBands: 3, block: (s: number, u: number) => (u === 2 ? -1 : (s + u) % 2) };
    const z = t([2, 3], [0, 0, 0, 0, 0, 0]);
    const expected = blockMatrix([
      [m, n, z],
      [n, m, z],
    ]);
    expect(blockLayoutBytes([bytesOf(m), bytesOf(n)], 4, l)).toEqual(bytesOf(expected));
    expect(joined(pieces(blockLayoutPieces([bytesOf(m), bytesOf(n)], 4, l, 1)))).toEqual(bytesOf(expected));
    const h = new Tensor("BF16", [2, 3], m.f32),
      g = new Tensor("BF16", [2, 3], n.f32);
    const hd = blockDiagonal([h, g]);
    expect(
      blockLayoutBytes([bytesOf(h), bytesOf(g)], 2, { rows: 2, cols: 3, rowBands: 2, colBands: 2, block: (s, u) => (s === u ? s : -1) }),
    ).toEqual(bytesOf(hd));
  });

  it("gives a band that is one source as views of it and a band of zeros as views of one buffer", () => {
    const src = bytesOf(m);
    const ps = pieces(blockLayoutPieces([src], 4, { rows: 2, cols: 3, rowBands: 3, colBands: 1, block: (s) => (s === 1 ? -1 : 0) }));
    expect(ps.filter((p) => p.buffer === src.buffer)).toHaveLength(2);
    expect(joined(ps)).toEqual(bytesOf(concat([m, t([2, 3], [0, 0, 0, 0, 0, 0]), m], 0)));
    const zeros = pieces(zeroPieces(10, 4));
    expect(zeros.map((z) => z.length)).toEqual([4, 4, 2]);
    expect(new Set(zeros.map((z) => z.buffer)).size).toBe(1);
    expect(pieces(zeroPieces(0))).toEqual([]);
  });

  it("refuses sources that do not fit the layout and blocks naming no source", () => {
    expect(() => blockLayoutBytes([new Uint8Array(8)], 4, { rows: 2, cols: 3, rowBands: 1, colBands: 1, block: () => 0 })).toThrow(
      "block layout: source 0 has 8 bytes, [2, 3] of 4-byte values need 24",
    );
    expect(() => blockLayoutBytes([bytesOf(m)], 4, { rows: 2, cols: 3, rowBands: 1, colBands: 2, block: (_, u) => u })).toThrow(
      "block layout: block (0, 1) names source 1 of 1",
    );
    expect(() => blockLayoutBytes([bytesOf(m)], 4, { rows: 2, cols: 3, parts: 2, rowBands: 1, colBands: 1, block: () => 0 })).toThrow(
      "block layout: 3 columns do not split into 2 parts",
    );
  });

  it("scales stored bytes exactly as Tensor.scale and the writer's rounding do, −0 kept unless + 0 is asked for", () => {
    const values = [1, -0, 0.1, -3.3e-5, 65504, 1e-7, 3.3895314e38, 6e-8, 2.5];
    for (const dtype of ["F32", "F16", "BF16"] as const) {
      const x = decodeTensor(dtype, [values.length], encodeTensor(new Tensor(dtype, [values.length], Float32Array.from(values))));
      const raw = encodeTensor(x);
      for (const s of [0.5, 1 / 3, 0.25]) {
        expect(scaleStored(dtype, raw, s)).toEqual(encodeTensor(x.scale(s)));
        const plus = new Tensor(
          dtype,
          x.shape,
          x.f32.map((v) => s * v + 0),
        );
        expect(scaleStored(dtype, raw, s, true)).toEqual(encodeTensor(plus));
      }
      expect(storedToF32(dtype, raw)).toEqual(x.f32);
      expect(f32ToStored(dtype, x.f32)).toEqual(raw);
      expect(Object.is(storedToF32(dtype, scaleStored(dtype, raw, 0.5))[1], -0)).toBe(true);
      expect(Object.is(storedToF32(dtype, scaleStored(dtype, raw, 0.5, true))[1], 0)).toBe(true);
    }
    expect(() => scaleStored("I32", new Uint8Array(4), 2)).toThrow(/not float32 in memory/);
  });
});

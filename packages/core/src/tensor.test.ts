import { describe, expect, it } from "vitest";
import { Tensor, blockDiagonal, blockMatrix, concat } from "./tensor.js";

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
    expect(parts.map((p) => [...p.data])).toEqual([[1, 2, 5, 6], [3, 4, 7, 8]]);
    expect(() => t([3], [1, 2, 3]).chunk(0, 2)).toThrow(/does not split/);
  });

  it("assembles block-diagonal and block matrices", () => {
    const a = t([1, 2], [1, 2]);
    const b = t([2, 1], [3, 4]);
    const d = blockDiagonal([a, b]);
    expect(d.shape).toEqual([3, 3]);
    expect([...d.data]).toEqual([1, 2, 0, 0, 0, 3, 0, 0, 4]);
    const m = blockMatrix([[a, t([1, 1], [9])], [null, b]]);
    expect([...m.data]).toEqual([1, 2, 9, 0, 0, 3, 0, 0, 4]);
  });

  it("scales, keeps the storage dtype, and checks sizes", () => {
    const h = new Tensor("BF16", [2], new Float32Array([1, 2]));
    expect(h.scale(0.5).dtype).toBe("BF16");
    expect([...h.scale(0.5).data]).toEqual([0.5, 1]);
    expect(() => new Tensor("F32", [3], new Float32Array(2))).toThrow(/needs 3/);
    expect(Tensor.zeros("I64", [2]).data).toBeInstanceOf(BigInt64Array);
    expect(() => Tensor.zeros("F32", [100000, 50000])).toThrow("a tensor of shape [100000, 50000] has 5000000000 values, more than one array holds (4294967295)");
  });
});

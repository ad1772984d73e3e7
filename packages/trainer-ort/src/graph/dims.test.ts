import ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { GraphBuilder } from "./builder.js";
import { addDims, divDims, isStatic, mulDims, productOf } from "./dims.js";

describe("symbolic dimensions", () => {
  it("products are canonical (size factor first, names sorted), divide exactly or not at all, sums are one name", () => {
    expect(mulDims(3, 4)).toBe(12);
    expect(productOf(["seq", 4, "batch", 2])).toBe("8*batch*seq");
    expect(mulDims("batch*seq", 1)).toBe("batch*seq");
    expect(divDims("8*batch*seq", "2*batch")).toBe("4*seq");
    expect(divDims("8*batch*seq", "8*batch*seq")).toBe(1);
    expect(divDims("8*batch", "3")).toBeNull();
    expect(divDims("8*batch", "seq")).toBeNull();
    expect(divDims(12, 5)).toBeNull();
    expect(addDims(2, 3)).toBe(5);
    expect(addDims("past", 0)).toBe("past");
    const sum = addDims("past", "seq");
    expect(sum).toBe("(past+seq)");
    expect(mulDims(sum, 2)).toBe("2*(past+seq)");
    expect(divDims(mulDims(sum, "batch"), "batch")).toBe("(past+seq)");
    expect(isStatic([1, 2])).toBe(true);
    expect(isStatic([1, "b"])).toBe(false);
  });

  it("a static shape is asked of a symbolic value: a one-line error", () => {
    const b = new GraphBuilder();
    const x = b.input("x", "float32", ["batch", 3]);
    expect(x.dims).toEqual(["batch", 3]);
    expect(() => x.shape).toThrow("x has symbolic dimensions [batch,3]");
  });

  it("Reshape of symbolic dimensions: 0 where a dimension stays, −1 for one other, sizes from the inputs for the rest; runs for any batch and length", async () => {
    const b = new GraphBuilder();
    const x = b.input("x", "float32", ["batch", "seq", 6]); // [B, S, 6]
    const flat = b.reshape(x, [-1, 6]); // [B·S, 6]
    expect(flat.dims).toEqual(["batch*seq", 6]);
    const heads = b.reshape(flat, ["batch", "seq", 2, 3]); // two names to read at run time
    expect(heads.dims).toEqual(["batch", "seq", 2, 3]);
    const grouped = b.reshape(heads, ["batch", -1, 3]); // [B, 2·S, 3]: 0, −1, 3
    expect(grouped.dims).toEqual(["batch", "2*seq", 3]);
    expect(b.reshape(grouped, ["batch", "2*seq", 3])).toBe(grouped);
    expect(() => b.reshape(x, [-1, 4])).toThrow("Reshape: [batch,seq,6] to [-1,4]");
    expect(() => b.reshape(flat, ["rows", "cols", 6])).toThrow("Reshape: [batch*seq,6] to [rows,cols,6]");
    const other = new GraphBuilder(),
      rows = other.input("rows", "float32", ["a*b", 6]);
    expect(() => other.reshape(rows, ["a", "b", 6])).toThrow("Reshape: [a*b,6] to [a,b,6]: no input gives the size a");
    const u = b.unsqueeze(grouped, [1]);
    expect(u.dims).toEqual(["batch", 1, "2*seq", 3]);
    b.output(u, "y");
    const ops = b.live().nodes.map((n) => n.op);
    expect(ops).toEqual(["Reshape", "Shape", "Concat", "Reshape", "Reshape", "Unsqueeze"]);
    const session = await ort.InferenceSession.create(b.serialize());
    for (const [B, S] of [
      [1, 1],
      [2, 5],
    ] as const) {
      const values = Float32Array.from({ length: B * S * 6 }, (_, i) => i);
      const out = await session.run({ x: new ort.Tensor("float32", values, [B, S, 6]) });
      expect(out.y!.dims).toEqual([B, 1, 2 * S, 3]);
      expect(Array.from(out.y!.data as Float32Array)).toEqual(Array.from(values));
    }
    await session.release();
  });
});

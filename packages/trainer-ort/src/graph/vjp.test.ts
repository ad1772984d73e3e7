import ort from "onnxruntime-node";
import { describe, expect, it } from "vitest";
import { GraphBuilder, type DType, type Value } from "./builder.js";
import { gradients } from "./autodiff.js";
import { rmsNorm, silu } from "../models/decoder.js";

/**
 * Each rule is checked by central finite differences of loss = Σ r ⊙ f(inputs) (r random, so the
 * gradient flowing back is not all ones). float64 where onnxruntime's CPU provider has the op in double:
 * h = 1e-6, |fd − ad| ≤ 1e-6 + 1e-5·|ad|. float32 otherwise: h = 1e-2, |fd − ad| ≤ 2e-3 + 2e-2·|ad|.
 */
type Spec = { shape: number[]; values?: number[]; positive?: boolean; dtype?: DType; int?: boolean };

let seed = 12345;
const rand = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;

async function check(build: (b: GraphBuilder, x: Value[]) => Value, specs: Spec[], dtype: "float32" | "float64" = "float64") {
  const b = new GraphBuilder();
  const xs = specs.map((s, i) => b.input(`x${i}`, s.int ? "int64" : (s.dtype ?? dtype), s.shape));
  const y = build(b, xs);
  const r = b.initializer("r", y.dtype, y.shape, Array.from({ length: y.size }, rand));
  const loss = b.reduceSum(b.mul(y, r), [...y.shape.keys()], false);
  const wrt = xs.filter((_, i) => !specs[i]!.int);
  const grads = gradients(b, b.cast(loss, dtype), wrt);
  b.output(b.cast(loss, dtype), "loss");
  grads.forEach((g, i) => b.output(g, `grad${i}`));
  const session = await ort.InferenceSession.create(b.serialize(), { graphOptimizationLevel: "all" });
  const values = specs.map((s) => {
    const n = s.shape.reduce((a, c) => a * c, 1);
    if (s.values) return s.values;
    return Array.from({ length: n }, () => (s.positive ? 0.5 + Math.abs(rand()) : rand()));
  });
  const feeds = (vals: number[][]) =>
    Object.fromEntries(
      specs.map((s, i) => [
        `x${i}`,
        s.int
          ? new ort.Tensor(
              "int64",
              BigInt64Array.from(vals[i]!, (v) => BigInt(v)),
              s.shape,
            )
          : new ort.Tensor(s.dtype ?? dtype, ((s.dtype ?? dtype) === "float64" ? Float64Array : Float32Array).from(vals[i]!), s.shape),
      ]),
    );
  const res = await session.run(feeds(values));
  const h = dtype === "float64" ? 1e-6 : 1e-2;
  const [atol, rtol] = dtype === "float64" ? [1e-6, 1e-5] : [2e-3, 2e-2];
  let wi = 0;
  for (let i = 0; i < specs.length; i++) {
    if (specs[i]!.int) continue;
    const ad = res[`grad${wi++}`]!.data as Float64Array | Float32Array;
    expect(ad.length).toBe(values[i]!.length);
    for (let j = 0; j < values[i]!.length; j++) {
      const at = async (d: number) => {
        const v = values.map((a) => a.slice());
        v[i]![j]! += d;
        return Number((await session.run(feeds(v))).loss!.data[0]);
      };
      const fd = ((await at(h)) - (await at(-h))) / (2 * h);
      if (!(Math.abs(fd - ad[j]!) <= atol + rtol * Math.abs(ad[j]!))) {
        throw new Error(`input ${i} element ${j}: finite difference ${fd}, autodiff ${ad[j]}`);
      }
    }
  }
  await session.release();
}

describe("VJP rules against central finite differences (float64)", () => {
  it("Add, Sub, Mul, Div with broadcasting", async () => {
    await check((b, [x, y]) => b.add(x!, y!), [{ shape: [2, 3, 4] }, { shape: [3, 1] }]);
    await check((b, [x, y]) => b.sub(x!, y!), [{ shape: [4] }, { shape: [2, 3, 4] }]);
    await check((b, [x, y]) => b.mul(x!, y!), [{ shape: [2, 1, 4] }, { shape: [3, 1] }]);
    await check((b, [x, y]) => b.div(x!, y!), [{ shape: [2, 3] }, { shape: [3], positive: true }]);
  });
  it("Pow (constant and tensor exponent), Sqrt, Tanh, Sigmoid, Exp, Log, Neg, Identity", async () => {
    await check((b, [x]) => b.pow(x!, 3), [{ shape: [5] }]);
    await check((b, [x]) => b.pow(x!, 2), [{ shape: [5] }]);
    await check((b, [x, p]) => b.pow(x!, p!), [{ shape: [2, 3], positive: true }, { shape: [3] }]);
    await check((b, [x]) => b.sqrt(x!), [{ shape: [6], positive: true }]);
    await check((b, [x]) => b.tanh(x!), [{ shape: [6] }]);
    await check((b, [x]) => b.sigmoid(x!), [{ shape: [7], values: [-6, -2, -0.5, 0, 0.3, 1.5, 5] }]);
    await check((b, [x]) => b.exp(x!), [{ shape: [6] }]);
    await check((b, [x]) => b.log(x!), [{ shape: [6], positive: true }]);
    await check((b, [x]) => b.neg(x!), [{ shape: [6] }]);
    await check((b, [x]) => b.identity(x!), [{ shape: [6] }]);
  });
  it("Softmax; logSumExp and logSoftmax (composites with the max detached), also where exp would overflow", async () => {
    await check((b, [x]) => b.softmax(x!, -1), [{ shape: [2, 3, 4] }]);
    await check((b, [x]) => b.softmax(x!, 1), [{ shape: [2, 3, 4] }]);
    await check((b, [x]) => b.logSoftmax(x!, -1), [{ shape: [3, 5] }]);
    await check((b, [x]) => b.logSumExp(x!, 0), [{ shape: [3, 5] }]);
    await check((b, [x]) => b.logSoftmax(x!, -1), [{ shape: [2, 3], values: [800, 801, 799.5, -3, 0.5, 2] }]);
  });
  it("detach: the values pass, the gradient does not (d/dx of x·detach(x) is detach(x))", async () => {
    const b = new GraphBuilder();
    const x = b.input("x", "float64", [3]);
    const [g] = gradients(b, b.reduceSum(b.mul(x, b.detach(x)), [0], false), [x]);
    b.output(g!, "g");
    const xs = Float64Array.of(0.5, -2, 3);
    const session = await ort.InferenceSession.create(b.serialize());
    const out = await session.run({ x: new ort.Tensor("float64", xs, [3]) });
    expect(Array.from(out.g!.data as Float64Array)).toEqual(Array.from(xs));
    await session.release();
  });
  it("MatMul: 2-D, 3-D by 2-D weights, batched, broadcast batch", async () => {
    await check((b, [x, y]) => b.matmul(x!, y!), [{ shape: [3, 4] }, { shape: [4, 2] }]);
    await check((b, [x, y]) => b.matmul(x!, y!), [{ shape: [2, 3, 4] }, { shape: [4, 2] }]);
    await check((b, [x, y]) => b.matmul(x!, y!), [{ shape: [2, 2, 3, 4] }, { shape: [2, 2, 4, 3] }]);
    await check((b, [x, y]) => b.matmul(x!, y!), [{ shape: [2, 1, 3, 4] }, { shape: [1, 2, 4, 2] }]);
  });
  it("Gemm with every transpose combination, alpha, beta and a broadcast bias", async () => {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        await check(
          (b, [x, y, c]) => b.gemm(x!, y!, c!, { transA, transB, alpha: 0.7, beta: 1.3 }),
          [{ shape: transA ? [4, 3] : [3, 4] }, { shape: transB ? [2, 4] : [4, 2] }, { shape: [2] }],
        );
      }
    }
  });
  it("LayerNormalization (scale and bias)", async () => {
    await check((b, [x, w, c]) => b.layerNorm(x!, w!, c!, 1e-5).y, [{ shape: [2, 3, 5] }, { shape: [5] }, { shape: [5] }]);
  });
  it("Gather with repeated indices, GatherElements", async () => {
    await check((b, [d, i]) => b.gather(d!, i!, 0), [{ shape: [5, 3] }, { shape: [2, 3], int: true, values: [0, 4, 0, 2, 4, 4] }]);
    await check((b, [d, i]) => b.gatherElements(d!, i!, 1), [{ shape: [3, 4] }, { shape: [3, 2], int: true, values: [0, 3, 1, 1, 2, 0] }]);
  });
  it("Reshape, Transpose, Expand, Split, Slice, Pad, Concat", async () => {
    await check((b, [x]) => b.reshape(x!, [3, -1]), [{ shape: [2, 3, 2] }]);
    await check((b, [x]) => b.transpose(x!, [2, 0, 1]), [{ shape: [2, 3, 4] }]);
    await check((b, [x]) => b.expand(x!, [2, 3, 4]), [{ shape: [3, 1] }]);
    await check((b, [x]) => b.split(x!, 1, [1, 2, 3])[2]!, [{ shape: [2, 6] }]);
    await check(
      (b, [x]) => {
        const [p, q] = b.split(x!, 0, [1, 2]);
        return b.mul(b.reshape(p!, [3]), b.reduceSum(q!, [0], false));
      },
      [{ shape: [3, 3] }],
    );
    await check((b, [x]) => b.slice(x!, [1, 0], [3, 2], [0, 1]), [{ shape: [4, 3] }]);
    await check((b, [x]) => b.pad(x!, [1, 0], [0, 2]), [{ shape: [2, 3] }]);
    await check((b, [x, y]) => b.concat([x!, y!], 1), [{ shape: [2, 2] }, { shape: [2, 3] }]);
  });
  it("ReduceSum, ReduceMean, ReduceSumSquare, ReduceMax, sum (chained Adds, broadcast)", async () => {
    await check((b, [x]) => b.reduceSum(x!, [0, 2], false), [{ shape: [2, 3, 4] }]);
    await check((b, [x]) => b.reduceMean(x!, [1], true), [{ shape: [2, 3, 4] }]);
    await check((b, [x]) => b.reduceSumSquare(x!, [2], false), [{ shape: [2, 3, 4] }]);
    await check((b, [x]) => b.reduceMax(x!, [1], false), [{ shape: [3, 4] }]);
    await check((b, [x, y, z]) => b.sum([x!, y!, z!]), [{ shape: [2, 3] }, { shape: [3] }, { shape: [2, 1] }]);
  });
  it("Where (both branches, broadcast)", async () => {
    await check((b, [x, y]) => b.where(b.less(x!, b.scalar(0, "float64")), x!, y!), [{ shape: [2, 3] }, { shape: [3] }]);
  });
  it("accumulates gradients of a value used several times", async () => {
    await check((b, [x]) => b.add(b.mul(x!, x!), b.tanh(x!)), [{ shape: [4] }]);
  });
  it("a scatter-add that writes each element once goes into the other contributions, not into zeros", async () => {
    // GatherElements with one index per row (the loss's target logit) beside a dense use of the same value.
    const picked = (b: GraphBuilder, [z, t]: Value[]) => b.sub(b.gatherElements(z!, t!, 1), b.logSumExp(z!, -1));
    await check(picked, [{ shape: [4, 5] }, { shape: [4, 1], int: true, values: [1, 4, 0, 1] }]);
    // Gather with repeated rows (an embedding tied to a dense use): left as a scatter into zeros, then added.
    const tied = (b: GraphBuilder, [w, i]: Value[]) => b.mul(b.gather(w!, i!, 0), b.reduceSum(w!, [0], true));
    await check(tied, [{ shape: [4, 3] }, { shape: [5], int: true, values: [1, 3, 1, 0, 1] }]);
    const scattersInto = (build: typeof picked, x: [number, number], i: number[]) => {
      const b = new GraphBuilder();
      const v = b.input("x", "float64", x);
      const [g] = gradients(b, b.reduceSum(build(b, [v, b.input("i", "int64", i)]), [0, 1], false), [v]);
      b.output(g!, "g");
      return b
        .live()
        .nodes.filter((n) => n.op === "ScatterElements")
        .map((n) => (b.isZeros(n.inputs[0]!) ? "zeros" : "sum"));
    };
    expect(scattersInto(picked, [4, 5], [4, 1])).toEqual(["sum"]);
    expect(scattersInto(tied, [4, 3], [5])).toEqual(["zeros"]);
  });
  it("the decoder's composites: RMSNorm, SwiGLU, rotate-half rotary embedding", async () => {
    await check((b, [x, w]) => rmsNorm(b, x!, w!, 1e-6), [{ shape: [2, 3, 5] }, { shape: [5] }]);
    await check((b, [g, u]) => b.mul(silu(b, g!), u!), [{ shape: [3, 4] }, { shape: [3, 4] }]);
    // x·cos + cat(x₂, x₁)·sin over the last axis, tables broadcast over the leading axes.
    await check(
      (b, [x, c, s]) => {
        const [x1, x2] = b.split(x!, -1, [2, 2]);
        return b.add(b.mul(x!, c!), b.mul(b.concat([x2!, x1!], -1), s!));
      },
      [{ shape: [2, 3, 4] }, { shape: [3, 4] }, { shape: [3, 4] }],
    );
  });
  it("cross-entropy as the decoder's loss writes it: GatherElements − logSumExp, ReduceMean, Neg", async () => {
    await check(
      (b, [z, t]) => b.neg(b.reduceMean(b.sub(b.gatherElements(z!, t!, 1), b.logSumExp(z!, -1)), [0, 1], false)),
      [{ shape: [4, 5] }, { shape: [4, 1], int: true, values: [1, 4, 0, 1] }],
    );
  });
});

describe("VJP rules in float32 (ops without a double kernel, casts)", () => {
  it("FastGelu (com.microsoft, float32 only)", async () => {
    await check((b, [x]) => b.fastGelu(x!), [{ shape: [12], values: [-4, -2.5, -1.2, -0.7, -0.3, -0.05, 0, 0.1, 0.6, 1.1, 2.2, 3.5] }], "float32");
  });
  it("Cast float32 → float64", async () => {
    await check((b, [x]) => b.cast(b.mul(x!, x!), "float64"), [{ shape: [4], dtype: "float32" }], "float32");
  });
  it("Sigmoid, RMSNorm and SwiGLU in float32", async () => {
    await check((b, [x]) => b.sigmoid(x!), [{ shape: [6] }], "float32");
    await check((b, [x, w]) => rmsNorm(b, x!, w!, 1e-5), [{ shape: [2, 6] }, { shape: [6] }], "float32");
    await check((b, [g, u]) => b.mul(silu(b, g!), u!), [{ shape: [2, 3] }, { shape: [2, 3] }], "float32");
  });
  it("LayerNormalization and the GELU pattern in float32", async () => {
    await check((b, [x, w, c]) => b.layerNorm(x!, w!, c!, 1e-5).y, [{ shape: [2, 6] }, { shape: [6] }, { shape: [6] }], "float32");
    await check(
      (b, [x]) => b.mul(b.mul(x!, 0.5), b.add(b.tanh(b.mul(b.add(x!, b.mul(b.pow(x!, 3), 0.044715)), Math.sqrt(2 / Math.PI))), 1)),
      [{ shape: [6] }],
      "float32",
    );
  });
});

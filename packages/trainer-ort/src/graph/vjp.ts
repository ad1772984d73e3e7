import type { GraphBuilder, Node, Value } from "./builder.js";

/**
 * A vector-Jacobian product: given the gradients of a node's outputs (null where none flows),
 * emit nodes computing the gradient of each input that `needs` asks for.
 */
export type VjpRule = (b: GraphBuilder, node: Node, g: readonly (Value | null)[], needs: readonly boolean[]) => (Value | null)[];

/** Sum `g` over the axes that broadcasting expanded, giving a value of `shape`. */
export function unbroadcast(b: GraphBuilder, g: Value, shape: readonly number[]): Value {
  const lead = g.rank - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < g.rank; i++) {
    if (i < lead || (shape[i - lead] === 1 && g.shape[i] !== 1)) axes.push(i);
  }
  return b.reshape(b.reduceSum(g, axes, true), shape);
}

const inp = (n: Node, i: number): Value => n.inputs[i]!;
const out = (n: Node, i = 0): Value => n.outputs[i]!;
/** Only the first output carries a gradient for these ops. */
const g0 = (g: readonly (Value | null)[]): Value => g[0]!;
const ifNeeded = (needs: readonly boolean[], f: (() => Value | null)[]): (Value | null)[] => f.map((fn, i) => (needs[i] ? fn() : null));

/** Gradients of a MatMul with batch broadcasting; 2-D weights use Gemm with transposed operands. */
const matmulVjp: VjpRule = (b, n, g, needs) => {
  const A = inp(n, 0),
    B = inp(n, 1),
    G = g0(g);
  if (A.rank < 2 || B.rank < 2) throw new Error("MatMul VJP: rank-1 operands are not supported");
  const swap = (v: Value) =>
    b.transpose(
      v,
      [...v.shape.keys()].map((i) => (i < v.rank - 2 ? i : 2 * v.rank - 3 - i)),
    );
  const K = A.shape[A.rank - 1]!,
    N = B.shape[B.rank - 1]!;
  return ifNeeded(needs, [
    () => {
      if (B.rank === 2) return b.reshape(b.gemm(b.reshape(G, [-1, N]), B, null, { transB: true }), A.shape);
      return unbroadcast(b, b.matmul(G, swap(B)), A.shape);
    },
    () => {
      if (B.rank === 2) return b.gemm(b.reshape(A, [-1, K]), b.reshape(G, [-1, N]), null, { transA: true });
      return unbroadcast(b, b.matmul(swap(A), G), B.shape);
    },
  ]);
};

/** Y = α·op(A)·op(B) + β·C. */
const gemmVjp: VjpRule = (b, n, g, needs) => {
  const A = inp(n, 0),
    B = inp(n, 1),
    C = n.inputs[2] ?? null,
    G = g0(g);
  const tA = n.attrs.transA === 1,
    tB = n.attrs.transB === 1;
  const alpha = (n.attrs.alpha as { float: number } | undefined)?.float ?? 1;
  const beta = (n.attrs.beta as { float: number } | undefined)?.float ?? 1;
  const o = (transA: boolean, transB: boolean) => ({ transA, transB, alpha });
  return ifNeeded(needs, [
    () => (tA ? b.gemm(B, G, null, o(tB, true)) : b.gemm(G, B, null, o(false, !tB))),
    () => (tB ? b.gemm(G, A, null, o(true, tA)) : b.gemm(A, G, null, o(!tA, false))),
    () => unbroadcast(b, beta === 1 ? G : b.mul(G, beta), C!.shape),
  ]);
};

/** LayerNormalization from its saved Mean and InvStdDev: dx = σ⁻¹(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)), ĝ = g·w. */
const layerNormVjp: VjpRule = (b, n, g, needs) => {
  const X = inp(n, 0),
    W = inp(n, 1),
    G = g0(g);
  const axis = n.attrs.axis as number;
  const axes = [...X.shape.keys()].filter((i) => i >= axis);
  const invStd = b.cast(out(n, 2), X.dtype);
  const xhat = b.mul(b.sub(X, b.cast(out(n, 1), X.dtype)), invStd);
  return ifNeeded(needs, [
    () => {
      const gw = b.mul(G, W);
      const inner = b.sub(b.sub(gw, b.reduceMean(gw, axes)), b.mul(xhat, b.reduceMean(b.mul(gw, xhat), axes)));
      return b.mul(inner, invStd);
    },
    () => unbroadcast(b, b.mul(G, xhat), W.shape),
    () => unbroadcast(b, G, inp(n, 2).shape),
  ]);
};

/** Expand a reduced gradient back over the reduced axes. */
function unreduce(b: GraphBuilder, n: Node, G: Value, axes: readonly number[]): Value {
  const X = inp(n, 0);
  const keep = X.shape.map((d, i) => (axes.includes(i) ? 1 : d));
  return b.expand(b.reshape(G, keep), X.shape);
}
const reduceAxes = (b: GraphBuilder, n: Node): number[] => (n.op === "ReduceSum" ? b.constInts(inp(n, 1)) : (n.attrs.axes as number[]));

export const VJP: Record<string, VjpRule> = {
  Identity: (_b, _n, g) => [g0(g)],
  Add: (b, n, g, needs) => ifNeeded(needs, [() => unbroadcast(b, g0(g), inp(n, 0).shape), () => unbroadcast(b, g0(g), inp(n, 1).shape)]),
  Sub: (b, n, g, needs) => ifNeeded(needs, [() => unbroadcast(b, g0(g), inp(n, 0).shape), () => unbroadcast(b, b.neg(g0(g)), inp(n, 1).shape)]),
  Mul: (b, n, g, needs) =>
    ifNeeded(needs, [() => unbroadcast(b, b.mul(g0(g), inp(n, 1)), inp(n, 0).shape), () => unbroadcast(b, b.mul(g0(g), inp(n, 0)), inp(n, 1).shape)]),
  Div: (b, n, g, needs) =>
    ifNeeded(needs, [
      () => unbroadcast(b, b.div(g0(g), inp(n, 1)), inp(n, 0).shape),
      () => unbroadcast(b, b.neg(b.div(b.mul(g0(g), out(n)), inp(n, 1))), inp(n, 1).shape),
    ]),
  Pow: (b, n, g, needs) => {
    const X = inp(n, 0),
      P = inp(n, 1);
    return ifNeeded(needs, [
      // A constant exponent 2 or 3 avoids a Pow in the backward pass.
      () => {
        const p = b.constValue(P);
        const dp =
          p?.length === 1 && (p[0] === 2 || p[0] === 3)
            ? b.mul(p[0] === 2 ? X : b.mul(X, X), Number(p[0]))
            : b.mul(P, b.pow(X, b.sub(P, b.scalar(1, P.dtype))));
        return unbroadcast(b, b.mul(g0(g), dp), X.shape);
      },
      () => unbroadcast(b, b.mul(b.mul(g0(g), out(n)), b.log(X)), P.shape),
    ]);
  },
  Sqrt: (b, n, g) => [b.div(b.mul(g0(g), 0.5), out(n))],
  Tanh: (b, n, g) => [b.mul(g0(g), b.sub(1, b.mul(out(n), out(n))))],
  // σ′(x) = σ(x)(1 − σ(x)), from the saved output.
  Sigmoid: (b, n, g) => [b.mul(g0(g), b.mul(out(n), b.sub(1, out(n))))],
  Exp: (b, n, g) => [b.mul(g0(g), out(n))],
  Log: (b, n, g) => [b.div(g0(g), inp(n, 0))],
  Neg: (b, _n, g) => [b.neg(g0(g))],
  Cast: (b, n, g) => [b.cast(g0(g), inp(n, 0).dtype)],
  Softmax: (b, n, g) => {
    const Y = out(n),
      G = g0(g);
    return [b.mul(Y, b.sub(G, b.reduceSum(b.mul(G, Y), [n.attrs.axis as number])))];
  },
  // gelu'(x) = ½(1+t)·(1 + x(1−t)(c + 3ca·x²)) with t = tanh(c(x + a·x³)), recomputed from x so that
  // the forward stays one fused kernel.
  FastGelu: (b, n, g) => {
    if (n.inputs.length > 1) throw new Error("FastGelu VJP: the bias input is not supported");
    const X = inp(n, 0),
      c = Math.sqrt(2 / Math.PI),
      a = 0.044715;
    const x2 = b.mul(X, X);
    const t = b.tanh(b.mul(X, b.add(b.mul(x2, c * a), c)));
    const s = b.add(b.mul(b.mul(X, b.sub(1, t)), b.add(b.mul(x2, 3 * c * a), c)), 1);
    return [b.mul(b.mul(g0(g), b.add(b.mul(t, 0.5), 0.5)), s)];
  },
  MatMul: matmulVjp,
  Gemm: gemmVjp,
  LayerNormalization: layerNormVjp,
  // Embedding-style lookups scatter-add the gradient rows back (repeated indices accumulate). Written as
  // ScatterElements along axis 0 with the row index repeated across each row, not ScatterND: onnxruntime's CPU
  // ScatterND(reduction="add") splits the updates between threads that add into the same row without
  // synchronization, so repeated token ids lose updates once intraOpNumThreads > 1, while ScatterElements
  // gives every output column to one thread, which adds its updates in index order: the same sums, in the
  // same order, at any thread count (packages/trainer-ort/README.md, "Deterministic at any thread count").
  Gather: (b, n, g) => {
    if (n.attrs.axis !== 0) throw new Error("Gather VJP: only axis 0 is supported");
    const D = inp(n, 0),
      I = inp(n, 1);
    const rows = I.size,
      rest = D.shape.slice(1);
    const index = b.expand(b.reshape(I, [rows, ...rest.map(() => 1)]), [rows, ...rest]); // int32 or int64, as I
    return [b.scatterElements(b.zeros(D.shape, D.dtype), index, b.reshape(g0(g), [rows, ...rest]), 0, "add"), null];
  },
  GatherElements: (b, n, g) => {
    const D = inp(n, 0);
    return [b.scatterElements(b.zeros(D.shape, D.dtype), inp(n, 1), g0(g), n.attrs.axis as number, "add"), null];
  },
  Reshape: (b, n, g) => [b.reshape(g0(g), inp(n, 0).shape), null],
  Transpose: (b, n, g) => {
    const perm = n.attrs.perm as number[];
    const inv = perm.map((_, i) => perm.indexOf(i));
    return [b.transpose(g0(g), inv)];
  },
  Expand: (b, n, g) => [unbroadcast(b, g0(g), inp(n, 0).shape), null],
  Split: (b, n, g) => [
    b.concat(
      n.outputs.map((o, i) => g[i] ?? b.zeros(o.shape, o.dtype)),
      n.attrs.axis as number,
    ),
    null,
  ],
  Concat: (b, n, g) => {
    const axis = n.attrs.axis as number;
    return b.split(
      g0(g),
      axis,
      n.inputs.map((v) => v!.shape[axis]!),
    );
  },
  Slice: (b, n, g) => {
    const X = inp(n, 0);
    const starts = b.constInts(inp(n, 1)),
      axes = b.constInts(inp(n, 3));
    if (n.inputs[4] && b.constInts(inp(n, 4)).some((s) => s !== 1)) throw new Error("Slice VJP: steps other than 1");
    const before = X.shape.map(() => 0),
      after = X.shape.map(() => 0);
    axes.forEach((a, i) => {
      before[a] = starts[i]!;
      after[a] = X.shape[a]! - starts[i]! - out(n).shape[a]!;
    });
    return [b.pad(g0(g), before, after), null, null, null];
  },
  Pad: (b, n, g) => {
    const X = inp(n, 0);
    const pads = b.constInts(inp(n, 1));
    if (pads.some((p) => p < 0)) throw new Error("Pad VJP: negative pads");
    const axes = [...X.shape.keys()];
    return [
      b.slice(
        g0(g),
        axes.map((a) => pads[a]!),
        axes.map((a) => pads[a]! + X.shape[a]!),
        axes,
      ),
      null,
      null,
    ];
  },
  ReduceSum: (b, n, g) => [unreduce(b, n, g0(g), reduceAxes(b, n)), null],
  ReduceMean: (b, n, g) => {
    const axes = reduceAxes(b, n);
    const count = axes.reduce((p, a) => p * inp(n, 0).shape[a]!, 1);
    return [unreduce(b, n, b.mul(g0(g), 1 / count), axes)];
  },
  ReduceSumSquare: (b, n, g) => [b.mul(unreduce(b, n, g0(g), reduceAxes(b, n)), b.mul(inp(n, 0), 2))],
  // Ties all receive the full gradient (like the subgradient PyTorch's amax splits evenly; unused by the models).
  ReduceMax: (b, n, g) => {
    const axes = reduceAxes(b, n),
      X = inp(n, 0);
    const keep = X.shape.map((d, i) => (axes.includes(i) ? 1 : d));
    const mask = b.equal(X, b.reshape(out(n), keep));
    return [b.where(mask, unreduce(b, n, g0(g), axes), b.scalar(0, X.dtype))];
  },
  Where: (b, n, g, needs) => {
    const z = b.scalar(0, g0(g).dtype),
      c = inp(n, 0);
    return ifNeeded(needs, [
      () => null,
      () => unbroadcast(b, b.where(c, g0(g), z), inp(n, 1).shape),
      () => unbroadcast(b, b.where(c, z, g0(g)), inp(n, 2).shape),
    ]);
  },
};

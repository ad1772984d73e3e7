import { encodeF16 } from "@staged/core";
import { addDims, divDims, isStatic, productOf, type Dim } from "./dims.js";
import { ONNX_TYPE, serializeModel } from "./onnx.js";

export type { Dim } from "./dims.js";

/** Element types the builder emits. */
export type DType = "float32" | "float16" | "float64" | "int64" | "int32" | "bool";

const BYTES: Readonly<Record<DType, number>> = { float32: 4, int32: 4, int64: 8, bool: 1, float16: 2, float64: 8 };

/** A tensor in the graph: its name, element type and dimensions (sizes; symbolic ones in inference graphs with dynamic axes). */
export class Value {
  #name: string;
  readonly #shape: readonly number[] | null;
  constructor(
    name: string,
    readonly dtype: DType,
    readonly dims: readonly Dim[],
    /** The node producing it; undefined for inputs and initializers. */
    readonly producer?: Node,
  ) {
    this.#name = name;
    this.#shape = isStatic(dims) ? dims : null;
  }
  get name(): string {
    return this.#name;
  }
  /** Used by GraphBuilder.output to name a computed value after the graph output it becomes. */
  renameTo(name: string): void {
    this.#name = name;
  }
  /** The static shape (training graphs); throws for a value with symbolic dimensions. */
  get shape(): readonly number[] {
    if (!this.#shape) throw new Error(`${this.#name} has symbolic dimensions [${this.dims}]`);
    return this.#shape;
  }
  get rank(): number {
    return this.dims.length;
  }
  get size(): number {
    return this.shape.reduce((a, b) => a * b, 1);
  }
}

export type Attr = number | string | number[] | { float: number } | { floats: number[] };

export interface Node {
  readonly op: string;
  /** Node name in the serialized graph: the builder's `section` at creation, then an index. */
  readonly name: string;
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  readonly attrs: Readonly<Record<string, Attr>>;
  readonly domain?: string;
}

/** Values of an initializer; float16 as its bits (Uint16Array). */
export type Data = Float32Array | Float64Array | BigInt64Array | Int32Array | Uint8Array | Uint16Array;

/**
 * A tensor stored in the model: its values in memory (`data`), or (weights of an export, read when the model is
 * written) only their bytes on demand.
 */
export interface Initializer {
  value: Value;
  data: Data | null;
  /** Byte length of the data (type size × element count). */
  byteLength: number;
  /** The little-endian bytes. */
  read(): Promise<Uint8Array>;
}

const sameShape = (a: readonly Dim[], b: readonly Dim[]) => a.length === b.length && a.every((d, i) => d === b[i]);
const bytesOf = (data: Data) => new Uint8Array(data.buffer, data.byteOffset, data.byteLength);

/** Numpy broadcasting of two shapes (symbolic dimensions broadcast when equal, or against 1). */
export function broadcastShapes(a: readonly number[], b: readonly number[]): number[];
export function broadcastShapes(a: readonly Dim[], b: readonly Dim[]): Dim[];
export function broadcastShapes(a: readonly Dim[], b: readonly Dim[]): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`cannot broadcast [${a}] with [${b}]`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

const normAxis = (axis: number, rank: number) => {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`axis ${axis} out of range for rank ${rank}`);
  return a;
};

function dataFor(dtype: DType, values: ArrayLike<number | bigint> | Data): Data {
  if (ArrayBuffer.isView(values)) {
    const want = { float32: Float32Array, float16: Uint16Array, float64: Float64Array, int64: BigInt64Array, int32: Int32Array, bool: Uint8Array }[
      dtype
    ];
    if (values instanceof want) return values;
  }
  const arr = Array.from(values as ArrayLike<number | bigint>);
  switch (dtype) {
    case "float32":
      return Float32Array.from(arr, Number);
    case "float16": {
      const bytes = new Uint8Array(arr.length * 2);
      encodeF16(Float32Array.from(arr, Number), bytes);
      return new Uint16Array(bytes.buffer);
    }
    case "float64":
      return Float64Array.from(arr, Number);
    case "int32":
      return Int32Array.from(arr, Number);
    case "bool":
      return Uint8Array.from(arr, (v) => (v ? 1 : 0));
    case "int64":
      return BigInt64Array.from(arr, (v) => BigInt(v));
  }
}

/**
 * A typed ONNX graph under construction. Every op method infers the static output shape, so
 * autodiff can reason about broadcasting without running anything.
 */
export class GraphBuilder {
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers: Initializer[] = [];
  private readonly names = new Set<string>();
  private counter = 0;
  private readonly constCache = new Map<string, Value>();
  private readonly initData = new Map<Value, Data>();
  /** Where a symbolic dimension's size can be read at run time: the first input with it, and the axis. */
  private readonly sources = new Map<string, { value: Value; axis: number }>();
  /** Run-time shape tensors made once (symbolic Reshape targets). */
  private readonly shapeCache = new Map<string, Value>();
  /** The values made by zeros(). */
  private readonly zeroValues = new WeakSet<Value>();
  /** The nodes made by detach(): autodiff passes no gradient through them. */
  private readonly detachedNodes = new WeakSet<Node>();
  /** Prefix of the names of nodes created from now on (e.g. "forward", "backward"), shown in profiles. */
  section = "n";

  /** A fresh unique name from a hint. */
  fresh(hint: string): string {
    let name = hint;
    while (this.names.has(name)) name = `${hint}_${++this.counter}`;
    this.names.add(name);
    return name;
  }

  input(name: string, dtype: DType, shape: readonly Dim[]): Value {
    if (this.names.has(name)) throw new Error(`duplicate graph name ${name}`);
    this.names.add(name);
    const v = new Value(name, dtype, [...shape]);
    shape.forEach((d, axis) => {
      if (typeof d === "string" && !this.sources.has(d)) this.sources.set(d, { value: v, axis });
    });
    this.inputs.push(v);
    return v;
  }

  /** Mark `v` as a graph output named `name` (through an Identity when the name differs). */
  output(v: Value, name = v.name): Value {
    let out = v;
    if (this.outputs.includes(v) || !v.producer) out = this.node1("Identity", [v], {}, v.dtype, v.shape, name);
    else if (name !== v.name) {
      // Renaming the computed value itself avoids an Identity copy into the output.
      this.freshExact(name);
      this.names.delete(v.name);
      v.renameTo(name);
    }
    this.outputs.push(out);
    return out;
  }

  /** An initializer holding `values`. */
  initializer(name: string, dtype: DType, shape: readonly number[], values: ArrayLike<number | bigint> | Data): Value {
    const v = new Value(this.fresh(name), dtype, [...shape]);
    const data = dataFor(dtype, values);
    if (data.length !== v.size) throw new Error(`initializer ${name}: ${data.length} values for shape [${shape}]`);
    this.initializers.push({ value: v, data, byteLength: data.byteLength, read: async () => bytesOf(data) });
    this.initData.set(v, data);
    return v;
  }

  /**
   * A stored tensor named exactly `name` whose little-endian bytes are read only when the model is written
   * (writeOnnxModel), one tensor at a time: the weights of an export.
   */
  weight(name: string, dtype: DType, shape: readonly number[], read: () => Promise<Uint8Array>): Value {
    const v = new Value(this.freshExact(name), dtype, [...shape]);
    this.initializers.push({ value: v, data: null, byteLength: v.size * BYTES[dtype], read });
    return v;
  }

  /** A small constant, shared between uses with the same content. */
  constant(values: ArrayLike<number | bigint>, dtype: DType = "float32", shape: readonly number[] = [values.length]): Value {
    const key = `${dtype}[${shape}]${Array.from(values).join(",")}`;
    let v = this.constCache.get(key);
    if (!v) {
      v = this.initializer("const", dtype, shape, values);
      if (values.length <= 64) this.constCache.set(key, v);
    }
    return v;
  }

  /** Total bytes of the stored tensors. */
  get weightBytes(): number {
    return this.initializers.reduce((s, t) => s + t.byteLength, 0);
  }

  /** The values of an initializer (undefined for computed values and inputs). */
  constValue(v: Value): Data | undefined {
    return this.initData.get(v);
  }
  /** The integer values of an int64 initializer such as a Slice's starts. */
  constInts(v: Value): number[] {
    const d = this.initData.get(v);
    if (!d) throw new Error(`${v.name} is not a constant`);
    return Array.from(d as ArrayLike<number | bigint>, Number);
  }

  /** A zero tensor built at run time (Expand of a scalar), so large zeros never sit in the model file. */
  zeros(shape: readonly number[], dtype: DType = "float32"): Value {
    const z = this.node1("Expand", [this.scalar(0, dtype), this.ints(shape)], {}, dtype, shape);
    this.zeroValues.add(z);
    return z;
  }
  /** Whether `v` was made by zeros(). */
  isZeros(v: Value): boolean {
    return this.zeroValues.has(v);
  }

  scalar(x: number, dtype: DType = "float32"): Value {
    return this.constant([x], dtype, []);
  }
  ints(values: readonly number[]): Value {
    return this.constant(values, "int64", [values.length]);
  }

  /** Append a node; `outs` gives each output's dtype and shape. */
  node(
    op: string,
    inputs: (Value | null)[],
    attrs: Record<string, Attr>,
    outs: { dtype: DType; shape: readonly Dim[]; name?: string }[],
    domain?: string,
  ): Value[] {
    const outputs: Value[] = [];
    const node: Node = { op, name: `${this.section}/${this.nodes.length}_${op}`, inputs, outputs, attrs, ...(domain ? { domain } : {}) };
    for (const o of outs)
      outputs.push(new Value(o.name !== undefined ? this.freshExact(o.name) : this.fresh(op.toLowerCase()), o.dtype, [...o.shape], node));
    this.nodes.push(node);
    return outputs;
  }

  private freshExact(name: string): string {
    if (this.names.has(name)) throw new Error(`duplicate graph name ${name}`);
    this.names.add(name);
    return name;
  }

  node1(op: string, inputs: (Value | null)[], attrs: Record<string, Attr>, dtype: DType, shape: readonly Dim[], name?: string): Value {
    return this.node(op, inputs, attrs, [{ dtype, shape, ...(name !== undefined ? { name } : {}) }])[0]!;
  }

  // ---- elementwise ----
  private binary(op: string, a: Value, b: Value, dtype: DType = a.dtype): Value {
    if (a.dtype !== b.dtype) throw new Error(`${op}: dtype ${a.dtype} vs ${b.dtype}`);
    return this.node1(op, [a, b], {}, dtype, broadcastShapes(a.dims, b.dims));
  }
  private lift(x: Value | number, like: Value): Value {
    return typeof x === "number" ? this.scalar(x, like.dtype) : x;
  }
  add(a: Value, b: Value | number): Value {
    return this.binary("Add", a, this.lift(b, a));
  }
  sub(a: Value | number, b: Value): Value {
    return this.binary("Sub", this.lift(a, b), b);
  }
  mul(a: Value, b: Value | number): Value {
    return this.binary("Mul", a, this.lift(b, a));
  }
  div(a: Value | number, b: Value | number): Value {
    const av = typeof a === "number" ? this.lift(a, b as Value) : a;
    return this.binary("Div", av, this.lift(b, av));
  }
  pow(a: Value, b: Value | number): Value {
    return this.binary("Pow", a, this.lift(b, a));
  }
  equal(a: Value, b: Value): Value {
    return this.binary("Equal", a, b, "bool");
  }
  less(a: Value, b: Value): Value {
    return this.binary("Less", a, b, "bool");
  }
  max(a: Value, b: Value | number): Value {
    return this.binary("Max", a, this.lift(b, a));
  }
  min(a: Value, b: Value | number): Value {
    return this.binary("Min", a, this.lift(b, a));
  }
  private unary(op: string, x: Value): Value {
    return this.node1(op, [x], {}, x.dtype, x.dims);
  }
  sqrt(x: Value): Value {
    return this.unary("Sqrt", x);
  }
  tanh(x: Value): Value {
    return this.unary("Tanh", x);
  }
  sigmoid(x: Value): Value {
    return this.unary("Sigmoid", x);
  }
  exp(x: Value): Value {
    return this.unary("Exp", x);
  }
  log(x: Value): Value {
    return this.unary("Log", x);
  }
  neg(x: Value): Value {
    return this.unary("Neg", x);
  }
  identity(x: Value): Value {
    return this.unary("Identity", x);
  }
  /**
   * Elementwise sum, as a chain of Adds ((x₀ + x₁) + x₂) + …, with broadcasting. Not ONNX's variadic Sum:
   * onnxruntime's WebGPU provider has no kernel for it, so it would run on the CPU with copies both ways
   * (packages/trainer-ort/README.md, "A step the GPU runs whole").
   */
  sum(xs: readonly Value[]): Value {
    if (xs.length === 0) throw new Error("sum of no values");
    return xs.slice(1).reduce((s, x) => this.add(s, x), xs[0]!);
  }
  cast(x: Value, to: DType): Value {
    return to === x.dtype ? x : this.node1("Cast", [x], { to: ONNX_TYPE[to] }, to, x.dims);
  }
  where(cond: Value, a: Value, b: Value): Value {
    if (a.dtype !== b.dtype) throw new Error(`Where: dtype ${a.dtype} vs ${b.dtype}`);
    return this.node1("Where", [cond, a, b], {}, a.dtype, broadcastShapes(cond.dims, broadcastShapes(a.dims, b.dims)));
  }

  // ---- linear algebra ----
  matmul(a: Value, b: Value): Value {
    if (a.rank < 1 || b.rank < 1) throw new Error("MatMul needs rank ≥ 1");
    const as = a.rank === 1 ? [1, a.dims[0]!] : a.dims;
    const bs = b.rank === 1 ? [b.dims[0]!, 1] : b.dims;
    const k1 = as[as.length - 1]!,
      k2 = bs[bs.length - 2]!;
    if (k1 !== k2) throw new Error(`MatMul: [${a.dims}] @ [${b.dims}]`);
    const batch = broadcastShapes(as.slice(0, -2), bs.slice(0, -2));
    const shape = [...batch, ...(a.rank === 1 ? [] : [as[as.length - 2]!]), ...(b.rank === 1 ? [] : [bs[bs.length - 1]!])];
    return this.node1("MatMul", [a, b], {}, a.dtype, shape);
  }

  /** Y = alpha·op(A)·op(B) + beta·C for 2-D A and B (C broadcast to [M, N]). */
  gemm(a: Value, b: Value, c?: Value | null, o: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {}): Value {
    if (a.rank !== 2 || b.rank !== 2) throw new Error("Gemm needs 2-D operands");
    const [m, k1] = o.transA ? [a.dims[1]!, a.dims[0]!] : [a.dims[0]!, a.dims[1]!];
    const [k2, n] = o.transB ? [b.dims[1]!, b.dims[0]!] : [b.dims[0]!, b.dims[1]!];
    if (k1 !== k2) throw new Error(`Gemm: inner dims ${k1} vs ${k2}`);
    if (c) broadcastShapes([m, n], c.dims);
    const attrs: Record<string, Attr> = {};
    if (o.transA) attrs.transA = 1;
    if (o.transB) attrs.transB = 1;
    if (o.alpha !== undefined && o.alpha !== 1) attrs.alpha = { float: o.alpha };
    if (o.beta !== undefined && o.beta !== 1) attrs.beta = { float: o.beta };
    return this.node1("Gemm", c ? [a, b, c] : [a, b], attrs, a.dtype, [m, n]);
  }

  // ---- normalization and activations ----
  /**
   * onnxruntime's contrib FastGelu (com.microsoft): 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))), HF's gelu_new,
   * in one kernel instead of nine elementwise ops (float32 only on the CPU provider).
   */
  fastGelu(x: Value): Value {
    return this.node("FastGelu", [x], {}, [{ dtype: x.dtype, shape: x.dims }], "com.microsoft")[0]!;
  }
  softmax(x: Value, axis = -1): Value {
    return this.node1("Softmax", [x], { axis }, x.dtype, x.dims);
  }
  /**
   * log Σ exp(x) along `axis` (kept, size 1): m + log Σ exp(x − m) with m the maximum, so nothing overflows. m is
   * detached: the result does not depend on it (its gradient is exactly zero), so none is computed. Built from
   * ReduceMax, Sub, Exp, ReduceSum, Log and Add, which every provider has (onnxruntime's WebGPU provider has no
   * LogSoftmax kernel).
   */
  logSumExp(x: Value, axis = -1): Value {
    const m = this.detach(this.reduceMax(x, [axis]));
    return this.add(this.log(this.reduceSum(this.exp(this.sub(x, m)), [axis])), m);
  }
  /** x − logSumExp(x) along `axis`. */
  logSoftmax(x: Value, axis = -1): Value {
    return this.sub(x, this.logSumExp(x, axis));
  }
  /** The same values, a constant for autodiff (PyTorch's detach): an Identity node that no gradient passes. */
  detach(x: Value): Value {
    const out = this.node1("Identity", [x], {}, x.dtype, x.dims);
    this.detachedNodes.add(out.producer!);
    return out;
  }
  /** Whether `n` was made by detach(). */
  isDetached(n: Node): boolean {
    return this.detachedNodes.has(n);
  }

  /** LayerNormalization over the axes from `axis` on; also returns Mean and InvStdDev (kept dims). */
  layerNorm(x: Value, scale: Value, bias: Value | null, eps: number, axis = -1): { y: Value; mean: Value; invStd: Value } {
    const a = normAxis(axis, x.rank);
    const stat = x.dims.map((d, i) => (i < a ? d : 1));
    // Mean and InvStdDev are float32 (stash_type 1): onnxruntime's CPU kernel has no double statistics.
    const attrs: Record<string, Attr> = { axis: a, epsilon: { float: eps } };
    const [y, mean, invStd] = this.node("LayerNormalization", bias ? [x, scale, bias] : [x, scale], attrs, [
      { dtype: x.dtype, shape: x.dims },
      { dtype: "float32", shape: stat },
      { dtype: "float32", shape: stat },
    ]);
    return { y: y!, mean: mean!, invStd: invStd! };
  }

  // ---- indexing ----
  gather(data: Value, indices: Value, axis = 0): Value {
    const a = normAxis(axis, data.rank);
    return this.node1("Gather", [data, indices], { axis: a }, data.dtype, [...data.dims.slice(0, a), ...indices.dims, ...data.dims.slice(a + 1)]);
  }
  gatherElements(data: Value, indices: Value, axis = 0): Value {
    return this.node1("GatherElements", [data, indices], { axis: normAxis(axis, data.rank) }, data.dtype, indices.dims);
  }
  scatterElements(data: Value, indices: Value, updates: Value, axis = 0, reduction: "none" | "add" = "none"): Value {
    const attrs: Record<string, Attr> = { axis: normAxis(axis, data.rank) };
    if (reduction !== "none") attrs.reduction = reduction;
    return this.node1("ScatterElements", [data, indices, updates], attrs, data.dtype, data.shape);
  }
  scatterND(data: Value, indices: Value, updates: Value, reduction: "none" | "add" = "none"): Value {
    return this.node1("ScatterND", [data, indices, updates], reduction === "none" ? {} : { reduction }, data.dtype, data.shape);
  }

  // ---- shape ----
  /**
   * Reshape to `shape` (one −1: the size that keeps the element count). With symbolic dimensions the target is
   * worked out symbolically and given to ONNX with 0 (copy the input's) where a dimension stays, −1 for one
   * other, and sizes read at run time (Shape of the input that has the dynamic axis) for the rest.
   */
  reshape(x: Value, shape: readonly Dim[]): Value {
    if (!isStatic(shape) || !isStatic(x.dims)) return this.symbolicReshape(x, shape);
    const known = shape.reduce((p, d) => (d === -1 ? p : p * d), 1);
    const resolved = shape.map((d) => (d === -1 ? x.size / known : d));
    if (resolved.reduce((a, b) => a * b, 1) !== x.size) throw new Error(`Reshape: [${x.shape}] to [${shape}]`);
    if (sameShape(resolved, x.shape)) return x;
    return this.node1("Reshape", [x, this.ints(resolved)], {}, x.dtype, resolved);
  }
  private symbolicReshape(x: Value, shape: readonly Dim[]): Value {
    const fail = () => new Error(`Reshape: [${x.dims}] to [${shape}]`);
    if (shape.filter((d) => d === -1).length > 1) throw fail();
    const total = productOf(x.dims);
    const rest = divDims(total, productOf(shape.filter((d) => d !== -1)));
    if (rest === null) throw fail();
    const target = shape.map((d) => (d === -1 ? rest : d));
    if (productOf(target) !== total) throw fail();
    if (sameShape(target, x.dims)) return x;
    // ONNX's form: sizes, 0 to copy the input's dimension at the same index, −1 for one left, sources for the others.
    const spec: (number | { value: Value; axis: number } | null)[] = target.map((d, i) => (typeof d === "number" ? d : d === x.dims[i] ? 0 : null));
    const open = spec.flatMap((s, i) => (s === null ? [i] : []));
    if (open.length === 1) spec[open[0]!] = -1;
    else {
      for (const i of open) {
        const source = this.sources.get(String(target[i]));
        if (!source) throw new Error(`Reshape: [${x.dims}] to [${target}]: no input gives the size ${target[i]}`);
        spec[i] = source;
      }
    }
    return this.node1("Reshape", [x, this.shapeTensor(spec)], {}, x.dtype, target);
  }
  /** The int64 shape tensor of sizes and run-time dimensions (Shape slices of inputs), made once per content. */
  private shapeTensor(spec: readonly (number | { value: Value; axis: number } | null)[]): Value {
    const pieces: (number[] | { value: Value; start: number; end: number })[] = [];
    for (const s of spec) {
      const last = pieces[pieces.length - 1];
      if (typeof s === "number") {
        if (Array.isArray(last)) last.push(s);
        else pieces.push([s]);
      } else if (s !== null) {
        if (last && !Array.isArray(last) && last.value === s.value && last.end === s.axis) last.end++;
        else pieces.push({ value: s.value, start: s.axis, end: s.axis + 1 });
      }
    }
    if (pieces.length === 1 && Array.isArray(pieces[0])) return this.ints(pieces[0]);
    const key = pieces.map((p) => (Array.isArray(p) ? `[${p}]` : `${p.value.name}:${p.start}:${p.end}`)).join(" ");
    let v = this.shapeCache.get(key);
    if (!v) {
      const parts = pieces.map((p) =>
        Array.isArray(p) ? this.ints(p) : this.node1("Shape", [p.value], { start: p.start, end: p.end }, "int64", [p.end - p.start]),
      );
      v = this.node1("Concat", parts, { axis: 0 }, "int64", [spec.length]);
      this.shapeCache.set(key, v);
    }
    return v;
  }
  transpose(x: Value, perm: readonly number[]): Value {
    if (perm.length !== x.rank) throw new Error(`Transpose: perm [${perm}] for rank ${x.rank}`);
    if (perm.every((p, i) => p === i)) return x;
    return this.node1(
      "Transpose",
      [x],
      { perm: [...perm] },
      x.dtype,
      perm.map((p) => x.dims[p]!),
    );
  }
  expand(x: Value, shape: readonly number[]): Value {
    const out = broadcastShapes(x.shape, shape);
    if (sameShape(out, x.shape)) return x;
    return this.node1("Expand", [x, this.ints(shape)], {}, x.dtype, out);
  }
  split(x: Value, axis: number, sizes: readonly number[]): Value[] {
    const a = normAxis(axis, x.rank);
    if (sizes.reduce((p, s) => p + s, 0) !== x.dims[a]) throw new Error(`Split: sizes [${sizes}] for axis length ${x.dims[a]}`);
    return this.node(
      "Split",
      [x, this.ints(sizes)],
      { axis: a },
      sizes.map((s) => ({ dtype: x.dtype, shape: x.dims.map((d, i) => (i === a ? s : d)) })),
    );
  }
  /** Step-1 slice [start, end) along each axis. */
  slice(x: Value, starts: readonly number[], ends: readonly number[], axes: readonly number[]): Value {
    const shape = [...x.shape];
    const ax = axes.map((a) => normAxis(a, x.rank));
    ax.forEach((a, i) => {
      const s = starts[i]!,
        e = Math.min(ends[i]!, x.shape[a]!);
      if (s < 0 || s > e) throw new Error(`Slice: [${s}, ${e}) on axis ${a}`);
      shape[a] = e - s;
    });
    return this.node1(
      "Slice",
      [x, this.ints(starts), this.ints(ends.map((e, i) => Math.min(e, x.shape[ax[i]!]!))), this.ints(ax)],
      {},
      x.dtype,
      shape,
    );
  }
  /** Constant padding: `before` and `after` per axis. */
  pad(x: Value, before: readonly number[], after: readonly number[], value = 0): Value {
    return this.node1(
      "Pad",
      [x, this.ints([...before, ...after]), this.scalar(value, x.dtype)],
      { mode: "constant" },
      x.dtype,
      x.shape.map((d, i) => d + before[i]! + after[i]!),
    );
  }
  concat(xs: readonly Value[], axis: number): Value {
    const a = normAxis(axis, xs[0]!.rank);
    const shape = [...xs[0]!.dims];
    shape[a] = xs.slice(1).reduce<Dim>((p, v) => addDims(p, v.dims[a]!), xs[0]!.dims[a]!);
    return this.node1("Concat", [...xs], { axis: a }, xs[0]!.dtype, shape);
  }
  /** Insert axes of length 1 (a Reshape of static shapes, an Unsqueeze of symbolic ones). */
  unsqueeze(x: Value, axes: readonly number[]): Value {
    const r = x.rank + axes.length;
    const ax = new Set(axes.map((a) => normAxis(a, r)));
    const shape: Dim[] = [];
    for (let i = 0, j = 0; i < r; i++) shape.push(ax.has(i) ? 1 : x.dims[j++]!);
    if (isStatic(x.dims)) return this.reshape(x, shape);
    return this.node1("Unsqueeze", [x, this.ints([...ax].sort((p, q) => p - q))], {}, x.dtype, shape);
  }

  // ---- reductions (opset 17: ReduceSum takes axes as an input, the others as an attribute) ----
  private reducedShape(x: Value, axes: readonly number[], keepdims: boolean): Dim[] {
    const ax = new Set(axes.map((a) => normAxis(a, x.rank)));
    return x.dims.flatMap((d, i) => (ax.has(i) ? (keepdims ? [1] : []) : [d]));
  }
  reduceSum(x: Value, axes: readonly number[], keepdims = true): Value {
    if (axes.length === 0) return x;
    return this.node1(
      "ReduceSum",
      [x, this.ints(axes.map((a) => normAxis(a, x.rank)))],
      { keepdims: keepdims ? 1 : 0 },
      x.dtype,
      this.reducedShape(x, axes, keepdims),
    );
  }
  private reduceAttr(op: string, x: Value, axes: readonly number[], keepdims: boolean): Value {
    return this.node1(
      op,
      [x],
      { axes: axes.map((a) => normAxis(a, x.rank)), keepdims: keepdims ? 1 : 0 },
      x.dtype,
      this.reducedShape(x, axes, keepdims),
    );
  }
  reduceMean(x: Value, axes: readonly number[], keepdims = true): Value {
    return this.reduceAttr("ReduceMean", x, axes, keepdims);
  }
  reduceMax(x: Value, axes: readonly number[], keepdims = true): Value {
    return this.reduceAttr("ReduceMax", x, axes, keepdims);
  }
  reduceSumSquare(x: Value, axes: readonly number[], keepdims = true): Value {
    return this.reduceAttr("ReduceSumSquare", x, axes, keepdims);
  }

  // ---- serialization ----
  /** Nodes and initializers that the outputs depend on, in order (dead code is dropped). */
  live(): { nodes: Node[]; initializers: Initializer[] } {
    const need = new Set<Value>(this.outputs);
    const keep: Node[] = [];
    for (let i = this.nodes.length - 1; i >= 0; i--) {
      const n = this.nodes[i]!;
      if (!n.outputs.some((o) => need.has(o))) continue;
      keep.push(n);
      for (const v of n.inputs) if (v) need.add(v);
    }
    return { nodes: keep.reverse(), initializers: this.initializers.filter((i) => need.has(i.value)) };
  }

  /** The model in memory (every initializer's values in memory); writeOnnxModel streams one to a file. */
  serialize(): Uint8Array {
    return serializeModel(this);
  }
}

import {
  Rng,
  Tensor,
  checkModelSize,
  checkStageOptions,
  concat,
  createDefaultRegistry,
  deriveSeed,
  derived,
  grownState,
  haveStoredBytes,
  laidOut,
  scaleStored,
  tileLayout,
} from "@staged/core";
import type { AxisSpace, BlockLayout, LazyTensor, ParamSpec, Registry, StageOptions, TrainingState } from "@staged/core";

export type WidthMoments = "paper" | "consistent" | "reset";
export type WidthSymmetry = "none" | "split" | "noise" | "antithetic";
export type WidthUnits = "copies" | "fresh";

export interface WidthOptions extends StageOptions {
  /** Hidden size, heads and FFN width × factor, head size kept (default 2). */
  factor?: number;
  /** FFN width × ffnFactor on top of `factor` (default 1); with factor 1 only the FFN grows. */
  ffnFactor?: number;
  /** AdamW moments of the grown model (default "consistent"). */
  moments?: WidthMoments;
  /** How the copies are made to diverge (default "none"). */
  symmetry?: WidthSymmetry;
  /**
   * How the new heads and FFN units are made (default "copies"): copies of the old ones (the paper), or "fresh": drawn
   * as the grown model's own initialization draws them (`initParam`), reading every copy of the hidden state and writing
   * nothing at first (their output weights start at 0), while the old units read the mean of the hidden state's copies
   * and write into every copy. Exact too; the new units start from random features, as in a model trained from scratch.
   */
  units?: WidthUnits;
  /** Standard deviation of the `noise` symmetry breaking (default 1e-3). */
  noiseStd?: number;
  seed?: number;
  registry?: Registry;
}

export const WIDTH_MOMENTS: readonly WidthMoments[] = ["paper", "consistent", "reset"];
export const WIDTH_SYMMETRIES: readonly WidthSymmetry[] = ["none", "split", "noise", "antithetic"];
export const WIDTH_UNITS: readonly WidthUnits[] = ["copies", "fresh"];

/**
 * Whether the grown model computes exactly the small model's function (logits, loss) with these options.
 * "antithetic" keeps it to second order in noiseStd only (the first-order terms cancel), so it is not exact.
 */
export const widthLossPreserving = (o: WidthOptions): boolean => !["noise", "antithetic"].includes(o.symmetry ?? "none");

/**
 * Coefficient of input copy i in output copy j of a grown matrix with `a` input and `b` output copies.
 * Every output copy's coefficients sum to 1, so it computes the original map of the (equal) input copies.
 * a = b is the paper's block diagonal.
 */
function coefficient(a: number, b: number, i: number, j: number): number {
  if (b >= a) return i === j % a ? 1 : 0;
  const r = a / b;
  return i % b === j ? 1 / r : 0;
}

interface Axes {
  /** copies along the input (rows) and output (columns) axes of a [in, out] matrix */ a: number;
  b: number;
}

/** Grow a Conv1D [in, out] weight to [a·in, b·out]. */
function growMatrix(w: Tensor, { a, b }: Axes, symmetry: WidthSymmetry, noiseStd: number, rng: Rng): Tensor {
  const [rows, cols] = w.shape as [number, number];
  const src = w.f32;
  const W = b * cols;
  const out = new Float32Array(a * rows * W);
  if (symmetry === "split" && a > 1) {
    // LEMON-style lossless split: each output copy takes a random convex combination of the input copies.
    const share = new Float64Array(a);
    for (let j = 0; j < b; j++) {
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < cols; c++) {
          let sum = 0;
          for (let i = 0; i < a; i++) {
            share[i] = 0.05 + rng.uniform();
            sum += share[i]!;
          }
          const v = src[r * cols + c]!;
          for (let i = 0; i < a; i++) out[(i * rows + r) * W + j * cols + c] = (share[i]! / sum) * v;
        }
      }
    }
    return new Tensor(w.dtype, [a * rows, W], out);
  }
  if (symmetry === "antithetic" && b > 1) {
    // Each entry of output copy j gets n_j, with n_0 + ... + n_{b-1} = 0 (z_j minus their mean, z_j ~
    // N(0, noiseStd)): the copies of every hidden unit differ, so they stop receiving identical updates (with
    // Adam, exact copies stay copies forever), while every map downstream of a copy is the same for all
    // copies and the readout averages them, so the first-order change of the function cancels.
    const z = new Float64Array(b);
    for (let r = 0; r < rows; r++) {
      for (let c = 0; c < cols; c++) {
        let mean = 0;
        for (let j = 0; j < b; j++) {
          z[j] = noiseStd * rng.normal();
          mean += z[j]! / b;
        }
        const v = src[r * cols + c]!;
        for (let i = 0; i < a; i++) {
          for (let j = 0; j < b; j++) {
            const coef = coefficient(a, b, i, j);
            if (coef !== 0) out[(i * rows + r) * W + j * cols + c] = coef * v + (z[j]! - mean);
          }
        }
      }
    }
    return new Tensor(w.dtype, [a * rows, W], out);
  }
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      const coef = coefficient(a, b, i, j);
      if (coef === 0) continue;
      const noisy = symmetry === "noise" && (i > 0 || j > 0);
      for (let r = 0; r < rows; r++) {
        const at = (i * rows + r) * W + j * cols;
        const row = src.subarray(r * cols, (r + 1) * cols);
        if (coef === 1 && !noisy) {
          out.set(row, at);
          continue;
        }
        for (let c = 0; c < cols; c++) out[at + c] = coef * row[c]! + (noisy ? noiseStd * rng.normal() : 0);
      }
    }
  }
  return new Tensor(w.dtype, [a * rows, W], out);
}

/** The moments of a grown matrix: every block (consistent) or only the blocks the paper copies into. */
function growMatrixMoment(m: Tensor, { a, b }: Axes, scale: number, everyBlock: boolean): Tensor {
  const scaled = m.scale(scale);
  if (everyBlock) return scaled.tile(1, b).tile(0, a);
  const [rows, cols] = m.shape as [number, number];
  const W = b * cols;
  const out = new Float32Array(a * rows * W);
  for (let i = 0; i < a; i++) {
    for (let j = 0; j < b; j++) {
      if (coefficient(a, b, i, j) === 0) continue;
      for (let r = 0; r < rows; r++) out.set(scaled.f32.subarray(r * cols, (r + 1) * cols), (i * rows + r) * W + j * cols);
    }
  }
  return new Tensor(m.dtype, [a * rows, W], out);
}

/** Axes that index hidden units (attention heads, FFN units): with units "fresh" their new copies are drawn fresh. */
const UNIT_SPACES: ReadonlySet<AxisSpace> = new Set<AxisSpace>(["heads", "kvHeads", "qkv", "ffn"]);

/**
 * What a parameter is to units "fresh": a reader maps the hidden state to units (in the [in, out] orientation
 * [model, unit]: q/k/v, the MLP's input), a writer units to the hidden state (the attention's and the MLP's output), a
 * unit vector is indexed by units (their biases). Everything else (embeddings, norms, the output layer) grows as with
 * copies.
 */
type FreshKind = "reader" | "writer" | "unitVector";
function freshKind(spec: ParamSpec): FreshKind | null {
  if (spec.shape.length === 1) return UNIT_SPACES.has(spec.axes[0]!) ? "unitVector" : null;
  const [inAxis, outAxis] = spec.layout === "linear" ? [1, 0] : [0, 1];
  const from = spec.axes[inAxis]!,
    to = spec.axes[outAxis]!;
  if (from === "model" && UNIT_SPACES.has(to)) return "reader";
  if (UNIT_SPACES.has(from) && to === "model") return "writer";
  return null;
}

/**
 * A matrix ([in, out] orientation) grown with fresh units over `base` (the grown model's initialization of it, or zeros
 * for moments): a reader's old units (output copy 0) take coef × the original from each of the a input copies, its new
 * units keep `base`; a writer's old units (input copy 0) write coef × the original into each of the b output copies,
 * its new units' rows are 0.
 */
function growMatrixFresh(w: Tensor, base: Float32Array, { a, b }: Axes, kind: "reader" | "writer", coef: number): Tensor {
  const [rows, cols] = w.shape as [number, number];
  const src = w.f32,
    W = b * cols;
  const out = kind === "reader" ? Float32Array.from(base) : new Float32Array(a * rows * W);
  for (let r = 0; r < rows; r++) {
    const row = src.subarray(r * cols, (r + 1) * cols);
    const scaled = coef === 1 ? row : row.map((v) => coef * v);
    if (kind === "reader") for (let i = 0; i < a; i++) out.set(scaled, (i * rows + r) * W);
    else for (let j = 0; j < b; j++) out.set(scaled, r * W + j * cols);
  }
  return new Tensor(w.dtype, [a * rows, W], out);
}

/**
 * A parameter (values or a moment, in its stored layout) grown with fresh units over `base` (its grown shape), each
 * fused part by itself (perPart) and a matrix in the [in, out] orientation (inOrientation). A unit vector's old units
 * are its first copy, unscaled (their gradient is the small model's), the new ones keep `base`.
 */
function growFresh(t: Tensor, base: Tensor, spec: ParamSpec, kind: FreshKind, axes: Axes, coef: number): Tensor {
  const bases = spec.fused ? base.chunk(base.shape.length - 1, spec.fused.length) : [base];
  const oriented = (b: Tensor) => (spec.layout === "linear" ? transpose2d(b) : b);
  return perPart(t, spec, (part, n) => {
    const over = bases[n]!;
    if (kind === "unitVector") {
      const out = Float32Array.from(over.f32);
      out.set(part.f32);
      return new Tensor(part.dtype, over.shape, out);
    }
    return inOrientation(spec, (m) => growMatrixFresh(m, oriented(over).f32, axes, kind, coef))(part);
  });
}

/** Apply `f` to each part of a fused q|k|v tensor (split along its last axis; `index` is the part's) and re-fuse. */
function perPart(t: Tensor, spec: ParamSpec, f: (part: Tensor, index: number) => Tensor): Tensor {
  if (!spec.fused) return f(t, 0);
  const axis = t.shape.length - 1;
  return concat(
    t.chunk(axis, spec.fused.length).map((part, n) => f(part, n)),
    axis,
  );
}

interface Rule {
  /** Copies of the parameter along its grown axes. */
  kind: "matrix" | "tile";
  axes: Axes;
  /** Axis tiled for `tile` rules. */
  axis: number;
  /** Factor on the values (the final LayerNorm's 1/k) and on the gradient (hence exp_avg). */
  valueScale: number;
  gradScale: number;
}

/** Copies of one axis: the residual stream and the (key/value) heads × k, the MLP × k·ffnFactor, the rest once. */
function copiesOf(space: AxisSpace, k: number, f: number): number {
  switch (space) {
    case "model":
    case "heads":
    case "kvHeads":
    case "qkv":
      return k;
    case "ffn":
      return f;
    case "vocab":
    case "positions":
      return 1;
  }
}

/**
 * How a parameter grows, from what its axes index (ParamSpec.axes): no per-architecture rule. A vector is
 * tiled; the norm that feeds the output layer is also divided by k (the output layer sums over the k copies
 * of the hidden state). A matrix with one growing axis (embeddings, the output layer) is tiled along it; with
 * two it becomes the block matrix of its input copies (a) and output copies (b). Each copy's gradient is the
 * original's over the copies of its output axis (for the output norm, unchanged).
 */
function ruleFor(spec: ParamSpec, k: number, f: number): Rule {
  const copies = spec.axes.map((space) => copiesOf(space, k, f));
  const tile = (n: number, axis: number, valueScale = 1, gradScale = 1 / n): Rule => ({
    kind: "tile",
    axes: { a: 1, b: n },
    axis,
    valueScale,
    gradScale,
  });
  if (spec.shape.length === 1) return spec.feedsOutput ? tile(copies[0]!, 0, 1 / k, 1) : tile(copies[0]!, 0);
  if (spec.shape.length !== 2) throw new Error(`width growth: ${spec.name} has ${spec.shape.length} axes; parameters have 1 or 2`);
  // [in, out] as stored by conv1d (and embeddings: row index in, vector out); torch's linear is [out, in].
  const [inAxis, outAxis] = spec.layout === "linear" ? [1, 0] : [0, 1];
  const a = copies[inAxis]!,
    b = copies[outAxis]!;
  // Only the output grows (embeddings): each output copy is the original map.
  if (a === 1) return tile(b, outAxis);
  // The output layer reads the output norm, whose 1/k already averages the k copies it sums.
  if (spec.role === "lm_head.weight" && b === 1) return tile(a, inAxis);
  return { kind: "matrix", axes: { a, b }, axis: -1, valueScale: 1, gradScale: 1 / b };
}

/** Copies of a matrix's input dimension (its fan-in) under growth; 1 for vectors and embeddings (their input is the vocabulary). */
function fanInCopies(spec: ParamSpec, k: number, f: number): number {
  if (spec.shape.length !== 2) return 1;
  return copiesOf(spec.axes[spec.layout === "linear" ? 1 : 0]!, k, f);
}

/** A 2-D tensor transposed (linear [out, in] weights are grown in the [in, out] orientation). */
function transpose2d(t: Tensor): Tensor {
  const [rows, cols] = t.shape as [number, number];
  const src = t.f32,
    out = new Float32Array(src.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
  return new Tensor(t.dtype, [cols, rows], out);
}

/** Apply a grow function written for [in, out] matrices to a parameter in its stored layout. */
const inOrientation =
  (spec: ParamSpec, f: (t: Tensor) => Tensor) =>
  (t: Tensor): Tensor =>
    spec.layout === "linear" ? transpose2d(f(transpose2d(t))) : f(t);

/**
 * The same growth on stored bytes: the grown tensor's blocks in its stored layout, each a copy of the source, of the
 * source × a coefficient, or zeros. `coefficientOf(i, j)`: the coefficient of input copy i in output copy j of a matrix
 * (0: a zero block); a tile's single coefficient is `coefficientOf(0, 0)`. In the stored layout a linear [out, in]
 * weight has the output copies as row bands and the input copies as column bands (the transpose of the [in, out] block
 * matrix), a conv1d [in, out] weight the reverse; a fused q|k|v's parts along the last axis are each laid out by
 * themselves, as perPart does. The grid of blocks is built when the bytes are first asked for (a growth by a large
 * factor is refused for its size before, and must not cost factor² here).
 */
function storedLayout(
  spec: ParamSpec,
  rule: Rule,
  shape: readonly number[],
  coefficientOf: (i: number, j: number) => number,
): { layout: BlockLayout; coefficients: () => number[] } {
  const parts = spec.fused?.length ?? 1;
  if (rule.kind === "tile") return { layout: tileLayout(shape, rule.axis, rule.axes.b, parts), coefficients: () => [coefficientOf(0, 0)] };
  const [rows, cols] = shape as [number, number];
  const { a, b } = rule.axes;
  const linear = spec.layout === "linear";
  const rowBands = linear ? b : a,
    colBands = linear ? a : b;
  let built: { grid: Int32Array; coefficients: number[] } | null = null;
  const build = () => {
    if (built) return built;
    const coefficients: number[] = [];
    const grid = new Int32Array(rowBands * colBands);
    for (let s = 0; s < rowBands; s++) {
      for (let t = 0; t < colBands; t++) {
        const c = linear ? coefficientOf(t, s) : coefficientOf(s, t);
        let k = c === 0 ? -1 : coefficients.indexOf(c);
        if (c !== 0 && k < 0) k = coefficients.push(c) - 1;
        grid[s * colBands + t] = k;
      }
    }
    return (built = { grid, coefficients });
  };
  return {
    layout: { rows, cols, parts, rowBands, colBands, block: (s, t) => build().grid[s * colBands + t]! },
    coefficients: () => build().coefficients,
  };
}

/**
 * A grown tensor that also has stored bytes: the source's bytes laid out (storedLayout), a block of coefficient c ≠ 1
 * holding the source × c computed as the values path computes it (`plusZero`: growMatrix's `c · v + 0`), so the bytes
 * are exactly those of writing `compute()`'s values.
 */
function grownBytes(
  source: LazyTensor,
  shape: readonly number[],
  compute: () => Promise<Tensor>,
  spec: ParamSpec,
  rule: Rule,
  coefficientOf: (i: number, j: number) => number,
  plusZero: boolean,
): LazyTensor {
  const { layout, coefficients } = storedLayout(spec, rule, source.shape, coefficientOf);
  const sources = async (): Promise<Uint8Array[]> => {
    const raw = await source.readBytes!();
    return coefficients().map((c) => (c === 1 ? raw : scaleStored(source.dtype, raw, c, plusZero)));
  };
  return laidOut(source.dtype, shape, compute, sources, layout);
}

function positiveInt(v: number | undefined, fallback: number, what: string): number {
  const x = v ?? fallback;
  if (!Number.isInteger(x) || x < 1) throw new Error(`${what} must be an integer ≥ 1, got ${x}`);
  return x;
}

/**
 * Width growth (Shen et al. 2022): hidden size, heads and FFN × factor with the head size kept, so the
 * hidden state becomes [h, h, ...]. Embeddings, biases and LayerNorms are tiled, linear maps become block
 * matrices (block-diagonal for the paper's factor), the final LayerNorm is divided by k. Exact (same logits)
 * for symmetry "none" and "split"; "noise" perturbs the new copies by N(0, noiseStd); "antithetic" perturbs the
 * copies of each output by noise that sums to zero over them, which changes the function only at second order.
 *
 * Moments: every copied entry's gradient in the grown model is the original one over the number of copies
 * of its output axis (the final LayerNorm's is unchanged), so exp_avg / c and exp_avg_sq / c². "consistent"
 * gives that to every block, including the off-diagonal ones whose gradient equals the diagonal's; "paper"
 * puts zeros off the diagonal as the released code does; "reset" drops the moments. With "split" the copies'
 * weights differ, so "consistent" is the symmetric-model mapping, not the exact gradient.
 */
export function growWidth(state: TrainingState, options: WidthOptions = {}): TrainingState {
  const k = positiveInt(options.factor, 2, "factor");
  const m = positiveInt(options.ffnFactor, 1, "ffnFactor");
  if (k === 1 && m === 1) throw new Error("nothing to grow: factor must be an integer ≥ 2 (or ffnFactor ≥ 2)");
  const moments = options.moments ?? "consistent";
  const symmetry = options.symmetry ?? "none";
  if (!WIDTH_MOMENTS.includes(moments)) throw new Error(`moments must be one of ${WIDTH_MOMENTS.join(", ")}, got ${moments}`);
  if (!WIDTH_SYMMETRIES.includes(symmetry)) throw new Error(`symmetry must be one of ${WIDTH_SYMMETRIES.join(", ")}, got ${symmetry}`);
  if (options.noiseStd !== undefined && symmetry !== "noise" && symmetry !== "antithetic") {
    throw new Error(`noiseStd is only used with symmetry "noise" or "antithetic" (symmetry is "${symmetry}")`);
  }
  const units = options.units ?? "copies";
  if (!WIDTH_UNITS.includes(units)) throw new Error(`units must be one of ${WIDTH_UNITS.join(", ")}, got ${units}`);
  if (units === "fresh" && symmetry !== "none")
    throw new Error(`units "fresh" breaks the symmetry itself; it takes symmetry "none", got "${symmetry}"`);
  if (units === "fresh" && moments === "paper") throw new Error(`moments "paper" are for copied units; units "fresh" takes "consistent" or "reset"`);
  const noiseStd = options.noiseStd ?? 1e-3;
  if (!(noiseStd >= 0)) throw new Error(`noiseStd must be ≥ 0, got ${noiseStd}`);
  const seed = options.seed ?? 0;
  checkStageOptions(options, state);

  const arch = (options.registry ?? createDefaultRegistry()).get("architecture", state.architecture);
  const s = state.shape;
  const shape = {
    ...s,
    dModel: k * s.dModel,
    heads: k * s.heads,
    ffn: k * m * s.ffn,
    ...(s.kvHeads === undefined ? {} : { kvHeads: k * s.kvHeads }),
  };
  const config = arch.withShape(state.config, shape);
  // The size is checked before any list of the grown parameters is built.
  checkModelSize("width growth", shape, arch.parameterCount(config), { cause: `factor ${k}${m > 1 ? `, ffnFactor ${m}` : ""}` });
  const newSpecs = new Map(arch.params(config).map((p) => [p.name, p]));
  const { expAvg, expAvgSq } = state.optimizer;
  const keepMoments = moments !== "reset" && expAvg !== undefined && expAvgSq !== undefined;

  const freshSeed = deriveSeed(seed, "fresh units");
  const params = new Map<string, LazyTensor>();
  const fanInRoles = new Set<string>();
  const avg = new Map<string, LazyTensor>();
  const avgSq = new Map<string, LazyTensor>();
  for (const spec of arch.params(state.config)) {
    const target = newSpecs.get(spec.name);
    const source = state.params.get(spec.name);
    if (!target || !source) throw new Error(`width growth: parameter ${spec.name} is missing`);
    const rule = ruleFor(spec, k, k * m);
    if (fanInCopies(spec, k, k * m) > 1) fanInRoles.add(spec.role);
    const fresh = units === "fresh" ? freshKind(spec) : null;
    if (fresh) {
      // A reader's old units read the mean of the hidden state's copies; their gradient is the small model's (the
      // hidden state's copies each carry 1/k of it, and the old units write into all k), a writer's old rows the
      // original's over its b output copies, like every copied entry's; new units start with zero moments.
      const valueCoef = fresh === "reader" ? 1 / rule.axes.a : 1;
      const gradScale = fresh === "writer" ? rule.gradScale : 1;
      params.set(
        spec.name,
        derived(source.dtype, target.shape, async () =>
          growFresh(await source.read(), arch.initParam(config, target, freshSeed), spec, fresh, rule.axes, valueCoef),
        ),
      );
      if (!keepMoments) continue;
      const m1 = expAvg.get(spec.name),
        m2 = expAvgSq.get(spec.name);
      if (!m1 || !m2) throw new Error(`width growth: the optimizer state has no moments for ${spec.name}`);
      const grownMoment = (m: LazyTensor, power: number): LazyTensor =>
        derived(m.dtype, target.shape, async () =>
          growFresh(await m.read(), Tensor.zeros("F32", target.shape), spec, fresh, rule.axes, gradScale ** power),
        );
      avg.set(spec.name, grownMoment(m1, 1));
      avgSq.set(spec.name, grownMoment(m2, 2));
      continue;
    }
    const grow = (t: Tensor, rng: Rng): Tensor =>
      perPart(t, spec, (part) =>
        rule.kind === "matrix"
          ? inOrientation(spec, (m) => growMatrix(m, rule.axes, symmetry, noiseStd, rng))(part)
          : (rule.valueScale === 1 ? part : part.scale(rule.valueScale)).tile(rule.axis, rule.axes.b),
      );
    const computeValues = async () => grow(await source.read(), new Rng(deriveSeed(seed, spec.name)));
    // Copies and fixed coefficients have stored bytes (no decoding); symmetry breaking in a matrix draws per value.
    params.set(
      spec.name,
      haveStoredBytes(source) && (rule.kind === "tile" || symmetry === "none")
        ? grownBytes(
            source,
            target.shape,
            computeValues,
            spec,
            rule,
            (i, j) => (rule.kind === "tile" ? rule.valueScale : coefficient(rule.axes.a, rule.axes.b, i, j)),
            rule.kind === "matrix",
          )
        : derived(source.dtype, target.shape, computeValues),
    );
    if (!keepMoments) continue;
    const growMoment = (t: Tensor, power: number): Tensor => {
      const scale = rule.gradScale ** power;
      return perPart(t, spec, (part) =>
        rule.kind === "matrix"
          ? inOrientation(spec, (m) => growMatrixMoment(m, rule.axes, scale, moments === "consistent"))(part)
          : part.scale(scale).tile(rule.axis, rule.axes.b),
      );
    };
    const m1 = expAvg.get(spec.name),
      m2 = expAvgSq.get(spec.name);
    if (!m1 || !m2) throw new Error(`width growth: the optimizer state has no moments for ${spec.name}`);
    const grownMoment = (m: LazyTensor, power: number): LazyTensor => {
      const compute = async () => growMoment(await m.read(), power);
      if (!haveStoredBytes(m)) return derived(m.dtype, target.shape, compute);
      const scale = rule.gradScale ** power;
      return grownBytes(
        m,
        target.shape,
        compute,
        spec,
        rule,
        (i, j) => (rule.kind === "tile" || moments === "consistent" || coefficient(rule.axes.a, rule.axes.b, i, j) !== 0 ? scale : 0),
        false,
      );
    };
    avg.set(spec.name, grownMoment(m1, 1));
    avgSq.set(spec.name, grownMoment(m2, 2));
  }
  return grownState(state, {
    operator: "width",
    options: {
      factor: k,
      ffnFactor: m,
      moments,
      symmetry,
      ...(units === "fresh" ? { units } : {}),
      ...(symmetry === "noise" || symmetry === "antithetic" ? { noiseStd } : {}),
      seed,
    },
    config,
    shape,
    params,
    ...(keepMoments ? { expAvg: avg, expAvgSq: avgSq } : {}),
    resetMoments: !keepMoments,
    stage: options,
    defaultLrScale: 1 / k,
    fanInRoles: [...fanInRoles],
  });
}

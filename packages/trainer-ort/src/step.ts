import type { ParamSpec, Precision, Registry } from "@staged/core";
import { GraphBuilder, type DType, type Value } from "./graph/builder.js";
import { gradients } from "./graph/autodiff.js";
import { modelGraph, type ApplyDropout, type DropoutSite } from "./models/index.js";

/**
 * The element type of the training graphs' `input_ids` (the inference graphs keep Hugging Face's int64). int32:
 * onnxruntime's WebGPU provider has no int64 kernels for Slice, Concat, Reshape and Expand, so int64 ids put the
 * targets' shift and the embedding gradient's [B·T, d] scatter index on the CPU, copied to the GPU every step
 * (packages/trainer-ort/README.md, "A step the GPU runs whole").
 */
export const idsType: DType = "int32";

/** Graph input and output names shared by the compiler and the engine. */
export const names = {
  ids: "input_ids",
  /** float32, [] or [P] with AdamWOptions.perParamLr (the params' order): lr/(1 − β1ᵗ), lr without bias correction. */
  stepSize: "step_size",
  /** float32, [] or [P] like stepSize: 1 − lr·weightDecay (only when weight decay applies to some parameter). */
  decayFactor: "decay_factor",
  /** float32 []: √(1 − β2ᵗ) (only with bias correction). */
  bc2Sqrt: "bc2_sqrt",
  microBatches: "micro_batches",
  /** float32 []: the factor on the loss before the backward pass (mixed precision; the update divides it out). */
  lossScale: "loss_scale",
  loss: "loss",
  gradNorm: "grad_norm",
  expAvg: (p: string) => `exp_avg.${p}`,
  expAvgSq: (p: string) => `exp_avg_sq.${p}`,
  grad: (p: string) => `grad.${p}`,
  gradAcc: (p: string) => `grad_acc.${p}`,
  /** float32 dropout mask of a site (DropoutSite.name), x's shape: 0 or 1/(1 − p) per entry. */
  dropoutMask: (site: string) => `dropout.${site}`,
  /** Outputs holding the updated value of an input. */
  updated: (input: string) => `new.${input}`,
} as const;

export interface AdamWOptions {
  betas: [number, number];
  eps: number;
  weightDecay: number;
  /** Max global gradient norm (clip_grad_norm_); null: no clipping. */
  clip: number | null;
  /** Names of the parameters that weight decay applies to. */
  decay: ReadonlySet<string>;
  /** Adam's bias correction (PyTorch's; off: the seed code's `correct_bias=False`). */
  biasCorrection: boolean;
  /** Whether the step takes a per-parameter factor on the LR (input `lr_scales`). */
  perParamLr: boolean;
}

export interface BatchShape {
  batch: number;
  context: number;
}

/** A dropout mask input of a training graph: its site, the input's name and shape. */
export interface DropoutInput extends DropoutSite {
  input: string;
  shape: number[];
}

export interface CompiledGraph {
  /** The serialized ONNX model. */
  model: Uint8Array;
  inputs: string[];
  outputs: string[];
  params: ParamSpec[];
  /** The dropout mask inputs, in input order (none in evaluation graphs, and where every probability is 0). */
  dropout: DropoutInput[];
}

/** Options of the training graphs (compileTrainStep, compileGradient, compileApply). */
export interface TrainGraphOptions {
  /** false: no dropout even where the config has some (the graph of p = 0). Default true. */
  dropout?: boolean;
  /**
   * Default fp32. mixed: the matrices and activations in float16 (ComputeType), the parameters, gradients,
   * moments and update in float32; the backward pass is seeded with the input `loss_scale` and the gradients are
   * divided by it before clipping and the update (PyTorch's autocast with a GradScaler). A non-finite gradient
   * norm then means the scaled gradients overflowed float16: the engine repeats the step at half the scale.
   */
  precision?: Precision;
}

/**
 * The training graphs' dropout (inverted): x · m at each site, m a float32 input `dropout.<site>` of x's shape
 * holding 0 or 1/(1 − p), which the engine draws from a keyed stream. Masks fed from outside rather than drawn
 * by onnxruntime's Dropout or RandomUniform, whose generator state lives in the session: a resumed run, or one
 * at another thread count, then draws the same masks.
 */
function dropoutMasks(b: GraphBuilder, enabled: boolean): { apply?: ApplyDropout; inputs: DropoutInput[] } {
  const inputs: DropoutInput[] = [];
  if (!enabled) return { inputs };
  const apply: ApplyDropout = (x, site) => {
    const input = names.dropoutMask(site.name);
    inputs.push({ ...site, input, shape: [...x.shape] });
    return b.mul(x, b.cast(b.input(input, "float32", x.shape), x.dtype));
  };
  return { apply, inputs };
}

/** PyTorch's defaults, with decay on the parameters whose spec says so (2-D weights). */
/** AdamW's settings, each optional (the defaults fill in), and the names not decayed (default: the specs' own flags). */
type AdamWSettings = { [K in Exclude<keyof AdamWOptions, "decay">]?: AdamWOptions[K] | undefined } & { noDecay?: Iterable<string> | undefined };

export function adamwDefaults(params: readonly ParamSpec[], o: AdamWSettings = {}): AdamWOptions {
  const noDecay = new Set(o.noDecay ?? params.filter((p) => !p.decay).map((p) => p.name));
  return {
    betas: o.betas ?? [0.9, 0.999],
    eps: o.eps ?? 1e-8,
    weightDecay: o.weightDecay ?? 0.01,
    clip: o.clip === undefined ? 1.0 : o.clip,
    decay: new Set(params.filter((p) => !noDecay.has(p.name)).map((p) => p.name)),
    biasCorrection: o.biasCorrection ?? true,
    perParamLr: o.perParamLr ?? false,
  };
}

/** The architecture's model graph comes from `registry` (default: core's createDefaultRegistry()). */
function setup(architecture: string, config: Record<string, unknown>, registry?: Registry) {
  const model = modelGraph(architecture, registry);
  const params = model.params(config);
  const b = new GraphBuilder();
  b.section = "forward";
  const pv = new Map(params.map((s) => [s.name, b.input(s.name, "float32", s.shape)]));
  const p = (name: string) => {
    const v = pv.get(name);
    if (!v) throw new Error(`model graph asked for unknown parameter ${name}`);
    return v;
  };
  return { model, params, b, pv, p };
}

const finish = (b: GraphBuilder, params: ParamSpec[], dropout: DropoutInput[] = []): CompiledGraph => ({
  model: b.serialize(),
  inputs: b.inputs.map((v) => v.name),
  outputs: b.outputs.map((v) => v.name),
  params,
  dropout,
});

/** Whether weight decay applies to some parameter (the step then takes `decay_factor`). */
const decays = (specs: readonly ParamSpec[], o: AdamWOptions) => o.weightDecay !== 0 && specs.some((s) => o.decay.has(s.name));

/**
 * The optimizer's scalar inputs of a step (names.stepSize, decayFactor, bc2Sqrt), computed on the host in float64
 * like torch's Python floats and rounded to float32 once, so that no float64 value is on the device (a GPU provider
 * has no float64 kernels): `lr` the step's LR, `step` the 1-based update count, `scales` each parameter's factor on
 * the LR (with AdamWOptions.perParamLr; default 1). Parameter i trains at lr·scales[i], as a PyTorch param group of
 * that lr would (its decay too).
 */
export function optimizerScalars(
  specs: readonly ParamSpec[],
  o: AdamWOptions,
  lr: number,
  step: number,
  scales?: ArrayLike<number>,
): Record<string, Float32Array> {
  const bc1 = o.biasCorrection ? 1 - Math.pow(o.betas[0], step) : 1;
  const lrs = o.perParamLr ? Array.from({ length: specs.length }, (_, i) => lr * (scales?.[i] ?? 1)) : [lr];
  const out: Record<string, Float32Array> = { [names.stepSize]: Float32Array.from(lrs, (x) => x / bc1) };
  if (decays(specs, o)) out[names.decayFactor] = Float32Array.from(lrs, (x) => 1 - x * o.weightDecay);
  if (o.biasCorrection) out[names.bc2Sqrt] = Float32Array.of(Math.sqrt(1 - Math.pow(o.betas[1], step)));
  return out;
}

/**
 * Global-norm clipping (clip_grad_norm_: coef = max/(‖g‖+1e-6) clamped to ≤ 1) then PyTorch's AdamW
 * (foreach=False): p ← p·(1−lr·wd) for decayed params; m ← lerp(m, g, 1−β1); v ← β2·v + (1−β2)·g²;
 * p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + eps). The scalar factors are inputs (optimizerScalars). Without bias
 * correction both (1 − βᵗ) are 1. Appends the outputs `grad_norm` and `new.*` for params and moments.
 */
function adamw(b: GraphBuilder, specs: ParamSpec[], pv: Map<string, Value>, grads: Value[], o: AdamWOptions): void {
  b.section = "optimizer";
  const [beta1, beta2] = o.betas;
  const dims = o.perParamLr ? [specs.length] : [];
  const stepSizes = b.input(names.stepSize, "float32", dims);
  const decayFactors = decays(specs, o) ? b.input(names.decayFactor, "float32", dims) : null;
  const bc2Sqrt = o.biasCorrection ? b.input(names.bc2Sqrt, "float32", []) : null;
  /** Parameter i's factor of an input of `dims`. */
  const of = (x: Value, i: number) => (o.perParamLr ? b.gather(x, b.constant([i], "int64", [])) : x);

  const sq = grads.map((g) => b.reduceSumSquare(g, [...g.shape.keys()], false));
  const norm = b.sqrt(b.sum(sq));
  b.output(norm, names.gradNorm);
  let coef: Value | null = null;
  if (o.clip !== null) coef = b.min(b.div(o.clip, b.add(norm, 1e-6)), 1);

  specs.forEach((s, i) => {
    const g = coef ? b.mul(grads[i]!, coef) : grads[i]!;
    const p = pv.get(s.name)!;
    const m = b.input(names.expAvg(s.name), "float32", s.shape);
    const v = b.input(names.expAvgSq(s.name), "float32", s.shape);
    const pd = decayFactors && o.decay.has(s.name) ? b.mul(p, of(decayFactors, i)) : p;
    const m2 = b.add(m, b.mul(b.sub(g, m), 1 - beta1));
    const v2 = b.add(b.mul(v, beta2), b.mul(b.mul(g, g), 1 - beta2));
    const denom = b.add(bc2Sqrt ? b.div(b.sqrt(v2), bc2Sqrt) : b.sqrt(v2), o.eps);
    b.output(b.sub(pd, b.mul(b.div(m2, denom), of(stepSizes, i))), names.updated(s.name));
    b.output(m2, names.updated(names.expAvg(s.name)));
    b.output(v2, names.updated(names.expAvgSq(s.name)));
  });
}

/**
 * The whole training step: inputs = params, `exp_avg.*`, `exp_avg_sq.*`, `input_ids` int32 [B, T],
 * the optimizer's float32 scalars (optimizerScalars), and a `dropout.<site>` mask per dropout site
 * of p > 0 (CompiledGraph.dropout); outputs = `loss`, `grad_norm`, `new.<param>`, `new.exp_avg.<param>`,
 * `new.exp_avg_sq.<param>`.
 */
export function compileTrainStep(
  architecture: string,
  config: Record<string, unknown>,
  shape: BatchShape,
  opt: AdamWOptions,
  registry?: Registry,
  options: TrainGraphOptions = {},
): CompiledGraph {
  const { b, params, pv, loss, grads, drop, lossScale } = lossAndGradients(architecture, config, shape, registry, options);
  b.output(loss, names.loss);
  adamw(b, params, pv, lossScale ? grads.map((g) => b.div(g, lossScale)) : grads, opt);
  return finish(b, params, drop.inputs);
}

/**
 * The loss of one batch and its gradients (scaled by the input `loss_scale` with mixed precision), the graph
 * the training step and the micro-batch gradient share.
 */
function lossAndGradients(
  architecture: string,
  config: Record<string, unknown>,
  shape: BatchShape,
  registry: Registry | undefined,
  options: TrainGraphOptions,
) {
  const { model, params, b, pv, p } = setup(architecture, config, registry);
  const ids = b.input(names.ids, idsType, [shape.batch, shape.context]);
  const drop = dropoutMasks(b, options.dropout ?? true);
  const mixed = (options.precision ?? "fp32") === "mixed";
  const loss = model.loss(b, config, p, ids, {
    ...(drop.apply ? { dropout: drop.apply } : {}),
    ...(mixed ? { computeType: "float16" as const } : {}),
  });
  const lossScale = mixed ? b.input(names.lossScale, "float32", []) : null;
  const grads = gradients(
    b,
    loss,
    params.map((s) => pv.get(s.name)!),
    lossScale ?? undefined,
  );
  return { b, params, pv, loss, grads, drop, lossScale };
}

/** Loss only: params and `input_ids` → `loss`. */
export function compileEval(architecture: string, config: Record<string, unknown>, shape: BatchShape, registry?: Registry): CompiledGraph {
  const { model, params, b, p } = setup(architecture, config, registry);
  const ids = b.input(names.ids, idsType, [shape.batch, shape.context]);
  b.output(model.loss(b, config, p, ids), names.loss);
  return finish(b, params);
}

/**
 * Gradients of one micro-batch, added to running sums: params, `input_ids`, `grad_acc.*` and the dropout
 * masks (as in compileTrainStep) → `loss` and `grad.<param>` = grad_acc + ∂loss/∂param.
 */
export function compileGradient(
  architecture: string,
  config: Record<string, unknown>,
  shape: BatchShape,
  registry?: Registry,
  options: TrainGraphOptions = {},
): CompiledGraph {
  const { b, params, loss, grads, drop } = lossAndGradients(architecture, config, shape, registry, options);
  b.output(loss, names.loss);
  params.forEach((s, i) => b.output(b.add(b.input(names.gradAcc(s.name), "float32", s.shape), grads[i]!), names.grad(s.name)));
  return finish(b, params, drop.inputs);
}

/**
 * The update from summed micro-batch gradients: params, moments, `grad.*`, float32 scalar `micro_batches`
 * (the gradient is the sum divided by it; with mixed precision, by it and by `loss_scale`), the optimizer's scalars
 * (optimizerScalars) → `grad_norm` and the `new.*` outputs.
 */
export function compileApply(
  architecture: string,
  config: Record<string, unknown>,
  opt: AdamWOptions,
  registry?: Registry,
  options: Pick<TrainGraphOptions, "precision"> = {},
): CompiledGraph {
  const { params, b, pv } = setup(architecture, config, registry);
  let count = b.input(names.microBatches, "float32", []);
  if ((options.precision ?? "fp32") === "mixed") count = b.mul(count, b.input(names.lossScale, "float32", []));
  const grads = params.map((s) => b.div(b.input(names.grad(s.name), "float32", s.shape), count));
  adamw(b, params, pv, grads, opt);
  return finish(b, params);
}

import os from "node:os";
import ort from "onnxruntime-node";
import type { ParamSpec, Precision, Registry } from "@staged/core";
import { GraphBuilder } from "./graph/builder.js";
import { modelGraph } from "./models/index.js";
import { dropoutMasks, type DropoutMasks } from "./dropout.js";
import {
  adamwDefaults,
  compileApply,
  compileEval,
  compileGradient,
  compileTrainStep,
  idsType,
  names,
  optimizerScalars,
  type AdamWOptions,
} from "./step.js";

export interface EngineOptions {
  /** The execution provider (DEVICES; default cpu): cuda and webgpu throw a one-line error when they cannot be used. */
  device?: Device | undefined;
  /** Intra-op threads; default: all cores (os.availableParallelism()). */
  threads?: number | undefined;
  /** B and T of the compiled graphs. */
  batch: number;
  context: number;
  /** Gradient accumulation over micro-batches of this many rows when < batch (must divide batch). */
  microBatch?: number | undefined;
  betas?: [number, number] | undefined;
  eps?: number | undefined;
  /** Adam's bias correction (default on: PyTorch's). */
  biasCorrection?: boolean | undefined;
  /** Compile the step with a per-parameter factor on the LR (StepOptions.lrScales). */
  perParamLr?: boolean | undefined;
  weightDecay?: number | undefined;
  clip?: number | null | undefined;
  noDecay?: Iterable<string> | undefined;
  /** Write onnxruntime's per-node profile (onnxruntime_profile_*.json in the working directory). */
  profile?: boolean | undefined;
  /**
   * Sessions log at onnxruntime's verbose level on the process's stderr (native, not catchable in-process): among it,
   * which provider runs each node. `stepPlacement` reads it from a child process.
   */
  verboseLog?: boolean | undefined;
  /** Compile only what evaluation needs: step() then throws (gradients() still works, compiled on first use). */
  evalOnly?: boolean | undefined;
  /** Where the architecture's plugin is found (default: core's createDefaultRegistry()). */
  registry?: Registry | undefined;
  /** fp32 (default) or mixed: float16 matrices and activations, float32 state, a dynamic loss scale (TrainGraphOptions.precision). */
  precision?: Precision | undefined;
  /** Mixed precision's loss scale and its count of steps since it changed, at the start (default LOSS_SCALE.initial, 0; a resumed run passes the saved ones). */
  lossScale?: { scale: number; goodSteps: number } | undefined;
  /** Mixed precision: steps without overflow before the scale doubles (default LOSS_SCALE.growthInterval). */
  lossScaleInterval?: number | undefined;
  /**
   * Keep the training state where the step leaves it (ResidentState): on the GPU with WebGPU, only token ids, masks
   * and scalars going up and the loss and gradient norm coming down; params() and moments() then need `await sync()`
   * (a download). Default: on with webgpu, off elsewhere. CUDA cannot (onnxruntime-node returns only WebGPU tensors
   * to JavaScript): refused there.
   */
  resident?: boolean | undefined;
}

/**
 * The dynamic loss scale of mixed precision, PyTorch's GradScaler defaults: start at 2¹⁶, halve when the scaled
 * gradients overflow, double after `growthInterval` steps without. Powers of two, so scaling and unscaling are
 * exact. An overflowed step is not skipped as GradScaler does but repeated at the halved scale on the same batch
 * (the state is left as it was): every step updates, so step counts, schedules and data order stay those of fp32.
 */
export const LOSS_SCALE = { initial: 2 ** 16, growthInterval: 2000, min: 2 ** -24, max: 2 ** 24 } as const;

/** Per-step settings beside the ids, the LR and the step number. */
export interface StepOptions {
  /** Each parameter's factor on the LR, in `paramNames` order (needs EngineOptions.perParamLr; default all 1). */
  lrScales?: ArrayLike<number>;
  /**
   * Names the step's dropout masks (a safe integer ≥ 0; default the step number): with the micro-batch index,
   * the key of the stream they are drawn from, so the same key gives the same masks (the trainer passes
   * streamKey(seed, global step), which a resumed run repeats). Ignored where the config has no dropout.
   */
  dropoutKey?: number;
}

export interface Engine {
  readonly paramNames: readonly string[];
  /** Current values (views that stay valid until the step after next; a resident engine's need `await sync()` after a step). */
  params(): Map<string, Float32Array>;
  /** Brings the state to the host for params() and moments() (a resident engine downloads it; otherwise nothing to do). */
  sync(): Promise<void>;
  /** Whether the state stays on the device between steps (EngineOptions.resident). */
  readonly resident: boolean;
  /** One training step on ids (B·T values, row-major): the loss before the update and the gradient norm. */
  step(ids: Int32Array | BigInt64Array, lr: number, stepNumber: number, options?: StepOptions): Promise<{ loss: number; gradNorm: number }>;
  /** Mean next-token loss over the predictions inside the blocks of ids (any number of T-token rows). */
  evalLoss(ids: Int32Array | BigInt64Array): Promise<number>;
  moments(): { expAvg: Map<string, Float32Array>; expAvgSq: Map<string, Float32Array> };
  /** Gradients of the mean loss of one B×T batch, without updating; without dropout unless given a dropout key (as StepOptions'). */
  gradients(ids: Int32Array | BigInt64Array, options?: { dropoutKey?: number }): Promise<{ loss: number; grads: Map<string, Float32Array> }>;
  release(): Promise<void>;
  /** The optimizer settings compiled into the step. */
  readonly optimizer: Readonly<AdamWOptions>;
  /** Compiled B and T, and the micro-batch rows. */
  readonly shape: { batch: number; context: number; microBatch: number };
  readonly precision: Precision;
  /** Mixed precision's current loss scale and the steps since it last changed (1 and 0 in fp32); a checkpoint keeps them. */
  lossScale(): { scale: number; goodSteps: number };
}

type Feeds = Record<string, ort.Tensor>;
const f32 = (data: Float32Array, shape: readonly number[]) => new ort.Tensor("float32", data, shape as number[]);

/** Where the training state (parameters and moments, by input name) lives between steps. */
interface StateStore {
  readonly cur: Map<string, ort.Tensor>;
  /** The fetches of a session's state outputs (`new.<name>`): the host store's next buffers; none for the resident one. */
  fetches(s: ort.InferenceSession): Record<string, ort.Tensor>;
  /** A step's outputs become the state. */
  commit(out: ort.InferenceSession.ReturnType): void;
  /** An overflowed step's outputs are dropped (the state stays). */
  discard(out: ort.InferenceSession.ReturnType): void;
  /** The state's values on the host, after `sync()`. */
  host(name: string): Float32Array;
  sync(): Promise<void>;
  release(): void;
}

/** Host state: two sets of buffers; a step reads one and writes the other (preallocated outputs), then they swap. */
class HostState implements StateStore {
  cur: Map<string, ort.Tensor>;
  private next: Map<string, ort.Tensor>;
  constructor(entries: [string, Float32Array, readonly number[]][]) {
    this.cur = new Map(entries.map(([n, d, s]) => [n, f32(d, s)]));
    this.next = new Map(entries.map(([n, d, s]) => [n, f32(new Float32Array(d.length), s)]));
  }
  fetches(s: ort.InferenceSession): Record<string, ort.Tensor> {
    return Object.fromEntries(s.outputNames.filter((n) => n.startsWith("new.")).map((n) => [n, this.next.get(n.slice(4))!]));
  }
  commit(): void {
    [this.cur, this.next] = [this.next, this.cur];
  }
  discard(): void {}
  host(name: string): Float32Array {
    return this.cur.get(name)!.data as Float32Array;
  }
  async sync(): Promise<void> {}
  release(): void {}
}

/** Disposes the tensors of `m` (a GPU tensor's buffer is freed only so: its wrapper has no finalizer). */
const disposeAll = (m: Iterable<ort.Tensor>) => {
  for (const t of m) t.dispose();
};

/**
 * Resident state: the tensors the last step returned, fed as the next step's inputs; on WebGPU they are GPU buffers
 * (the training sessions' `preferredOutputLocation` puts `new.*` and `grad.*` outputs there), so the state never
 * crosses to the host between steps. The tensors a step replaces are disposed once it has returned. `sync()`
 * downloads the state through `download` (a session of Identity nodes whose outputs come to the CPU: onnxruntime-node
 * 1.30 cannot read a GPU tensor's data itself); the copies stay valid until the next step. onnxruntime-node details
 * this relies on: the package README, "Training on a GPU".
 */
class ResidentState implements StateStore {
  cur: Map<string, ort.Tensor>;
  private mirror: Map<string, Float32Array> | null = null;
  constructor(
    entries: [string, Float32Array, readonly number[]][],
    private readonly download: (m: Map<string, ort.Tensor>) => Promise<Map<string, Float32Array>>,
  ) {
    this.cur = new Map(entries.map(([n, d, s]) => [n, f32(d, s)]));
    this.mirror = new Map(entries.map(([n, d]) => [n, d]));
  }
  fetches(): Record<string, ort.Tensor> {
    return {};
  }
  commit(out: ort.InferenceSession.ReturnType): void {
    const old: ort.Tensor[] = [];
    for (const [n, t] of this.cur) {
      const next = out[`new.${n}`];
      if (!next) throw new Error(`the step returned no new.${n}`);
      old.push(t);
      this.cur.set(n, next);
    }
    disposeAll(old);
    this.mirror = null;
  }
  discard(out: ort.InferenceSession.ReturnType): void {
    disposeAll(Object.entries(out).flatMap(([n, t]) => (n.startsWith("new.") ? [t] : [])));
  }
  host(name: string): Float32Array {
    if (!this.mirror) throw new Error("the state is on the device: await engine.sync() before reading it");
    return this.mirror.get(name)!;
  }
  async sync(): Promise<void> {
    this.mirror ??= await this.download(this.cur);
  }
  release(): void {
    disposeAll(this.cur.values());
  }
}

/** The execution providers a step can run on: onnxruntime-node's CPU, CUDA (where its install script fetched it) and WebGPU (bundled). */
export const DEVICES = ["cpu", "cuda", "webgpu"] as const;
export type Device = (typeof DEVICES)[number];

/** What a provider other than the CPU needs, said after its one-line error (here and by the generator). */
export const DEVICE_HINTS: Readonly<Record<Exclude<Device, "cpu">, string>> = {
  cuda: "(onnxruntime-node fetches its CUDA libraries in its install script; run that script on a machine with CUDA 12)",
  webgpu:
    "(onnxruntime-node's WebGPU runs on Dawn over Vulkan: it needs libvulkan1 and the GPU driver's ICD, e.g. VK_DRIVER_FILES; see @staged/trainer-ort's README)",
};

/**
 * A session on a provider that may be missing: ORT's native log silenced (it would print the failed load), its error
 * turned into one line, "<provider> execution provider is not available: <reason> <hint>".
 */
async function createOrExplain(
  model: Uint8Array,
  options: ort.InferenceSession.SessionOptions,
  provider: string,
  reason: (message: string) => string,
  hint: string,
): Promise<ort.InferenceSession> {
  ort.env.logLevel = "fatal";
  try {
    return await ort.InferenceSession.create(model, options);
  } catch (e) {
    throw new Error(`${provider} execution provider is not available: ${reason((e as Error).message)} ${hint}`, { cause: e });
  }
}

/** The reason in onnxruntime's WebGPU error (Dawn's adapter message where there is one), on one line. */
export const webgpuReason = (message: string): string => /Failed to get a WebGPU adapter: ([^\n]*)/.exec(message)?.[1] ?? message.split("\n")[0]!;

/** A session for a serialized ONNX model on a device, with the engine's options and its one-line errors. */
export async function createSession(
  model: Uint8Array,
  o: { device: Device; threads: number; profile?: boolean; verboseLog?: boolean; gpuOutputs?: readonly string[] },
): Promise<ort.InferenceSession> {
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: [o.device],
    graphOptimizationLevel: "all",
    intraOpNumThreads: o.threads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    enableCpuMemArena: true,
    enableMemPattern: true,
    ...(o.profile ? { enableProfiling: true, profileFilePrefix: "onnxruntime_profile" } : {}),
    ...(o.verboseLog ? { logSeverityLevel: 0 as const, logVerbosityLevel: 0 } : {}),
    // A map, never the string form: outputs left out (the loss, the norm) come to the CPU, where their data is read.
    ...(o.gpuOutputs?.length ? { preferredOutputLocation: Object.fromEntries(o.gpuOutputs.map((n) => [n, "gpu-buffer" as const])) } : {}),
  };
  if (o.device === "cuda") {
    const listed = ort.listSupportedBackends?.().some((b) => b.name === "cuda");
    if (!listed)
      throw new Error(
        "CUDA execution provider is not available: this onnxruntime-node build does not include it (its CUDA binaries are installed by the package's install script)",
      );
    return createOrExplain(model, options, "CUDA", (m) => m, DEVICE_HINTS.cuda);
  }
  if (o.device === "webgpu") {
    return createOrExplain(model, options, "WebGPU", webgpuReason, DEVICE_HINTS.webgpu);
  }
  return ort.InferenceSession.create(model, options);
}

/** Create a training engine for one architecture, shape and optimizer configuration. */
export async function createEngine(
  architecture: string,
  config: Record<string, unknown>,
  weights: Map<string, Float32Array>,
  moments: { expAvg?: Map<string, Float32Array>; expAvgSq?: Map<string, Float32Array> } | undefined,
  options: EngineOptions,
): Promise<Engine> {
  const registry = options.registry;
  const model = modelGraph(architecture, registry);
  const specs: ParamSpec[] = model.params(config);
  const vocab = model.shape(config).vocab;
  const { batch: B, context: T } = options;
  const micro = options.microBatch ?? B;
  if (!(Number.isInteger(B) && B >= 1 && Number.isInteger(T) && T >= 2)) throw new Error(`batch ${B} and context ${T}: need B ≥ 1 and T ≥ 2`);
  if (T > model.shape(config).context) throw new Error(`context ${T} exceeds the model's ${model.shape(config).context} positions`);
  if (!(Number.isInteger(micro) && micro >= 1 && B % micro === 0)) throw new Error(`microBatch ${micro} must divide batch ${B}`);
  const device = options.device ?? "cpu";
  const threads = options.threads ?? os.availableParallelism();
  const opt = adamwDefaults(specs, options);
  const precision: Precision = options.precision ?? "fp32";
  const mixed = precision === "mixed";
  let scale = mixed ? (options.lossScale?.scale ?? LOSS_SCALE.initial) : 1,
    goodSteps = mixed ? (options.lossScale?.goodSteps ?? 0) : 0;
  const interval = options.lossScaleInterval ?? LOSS_SCALE.growthInterval;
  if (!(Number.isFinite(scale) && scale > 0 && Number.isInteger(Math.log2(scale)))) throw new Error(`loss scale ${scale} must be a power of two`);
  if (!(Number.isSafeInteger(goodSteps) && goodSteps >= 0)) throw new Error(`loss scale steps ${goodSteps} must be an integer ≥ 0`);
  if (!(Number.isSafeInteger(interval) && interval >= 1)) throw new Error(`loss scale interval ${interval} must be a positive integer`);
  const resident = options.resident ?? device === "webgpu";
  if (resident && device === "cuda")
    throw new Error("resident state is not possible on CUDA: onnxruntime-node returns only WebGPU tensors to JavaScript (train with resident off)");
  const sess = { device, threads, profile: options.profile ?? false, verboseLog: options.verboseLog ?? false };
  /** A training session's options: with resident state on a GPU, its state and gradient outputs stay there. */
  const trainSess = (outputs: readonly string[]) =>
    resident && device !== "cpu" ? { ...sess, gpuOutputs: outputs.filter((n) => n.startsWith("new.") || n.startsWith("grad.")) } : sess;

  const size = (s: ParamSpec) => s.shape.reduce((a, b) => a * b, 1);
  const take = (m: Map<string, Float32Array> | undefined, s: ParamSpec, what: string): Float32Array => {
    const d = m?.get(s.name);
    if (!d) {
      if (what === "weights") throw new Error(`weights: missing parameter ${s.name}`);
      return new Float32Array(size(s));
    }
    if (d.length !== size(s)) throw new Error(`${what}: ${s.name} has ${d.length} values, shape [${s.shape}] needs ${size(s)}`);
    return Float32Array.from(d);
  };
  // Engine-owned copies: the caller's arrays are never written.
  const entries = specs.flatMap(
    (s) =>
      [
        [s.name, take(weights, s, "weights"), s.shape],
        [names.expAvg(s.name), take(moments?.expAvg, s, "expAvg"), s.shape],
        [names.expAvgSq(s.name), take(moments?.expAvgSq, s, "expAvgSq"), s.shape],
      ] as [string, Float32Array, readonly number[]][],
  );
  /** Sessions of Identity nodes that bring tensors (of the names given, in order) to the host, on the engine's device. */
  const downloads = new Map<string, ort.InferenceSession>();
  const download = async (m: Map<string, ort.Tensor>): Promise<Map<string, Float32Array>> => {
    const key = [...m.keys()].join("\n");
    let s = downloads.get(key);
    if (!s) {
      const b = new GraphBuilder();
      for (const [n, t] of m) b.output(b.node1("Identity", [b.input(n, "float32", t.dims)], {}, "float32", t.dims), `host.${n}`);
      s = await createSession(b.serialize(), sess);
      downloads.set(key, s);
    }
    const out = await s.run(Object.fromEntries(m));
    return new Map([...m.keys()].map((n) => [n, out[`host.${n}`]!.data as Float32Array]));
  };
  const state: StateStore = resident ? new ResidentState(entries, download) : new HostState(entries);

  const idsCache = new Map<number, { data: Int32Array; tensor: ort.Tensor }>();
  /** Validated ids [rows, T] (idsType: int32) in a reused buffer. */
  const idsTensor = (ids: Int32Array | BigInt64Array, offset: number, rows: number): ort.Tensor => {
    let e = idsCache.get(rows);
    if (!e) {
      const data = new Int32Array(rows * T);
      e = { data, tensor: new ort.Tensor(idsType, data, [rows, T]) };
      idsCache.set(rows, e);
    }
    for (let i = 0; i < rows * T; i++) {
      const v = Number(ids[offset + i]!);
      if (!(v >= 0 && v < vocab && Number.isInteger(v))) throw new Error(`token id ${v} at ${offset + i} is outside the vocabulary [0, ${vocab})`);
      e.data[i] = v;
    }
    return e.tensor;
  };
  const checkLength = (ids: Int32Array | BigInt64Array, rows: number) => {
    if (ids.length !== rows * T) throw new Error(`expected ${rows}×${T} = ${rows * T} token ids, got ${ids.length}`);
  };
  const scalar32 = () => new ort.Tensor("float32", new Float32Array(1), []);
  /**
   * Run a session. Host state: every output fetched, in the session's order (the binding maps results by output
   * position), into `out` where given. Resident: no fetches at all (the binding would give the outputs the
   * locations of the wrong positions), every output returned.
   */
  const run = async (s: ort.InferenceSession, feeds: Feeds, out: Record<string, ort.Tensor | null>) => {
    if (resident) return s.run(feeds);
    const fetches: Record<string, ort.Tensor | null> = {};
    for (const n of s.outputNames) fetches[n] = out[n] ?? null;
    return s.run(feeds, fetches as ort.InferenceSession.FetchesType);
  };
  /** A scalar output: from the run's results, or the host buffer it was written into. */
  const scalarOut = (out: ort.InferenceSession.ReturnType, name: string, buffer: ort.Tensor) =>
    ((resident ? out[name]! : buffer).data as Float32Array)[0]!;
  const stateFeeds = (): Feeds => Object.fromEntries(state.cur);
  /** After an overflow of the scaled gradients: halve the scale (false, unchanged, where it is at LOSS_SCALE.min). */
  const backOff = (): boolean => {
    if (scale / 2 < LOSS_SCALE.min) return false;
    scale /= 2;
    goodSteps = 0;
    return true;
  };
  /** The loss scale input of the mixed-precision graphs (none in fp32). */
  const scaleFeed = (): Feeds => (mixed ? { [names.lossScale]: new ort.Tensor("float32", Float32Array.of(scale), []) } : {});

  const lossOut = scalar32(),
    normOut = scalar32();
  let stepSession: ort.InferenceSession | null = null;
  let applySession: ort.InferenceSession | null = null;
  let gradSession: ort.InferenceSession | null = null;
  const evalSessions = new Map<number, ort.InferenceSession>();

  // Gradient accumulation buffers: two sets of running sums and a zero set for the first micro-batch.
  let acc: { a: Map<string, ort.Tensor>; b: Map<string, ort.Tensor>; zero: Map<string, ort.Tensor> } | null = null;
  // The training graphs' dropout masks (none without dropout): drawn per step, or ones for gradients().
  let stepMasks: DropoutMasks | null = null,
    gradMasks: DropoutMasks | null = null;
  const getGradSession = async () => {
    if (!gradSession) {
      const g = compileGradient(architecture, config, { batch: micro, context: T }, registry, { precision });
      gradMasks = dropoutMasks(g.dropout);
      gradSession = await createSession(g.model, trainSess(g.outputs));
      const mk = () => new Map(specs.map((s) => [s.name, f32(new Float32Array(size(s)), s.shape)]));
      // Resident, the running sums are the session's own outputs: only the zeros live on the host.
      acc = { a: resident ? new Map() : mk(), b: resident ? new Map() : mk(), zero: mk() };
    }
    return gradSession;
  };
  /**
   * Σ over micro-batches of the gradients; returns the tensors holding the sums and the mean loss. Micro-batch
   * k's dropout masks are those of (dropoutKey, k); a null key: none.
   */
  const accumulate = async (ids: Int32Array | BigInt64Array, dropoutKey: number | null): Promise<{ loss: number; sums: Map<string, ort.Tensor> }> => {
    const s = await getGradSession();
    let src = acc!.zero,
      dst = acc!.a;
    let loss = 0;
    for (let k = 0; k < B / micro; k++) {
      const masks = !gradMasks!.active ? {} : dropoutKey === null ? gradMasks!.ones() : gradMasks!.draw(dropoutKey, k);
      const feeds: Feeds = { [names.ids]: idsTensor(ids, k * micro * T, micro), ...masks, ...scaleFeed() };
      for (const sp of specs) {
        feeds[sp.name] = state.cur.get(sp.name)!;
        feeds[names.gradAcc(sp.name)] = src.get(sp.name)!;
      }
      const fetches: Record<string, ort.Tensor | null> = { [names.loss]: lossOut };
      if (!resident) for (const sp of specs) fetches[names.grad(sp.name)] = dst.get(sp.name)!;
      const out = await run(s, feeds, fetches);
      loss += scalarOut(out, names.loss, lossOut);
      if (resident) {
        // The running sums are the outputs (on the device); the ones they replace are freed.
        if (src !== acc!.zero) disposeAll(src.values());
        src = new Map(specs.map((sp) => [sp.name, out[names.grad(sp.name)]!]));
        continue;
      }
      src = dst;
      dst = dst === acc!.a ? acc!.b : acc!.a;
    }
    return { loss: loss / (B / micro), sums: src };
  };

  // Evaluation sessions are made per batch size on first use; an eval-only engine compiles nothing else.
  if (!options.evalOnly && micro === B) {
    const g = compileTrainStep(architecture, config, { batch: B, context: T }, opt, registry, { precision });
    stepMasks = dropoutMasks(g.dropout);
    stepSession = await createSession(g.model, trainSess(g.outputs));
  } else if (!options.evalOnly) {
    const g = compileApply(architecture, config, opt, registry, { precision });
    applySession = await createSession(g.model, trainSess(g.outputs));
    await getGradSession();
  }

  const paramNames = specs.map((s) => s.name);
  /** The optimizer's scalar inputs of a step (optimizerScalars), the per-parameter LR factors checked. */
  const optimizerFeeds = (lr: number, stepNumber: number, scales: ArrayLike<number> | undefined): Feeds => {
    if (!opt.perParamLr && scales !== undefined) throw new Error("lrScales needs an engine created with perParamLr");
    if (scales !== undefined) {
      if (scales.length !== specs.length) throw new Error(`lrScales has ${scales.length} factors for ${specs.length} parameters`);
      for (let i = 0; i < specs.length; i++) {
        const f = scales[i]!;
        if (!(Number.isFinite(f) && f >= 0)) throw new Error(`lrScales[${i}] (${specs[i]!.name}) must be a finite number ≥ 0, got ${f}`);
      }
    }
    const values = optimizerScalars(specs, opt, lr, stepNumber, scales);
    return Object.fromEntries(
      Object.entries(values).map(([n, v]) => [n, new ort.Tensor("float32", v, opt.perParamLr && n !== names.bc2Sqrt ? [specs.length] : [])]),
    );
  };
  const pick = (prefix: (n: string) => string) => new Map(paramNames.map((n) => [n, state.host(prefix(n))]));
  let released = false;
  const alive = () => {
    if (released) throw new Error("engine released");
  };

  return {
    paramNames,
    optimizer: opt,
    shape: { batch: B, context: T, microBatch: micro },
    precision,
    lossScale: () => ({ scale, goodSteps }),
    resident,
    sync: () => state.sync(),
    params: () => pick((n) => n),
    moments: () => ({ expAvg: pick(names.expAvg), expAvgSq: pick(names.expAvgSq) }),

    async step(ids, lr, stepNumber, stepOptions = {}) {
      alive();
      if (options.evalOnly) throw new Error("this engine was created with evalOnly: it does not train");
      checkLength(ids, B);
      if (!(stepNumber >= 1)) throw new Error(`step number ${stepNumber} must be ≥ 1 (the update count after this step)`);
      const lrFeeds = optimizerFeeds(lr, stepNumber, stepOptions.lrScales);
      const dropoutKey = stepOptions.dropoutKey ?? stepNumber;
      // The step writes the next buffers, which then become the state. In mixed precision a non-finite gradient
      // norm with a finite loss is an overflow of the scaled gradients: the state stays, and the step is repeated
      // at half the scale. Any other non-finite value is the trainer's to judge (its numeric guards), as in fp32.
      for (;;) {
        let loss: number, out: ort.InferenceSession.ReturnType;
        let sums: Map<string, ort.Tensor> | null = null;
        if (stepSession) {
          const masks = stepMasks!.active ? stepMasks!.draw(dropoutKey, 0) : {};
          const feeds = { ...stateFeeds(), [names.ids]: idsTensor(ids, 0, B), ...lrFeeds, ...masks, ...scaleFeed() };
          out = await run(stepSession, feeds, { [names.loss]: lossOut, [names.gradNorm]: normOut, ...state.fetches(stepSession) });
          loss = scalarOut(out, names.loss, lossOut);
        } else {
          const r = await accumulate(ids, dropoutKey);
          loss = r.loss;
          sums = r.sums;
          const feeds: Feeds = {
            ...stateFeeds(),
            ...lrFeeds,
            [names.microBatches]: new ort.Tensor("float32", Float32Array.of(B / micro), []),
            ...scaleFeed(),
          };
          for (const sp of specs) feeds[names.grad(sp.name)] = r.sums.get(sp.name)!;
          out = await run(applySession!, feeds, { [names.gradNorm]: normOut, ...state.fetches(applySession!) });
        }
        if (resident && sums) disposeAll(sums.values());
        const gradNorm = scalarOut(out, names.gradNorm, normOut);
        if (mixed && !Number.isFinite(gradNorm) && Number.isFinite(loss)) {
          if (!backOff()) throw new Error(`mixed precision: the gradients overflow float16 even at loss scale ${scale} (a diverged model?)`);
          state.discard(out);
          continue;
        }
        state.commit(out);
        if (mixed && ++goodSteps >= interval) {
          if (scale * 2 <= LOSS_SCALE.max) scale *= 2;
          goodSteps = 0;
        }
        return { loss, gradNorm };
      }
    },

    async evalLoss(ids) {
      alive();
      if (ids.length === 0 || ids.length % T !== 0) throw new Error(`evalLoss needs whole rows of ${T} tokens, got ${ids.length} ids`);
      const rows = ids.length / T;
      let s = evalSessions.get(rows);
      if (!s) {
        s = await createSession(compileEval(architecture, config, { batch: rows, context: T }, registry).model, sess);
        evalSessions.set(rows, s);
      }
      const feeds: Feeds = { [names.ids]: idsTensor(ids, 0, rows) };
      for (const sp of specs) feeds[sp.name] = state.cur.get(sp.name)!;
      const out = await run(s, feeds, { [names.loss]: null });
      return Number((out[names.loss]!.data as Float32Array)[0]);
    },

    async gradients(ids, gradOptions = {}) {
      alive();
      checkLength(ids, B);
      for (;;) {
        const { loss, sums } = await accumulate(ids, gradOptions.dropoutKey ?? null);
        const k = (B / micro) * scale;
        const host = resident ? await download(sums) : new Map([...sums].map(([n, t]) => [n, t.data as Float32Array]));
        if (resident) disposeAll(sums.values());
        const grads = new Map(
          specs.map((s) => {
            const src = host.get(s.name)!;
            return [s.name, k === 1 ? Float32Array.from(src) : src.map((x) => x / k)];
          }),
        );
        if (mixed && Number.isFinite(loss) && [...grads.values()].some((g) => !g.every(Number.isFinite)) && backOff()) continue;
        return { loss, grads };
      }
    },

    async release() {
      if (released) return;
      released = true;
      state.release();
      for (const s of [stepSession, applySession, gradSession, ...evalSessions.values(), ...downloads.values()]) if (s) await s.release();
    },
  };
}

import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import {
  canonicalPath,
  createDefaultRegistry,
  detachedState,
  globalStepOf,
  inMemory,
  isLoaded,
  lockCheckpoint,
  PRECISIONS,
  saveTrainingState,
  STATE_FILE,
  streamKey,
  Tensor,
  type AdamWState,
  type CheckpointLock,
  type LazyTensor,
  type LrScheduleSpec,
  type Precision,
  type Progress,
  type Registry,
  type TrainingSettings,
  type TrainingState,
} from "@staged/core";
import { createLrSchedule, flopsPerToken, hasParamLrScales, lrScheduleKinds, paramLrScale } from "@staged/scheduler";
import { brownSplitOf, prepareData, readTokens, requireBlock, type PreparedData } from "./data/corpus.js";
import { createSampler, evalBlockCount, SAMPLER_KINDS, type Sampler, type SamplerKind } from "./data/sampler.js";
import { checkTokenizerFits, loadHfTokenizer, tokenizerOf, type TextTokenizer } from "./data/tokenizer.js";
import { createEngine, DEVICES, type Device, type EngineOptions, type StepOptions } from "./engine.js";
import { formatMetrics, METRICS_FILE, parseMetrics, readMetrics, type MetricsRecord } from "@staged/scheduler";

/** What the trainer needs of a compiled engine (see ./engine.ts). */
export interface TrainEngine {
  readonly paramNames: readonly string[];
  step(ids: Int32Array, lr: number, stepNumber: number, options?: StepOptions): Promise<{ loss: number; gradNorm: number }>;
  /** Mean next-token loss over the predictions inside any whole number of T-token rows. */
  evalLoss(ids: Int32Array): Promise<number>;
  params(): Map<string, Float32Array>;
  moments(): { expAvg: Map<string, Float32Array>; expAvgSq: Map<string, Float32Array> };
  /** Brings a resident state to the host before params() and moments() (engine.ts); absent: always there. */
  sync?(): Promise<void>;
  /** Mixed precision's loss scale now (engine.ts; an engine without one trains in fp32). */
  lossScale?(): { scale: number; goodSteps: number };
  release(): Promise<void>;
}

/** What an EngineFactory is given: the engine's options (./engine.js) but the profile. */
export type TrainEngineOptions = Omit<EngineOptions, "profile">;

/** Builds an engine; the default is `createEngine` of ./engine.js. */
export type EngineFactory = (
  architecture: string,
  config: Record<string, unknown>,
  weights: Map<string, Float32Array>,
  moments: { expAvg?: Map<string, Float32Array>; expAvgSq?: Map<string, Float32Array> } | undefined,
  options: TrainEngineOptions,
) => Promise<TrainEngine>;

export const defaultEngineFactory: EngineFactory = createEngine;

export const DEFAULT_BATCH = 8;
export const DEFAULT_CLIP = 1.0;
export const DEFAULT_EVAL_BLOCKS = 64;
export const DEFAULT_SCHEDULE = "constant";

export interface TrainOptions {
  /**
   * `brown` (Brown corpus: train split, validation split held out), a `.txt` file, or a token file (`.bin`: uint16 ids, `.u32.bin`: uint32; see readTokenFile).
   * Default: the data the state was last trained on (state.training.data).
   */
  data?: string | undefined;
  /** Validation data; default: the Brown validation split for `brown`, else the last 5% of `data` (≥ one block). */
  valData?: string | undefined;
  /** A tokenizer.json to use (and store in the checkpoint) instead of the state's tokenizer. */
  tokenizer?: string | undefined;
  /** Steps to run now (≥ 1). */
  steps: number;
  // batch, microBatch, context, evalEvery, evalBlocks, data and valData left undefined take the values stored
  // in state.training by the last call (so a resumed or grown run keeps them), else the defaults below; the
  // values used are stored in the returned state.
  /** Blocks per step (default 8). */
  batch?: number | undefined;
  /** Blocks per micro-batch (gradient accumulation); must divide batch. Default: the whole batch. */
  microBatch?: number | undefined;
  /** The step's arithmetic (@staged/core's PRECISIONS: fp32, mixed; default fp32; stored as training.precision). */
  precision?: Precision | undefined;
  /** Tokens per block (default: the model's n_positions; at most n_positions). */
  context?: number | undefined;
  // Options below left undefined keep the value stored in the state (or the default on a fresh state).
  /** Peak learning rate (stored as schedule.peakLr and optimizer.lr). */
  lr?: number | undefined;
  /**
   * LR schedule kind: one of @staged/scheduler's (constant, linear, cosine, wsd, restart-linear; default constant) or an
   * lrSchedule plugin of `registry`.
   */
  schedule?: string | undefined;
  /** Linear warmup steps (default 0). */
  warmup?: number | undefined;
  /** Schedule length; default progress.step + steps, see {@link resolveSchedule}. */
  totalSteps?: number | undefined;
  /** Final LR of decaying schedules (default 0). */
  minLr?: number | undefined;
  betas?: [number, number] | undefined;
  eps?: number | undefined;
  weightDecay?: number | undefined;
  /** Adam's bias correction (default: the state's, else on; stored as optimizer.biasCorrection). */
  biasCorrection?: boolean | undefined;
  /** Global gradient-norm clip; null disables it (default: the state's, else 1.0; stored as optimizer.clip). */
  clip?: number | null | undefined;
  /** Batch sampler (default: the state's, else random; stored as progress.sampler). */
  sampler?: SamplerKind | undefined;
  /** Sampler seed (stored as progress.samplerSeed). */
  seed?: number | undefined;
  /** Compute the validation loss every K steps (0: only after the last step). */
  evalEvery?: number | undefined;
  /** Validation blocks evaluated each time (the first K blocks of the validation stream; default 64). */
  evalBlocks?: number | undefined;
  /** Save a checkpoint every K steps (0: only at the end). */
  saveEvery?: number | undefined;
  /**
   * Also keep a snapshot every K updates (progress.globalStep a multiple of K), as a sibling directory
   * `<saveDir>.step-<globalStep>` that later saves never replace (0 or absent: none).
   */
  keepEvery?: number | undefined;
  /**
   * Checkpoint directory, held under its write lock for the whole call; default the directory the state was
   * loaded from; null: nothing is saved. A state not loaded from a directory (fresh, or derived by growth)
   * needs one of the two: it is never saved over the checkpoint it was derived from.
   */
  saveDir?: string | null | undefined;
  device?: Device | undefined;
  threads?: number | undefined;
  /** Engine builder (tests substitute their own). */
  engineFactory?: EngineFactory | undefined;
  /**
   * Stop early and keep the work (Ctrl-C in the CLI): once aborted, the step in progress finishes, nothing more is
   * evaluated, the state is saved (with saveDir) and the call returns with `interrupted: true`. Aborted before the
   * first step: no step runs and nothing is saved.
   */
  signal?: AbortSignal | undefined;
  /**
   * Where the state's architecture plugin and its schedule's kind (an lrSchedule plugin; @staged/scheduler's built-in
   * kinds are known without one) are found (default: createDefaultRegistry()); plugins of your own train through it.
   */
  registry?: Registry | undefined;
}

export interface StepInfo {
  /** progress.step after this step. */
  step: number;
  /** 1-based index of the step within this invocation, and the number of steps to run. */
  index: number;
  steps: number;
  loss: number;
  gradNorm: number;
  lr: number;
  tokens: number;
  flops: number;
  /** Training throughput of this invocation so far (sampling + step time only). */
  tokensPerSecond: number;
  /** Seconds spent in steps so far in this invocation. */
  stepSeconds: number;
}

export interface EvalInfo {
  step: number;
  valLoss: number;
  blocks: number;
  /** progress.globalStep, tokensSeen and flopsSeen after the step the evaluation follows. */
  globalStep: number;
  tokens: number;
  flops: number;
}
export interface SaveInfo {
  step: number;
  dir: string;
}

export interface TrainCallbacks {
  onStep?(info: StepInfo): void | Promise<void>;
  /** Returning "stop" ends the call after this step (the state is saved as at the last step). */
  onEval?(info: EvalInfo): void | "stop" | Promise<void | "stop">;
  onSave?(info: SaveInfo): void | Promise<void>;
  /** Called once, after the data is read and the engine built, just before the first step. */
  onStart?(info: { data: PreparedData; schedule: LrScheduleSpec; context: number; batch: number; setupSeconds: number }): void | Promise<void>;
}

export interface TrainResult {
  /** progress.step at the end. */
  step: number;
  /** The last step's training loss. */
  loss: number;
  /** Every step's training loss of this invocation, in order. */
  losses: number[];
  /** The last validation loss computed (null if there was none). */
  valLoss: number | null;
  /** Tokens per second over the steps themselves (graph building, session creation, evaluation and saving excluded). */
  tokensPerSecond: number;
  /** Totals seen by the state (progress.tokensSeen, progress.flopsSeen). */
  tokens: number;
  flops: number;
  /** Tokens and FLOPs of this invocation. */
  runTokens: number;
  runFlops: number;
  /** Wall-clock seconds of the whole call, and of the steps alone. */
  seconds: number;
  stepSeconds: number;
  /** Seconds spent reading data and building the engine. */
  setupSeconds: number;
  /** The metrics records of this invocation. */
  metrics: MetricsRecord[];
  schedule: LrScheduleSpec;
  /** Where checkpoints went (null when nothing was saved). */
  saveDir: string | null;
  /** Stopped by `signal` before `steps` steps (the state then holds the steps done, saved with saveDir). */
  interrupted: boolean;
}

const isPosInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 1;
const isNonNegInt = (v: unknown): v is number => typeof v === "number" && Number.isInteger(v) && v >= 0;
const isNonNeg = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v) && v >= 0;

/** Where a state's fields are, for messages: its directory's training_state.json, or "the state" for one built in memory. */
const stateFileOf = (state: TrainingState): string => {
  return isLoaded(state) ? join(state.source, STATE_FILE) : "the state";
};

function check(ok: boolean, message: string): void {
  if (!ok) throw new Error(message);
}

/** Validate the options that do not depend on the data. */
function validate(state: TrainingState, o: TrainOptions): TrainingSettings & { data: string } {
  check(isPosInt(o.steps), `steps must be a positive integer, got ${o.steps}`);
  const stored = state.training;
  const batch = o.batch ?? stored?.batch ?? DEFAULT_BATCH;
  check(isPosInt(batch), `batch must be a positive integer, got ${batch}`);
  // A stored micro-batch is kept only while it still divides the batch.
  const microBatch = o.microBatch ?? (stored?.microBatch !== undefined && batch % stored.microBatch === 0 ? stored.microBatch : undefined);
  if (microBatch !== undefined) {
    check(
      isPosInt(microBatch) && batch % microBatch === 0,
      `micro-batch must be a positive integer that divides the batch ${batch}, got ${microBatch}`,
    );
  }
  const precision = o.precision ?? stored?.precision;
  if (precision !== undefined)
    check(PRECISIONS.includes(precision), `precision must be one of ${PRECISIONS.join(", ")}, got ${JSON.stringify(precision)}`);
  const data = o.data ?? stored?.data;
  check(typeof data === "string" && data !== "", "no training data: name it (data: brown, a .txt or a .bin file); this checkpoint stores none");
  // The data a checkpoint names is read only when it is what --data takes (a checkpoint from elsewhere must not pick
  // an arbitrary file of this machine to train on, and so copy it into the weights); anything else must be named.
  for (const [key, value] of [
    ["data", o.data === undefined ? stored?.data : undefined],
    ["valData", o.valData === undefined && o.data === undefined ? stored?.valData : undefined],
  ] as const) {
    if (value !== undefined) {
      check(
        brownSplitOf(value) !== null || /\.(txt|bin)$/i.test(value),
        `the checkpoint's training_state.json names training.${key} ${JSON.stringify(value)}, which is not brown, a .txt or a .bin file: ` +
          `give the ${key === "data" ? "training" : "validation"} data yourself to use it`,
      );
    }
  }
  const context = o.context ?? stored?.context ?? state.shape.context;
  check(Number.isInteger(context) && context >= 2, `context must be an integer ≥ 2, got ${context}`);
  check(context <= state.shape.context, `context ${context} is above the model's n_positions ${state.shape.context}`);
  if (o.lr !== undefined) check(isNonNeg(o.lr) && o.lr > 0, `lr must be a positive number, got ${o.lr}`);
  if (o.warmup !== undefined) check(isNonNegInt(o.warmup), `warmup must be a non-negative integer, got ${o.warmup}`);
  if (o.totalSteps !== undefined) check(isPosInt(o.totalSteps), `total steps must be a positive integer, got ${o.totalSteps}`);
  if (o.saveDir !== undefined && o.saveDir !== null)
    check(typeof o.saveDir === "string" && o.saveDir !== "", `saveDir must be a directory path or null, got ${JSON.stringify(o.saveDir)}`);
  check(
    o.saveDir !== undefined || isLoaded(state),
    "this state was not loaded from a directory (it is fresh, or derived by growth): give saveDir, the directory to save it to, or saveDir: null to train without saving",
  );
  if (o.betas !== undefined) {
    check(
      Array.isArray(o.betas) && o.betas.length === 2 && o.betas.every((b) => Number.isFinite(b) && b >= 0 && b < 1),
      `betas must be two numbers in [0, 1), got ${JSON.stringify(o.betas)}`,
    );
  }
  if (o.eps !== undefined) check(isNonNeg(o.eps) && o.eps > 0, `eps must be a positive number, got ${o.eps}`);
  if (o.biasCorrection !== undefined)
    check(typeof o.biasCorrection === "boolean", `biasCorrection must be true or false, got ${JSON.stringify(o.biasCorrection)}`);
  if (o.weightDecay !== undefined) check(isNonNeg(o.weightDecay), `weight decay must be a number ≥ 0, got ${o.weightDecay}`);
  if (o.clip !== undefined && o.clip !== null)
    check(isNonNeg(o.clip) && o.clip > 0, `clip must be a positive number (or null for none), got ${o.clip}`);
  if (o.sampler !== undefined)
    check(SAMPLER_KINDS.includes(o.sampler), `sampler must be ${SAMPLER_KINDS.join(" or ")}, got ${JSON.stringify(o.sampler)}`);
  if (o.seed !== undefined) check(isNonNegInt(o.seed) && o.seed <= 0xffffffff, `seed must be an integer in [0, 2^32), got ${o.seed}`);
  if (o.evalEvery !== undefined) check(isNonNegInt(o.evalEvery), `eval-every must be a non-negative integer, got ${o.evalEvery}`);
  if (o.evalBlocks !== undefined) check(isPosInt(o.evalBlocks), `eval-blocks must be a positive integer, got ${o.evalBlocks}`);
  if (o.saveEvery !== undefined) check(isNonNegInt(o.saveEvery), `save-every must be a non-negative integer, got ${o.saveEvery}`);
  if (o.keepEvery !== undefined) check(isNonNegInt(o.keepEvery), `keep-every must be a non-negative integer, got ${o.keepEvery}`);
  if (o.device !== undefined) check(DEVICES.includes(o.device), `device must be one of ${DEVICES.join(", ")}, got ${JSON.stringify(o.device)}`);
  if (o.threads !== undefined) check(isPosInt(o.threads), `threads must be a positive integer, got ${o.threads}`);
  // What the state itself says, checked here for a state built in memory (a loaded one was checked as it was read).
  const where = stateFileOf(state);
  check(isNonNegInt(state.optimizer.step), `${where}: optimizer.step must be an integer ≥ 0, got ${state.optimizer.step}`);
  const storedSampler = state.progress.sampler;
  if (o.sampler === undefined && storedSampler !== undefined) {
    check(
      SAMPLER_KINDS.includes(storedSampler as SamplerKind),
      `${where}: progress.sampler must be ${SAMPLER_KINDS.join(" or ")}, got ${JSON.stringify(storedSampler)}`,
    );
  }
  const valData = o.valData ?? (o.data === undefined ? stored?.valData : undefined);
  return {
    batch,
    context,
    data: data!,
    evalEvery: o.evalEvery ?? stored?.evalEvery ?? 0,
    evalBlocks: o.evalBlocks ?? stored?.evalBlocks ?? DEFAULT_EVAL_BLOCKS,
    ...(microBatch === undefined ? {} : { microBatch }),
    ...(precision === undefined ? {} : { precision }),
    ...(valData === undefined ? {} : { valData }),
  };
}

/**
 * The LR schedule a call runs, from the stored one and the options. With no stored schedule (a fresh or
 * bare checkpoint): kind `schedule` (default constant), peak `lr` (default the state's optimizer.lr),
 * `warmup` (default 0), `minLr`, and totalSteps = `totalSteps` or else progress.step + steps. With a stored
 * schedule: it is kept (restarts included), each option given replaces its field, and when no `totalSteps`
 * is given and the run goes past the stored totalSteps, totalSteps is extended to progress.step + steps (so a
 * decaying schedule never sits at its final LR for the extra steps). To split a decaying schedule over
 * several calls exactly as one call would run it, give `totalSteps` in the first call.
 */
export function resolveSchedule(
  state: TrainingState,
  o: Pick<TrainOptions, "lr" | "schedule" | "warmup" | "totalSteps" | "minLr" | "steps" | "registry">,
): LrScheduleSpec {
  const end = state.progress.step + o.steps;
  const stored = state.schedule;
  const spec: LrScheduleSpec = stored
    ? { ...stored, restarts: [...stored.restarts] }
    : { kind: DEFAULT_SCHEDULE, peakLr: state.optimizer.lr, warmupSteps: 0, totalSteps: end, restarts: [] };
  if (o.schedule !== undefined) spec.kind = o.schedule;
  if (o.lr !== undefined) spec.peakLr = o.lr;
  if (o.warmup !== undefined) spec.warmupSteps = o.warmup;
  if (o.minLr !== undefined) spec.minLr = o.minLr;
  if (o.totalSteps !== undefined) {
    check(
      o.totalSteps >= end,
      `total steps ${o.totalSteps} ends the schedule before this run does (step ${end}: ` +
        `${state.progress.step} done + ${o.steps}); give at least ${end}, or leave it out`,
    );
    spec.totalSteps = o.totalSteps;
  } else if (end > spec.totalSteps) spec.totalSteps = end;
  check(
    spec.warmupSteps <= spec.totalSteps,
    `warmup ${spec.warmupSteps} is longer than the schedule (${spec.totalSteps} steps): ` +
      "the learning rate would never reach its peak; shorten it or give a longer total steps",
  );
  try {
    createLrSchedule(spec, o.registry); // validates
  } catch (e) {
    // The stored schedule is at fault when its kind is the unknown one, or when no option changed it.
    const fromState =
      stored !== null &&
      (lrScheduleKinds(o.registry).includes(spec.kind)
        ? [o.schedule, o.lr, o.warmup, o.minLr, o.totalSteps].every((v) => v === undefined)
        : o.schedule === undefined);
    if (fromState) throw new Error(`${stateFileOf(state)}: schedule: ${(e as Error).message}`, { cause: e });
    throw e;
  }
  return spec;
}

async function readFloat(t: LazyTensor): Promise<Float32Array> {
  const v = await t.read();
  // The engine copies what it is given into buffers of its own.
  return v.data instanceof Float32Array ? v.data : Float32Array.from(v.data as ArrayLike<number>);
}

async function readAll(map: Map<string, LazyTensor>): Promise<Map<string, Float32Array>> {
  const out = new Map<string, Float32Array>();
  for (const [name, t] of map) out.set(name, await readFloat(t));
  return out;
}

/**
 * Mean next-token loss over `blocks` consecutive non-overlapping blocks of `context` tokens taken from the
 * start of `tokens`, `batch` blocks per evaluation; a last partial batch of r blocks is evaluated as r rows
 * (the engine compiles an evaluation graph for that row count). Every block has context − 1 predictions,
 * so the block-weighted mean of the batch means is the mean over all predictions.
 */
export async function evaluateBlocks(
  engine: Pick<TrainEngine, "evalLoss">,
  tokens: Int32Array,
  batch: number,
  context: number,
  blocks: number,
  onBatch?: (blocksDone: number, blocks: number) => void,
): Promise<number> {
  const B = batch,
    T = context;
  if (!isPosInt(blocks)) throw new Error(`no evaluation blocks: need at least ${T} tokens, have ${tokens.length}`);
  if (blocks * T > tokens.length) throw new Error(`${blocks} blocks of ${T} tokens need ${blocks * T} tokens, have ${tokens.length}`);
  let sum = 0;
  for (let first = 0; first < blocks; first += B) {
    const rows = Math.min(B, blocks - first);
    sum += (await engine.evalLoss(tokens.subarray(first * T, (first + rows) * T))) * rows;
    onBatch?.(first + rows, blocks);
  }
  return sum / blocks;
}

/**
 * The metrics history a run continues: the state's own, else the source directory's. Earlier stages' lines
 * are kept whole (a growth may continue at an earlier step); the current stage's up to progress.step.
 */
async function metricsHistory(state: TrainingState): Promise<MetricsRecord[]> {
  const inFiles = state.files?.get(METRICS_FILE);
  const source = sourceOf(state);
  const all = inFiles
    ? parseMetrics(new TextDecoder().decode(inFiles), source ? join(source, METRICS_FILE) : `the state's ${METRICS_FILE}`)
    : source
      ? await readMetrics(source)
      : [];
  const stage = state.progress.stages.length;
  const now = globalStepOf(state.progress);
  return all.filter((r) => (r.stage ?? 0) < stage || (r.globalStep ?? r.step) <= now);
}

const sourceOf = (state: TrainingState): string | undefined => (isLoaded(state) ? state.source : undefined);

async function tokenizerFor(
  state: TrainingState,
  o: TrainOptions,
): Promise<{ tokenizer: TextTokenizer; files?: Map<string, Uint8Array>; spec: TrainingState["tokenizer"] }> {
  if (o.tokenizer === undefined) return { tokenizer: await tokenizerOf(state.tokenizer, state.files, sourceOf(state)), spec: state.tokenizer };
  const { tokenizer, bytes } = await loadHfTokenizer(o.tokenizer);
  checkTokenizerFits(tokenizer, state.shape.vocab, o.tokenizer);
  const files = new Map(state.files ?? []);
  files.set("tokenizer.json", bytes);
  return { tokenizer, files, spec: { kind: "hf", file: "tokenizer.json" } };
}

/**
 * Train `state` for `options.steps` steps and return the new state with the run's result. Resumes where the
 * state's progress says: the schedule step (progress.step) drives the LR and the sampler, the optimizer step
 * drives AdamW's bias correction, the sampler seed is progress.samplerSeed, and the dropout masks (where the
 * config has dropout) are keyed by that seed and progress.globalStep; so N steps in one call give the
 * same parameters as N/2 + N/2 with a save and reload in between (given the same options, and `totalSteps`
 * for decaying schedules, see {@link resolveSchedule}).
 *
 * Checkpoints (when a directory is known) are written atomically every `saveEvery` steps and at the end; each
 * carries `metrics.jsonl` (one line per step of the state's history). All input is checked, and the engine
 * built, before anything is written.
 */
export async function train(
  state: TrainingState,
  options: TrainOptions,
  callbacks: TrainCallbacks = {},
): Promise<{ state: TrainingState; result: TrainResult }> {
  const t0 = performance.now();
  const settings = validate(state, options);
  const schedule = resolveSchedule(state, options);
  const saveDir = options.saveDir === undefined ? sourceOf(state)! : options.saveDir;
  if (saveDir === null) return trainLocked(state, options, callbacks, { t0, settings, schedule, saveDir, lock: null });
  // One writer per checkpoint: held from here to the last save, so no other process trains or saves it meanwhile.
  const target = await canonicalPath(saveDir);
  await mkdir(dirname(target), { recursive: true });
  // A state loaded with the write lock of this directory brings it (see loadTrainingState's `lock`).
  const given = (state as { lock?: CheckpointLock }).lock;
  const own = given?.mode === "exclusive" && given.held && given.path === target ? given : null;
  const lock = own ?? (await lockCheckpoint(target, "exclusive"));
  try {
    return await trainLocked(state, options, callbacks, { t0, settings, schedule, saveDir, lock });
  } finally {
    if (!own) await lock.release();
  }
}

interface Prepared {
  t0: number;
  settings: TrainingSettings & { data: string };
  schedule: LrScheduleSpec;
  saveDir: string | null;
  lock: CheckpointLock | null;
}

/** What a call reads besides the state: the tokenizer (and the files it brings), the data, the sampler and the validation blocks. */
interface Inputs {
  tokenizerFiles: Map<string, Uint8Array> | undefined;
  tokenizerSpec: TrainingState["tokenizer"];
  data: PreparedData;
  seed: number;
  samplerKind: SamplerKind;
  sampler: Sampler;
  valBlocks: number;
}

/** What the steps of a call change as they run, and what its result reports. */
interface Tally {
  /** Every step's training loss, its metrics records, the last validation loss, and the seconds spent in steps. */
  losses: number[];
  records: MetricsRecord[];
  valLoss: number | null;
  stepSeconds: number;
}

/** A call under way: what its steps, its saves and its result share. */
interface Loop {
  state: TrainingState;
  settings: TrainingSettings & { data: string };
  schedule: LrScheduleSpec;
  inputs: Inputs;
  engine: TrainEngine;
  optimizer: AdamWState;
  progress: Progress & { samplerSeed: number; sampler: string; globalStep: number };
  tally: Tally;
  history: MetricsRecord[];
  /** FLOPs per token of the model at the call's context. */
  fpt: number;
  saveDir: string | null;
  lock: CheckpointLock | null;
}

/** The tokenizer, the data, the sampler (kind and seed: the options', else the state's) and the validation block count of a call. */
async function readInputs(state: TrainingState, o: TrainOptions, settings: TrainingSettings & { data: string }): Promise<Inputs> {
  const { batch, context } = settings;
  const { tokenizer, files: tokenizerFiles, spec: tokenizerSpec } = await tokenizerFor(state, o);
  const data = await prepareData({ data: settings.data, valData: settings.valData, tokenizer, vocab: state.shape.vocab, context });
  const seed = o.seed ?? state.progress.samplerSeed;
  const samplerKind = o.sampler ?? (state.progress.sampler as SamplerKind | undefined) ?? "random";
  const sampler = createSampler(samplerKind, data.train.tokens, { batch, context, seed });
  const valBlocks = evalBlockCount(data.validation.tokens.length, context, settings.evalBlocks);
  return { tokenizerFiles, tokenizerSpec, data, seed, samplerKind, sampler, valBlocks };
}

const hasMoments = (state: TrainingState): boolean => Boolean(state.optimizer.expAvg && state.optimizer.expAvgSq);

/** The optimizer settings of a call: each option given replaces the state's (clip defaults to DEFAULT_CLIP); the peak LR is the schedule's. */
function optimizerFor(state: TrainingState, o: TrainOptions, schedule: LrScheduleSpec): AdamWState {
  const biasCorrection = o.biasCorrection ?? state.optimizer.biasCorrection;
  return {
    ...state.optimizer,
    lr: schedule.peakLr,
    betas: o.betas ?? state.optimizer.betas,
    eps: o.eps ?? state.optimizer.eps,
    weightDecay: o.weightDecay ?? state.optimizer.weightDecay,
    clip: o.clip !== undefined ? o.clip : state.optimizer.clip !== undefined ? state.optimizer.clip : DEFAULT_CLIP,
    ...(biasCorrection === undefined ? {} : { biasCorrection }),
    // Without moments the bias correction starts over.
    step: hasMoments(state) ? state.optimizer.step : 0,
  };
}

/** The engine of a call, holding the state's weights (and its moments, when it has both). */
async function buildEngine(
  state: TrainingState,
  o: TrainOptions,
  settings: TrainingSettings,
  optimizer: AdamWState,
  perParamLr: boolean,
): Promise<TrainEngine> {
  const weights = await readAll(state.params);
  const moments = hasMoments(state)
    ? { expAvg: await readAll(state.optimizer.expAvg!), expAvgSq: await readAll(state.optimizer.expAvgSq!) }
    : undefined;
  const factory = o.engineFactory ?? defaultEngineFactory;
  return factory(state.architecture, state.config, weights, moments, {
    device: o.device,
    threads: o.threads,
    batch: settings.batch,
    context: settings.context,
    microBatch: settings.microBatch,
    betas: optimizer.betas,
    eps: optimizer.eps,
    weightDecay: optimizer.weightDecay,
    clip: optimizer.clip,
    noDecay: optimizer.noDecay,
    ...(o.registry ? { registry: o.registry } : {}),
    ...(optimizer.biasCorrection === false ? { biasCorrection: false } : {}),
    ...(perParamLr ? { perParamLr: true } : {}),
    ...(settings.precision === "mixed" ? { precision: "mixed" as const, lossScale: state.optimizer.lossScale } : {}),
  });
}

/**
 * The engine's step options at a step: the per-parameter LR factors set by growths (ParamLrScale), by the role of each
 * of the engine's parameters; none (undefined) when the schedule has no factors.
 */
function lrScalesOf(
  state: TrainingState,
  engine: TrainEngine,
  registry: Registry | undefined,
  schedule: LrScheduleSpec,
): (step: number) => StepOptions | undefined {
  const scaleAt = hasParamLrScales(schedule) ? paramLrScale(schedule) : null;
  if (!scaleAt) return () => undefined;
  const roleOf = new Map(
    (registry ?? createDefaultRegistry())
      .get("architecture", state.architecture)
      .params(state.config)
      .map((s) => [s.name, s.role]),
  );
  const roles = engine.paramNames.map((n) => roleOf.get(n) ?? n);
  const lrScales = new Float64Array(roles.length);
  return (step) => {
    roles.forEach((r, i) => {
      lrScales[i] = scaleAt(step, r);
    });
    return { lrScales };
  };
}

/** The optimizer a checkpoint keeps: with the engine's loss scale in mixed precision, with none in fp32. */
const withLossScale = ({ lossScale: _s, ...optimizer }: AdamWState, engine: TrainEngine, settings: TrainingSettings): AdamWState =>
  settings.precision === "mixed" && engine.lossScale ? { ...optimizer, lossScale: engine.lossScale() } : optimizer;

/** snapshotOf, after a resident engine has brought its state to the host. */
async function snapshot(loop: Loop, copy: boolean): Promise<TrainingState> {
  await loop.engine.sync?.();
  return snapshotOf(loop, copy);
}

/** The state the engine holds now, on the host (`copy`: its arrays copied, for a state that outlives the engine), with the metrics so far. */
function snapshotOf(loop: Loop, copy: boolean): TrainingState {
  const { state, engine, optimizer, schedule, progress, inputs, settings } = loop;
  const shapes = new Map([...state.params].map(([n, t]) => [n, t.shape]));
  const wrap = (m: Map<string, Float32Array>) =>
    new Map([...m].map(([n, a]) => [n, inMemory(new Tensor("F32", shapes.get(n) ?? [a.length], copy ? a.slice() : a))]));
  const mom = engine.moments();
  const files = new Map(inputs.tokenizerFiles ?? state.files ?? []);
  files.set(METRICS_FILE, new TextEncoder().encode(formatMetrics([...loop.history, ...loop.tally.records])));
  const plain = detachedState(state);
  return {
    ...plain,
    params: wrap(engine.params()),
    optimizer: { ...withLossScale(optimizer, engine, settings), expAvg: wrap(mom.expAvg), expAvgSq: wrap(mom.expAvgSq) },
    schedule: { ...schedule, restarts: [...schedule.restarts] },
    progress: { ...progress, stages: [...progress.stages] },
    tokenizer: inputs.tokenizerSpec,
    files,
    training: settings,
  };
}

/** The call's saves: `save` over saveDir (once per step), `keep` a snapshot every keepEvery updates; `lastSaved` the step saved last (-1: none). */
function checkpointsOf(
  loop: Loop,
  o: TrainOptions,
  callbacks: TrainCallbacks,
): { save(): Promise<void>; keep(): Promise<void>; readonly lastSaved: number } {
  const { saveDir, lock, progress } = loop;
  let lastSaved = -1;
  const keepDir = (): string | null =>
    saveDir && o.keepEvery && progress.globalStep % o.keepEvery === 0 ? `${saveDir.replace(/[\\/]+$/, "")}.step-${progress.globalStep}` : null;
  return {
    get lastSaved() {
      return lastSaved;
    },
    async save() {
      if (!saveDir || lastSaved === progress.step) return;
      await saveTrainingState(saveDir, await snapshot(loop, false), {
        overwrite: true,
        ...(lock ? { lock } : {}),
        ...(o.registry ? { registry: o.registry } : {}),
      });
      lastSaved = progress.step;
      await callbacks.onSave?.({ step: progress.step, dir: saveDir });
    },
    async keep() {
      const dir = keepDir();
      if (!dir) return;
      // A snapshot is never replaced: a resumed run that passes the same step again keeps the first one.
      if (existsSync(dir)) return;
      await saveTrainingState(dir, await snapshot(loop, false), o.registry ? { registry: o.registry } : {});
      await callbacks.onSave?.({ step: progress.step, dir });
    },
  };
}

/** The error of a diverged step (its loss or gradient norm not finite), saying what the checkpoint keeps. */
function divergedError(loop: Loop, lastSaved: number, loss: number, gradNorm: number, lr: number): Error {
  const { saveDir, state, progress } = loop;
  const kept =
    saveDir === null
      ? "nothing was saved"
      : lastSaved >= 0
        ? `the checkpoint ${saveDir} keeps step ${lastSaved}, the last good one`
        : existsSync(saveDir)
          ? `the checkpoint ${saveDir} is unchanged (step ${state.progress.step})`
          : `nothing was saved to ${saveDir}`;
  return new Error(
    `step ${progress.step + 1}: the ${Number.isFinite(loss) ? `gradient norm is ${gradNorm}` : `training loss is ${loss}`} ` +
      `(learning rate ${lr.toExponential(2)}): training diverged and stopped; ${kept}`,
  );
}

/**
 * The call's steps: each samples a batch, takes the engine's step at the schedule's LR, counts it in the progress and the
 * metrics, evaluates (every evalEvery steps and after the last), reports, saves and keeps as asked. Returns whether
 * `signal` cut the call short.
 */
async function runSteps(
  loop: Loop,
  o: TrainOptions,
  callbacks: TrainCallbacks,
  lrAt: (step: number) => number,
  stepOptions: (step: number) => StepOptions | undefined,
  checkpoints: ReturnType<typeof checkpointsOf>,
): Promise<boolean> {
  const { engine, inputs, settings, optimizer, progress, tally, fpt } = loop;
  const { batch, context } = settings;
  let stop = false;
  const evaluateNow = async (): Promise<number> => {
    const v = await evaluateBlocks(engine, inputs.data.validation.tokens, batch, context, inputs.valBlocks);
    tally.valLoss = v;
    const info = {
      step: progress.step,
      valLoss: v,
      blocks: inputs.valBlocks,
      globalStep: progress.globalStep,
      tokens: progress.tokensSeen,
      flops: progress.flopsSeen,
    };
    if ((await callbacks.onEval?.(info)) === "stop") stop = true;
    return v;
  };
  let interrupted = false;
  const ids = new Int32Array(batch * context);
  for (let i = 1; i <= o.steps; i++) {
    if (o.signal?.aborted) {
      interrupted = true;
      break;
    }
    const ts = performance.now();
    inputs.sampler.batch(progress.step, ids);
    const lr = lrAt(progress.step);
    // Dropout masks keyed by the seed and the global step (which never repeats, and which a resumed run continues).
    const dropoutKey = streamKey(inputs.seed, progress.globalStep + 1);
    const { loss, gradNorm } = await engine.step(ids, lr, optimizer.step + 1, { ...stepOptions(progress.step), dropoutKey });
    tally.stepSeconds += (performance.now() - ts) / 1000;
    // A diverged step: its update (and every later one) is not finite; stop before anything is saved.
    if (!Number.isFinite(loss) || !Number.isFinite(gradNorm)) throw divergedError(loop, checkpoints.lastSaved, loss, gradNorm, lr);
    optimizer.step += 1;
    progress.step += 1;
    progress.globalStep += 1;
    progress.tokensSeen += batch * context;
    progress.flopsSeen += batch * context * fpt;
    tally.losses.push(loss);
    const record: MetricsRecord = {
      step: progress.step,
      globalStep: progress.globalStep,
      stage: progress.stages.length,
      tokens: progress.tokensSeen,
      flops: progress.flopsSeen,
      loss,
      lr,
    };
    // Interrupted: this step is kept (saved below), without the evaluation that would delay the stop.
    if (o.signal?.aborted && i < o.steps) interrupted = true;
    let last = i === o.steps || interrupted;
    if (((settings.evalEvery && progress.step % settings.evalEvery === 0) || last) && !interrupted) {
      record.valLoss = await evaluateNow();
      last ||= stop; // a callback ended the call here
    }
    tally.records.push(record);
    await callbacks.onStep?.({
      step: progress.step,
      index: i,
      steps: o.steps,
      loss,
      gradNorm,
      lr,
      tokens: progress.tokensSeen,
      flops: progress.flopsSeen,
      tokensPerSecond: (i * batch * context) / tally.stepSeconds,
      stepSeconds: tally.stepSeconds,
    });
    if (o.saveEvery && progress.step % o.saveEvery === 0 && !last) await checkpoints.save();
    await checkpoints.keep();
    if (last) break;
  }
  return interrupted;
}

/** The result of a call from its tally. */
function resultOf(loop: Loop, t0: number, setupSeconds: number, interrupted: boolean): TrainResult {
  const { progress, tally, settings, fpt, schedule, saveDir } = loop;
  const stepsRun = tally.losses.length;
  const runTokens = stepsRun * settings.batch * settings.context;
  return {
    step: progress.step,
    loss: tally.losses.at(-1) ?? NaN,
    losses: tally.losses,
    valLoss: tally.valLoss,
    tokensPerSecond: tally.stepSeconds > 0 ? runTokens / tally.stepSeconds : 0,
    tokens: progress.tokensSeen,
    flops: progress.flopsSeen,
    runTokens,
    runFlops: runTokens * fpt,
    seconds: (performance.now() - t0) / 1000,
    stepSeconds: tally.stepSeconds,
    setupSeconds,
    metrics: tally.records,
    schedule,
    saveDir: stepsRun > 0 ? saveDir : null,
    interrupted,
  };
}

/** `train` with its options checked, its schedule resolved and its checkpoint locked: read, build, step, save, report. */
async function trainLocked(
  state: TrainingState,
  o: TrainOptions,
  callbacks: TrainCallbacks,
  { t0, settings, schedule, saveDir, lock }: Prepared,
): Promise<{ state: TrainingState; result: TrainResult }> {
  const lrAt = createLrSchedule(schedule, o.registry);
  const inputs = await readInputs(state, o, settings);
  const fpt = flopsPerToken(state.shape, settings.context);
  const history = saveDir ? await metricsHistory(state) : [];
  const optimizer = optimizerFor(state, o, schedule);
  const engine = await buildEngine(state, o, settings, optimizer, hasParamLrScales(schedule));
  const stepOptions = lrScalesOf(state, engine, o.registry, schedule);
  const progress = {
    ...state.progress,
    samplerSeed: inputs.seed,
    sampler: inputs.samplerKind,
    stages: [...state.progress.stages],
    globalStep: globalStepOf(state.progress),
  };
  const loop: Loop = {
    state,
    settings,
    schedule,
    inputs,
    engine,
    optimizer,
    progress,
    history,
    fpt,
    saveDir,
    lock,
    tally: { losses: [], records: [], valLoss: null, stepSeconds: 0 },
  };
  const checkpoints = checkpointsOf(loop, o, callbacks);
  let final: TrainingState;
  let interrupted: boolean;
  const setupSeconds = (performance.now() - t0) / 1000;
  try {
    await callbacks.onStart?.({ data: inputs.data, schedule, context: settings.context, batch: settings.batch, setupSeconds });
    interrupted = await runSteps(loop, o, callbacks, lrAt, stepOptions, checkpoints);
    if (loop.tally.losses.length > 0) await checkpoints.save();
    final = await snapshot(loop, true);
  } finally {
    await engine.release();
  }
  return { state: final, result: resultOf(loop, t0, setupSeconds, interrupted) };
}

export interface EvaluateOptions {
  data: string;
  /**
   * Which stream of `data`: "validation" (default) reads it as `staged eval` does (for `brown`, the Brown
   * validation split; a file whole); "training-validation" is the validation stream `train` uses for the
   * same options (`valData` when given, the Brown split, else the held-out last 5% of a file), so a loss
   * measured here equals the trainer's validation loss.
   */
  stream?: "validation" | "training-validation" | undefined;
  /** With stream "training-validation": the validation data given to `train`. */
  valData?: string | undefined;
  context?: number | undefined;
  maxBlocks?: number | undefined;
  batch?: number | undefined;
  device?: Device | undefined;
  threads?: number | undefined;
  engineFactory?: EngineFactory | undefined;
  /** Where the state's architecture plugin is found (default: createDefaultRegistry()). */
  registry?: Registry | undefined;
  /** Called after each evaluation batch, for progress. */
  onBatch?: ((blocksDone: number, blocks: number) => void) | undefined;
}

export interface EvaluateResult {
  loss: number;
  tokens: number;
  blocks: number;
  context: number;
  data: string;
}

/**
 * Mean next-token loss of the state's model on `data` (for `brown`: the Brown validation split): consecutive
 * non-overlapping blocks of `context` tokens (a last partial block dropped), the first `maxBlocks` if given,
 * evaluated `batch` blocks at a time. `tokens` counts the tokens of the blocks evaluated.
 */
export async function evaluate(state: TrainingState, o: EvaluateOptions): Promise<EvaluateResult> {
  const context = o.context ?? state.shape.context;
  check(Number.isInteger(context) && context >= 2, `context must be an integer ≥ 2, got ${context}`);
  check(context <= state.shape.context, `context ${context} is above the model's n_positions ${state.shape.context}`);
  if (o.maxBlocks !== undefined) check(isPosInt(o.maxBlocks), `max-blocks must be a positive integer, got ${o.maxBlocks}`);
  const batch = o.batch ?? DEFAULT_BATCH;
  check(isPosInt(batch), `batch must be a positive integer, got ${batch}`);
  const tokenizer = await tokenizerOf(state.tokenizer, state.files, sourceOf(state));
  const stream =
    o.stream === "training-validation"
      ? (await prepareData({ data: o.data, valData: o.valData, tokenizer, vocab: state.shape.vocab, context })).validation
      : await readTokens(o.data, tokenizer, state.shape.vocab, "validation");
  requireBlock(stream, context);
  const blocks = evalBlockCount(stream.tokens.length, context, o.maxBlocks);
  const weights = await readAll(state.params);
  const engine = await (o.engineFactory ?? defaultEngineFactory)(state.architecture, state.config, weights, undefined, {
    device: o.device,
    threads: o.threads,
    batch: Math.min(batch, blocks),
    context,
    noDecay: state.optimizer.noDecay,
    evalOnly: true,
    ...(o.registry ? { registry: o.registry } : {}),
  });
  try {
    const loss = await evaluateBlocks(engine, stream.tokens, batch, context, blocks, o.onBatch);
    return { loss, tokens: blocks * context, blocks, context, data: stream.name };
  } finally {
    await engine.release();
  }
}

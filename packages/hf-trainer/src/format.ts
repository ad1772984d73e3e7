import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  DTYPE_SIZES,
  METRICS_FILE,
  TRAINER_FILES,
  parseMetrics,
  TRAINER_RNG_FILE,
  STATE_FILE,
  Tensor,
  writeModelFiles,
  type AdamWState,
  type CheckpointContents,
  type CheckpointDirectory,
  type CheckpointFormatPlugin,
  type DType,
  type LazyTensor,
  type LrScheduleSpec,
  type ModelToSave,
  type ParamSpec,
  type SaveOptions,
  type TensorEntry,
  type TrainingState,
  type WriteObserver,
} from "@staged/core";
import { createLrSchedule } from "@staged/scheduler";
import { PyDict, PyTuple, TorchFile, TorchTensor, pyRepr, writeTorchFile, type PyValue, type TorchWriteObserver } from "@staged/torch";
import { trainerGroups } from "./groups.js";
import { inferSchedule, loggedLrPoints, scheduleFits } from "./schedule.js";
import {
  GROWTH_KEY,
  SCHEDULE_KEY,
  formatTrainerState,
  growthEntry,
  growthsOf,
  loggedGrowths,
  recordedSchedule,
  parseTrainerState,
  type LoggedGrowth,
  type TrainerStateJson,
} from "./trainer-state.js";

/** The checkpoint format's name (TrainingState.foreign.format, SaveOptions.format, `staged convert --to`). */
export const HF_TRAINER_FORMAT = "hf-trainer";

/**
 * What a Trainer checkpoint holds that a TrainingState has no field for, kept in `foreign.records` so that a save
 * writes it back: growth carries it through.
 */
export interface TrainerRecords {
  /** trainer_state.json as read; a save writes it back with global_step, total_flos and log_history brought up to date. */
  trainerState: TrainerStateJson;
  /** optimizer.pt's param_groups without their `params`: the options Trainer's optimizer had (fused, foreach, …). */
  groups: PyDict[];
  /** The keys of one parameter's optimizer state, in the order torch wrote them. */
  stateKeys: string[];
  /** How the `step` of each parameter's state was stored: a 0-d tensor of this dtype, or a Python float. */
  stepStored: { dtype: DType } | "float";
  /** scheduler.pt's state dict (LambdaLR's), or null where the checkpoint has none. */
  scheduler: PyDict | null;
  /** Each group's base LR (the schedule's peak): the scheduler's base_lrs, else the group's initial_lr, else its lr. */
  baseLrs: number[];
  /** Group 0's LR at the steps Trainer recorded it: its log and the scheduler's last LR. */
  lrAt: Map<number, number>;
  /** optimizer.pt's and scheduler.pt's `.data/serialization_id` (written back, so an unchanged state writes the same files). */
  serializationIds: { optimizer: string | null; scheduler: string | null };
  /** The schedule found from those points (inferSchedule), at the base LR, or null. */
  schedule: LrScheduleSpec | null;
  /** Files copied byte for byte (training_args.bin, rng_state*.pth, scaler.pt): pickles no weights-only reader opens. */
  copied: Map<string, Uint8Array>;
}

/** The records of a state read from a Trainer checkpoint, or null for another state. */
export function trainerRecords(state: TrainingState): TrainerRecords | null {
  return state.foreign?.format === HF_TRAINER_FORMAT ? (state.foreign.records as TrainerRecords) : null;
}

const fail = (file: string, problem: string): Error => new Error(`${file}: ${problem}`);
const isNumber = (v: PyValue | undefined): v is number => typeof v === "number" && Number.isFinite(v);

/** Files copied byte for byte from a Trainer checkpoint into a grown or converted one. */
const copiedFile = (name: string): boolean => name === TRAINER_FILES.args || name === TRAINER_FILES.scaler || TRAINER_RNG_FILE.test(name);

/** A directory is a Trainer checkpoint when it has Trainer's state and not the project's own. */
function detect(files: readonly string[]): boolean {
  return !files.includes(STATE_FILE) && (files.includes(TRAINER_FILES.optimizer) || files.includes(TRAINER_FILES.state));
}

async function read(base: TrainingState, dir: CheckpointDirectory): Promise<{ state: TrainingState; close: () => Promise<void> }> {
  const name = (f: string): string => join(dir.dir, f);
  const need = async (f: string): Promise<string> => {
    const p = await dir.file(f);
    if (!p) throw fail(name(f), `missing: a Hugging Face Trainer checkpoint has ${TRAINER_FILES.optimizer} and ${TRAINER_FILES.state}`);
    return p;
  };
  const trainerState = parseTrainerState(await readFile(await need(TRAINER_FILES.state), "utf8"), name(TRAINER_FILES.state));
  const groups = trainerGroups(dir.arch, dir.specs);
  const optimizerFile = await TorchFile.open(await need(TRAINER_FILES.optimizer));
  try {
    const opt = await readOptimizer(optimizerFile.value, groups, dir.specs, base, name(TRAINER_FILES.optimizer));
    const schedulerPath = await dir.file(TRAINER_FILES.scheduler);
    const scheduler = schedulerPath ? await readScheduler(schedulerPath, name(TRAINER_FILES.scheduler), opt.groups.length) : null;
    const baseLrs = scheduler?.baseLrs ?? opt.groups.map((g) => (isNumber(g.get("initial_lr")) ? g.get("initial_lr") : g.get("lr")) as number);
    const peak = baseLrs[0]!;
    const growths = loggedGrowths(trainerState.log_history, name(TRAINER_FILES.state));
    const lrScale = (g: LoggedGrowth): number => (typeof g.stage.options.lrScale === "number" ? g.stage.options.lrScale : 1);
    const points = loggedLrPoints(
      trainerState.log_history,
      growths.map((g) => ({ index: g.index, scale: lrScale(g) })),
    );
    points.push(scheduler ? { step: scheduler.lastEpoch, lr: scheduler.lastLr } : { step: trainerState.global_step, lr: opt.lr });
    const lrAt = new Map(points.map((p) => [p.step, p.lr]));
    const total = trainerState.max_steps ?? 0;
    // The points alone, else the schedule found when the last growth was written (a continue-at may leave only points
    // the warmup gives, which several schedules fit), if it still gives every point.
    const recorded = recordedSchedule(trainerState.log_history, name(TRAINER_FILES.state));
    const schedule = inferSchedule(points, peak, total) ?? (recorded && recorded.peakLr === peak && scheduleFits(recorded, points) ? recorded : null);
    const copied = new Map<string, Uint8Array>();
    for (const f of dir.names.filter(copiedFile)) {
      const p = await dir.file(f);
      if (p) copied.set(f, new Uint8Array(await readFile(p)));
    }
    const records: TrainerRecords = {
      trainerState,
      groups: opt.groups.map(withoutParams),
      stateKeys: opt.stateKeys,
      stepStored: opt.stepStored,
      scheduler: scheduler?.dict ?? null,
      baseLrs,
      lrAt,
      schedule,
      copied,
      serializationIds: { optimizer: optimizerFile.records.serializationId ?? null, scheduler: scheduler?.serializationId ?? null },
    };
    const optimizer: AdamWState = {
      name: "adamw",
      lr: peak,
      betas: opt.betas,
      eps: opt.eps,
      weightDecay: opt.weightDecay,
      noDecay: groups[1],
      step: opt.step,
      biasCorrection: true,
      ...(opt.expAvg ? { expAvg: opt.expAvg, expAvgSq: opt.expAvgSq } : {}),
    };
    const step = trainerState.global_step;
    const state: TrainingState = {
      ...base,
      optimizer,
      schedule,
      progress: {
        step,
        globalStep: step,
        tokensSeen: trainerState.num_input_tokens_seen ?? 0,
        flopsSeen: trainerState.total_flos ?? 0,
        samplerSeed: 0,
        stages: growths.map((g) => g.stage),
      },
      foreign: { format: HF_TRAINER_FORMAT, records },
    };
    return { state, close: () => optimizerFile.close() };
  } catch (e) {
    await optimizerFile.close();
    throw e;
  }
}

const withoutParams = (g: PyDict): PyDict =>
  new PyDict(
    g.kind,
    [...g.entries()].filter(([k]) => k !== "params"),
  );

interface ReadOptimizer {
  groups: PyDict[];
  lr: number;
  betas: [number, number];
  eps: number;
  weightDecay: number;
  step: number;
  stateKeys: string[];
  stepStored: TrainerRecords["stepStored"];
  expAvg?: Map<string, LazyTensor>;
  expAvgSq?: Map<string, LazyTensor>;
}

/** optimizer.pt's state dict, checked against Trainer's groups of this model (groups.ts) and mapped to parameter names. */
async function readOptimizer(
  value: PyValue,
  groups: [string[], string[]],
  paramSpecs: readonly ParamSpec[],
  base: TrainingState,
  file: string,
): Promise<ReadOptimizer> {
  if (!(value instanceof PyDict) || !(value.get("state") instanceof PyDict) || !Array.isArray(value.get("param_groups"))) {
    throw fail(file, "not an optimizer state dict ({state, param_groups})");
  }
  const raw = value.get("param_groups") as PyValue[];
  if (raw.length !== 2 || !raw.every((g) => g instanceof PyDict && Array.isArray(g.get("params")))) {
    throw fail(file, `${raw.length} parameter groups; Trainer's AdamW has 2 (decayed, not decayed) with a "params" list each`);
  }
  const pg = raw as PyDict[];
  const sizes = pg.map((g) => (g.get("params") as PyValue[]).length);
  if (sizes[0] !== groups[0].length || sizes[1] !== groups[1].length) {
    throw fail(
      file,
      `parameter groups of ${sizes.join(" and ")} parameters; Trainer's groups of this ${base.architecture} model have ` +
        `${groups[0].length} and ${groups[1].length} (another model, or an optimizer Trainer did not create)`,
    );
  }
  const g0 = pg[0]!;
  const lr = g0.get("lr"),
    eps = g0.get("eps"),
    betas = g0.get("betas");
  if (!isNumber(lr) || !isNumber(eps) || !(betas instanceof PyTuple) || betas.length !== 2 || !betas.items.every((b) => isNumber(b))) {
    throw fail(
      file,
      `param_groups[0]: lr, eps and betas must be floats (got ${pyRepr(lr ?? null)}, ${pyRepr(eps ?? null)}, ${pyRepr(betas ?? null)})`,
    );
  }
  pg.forEach((g, i) => {
    for (const key of ["lr", "eps"] as const)
      if (g.get(key) !== g0.get(key))
        throw fail(
          file,
          `param_groups[${i}].${key} ${pyRepr(g.get(key) ?? null)} differs from group 0's: one optimizer setting per run is supported`,
        );
    const b = g.get("betas");
    if (!(b instanceof PyTuple) || b.items.some((x, j) => x !== betas.items[j])) throw fail(file, `param_groups[${i}].betas differ from group 0's`);
    for (const flag of ["amsgrad", "maximize"] as const)
      if (g.get(flag) === true) throw fail(file, `param_groups[${i}].${flag} is True, which staged's AdamW does not implement`);
    if (!isNumber(g.get("weight_decay"))) throw fail(file, `param_groups[${i}].weight_decay must be a float`);
  });
  if (pg[1]!.get("weight_decay") !== 0)
    throw fail(file, `param_groups[1] (biases and norms) has weight decay ${pyRepr(pg[1]!.get("weight_decay")!)}; Trainer's has 0`);

  const state = value.get("state") as PyDict;
  const expAvg = new Map<string, LazyTensor>(),
    expAvgSq = new Map<string, LazyTensor>();
  const specs = new Map(paramSpecs.map((s) => [s.name, s]));
  let step: number | null = null,
    stateKeys: string[] = ["step", "exp_avg", "exp_avg_sq"];
  let stepStored: TrainerRecords["stepStored"] = { dtype: "F32" };
  const seen = new Set<bigint>();
  for (const [gi, g] of pg.entries()) {
    for (const [j, index] of (g.get("params") as PyValue[]).entries()) {
      if (typeof index !== "bigint") throw fail(file, `param_groups[${gi}].params[${j}] is not an int`);
      if (seen.has(index)) throw fail(file, `parameter index ${index} is in two groups`);
      seen.add(index);
      const paramName = groups[gi]![j]!;
      const s = state.get(index);
      if (s === undefined) continue;
      if (!(s instanceof PyDict)) throw fail(file, `state[${index}] is not a dict`);
      const m = s.get("exp_avg"),
        v = s.get("exp_avg_sq"),
        st = s.get("step");
      const spec = specs.get(paramName)!;
      for (const [key, t] of [
        ["exp_avg", m],
        ["exp_avg_sq", v],
      ] as const) {
        if (!(t instanceof TorchTensor)) throw fail(file, `state[${index}].${key} (${paramName}) is not a tensor`);
        if (t.shape.length !== spec.shape.length || t.shape.some((d, k) => d !== spec.shape[k])) {
          throw fail(
            file,
            `state[${index}].${key} has shape [${t.shape.join(", ")}]; parameter ${index} of Trainer's groups is ${paramName} [${spec.shape.join(", ")}]`,
          );
        }
      }
      let stepValue: number;
      if (st instanceof TorchTensor && st.shape.length === 0) {
        stepStored = { dtype: st.dtype };
        stepValue = Number((await st.read()).data[0]);
      } else if (isNumber(st)) {
        stepStored = "float";
        stepValue = st;
      } else throw fail(file, `state[${index}].step is neither a number nor a 0-d tensor`);
      if (!(Number.isInteger(stepValue) && stepValue >= 0)) throw fail(file, `state[${index}].step is ${stepValue}, not a count of updates`);
      if (step !== null && step !== stepValue) throw fail(file, `state[${index}].step ${stepValue} differs from another parameter's ${step}`);
      step = stepValue;
      stateKeys = [...s.keys()].filter((k): k is string => typeof k === "string");
      expAvg.set(paramName, m as TorchTensor);
      expAvgSq.set(paramName, v as TorchTensor);
    }
  }
  if (expAvg.size !== 0 && expAvg.size !== seen.size) {
    throw fail(
      file,
      `optimizer state for ${expAvg.size} of ${seen.size} parameters (parameters that never had a gradient?); staged needs all or none`,
    );
  }
  for (const k of state.keys())
    if (typeof k !== "bigint" || !seen.has(k)) throw fail(file, `state[${pyRepr(k as PyValue)}] belongs to no parameter group`);
  return {
    groups: pg,
    lr,
    betas: [betas.items[0] as number, betas.items[1] as number],
    eps,
    weightDecay: g0.get("weight_decay") as number,
    step: step ?? 0,
    stateKeys,
    stepStored,
    ...(expAvg.size ? { expAvg, expAvgSq } : {}),
  };
}

async function readScheduler(
  path: string,
  file: string,
  groups: number,
): Promise<{ dict: PyDict; baseLrs: number[]; lastEpoch: number; lastLr: number; serializationId: string | null }> {
  const f = await TorchFile.open(path);
  try {
    const d = f.value;
    const baseLrs = d instanceof PyDict ? d.get("base_lrs") : undefined,
      last = d instanceof PyDict ? d.get("last_epoch") : undefined;
    const lastLr = d instanceof PyDict ? d.get("_last_lr") : undefined;
    const floats = (v: PyValue | undefined): v is number[] => Array.isArray(v) && v.length === groups && v.every((x) => isNumber(x));
    if (!(d instanceof PyDict) || !floats(baseLrs) || typeof last !== "bigint" || !floats(lastLr)) {
      throw fail(file, `not a LambdaLR state of ${groups} groups ({base_lrs, last_epoch, _last_lr, …})`);
    }
    return { dict: d, baseLrs, lastEpoch: Number(last), lastLr: lastLr[0]!, serializationId: f.records.serializationId ?? null };
  } finally {
    await f.close();
  }
}

// --- writing --------------------------------------------------------------------------------------------------------

/** torch 2.x AdamW's group options, for a state that did not come from a Trainer checkpoint (`staged convert --to hf-trainer`). */
const DEFAULT_GROUP: readonly [string, PyValue][] = [
  ["amsgrad", false],
  ["maximize", false],
  ["foreach", null],
  ["capturable", false],
  ["differentiable", false],
  ["fused", null],
  ["decoupled_weight_decay", true],
];

/**
 * Group 0's LR at `step` before any growth's scale: recorded by Trainer there, else the found schedule's (whose peak is
 * group 0's base LR). Null when neither knows it (a custom lambda at a step Trainer did not log).
 */
function lrAt(records: TrainerRecords, step: number): number | null {
  const known = records.lrAt.get(step);
  if (known !== undefined) return known;
  return records.schedule ? createLrSchedule(records.schedule)(step) : null;
}

/**
 * Refuse what LambdaLR's state cannot hold: Trainer rebuilds its schedule from its own arguments when it resumes and
 * takes from scheduler.pt only the base LRs and the step, so an LR re-warmup or per-parameter LR factors that still act
 * at or after the checkpoint's step would be silently dropped.
 */
function checkExpressible(state: TrainingState, file: string): void {
  const s = state.schedule,
    step = state.progress.step;
  if (!s) return;
  if (s.restarts.some((r) => r.warmupSteps > 0 && r.step + r.warmupSteps > step)) {
    throw fail(
      file,
      "an LR re-warmup (--rewarmup) cannot be written to a Trainer checkpoint: Trainer rebuilds its schedule from its " +
        "arguments at resume (scheduler.pt keeps only base LRs and the step); grow without --rewarmup, or convert to the staged format",
    );
  }
  if ((s.paramScales ?? []).some((p) => p.scale !== 1 && (p.rampSteps === 0 || p.step + p.rampSteps > step))) {
    throw fail(
      file,
      "per-parameter LR factors (--lr-scale-params fanIn, --lr-ramp) cannot be written to a Trainer checkpoint: " +
        "its optimizer has one LR per group (decayed, not decayed); use --lr-scale alone, or convert to the staged format",
    );
  }
}

/** Where in the optimizer's state dict a tensor is, as the torch writer names it, back to the moment's name. */
const MOMENT_AT = /state\[(\d+)\]\.(exp_avg_sq|exp_avg)\b/;

function contents(state: TrainingState, m: ModelToSave, options: SaveOptions): CheckpointContents {
  const optimizerFile = TRAINER_FILES.optimizer;
  checkExpressible(state, optimizerFile);
  const records = trainerRecords(state);
  const step = state.progress.step;
  const [decayed, notDecayed] = trainerGroups(m.arch, m.specs);
  const names = [...decayed, ...notDecayed];
  const opt = state.optimizer;

  // The LRs: each group's base LR × the growth's scale (the optimizer's LR against the base LR read) × the schedule at the step.
  let baseLrs: number[], lrs: number[];
  if (records) {
    const scale = opt.lr / records.baseLrs[0]!;
    const lr0 = lrAt(records, step);
    if (lr0 === null) {
      throw fail(
        optimizerFile,
        `the LR of Trainer's schedule at step ${step} is unknown: LambdaLR saves no lambdas, trainer_state.json's ` +
          "log_history has no learning_rate there, and no linear, cosine or constant schedule gives every logged one",
      );
    }
    // Each group's LR relative to group 0's, as its base LR is (exact as read when nothing changed: the factors are 1).
    const b0 = records.baseLrs[0]!;
    baseLrs = records.baseLrs.map((b) => b * scale);
    lrs = records.baseLrs.map((b) => lr0 * (b / b0) * scale);
  } else {
    const s = state.schedule;
    const base = s?.peakLr ?? opt.lr;
    baseLrs = [base, base];
    const lr = s ? createLrSchedule(s, options.registry)(step) : opt.lr;
    lrs = [lr, lr];
  }

  // optimizer.pt: Trainer's groups over the grown model, each parameter's state at its index.
  const groupTemplates = records?.groups ?? [0, 1].map(() => new PyDict("dict", DEFAULT_GROUP));
  const wd = [opt.weightDecay, 0];
  let index = 0n;
  const paramGroups = [decayed, notDecayed].map((group, g) => {
    const out = new PyDict("dict");
    for (const [k, v] of groupTemplates[g]!.entries()) out.set(k, v);
    out
      .set("weight_decay", wd[g]!)
      .set("lr", lrs[g]!)
      .set("betas", new PyTuple([opt.betas[0], opt.betas[1]]))
      .set("eps", opt.eps);
    out.set("initial_lr", baseLrs[g]!);
    out.set(
      "params",
      group.map(() => index++),
    );
    return out;
  });
  const momentTensors: TensorEntry[] = [];
  const perParam = new PyDict("dict");
  if (opt.expAvg && opt.expAvgSq) {
    const stored = records?.stepStored ?? { dtype: "F32" as DType };
    names.forEach((n, i) => {
      const mm = opt.expAvg!.get(n),
        vv = opt.expAvgSq!.get(n);
      if (!mm || !vv) throw fail(optimizerFile, `the state has no moments for ${n}`);
      const stepValue: PyValue | Tensor = stored === "float" ? opt.step : scalar(stored.dtype, opt.step);
      const entry = new PyDict("dict");
      const values: Record<string, PyValue | Tensor | LazyTensor> = { step: stepValue, exp_avg: mm, exp_avg_sq: vv };
      for (const k of records?.stateKeys ?? ["step", "exp_avg", "exp_avg_sq"]) {
        if (!(k in values))
          throw fail(optimizerFile, `the Trainer checkpoint's optimizer state has a "${k}" per parameter, which staged does not keep`);
        entry.set(k, values[k] as PyValue);
      }
      perParam.set(BigInt(i), entry);
      momentTensors.push({ name: `exp_avg.${n}`, tensor: mm }, { name: `exp_avg_sq.${n}`, tensor: vv });
    });
  }
  const optimizerDict = PyDict.from({ state: perParam, param_groups: paramGroups });

  // scheduler.pt: LambdaLR's counters at the step, its base LRs those of the groups.
  const scheduler = new PyDict("dict");
  const template =
    records?.scheduler ??
    PyDict.from({
      base_lrs: [],
      last_epoch: 0n,
      _step_count: 0n,
      _is_initial: false,
      _get_lr_called_within_step: false,
      _last_lr: [],
      lr_lambdas: [new PyDict(), new PyDict()],
    });
  for (const [k, v] of template.entries()) scheduler.set(k, v);
  scheduler
    .set("base_lrs", baseLrs)
    .set("last_epoch", BigInt(step))
    .set("_step_count", BigInt(step + 1))
    .set("_last_lr", lrs);

  // trainer_state.json: the step, the compute, the log with each growth since the checkpoint was read.
  const ts: Record<string, unknown> = { ...(records?.trainerState ?? defaultTrainerState(state)) };
  const log = [...((ts.log_history as Record<string, unknown>[] | undefined) ?? [])];
  const recorded = growthsOf(log, TRAINER_FILES.state).length;
  // Each growth with the schedule at the grown model's base LR, for a later read that the logged LRs alone leave open.
  const grownSchedule = records?.schedule ? { ...records.schedule, peakLr: baseLrs[0]! } : null;
  for (const stage of state.progress.stages.slice(recorded)) log.push(growthEntry(stage, grownSchedule));
  if (!records && state.schedule) log.push({ step, [SCHEDULE_KEY]: state.schedule });
  log.push(...trainedSince(log, state));
  Object.assign(ts, { global_step: step, total_flos: state.progress.flopsSeen, log_history: log });
  if (ts.num_input_tokens_seen !== undefined || state.progress.tokensSeen > 0) ts.num_input_tokens_seen = state.progress.tokensSeen;
  if (!records && state.schedule) ts.max_steps = state.schedule.totalSteps;

  return {
    tensors: [...m.model.entries, ...momentTensors],
    write: async (tmp: string, observer: WriteObserver) => {
      await writeModelFiles(tmp, state, m, observer, options);
      await writeTorchFile(join(tmp, optimizerFile), optimizerDict, {
        observer: torchObserver(observer, names),
        serializationId: records?.serializationIds.optimizer ?? null,
      });
      await writeTorchFile(join(tmp, TRAINER_FILES.scheduler), scheduler, { serializationId: records?.serializationIds.scheduler ?? null });
      await writeFile(join(tmp, TRAINER_FILES.state), formatTrainerState(ts));
      for (const [f, bytes] of records?.copied ?? []) await writeFile(join(tmp, f), bytes);
    },
  };
}

/**
 * The project trainer's steps (metrics.jsonl) of the current stage that the log does not have yet, as Trainer's log
 * entries `{step, loss, learning_rate}`: those after the last step the log has since its last growth.
 */
function trainedSince(log: readonly Record<string, unknown>[], state: TrainingState): Record<string, unknown>[] {
  const bytes = state.files?.get(METRICS_FILE);
  if (!bytes) return [];
  let last = -1;
  for (let i = log.length - 1; i >= 0; i--) {
    const e = log[i]!;
    if (typeof e.step === "number") last = Math.max(last, e.step);
    if (GROWTH_KEY in e) break;
  }
  const stage = state.progress.stages.length;
  return parseMetrics(new TextDecoder().decode(bytes), METRICS_FILE)
    .filter((r) => (r.stage ?? 0) === stage && r.step > last && typeof r.loss === "number")
    .map((r) => ({ step: r.step, loss: r.loss, ...(r.lr !== undefined ? { learning_rate: r.lr } : {}) }));
}

/** A 0-d tensor holding one count (the optimizer's step as torch keeps it). */
function scalar(dtype: DType, value: number): Tensor {
  const t = Tensor.zeros(dtype, []);
  (t.data as Float32Array | Float64Array)[0] = value;
  return t;
}

/** Core's save observer (its checks of each piece, its progress) for the storages of optimizer.pt. */
function torchObserver(observer: WriteObserver, names: readonly string[]): TorchWriteObserver {
  const nameOf = (where: string): string => {
    const m = MOMENT_AT.exec(where);
    return m ? `${m[2]}.${names[Number(m[1])] ?? m[1]}` : where;
  };
  return {
    piece: (where, dtype, bytes, at) => {
      const name = nameOf(where);
      observer.piece?.(name, dtype, bytes, at / DTYPE_SIZES[dtype]);
      observer.bytesWritten?.(name, bytes.byteLength);
    },
    storageWritten: (where, bytes) => observer.tensorWritten?.(nameOf(where), bytes),
  };
}

/** trainer_state.json for a state that did not come from a Trainer checkpoint: TrainerState's fields with its defaults. */
function defaultTrainerState(state: TrainingState): Record<string, unknown> {
  return {
    best_global_step: null,
    best_metric: null,
    best_model_checkpoint: null,
    epoch: 0,
    eval_steps: 500,
    global_step: state.progress.step,
    is_hyper_param_search: false,
    is_local_process_zero: true,
    is_world_process_zero: true,
    log_history: [],
    logging_steps: 500,
    max_steps: state.schedule?.totalSteps ?? state.progress.step,
    num_input_tokens_seen: 0,
    num_train_epochs: 1,
    save_steps: 500,
    stateful_callbacks: {},
    total_flos: 0,
    train_batch_size: state.training?.batch ?? null,
    trial_name: null,
    trial_params: null,
  };
}

/** Hugging Face Trainer checkpoints as a core checkpoint format (register it: `registry.register("checkpointFormat", hfTrainerFormat)`). */
export const hfTrainerFormat: CheckpointFormatPlugin = { name: HF_TRAINER_FORMAT, detect, read, contents };

/** What `staged inspect` shows of a Trainer checkpoint beyond the state: its step, LR, schedule and last losses. */
export interface TrainerSummary {
  globalStep: number;
  maxSteps: number | null;
  /** Group 0's LR for the next update (null where Trainer's schedule is unknown at the step). */
  lr: number | null;
  /** The schedule found from the logged LRs, or null (LambdaLR saves no lambdas). */
  schedule: LrScheduleSpec | null;
  /** The last logged training losses (at most 3), oldest first. */
  lastLosses: { step: number; loss: number }[];
  /** The files copied byte for byte into a grown or converted checkpoint. */
  copiedFiles: string[];
}

export function trainerSummary(state: TrainingState): TrainerSummary | null {
  const r = trainerRecords(state);
  if (!r) return null;
  const losses = r.trainerState.log_history
    .filter((e): e is { step: number; loss: number } => typeof e.step === "number" && typeof e.loss === "number")
    .map((e) => ({ step: e.step, loss: e.loss }));
  const base = lrAt(r, state.progress.step);
  return {
    globalStep: state.progress.step,
    maxSteps: r.trainerState.max_steps ?? null,
    lr: base === null ? null : base * (state.optimizer.lr / r.baseLrs[0]!),
    schedule: r.schedule,
    lastLosses: losses.slice(-3),
    copiedFiles: [...r.copied.keys()],
  };
}

/**
 * Why the project's trainer cannot continue this state and save it as a Trainer checkpoint (null: it can), given the
 * schedule options asked for (`--lr`, `--schedule`, …). Its LRs after the checkpoint's step must be Trainer's schedule,
 * found from the logged LRs: Trainer rebuilds that schedule from its arguments when it resumes, so another one would
 * make scheduler.pt disagree with what was trained.
 */
export function trainingProblem(state: TrainingState, scheduleOptions: readonly string[] = []): string | null {
  const r = trainerRecords(state);
  if (!r) return null;
  if (!r.schedule) {
    return (
      "Trainer's learning-rate schedule could not be found from trainer_state.json's logged learning rates (LambdaLR saves no " +
      "lambdas), so the LRs of further steps are unknown: convert it (`staged convert --to staged`) and train that with --schedule, --warmup and --total-steps"
    );
  }
  if (scheduleOptions.length) {
    return (
      "a Hugging Face Trainer checkpoint trains on with Trainer's schedule (found from its logged LRs, and what Trainer rebuilds from " +
      `its arguments when it resumes): ${scheduleOptions.join(", ")} would make the checkpoint's scheduler.pt disagree; convert it ` +
      "(`staged convert --to staged`) to train it with another schedule"
    );
  }
  return null;
}

import { existsSync } from "node:fs";
import { mkdir } from "node:fs/promises";
import { basename, join } from "node:path";
import { isDeepStrictEqual } from "node:util";
import {
  canonicalPath,
  checkInput,
  checkOutputPath,
  createDefaultRegistry,
  globalStepOf,
  lockCheckpoint,
  initTrainingState,
  loadTrainingState,
  saveTrainingState,
  STATE_FILE,
  writeFileAtomic,
  type GrowthPlugin,
  type ModelShape,
  type Registry,
  type TrainingState,
} from "@staged/core";
import {
  flopsPerToken,
  largeModelAt,
  nonEmbeddingParams,
  readMetrics,
  withCooldown,
  type ChinchillaLaw,
  type MetricsRecord,
  type RunModel,
} from "@staged/scheduler";
import type { Device, EngineFactory, EvaluateOptions, OrtTrainerPlugin, TrainOptions } from "@staged/trainer-ort";
import type { ModelSpec, RunSpec, StageSpec } from "./spec.js";
import { checkRunPlugins, createRunRegistry, runLaw, runTrainer, timingRule } from "./plugins.js";
import type { CurvePoint, FinalEvaluation, GrowthEvent, RunResult } from "./types.js";
import {
  COOLDOWN_FILE,
  formatCooldownStart,
  formatFrontier,
  formatGrowths,
  formatRunIdentity,
  formatRunResult,
  FRONTIER_FILE,
  GROWTHS_FILE,
  readCooldownStart,
  readFrontier,
  readGrowths,
  readRunIdentity,
  readRunResult,
  RESULT_FILE,
  RESULT_FORMAT,
  RUN_FILE,
  RUN_FILES_VERSION,
  RUN_FORMAT,
  type CooldownStart,
  type RunIdentity,
} from "./run-format.js";

/** One run of a spec: the staged schedule for one seed, or a comparison (baseline, no-growth) for one seed. */
export interface RunEntry {
  /** Directory name under the output directory, e.g. "staged-s0", "baseline-s1". */
  name: string;
  group: string;
  seed: number;
  /** The model the run starts from (fresh) and the growths it makes. */
  model: ModelSpec;
  stages: StageSpec[];
}

/** The model a list of growths turns `model` into (ffn explicit). */
export function grownModel(model: ModelSpec, stages: readonly StageSpec[]): ModelSpec {
  let m: ModelSpec = { ...model, ffn: model.ffn ?? 4 * model.dModel };
  for (const s of stages) {
    if (s.grow === "width") {
      const ffnFactor = typeof s.options.ffnFactor === "number" ? s.options.ffnFactor : 1;
      m = {
        ...m,
        dModel: m.dModel * s.factor,
        heads: m.heads * s.factor,
        ffn: m.ffn! * s.factor * ffnFactor,
        ...(m.kvHeads === undefined ? {} : { kvHeads: m.kvHeads * s.factor }),
      };
    } else {
      m = { ...m, layers: m.layers * s.factor };
    }
  }
  return m;
}

/** The HF config.json of a fresh model of the spec's architecture. */
export function modelConfig(m: ModelSpec, context: number): Record<string, unknown> {
  const arch = createDefaultRegistry().get("architecture", m.arch);
  return arch.initConfig({ ...m, context }, m.tie ?? arch.tiedByDefault);
}

/** The model shape of a ModelSpec at a context, as its architecture reads it. */
export function shapeOf(m: ModelSpec, context: number): ModelShape {
  return createDefaultRegistry().get("architecture", m.arch).parseConfig(modelConfig(m, context)).shape;
}

/** A model's non-embedding parameters and training FLOPs per token at a context: what growth timing in run units needs. */
export function runModelOf(m: ModelSpec, context: number): RunModel {
  const shape = shapeOf(m, context);
  return { params: nonEmbeddingParams(shape), flopsPerToken: flopsPerToken(shape, context) };
}

/**
 * The runs a spec asks for: the staged seeds (`<name>-s<seed>`), the baseline's (`baseline-s<seed>`: the
 * final model from scratch) and the no-growth comparison's (`no-growth-<layers>x<d>-s<seed>`: the first
 * model, never grown).
 */
export function runEntries(spec: RunSpec): RunEntry[] {
  const target = grownModel(spec.model, spec.stages);
  return [
    ...spec.seeds.map((seed) => ({ name: `${spec.name}-s${seed}`, group: spec.name, seed, model: spec.model, stages: spec.stages })),
    ...(spec.baseline?.seeds ?? []).map((seed) => ({ name: `baseline-s${seed}`, group: "baseline", seed, model: target, stages: [] })),
    // named by the model: specs whose first models differ can share an output directory
    ...(spec.noGrowth?.seeds ?? []).map((seed) => {
      const group = `no-growth-${spec.model.layers}x${spec.model.dModel}`;
      return { name: `${group}-s${seed}`, group, seed, model: spec.model, stages: [] };
    }),
  ];
}

/** The run's FLOP budget: given, or tokens × the final model's FLOPs per token. */
export function budgetFlops(spec: RunSpec): number {
  if ("flops" in spec.budget) return spec.budget.flops;
  return spec.budget.tokens * flopsPerToken(shapeOf(grownModel(spec.model, spec.stages), spec.context), spec.context);
}

export interface RunProgress {
  run: string;
  stage: number;
  stages: number;
  step: number;
  globalStep: number;
  flops: number;
  budget: number;
  valLoss: number | null;
  tokensPerSecond: number;
  /** True once, when the run's budget is spent (its cooldown follows, without progress). */
  end: boolean;
}

export interface ExecuteOptions {
  /**
   * Where the run is, after every training step and once when its budget is spent (`end`): counts for a progress
   * reporter, which shows them with the rate and the ETA (the CLI's, packages/cli/src/progress.ts).
   */
  onProgress?(p: RunProgress): void;
  /** A line for people: growth decisions, resumes. */
  onLine?(line: string): void;
  threads?: number | undefined;
  /** The execution provider (default: the spec's, else cpu). */
  device?: Device | undefined;
  engineFactory?: EngineFactory | undefined;
  /** Called after every training step (tests interrupt a run here to check resuming). */
  onStep?(globalStep: number): void;
  /**
   * Stop early and keep the work (Ctrl-C in the CLI): the step in progress finishes and is saved, and the run throws
   * RunInterrupted; running the same spec again resumes from there as after a kill.
   */
  signal?: AbortSignal | undefined;
  /**
   * The plugins (default createRunRegistry(), ./plugins.ts): architectures, growth operators, growth-timing rules,
   * scaling laws, LR schedules, trainers.
   */
  registry?: Registry | undefined;
}

/** A run stopped by ExecuteOptions.signal, its work saved: the same command resumes it. */
export class RunInterrupted extends Error {
  constructor(
    readonly run: string,
    readonly dir: string,
    readonly step: number,
  ) {
    super(`${run}: interrupted at step ${step}, saved in ${dir}; run the same command again to resume`);
    this.name = "RunInterrupted";
  }
}

const stageDir = (runDir: string, k: number) => join(runDir, `stage-${k}`);
const isCheckpoint = (dir: string) => existsSync(join(dir, STATE_FILE));

/**
 * Check every file a spec's runs will read (data, validation data, tokenizer, law) before anything is
 * written, with one-line errors naming the file; returns the law when a timing needs one.
 */
export async function checkRunInputs(
  spec: RunSpec,
  registry: Registry = createRunRegistry(),
): Promise<{ law: ChinchillaLaw; maxLoss: number | null } | null> {
  const lawless = checkRunPlugins(spec, registry).rules.find((r) => r.needsLaw);
  if (spec.data !== "brown") await checkInput(spec.data, "the data");
  if (spec.valData !== undefined) await checkInput(spec.valData, "the validation data");
  if (spec.tokenizer !== undefined) await checkInput(spec.tokenizer, "the tokenizer");
  return lawless || spec.stages.some((s) => s.continueAt === "law") ? runLaw(spec.law!, registry) : null;
}

/** What identifies a run's configuration: a rerun into the same directory must match it. */
function identity(spec: RunSpec, entry: RunEntry): RunIdentity {
  const { name: _n, seeds: _s, baseline: _b, noGrowth: _g, threads: _t, device: _d, stages: _st, model: _m, ...shared } = spec;
  return {
    format: RUN_FORMAT,
    version: RUN_FILES_VERSION,
    ...shared,
    group: entry.group,
    seed: entry.seed,
    model: entry.model,
    stages: entry.stages,
  };
}

/** The validation points of a run's metrics records (the records with a finite valLoss), as result.json stores them. */
export function curvePoints(records: readonly MetricsRecord[]): CurvePoint[] {
  return records
    .filter((r) => typeof r.valLoss === "number" && Number.isFinite(r.valLoss))
    .map((r) => ({
      globalStep: r.globalStep ?? r.step,
      step: r.step,
      stage: r.stage ?? 0,
      flops: r.flops,
      tokens: r.tokens,
      valLoss: r.valLoss as number,
    }));
}

/**
 * Run one entry to its budget in `runDir`, resuming from whatever an earlier (killed) invocation left: each
 * stage's model is a checkpoint `stage-<k>` saved every few evaluations, growth writes the next stage's
 * checkpoint atomically, and growth decisions are replayed from the saved validation curve. Returns the
 * run's result, also written to `runDir/result.json` (run-format.ts).
 */
export async function executeRun(spec: RunSpec, entry: RunEntry, runDir: string, o: ExecuteOptions = {}): Promise<RunResult> {
  const registry = o.registry ?? createRunRegistry();
  const budget = budgetFlops(spec);
  const loaded = await checkRunInputs(spec, registry);
  const law = loaded?.law ?? null;
  const trainer = runTrainer(spec, registry);
  await checkOutputPath(runDir);
  await mkdir(runDir, { recursive: true });
  // One process per run directory: a second `staged run` of it is refused, naming the first.
  const lock = await lockCheckpoint(await canonicalPath(runDir), "exclusive");
  try {
    return await executeLocked({ spec, entry, runDir, o, registry, budget, law, maxLoss: loaded?.maxLoss ?? null, trainer });
  } finally {
    await lock.release();
  }
}

/** What each step of one run works with: the spec, the run, its directory, the caller's options, and what executeRun worked out. */
interface RunContext {
  spec: RunSpec;
  entry: RunEntry;
  runDir: string;
  /** The caller's options (its registry, if any, is `registry`). */
  o: ExecuteOptions;
  registry: Registry;
  budget: number;
  law: ChinchillaLaw | null;
  maxLoss: number | null;
  /** The trainer the spec names (default "ort"), from the registry. */
  trainer: OrtTrainerPlugin;
}

/** The baseline's cooled-down frontier (spec cooldown.frontier): the FLOPs at which a copy is cooled down, and the points done. */
interface Frontier {
  file: string;
  at: number[];
  done: FinalEvaluation[];
  /**
   * When the frontier reaches past the budget: the index in `at` of the budget itself, whose cooled-down copy is the
   * run's final loss (the run trains on to the last point); null when the run ends at its budget.
   */
  budgetIndex: number | null;
}

/** The state a stage trains, replaced as training goes on: whoever holds it closes the latest. */
interface CurrentState {
  state: TrainingState & { close(): Promise<void> };
}

async function executeLocked(ctx: RunContext): Promise<RunResult> {
  const finished = await checkRunDirectory(ctx);
  if (finished) return finished;
  const growthsFile = join(ctx.runDir, GROWTHS_FILE);
  const growths: GrowthEvent[] = existsSync(growthsFile) ? await readGrowths(growthsFile) : [];
  let k = await newestStage(ctx);
  growths.splice(k); // a growth record whose checkpoint never landed is redone
  const frontier = await readFrontierSoFar(ctx);
  const progress = runProgress(ctx);
  for (; ; k++) {
    const dir = stageDir(ctx.runDir, k);
    const current: CurrentState = { state: await loadTrainingState(dir, { registry: ctx.registry }) };
    try {
      const stage = ctx.entry.stages[k];
      const { decided, lastVal } = await trainStage(ctx, k, dir, current, growths, frontier, progress);
      const state = current.state;
      if (!stage || !decided) {
        // The budget is spent (a stage whose growth never came is recorded by the missing growth).
        if (stage) ctx.o.onLine?.(`${ctx.entry.name}: the budget ended before stage ${k + 1}'s growth (${stage.grow}) was due`);
        progress.report({ step: state.progress.step, globalStep: globalStepOf(state.progress), flops: state.progress.flopsSeen }, k, lastVal, true);
        return await finishRun(ctx, k, dir, state, growths, frontier);
      }
      // Grow into stage k + 1 (not once stopped: the stage's checkpoint is saved, and a resume replays the growth).
      if (ctx.o.signal?.aborted) throw new RunInterrupted(ctx.entry.name, dir, state.progress.step);
      await growStage(ctx, k, dir, state, stage, lastVal, growths, growthsFile);
    } finally {
      await current.state.close();
    }
  }
}

/**
 * run.json: written by the first invocation, and a rerun must be of the same spec; result.json: the run's result when
 * an earlier invocation finished it (null otherwise).
 */
async function checkRunDirectory({ spec, entry, runDir }: RunContext): Promise<RunResult | null> {
  const idFile = join(runDir, RUN_FILE);
  const id = identity(spec, entry);
  if (existsSync(idFile)) {
    const old = await readRunIdentity(idFile);
    // As written and read back (fields left undefined are not written).
    if (!isDeepStrictEqual(old, JSON.parse(formatRunIdentity(id)))) {
      throw new Error(`${runDir}: holds a run of another spec (${idFile} differs); use another --out directory or remove it`);
    }
  } else {
    await writeFileAtomic(idFile, formatRunIdentity(id));
  }
  const resultFile = join(runDir, RESULT_FILE);
  if (!existsSync(resultFile)) return null;
  const done = await readRunResult(resultFile);
  return done.done ? done : null;
}

/** The newest stage with a checkpoint, where the run goes on; stage 0 is created fresh. */
async function newestStage({ spec, entry, runDir, o, registry }: RunContext): Promise<number> {
  let k = 0;
  while (isCheckpoint(stageDir(runDir, k + 1))) k++;
  if (k === 0 && !isCheckpoint(stageDir(runDir, 0))) {
    const config = modelConfig(entry.model, spec.context);
    await saveTrainingState(stageDir(runDir, 0), initTrainingState(entry.model.arch, config, entry.seed, registry), { registry });
  } else {
    o.onLine?.(`${entry.name}: resuming at stage ${k} from ${stageDir(runDir, k)}`);
  }
  return k;
}

/**
 * The baseline's cooled-down frontier (spec cooldown.frontier): at each of these FLOPs a copy is cooled down and
 * evaluated; frontier.json holds the points done (one left undone by a kill is redone from the save made there).
 */
async function readFrontierSoFar({ spec, entry, runDir, budget }: RunContext): Promise<Frontier> {
  const file = join(runDir, FRONTIER_FILE);
  const fractions = entry.group === "baseline" && spec.cooldown?.frontier ? spec.cooldown.frontier : [];
  const past = fractions.some((f) => f > 1);
  const at = (past ? [...fractions, 1].sort((a, b) => a - b) : fractions).map((f) => f * budget);
  return { file, at, done: existsSync(file) ? await readFrontier(file) : [], budgetIndex: past ? at.indexOf(budget) : null };
}

/** The run's progress for ExecuteOptions.onProgress (the last step's tokens per second kept for the line at the end). */
function runProgress({ entry, o, budget }: RunContext) {
  let tps = 0;
  return {
    step(tokensPerSecond: number): void {
      tps = tokensPerSecond;
    },
    report(at: { step: number; globalStep: number; flops: number }, stage: number, valLoss: number | null, end = false): void {
      o.onProgress?.({ run: entry.name, stage, stages: entry.stages.length, ...at, budget, valLoss, tokensPerSecond: tps, end });
    },
  };
}
type RunProgressReporter = ReturnType<typeof runProgress>;

/**
 * Train stage `k` until its growth is due or the budget is spent, in pieces that each end with an evaluation and a save,
 * cooling down the frontier's copies on the way; `current.state` follows the training. Whether the growth is due, and
 * the last validation loss.
 */
async function trainStage(
  ctx: RunContext,
  k: number,
  dir: string,
  current: CurrentState,
  growths: readonly GrowthEvent[],
  frontier: Frontier,
  progress: RunProgressReporter,
): Promise<{ decided: boolean; lastVal: number | null }> {
  const { spec, entry, o, budget } = ctx;
  const stage = entry.stages[k];
  const fpStep = flopsPerToken(current.state.shape, spec.context) * spec.batch * spec.context;
  const history = await readMetrics(dir);
  const stageStartGlobal = k === 0 ? 0 : growths[k - 1]!.globalStep;
  // Decisions on a grown model's curve start after the previous growth's re-warmup.
  const settledFrom = k === 0 ? 0 : stageStartGlobal + entry.stages[k - 1]!.rewarmup;
  const until = stage ? growthCondition(spec, entry, k, stage, ctx.registry, ctx.law, ctx.maxLoss, budget, settledFrom) : null;
  // Replay the stage's validation curve: a decision made before a kill is made again, identically.
  const saved = curvePoints(history);
  let decided = until?.replay(saved.filter((p) => p.stage === k)) ?? false;
  let lastVal: number | null = saved.at(-1)?.valLoss ?? null;
  // A growth at a step or FLOP count, due when the checkpoint was saved (a run killed between the small model's
  // last save and the growth), is due now: not one step later.
  const due = (s: TrainingState) =>
    (until?.steps !== undefined && globalStepOf(s.progress) - stageStartGlobal >= until.steps) ||
    (until?.flops !== undefined && s.progress.flopsSeen >= until.flops);
  decided ||= due(current.state);
  // A baseline whose frontier reaches past the budget trains on to its last point.
  const end = frontier.budgetIndex === null ? budget : frontier.at.at(-1)!;
  while (!decided && current.state.progress.flopsSeen < end) {
    const state = current.state;
    const nextFrontier = frontier.at[frontier.done.length];
    if (nextFrontier !== undefined && state.progress.flopsSeen >= nextFrontier) {
      await addFrontierPoint(ctx, frontier, state, dir);
      continue;
    }
    const target = Math.min(until?.flops !== undefined ? Math.min(until.flops, end) : end, nextFrontier ?? Infinity);
    const stageSteps = globalStepOf(state.progress) - stageStartGlobal;
    const byFlops = Math.ceil((target - state.progress.flopsSeen) / fpStep);
    const bySteps = until?.steps !== undefined ? until.steps - stageSteps : Infinity;
    // Pieces of 5 evaluations from the stage's start (each piece ends with an evaluation and a save); a run resumed
    // from a step inside a piece (after Ctrl-C) finishes that piece first, so its curve has the same points.
    const piece = spec.eval.every * 5;
    const steps = Math.max(1, Math.min(byFlops, bySteps, piece - (stageSteps % piece)));
    const globalBefore = globalStepOf(state.progress);
    const r = await ctx.trainer.train(state, stageTrainOptions(ctx, k, state, steps, dir), {
      onEval: (e) => {
        lastVal = e.valLoss;
        if (until?.push({ step: e.step, globalStep: e.globalStep, stage: k, flops: e.flops, tokens: e.tokens, valLoss: e.valLoss })) {
          decided = true;
          return "stop";
        }
      },
      onStep: (i) => {
        progress.step(i.tokensPerSecond);
        o.onStep?.(globalBefore + i.index);
        progress.report({ step: i.step, globalStep: globalBefore + i.index, flops: i.flops }, k, lastVal);
      },
    });
    await state.close();
    current.state = Object.assign(r.state, { close: async () => {} });
    if (r.result.interrupted) throw new RunInterrupted(entry.name, dir, current.state.progress.step);
    decided ||= due(current.state);
  }
  return { decided, lastVal };
}

/** The trainer's options for `steps` steps of stage `k` from `state`, saved into the stage's checkpoint `dir`. */
function stageTrainOptions(ctx: RunContext, k: number, state: TrainingState, steps: number, dir: string): TrainOptions {
  const { spec, entry, o } = ctx;
  const fresh = k === 0 && state.progress.step === 0;
  return {
    data: spec.data,
    valData: spec.valData,
    tokenizer: fresh ? spec.tokenizer : undefined,
    steps,
    batch: spec.batch,
    microBatch: spec.microBatch,
    precision: spec.precision,
    context: spec.context,
    // A grown model's peak LR is the checkpoint's (the growth scaled it by its lrScale).
    ...(k === 0 ? { lr: spec.optimizer.lr, schedule: spec.schedule.kind, warmup: spec.schedule.warmup } : {}),
    betas: spec.optimizer.betas,
    eps: spec.optimizer.eps,
    weightDecay: spec.optimizer.weightDecay,
    clip: spec.optimizer.clip,
    biasCorrection: spec.optimizer.biasCorrection,
    seed: fresh ? entry.seed : undefined,
    evalEvery: spec.eval.every,
    evalBlocks: spec.eval.blocks,
    saveDir: dir,
    threads: o.threads ?? spec.threads,
    device: o.device ?? spec.device,
    engineFactory: o.engineFactory,
    signal: o.signal,
    registry: ctx.registry,
  };
}

/** Cool down a copy of `state` for the next point of the baseline's frontier, and record it in frontier.json. */
async function addFrontierPoint(ctx: RunContext, frontier: Frontier, state: TrainingState, dir: string): Promise<void> {
  const { entry, o } = ctx;
  frontier.done.push(await coolCopy(ctx, state, dir));
  await writeFileAtomic(frontier.file, formatFrontier(frontier.done));
  o.onLine?.(
    `${entry.name}: frontier point ${frontier.done.length}/${frontier.at.length}: ${frontier.done.at(-1)!.valLoss.toFixed(4)} after a cooldown from ${state.progress.flopsSeen.toExponential(3)} FLOPs`,
  );
}

/**
 * The end of the budget: the spec's cooldown, then the run's result, written to result.json. A frontier reaching past
 * the budget ends with its last point, and the run's final loss is its point at the budget.
 */
async function finishRun(
  ctx: RunContext,
  k: number,
  dir: string,
  state: TrainingState,
  growths: GrowthEvent[],
  frontier: Frontier,
): Promise<RunResult> {
  const { spec, entry, runDir, budget } = ctx;
  let final: FinalEvaluation | undefined,
    points = curvePoints(await readMetrics(dir)),
    others = frontier.done;
  if (frontier.budgetIndex !== null) {
    while (frontier.done.length < frontier.at.length) await addFrontierPoint(ctx, frontier, state, dir);
    final = frontier.done[frontier.budgetIndex]!;
    others = frontier.done.filter((_, i) => i !== frontier.budgetIndex);
    // The curve is the run up to the step where the budget's copy was taken.
    const from = final.flops - final.steps * flopsPerToken(state.shape, spec.context) * spec.batch * spec.context;
    points = points.filter((p) => p.flops <= from * (1 + 1e-9));
  } else if (spec.cooldown) {
    const cooled = await cooldown(ctx, state, dir);
    // The curve is the constant-LR run up to the budget; the cooldown's points are not part of it.
    points = points.filter((p) => p.stage !== k || p.step <= cooled.startStep);
    final = cooled.final;
  }
  const result: RunResult = {
    format: RESULT_FORMAT,
    version: RUN_FILES_VERSION,
    name: entry.name,
    group: entry.group,
    seed: entry.seed,
    done: true,
    budgetFlops: budget,
    points,
    growths,
    ...(final ? { final } : {}),
    ...(others.length ? { frontier: others } : {}),
  };
  await writeFileAtomic(join(runDir, RESULT_FILE), formatRunResult(result));
  return result;
}

/**
 * Grow stage `k`'s model into stage k + 1: the operator, the grown model's loss, the growth recorded in growths.json,
 * then the new stage's checkpoint.
 */
async function growStage(
  ctx: RunContext,
  k: number,
  dir: string,
  state: TrainingState,
  stage: StageSpec,
  lastVal: number | null,
  growths: GrowthEvent[],
  growthsFile: string,
): Promise<void> {
  const { spec, entry, runDir, o, registry, law } = ctx;
  const valBefore = curvePoints(await readMetrics(dir)).at(-1)?.valLoss ?? lastVal!;
  const continueAt =
    stage.continueAt === "keep" ? undefined : stage.continueAt === "law" ? continueAtFromLaw(law!, spec, entry, k, valBefore) : stage.continueAt;
  const plugin = registry.get("growth", stage.grow) as GrowthPlugin<Record<string, unknown>>;
  const grown = await plugin.grow(state, {
    ...stage.options,
    factor: stage.factor,
    rewarmup: stage.rewarmup,
    ...(stage.lrScale === undefined ? {} : { lrScale: stage.lrScale }),
    ...(stage.lrScaleParams === undefined ? {} : { lrScaleParams: stage.lrScaleParams }),
    ...(stage.lrRamp === undefined ? {} : { lrRamp: stage.lrRamp }),
    ...(continueAt === undefined ? {} : { continueAt }),
    registry,
  });
  const record = grown.progress.stages.at(-1)!;
  const valAfter = (await ctx.trainer.evaluate(grown, validationOf(ctx, spec.eval.blocks))).loss;
  const event: GrowthEvent = {
    stage: k + 1,
    operator: stage.grow,
    options: { ...record.options, rewarmup: stage.rewarmup, continueAt: continueAt ?? "keep" },
    flops: state.progress.flopsSeen,
    globalStep: globalStepOf(state.progress),
    timing: timingRule(stage) ?? Object.keys(stage.at)[0]!,
    valLossBefore: valBefore,
    valLossAfter: valAfter,
    paramsBefore: nonEmbeddingParams(state.shape),
    paramsAfter: nonEmbeddingParams(grown.shape),
  };
  growths[k] = event;
  await writeFileAtomic(growthsFile, formatGrowths(growths));
  await saveTrainingState(stageDir(runDir, k + 1), grown, { registry, overwrite: true });
  o.onLine?.(
    `${entry.name}: grew ${stage.grow} ×${stage.factor} at ${event.flops.toExponential(3)} FLOPs (global step ${event.globalStep}, ` +
      `${event.timing}): ${state.shape.layers}×d${state.shape.dModel} → ${grown.shape.layers}×d${grown.shape.dModel}, val ${valBefore.toFixed(4)} → ${valAfter.toFixed(4)}`,
  );
}

/** The spec's cooldown from a copy of `state` (nothing saved): one point of the baseline's cooled-down frontier. */
async function coolCopy(ctx: RunContext, state: TrainingState, dir: string): Promise<FinalEvaluation> {
  const { trainer, o } = ctx;
  const c = ctx.spec.cooldown!;
  const ev = validationOf(ctx, c.blocks);
  const before = await trainer.evaluate(state, ev);
  const r = await trainer.train(
    { ...state, schedule: withCooldown(state.schedule!, state.progress.step, c.steps) },
    cooldownOptions(ctx, c.steps, null),
    { onStep: (i) => o.onStep?.(globalStepOf(state.progress) + i.index) },
  );
  if (r.result.interrupted) throw new RunInterrupted(ctx.entry.name, dir, state.progress.step);
  const after = await trainer.evaluate(r.state, ev);
  return {
    steps: c.steps,
    flops: r.state.progress.flopsSeen,
    valLoss: after.loss,
    blocks: after.blocks,
    tokens: after.tokens,
    valLossBefore: before.loss,
  };
}

/** The trainer's options for `steps` cooldown steps of the spec's data and batch (the schedule comes with the state). */
const cooldownOptions = ({ spec, o, registry }: RunContext, steps: number, saveDir: string | null): TrainOptions => ({
  steps,
  evalEvery: 0,
  evalBlocks: spec.eval.blocks,
  saveDir,
  data: spec.data,
  valData: spec.valData,
  batch: spec.batch,
  microBatch: spec.microBatch,
  precision: spec.precision,
  context: spec.context,
  threads: o.threads ?? spec.threads,
  device: o.device ?? spec.device,
  engineFactory: o.engineFactory,
  signal: o.signal,
  registry,
});

/** Options of `evaluate` for the run's validation stream (the trainer's), on `maxBlocks` blocks (undefined: all). */
function validationOf({ spec, o, registry }: RunContext, maxBlocks: number | undefined): EvaluateOptions {
  return {
    data: spec.data,
    valData: spec.valData,
    stream: "training-validation",
    context: spec.context,
    batch: spec.batch,
    threads: o.threads ?? spec.threads,
    device: o.device ?? spec.device,
    engineFactory: o.engineFactory,
    ...(maxBlocks === undefined ? {} : { maxBlocks }),
    registry,
  };
}

/**
 * The spec's common cooldown, from the run's state at the end of its budget: `steps` more steps with the LR
 * decaying linearly to 0 (the stored schedule becomes warmup-stable-decay ending at the cooldown's last step,
 * its restarts and per-parameter factors kept), saved every few evaluations into the stage's checkpoint so a
 * killed run resumes inside the cooldown, then the loss on the final validation blocks. The loss on the same
 * blocks before the cooldown is measured first and kept in `cooldown.json`, which also marks where it began.
 */
async function cooldown(ctx: RunContext, state: TrainingState, dir: string): Promise<{ final: FinalEvaluation; startStep: number }> {
  const { trainer, spec, runDir, o } = ctx;
  const c = spec.cooldown!;
  const file = join(runDir, COOLDOWN_FILE);
  const ev = validationOf(ctx, c.blocks);
  let start: CooldownStart;
  if (existsSync(file)) start = await readCooldownStart(file);
  else {
    start = { step: state.progress.step, valLossBefore: (await trainer.evaluate(state, ev)).loss };
    await writeFileAtomic(file, formatCooldownStart(start));
  }
  const total = start.step + c.steps;
  let current: TrainingState = state;
  while (current.progress.step < total) {
    const steps = Math.min(total - current.progress.step, spec.eval.every * 5);
    const globalBefore = globalStepOf(current.progress);
    // Once a piece is saved the stored schedule is the cooldown's, which withCooldown leaves as it is.
    const r = await trainer.train({ ...current, schedule: withCooldown(current.schedule!, start.step, c.steps) }, cooldownOptions(ctx, steps, dir), {
      onStep: (i) => o.onStep?.(globalBefore + i.index),
    });
    current = r.state;
    if (r.result.interrupted) throw new RunInterrupted(basename(runDir), dir, current.progress.step);
    o.onLine?.(`${dir}: cooldown ${current.progress.step - start.step}/${c.steps} steps`);
  }
  const after = await trainer.evaluate(current, ev);
  return {
    final: {
      steps: c.steps,
      flops: current.progress.flopsSeen,
      valLoss: after.loss,
      blocks: after.blocks,
      tokens: after.tokens,
      valLossBefore: start.valLossBefore,
    },
    startStep: start.step,
  };
}

function continueAtFromLaw(law: ChinchillaLaw, spec: RunSpec, entry: RunEntry, k: number, loss: number): number {
  const large = grownModel(entry.model, entry.stages.slice(0, k + 1));
  const shape = shapeOf(large, spec.context);
  const at = largeModelAt(
    law,
    { params: nonEmbeddingParams(shape), flopsPerToken: flopsPerToken(shape, spec.context) },
    { batchTokens: spec.batch * spec.context },
    loss,
  );
  if (!at)
    throw new Error(
      `the law says the grown ${large.layers}×d${large.dModel} model never reaches the loss at growth ${loss.toFixed(4)}: continueAt "law" is undefined`,
    );
  return Math.round(at.step);
}

interface GrowthCondition {
  /** Grow once the run has spent this many FLOPs / the stage has taken this many steps (when the timing is fixed). */
  flops?: number;
  steps?: number;
  /** Feed a validation point; true once the growth is due. */
  push(p: CurvePoint): boolean;
  /** Feed the stage's saved points; true when the growth was already due. */
  replay(points: readonly CurvePoint[]): boolean;
}

function growthCondition(
  spec: RunSpec,
  entry: RunEntry,
  k: number,
  stage: StageSpec,
  registry: Registry,
  law: ChinchillaLaw | null,
  maxLoss: number | null,
  budget: number,
  settledFrom: number,
): GrowthCondition {
  const fixed = (c: { flops?: number; steps?: number }): GrowthCondition => ({ ...c, push: () => false, replay: () => false });
  const at = stage.at;
  if (typeof at === "object" && "flops" in at) return fixed({ flops: at.flops });
  if (typeof at === "object" && "fraction" in at) return fixed({ flops: at.fraction * budget });
  if (typeof at === "object" && "step" in at) return fixed({ steps: at.step });
  const model = (m: ModelSpec) => runModelOf(m, spec.context);
  const timing = registry.get("growthTiming", timingRule(stage)!).create({
    stage: k,
    small: model(grownModel(entry.model, entry.stages.slice(0, k))),
    large: model(grownModel(entry.model, entry.stages.slice(0, k + 1))),
    batchTokens: spec.batch * spec.context,
    budget,
    law,
    maxLoss,
  });
  // A grown model's first steps run under the re-warmed LR, where its loss stalls by construction: the rule sees the
  // points after them.
  const test = timing.push?.bind(timing);
  const push = (p: CurvePoint) => test !== undefined && p.globalStep >= settledFrom && test(p);
  return {
    ...(timing.steps === undefined ? {} : { steps: timing.steps }),
    ...(timing.flops === undefined ? {} : { flops: timing.flops }),
    push,
    replay: (ps) => ps.some((p) => push(p)),
  };
}

export interface RunAllOptions extends ExecuteOptions {
  /** Run only these entries (by name, e.g. "baseline-s1"). */
  only?: readonly string[] | undefined;
  /** Called once the options and input files are checked, before anything is written, with the runs to do. */
  onStart?(names: string[]): void;
}

/** Every run of a spec into `outDir/<name>`, one after the other; returns their results. */
export async function runSpec(spec: RunSpec, outDir: string, o: RunAllOptions = {}): Promise<RunResult[]> {
  const entries = runEntries(spec);
  if (o.only) {
    const names = new Set(entries.map((e) => e.name));
    for (const n of o.only) if (!names.has(n)) throw new Error(`--only: no run named ${JSON.stringify(n)} (runs: ${[...names].join(", ")})`);
  }
  const todo = entries.filter((e) => !o.only || o.only.includes(e.name));
  await checkRunInputs(spec, o.registry);
  o.onStart?.(todo.map((e) => e.name));
  const results: RunResult[] = [];
  for (const e of todo) results.push(await executeRun(spec, e, join(outDir, e.name), o));
  return results;
}

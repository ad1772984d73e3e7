import { dirname, isAbsolute, resolve } from "node:path";
import { createDefaultRegistry, LR_SCALE_PARAMS, PRECISIONS, type LrScaleParams, type Precision } from "@staged/core";
import { LR_SCHEDULE_KINDS } from "@staged/scheduler";
import { DEVICES, type Device } from "@staged/trainer-ort";

/**
 * A staged run described in one JSON file (`staged run <spec.json>`): data, batch, optimizer, the budget,
 * the first model and its growth stages with their timing, and the comparisons to run beside it. Every
 * field is checked before anything is trained; an error names the file and the field.
 */
export interface RunSpec {
  /** The group name of the staged runs (directories `<name>-s<seed>`); default "staged". */
  name: string;
  /** `brown`, or a .txt / .bin file (relative paths are taken from the spec file's directory). */
  data: string;
  valData?: string;
  /** An HF tokenizer.json (default: bytes, vocabulary 256). */
  tokenizer?: string;
  /** Tokens per block and blocks per optimizer step. */
  context: number;
  batch: number;
  microBatch?: number;
  /** The training step's arithmetic (@staged/core's PRECISIONS; default fp32): part of the run's identity. */
  precision?: Precision;
  optimizer: { lr: number; betas?: [number, number]; eps?: number; weightDecay?: number; clip?: number | null; biasCorrection?: boolean };
  /**
   * The LR schedule: constant after a linear warmup. Staged and baseline runs are compared at every FLOP
   * count, which a schedule decaying over one run's own length would not allow: the built-in decaying kinds of
   * @staged/scheduler are refused. `kind` may also name an lrSchedule plugin of the run's registry (research code's
   * own schedule, checked by checkRunPlugins).
   */
  schedule: { kind: string; warmup: number };
  /** Validation every `every` steps on the first `blocks` blocks of the validation data. */
  eval: { every: number; blocks: number };
  /**
   * After the budget, every run trains `steps` more steps with the LR decaying linearly to 0 (the same cooldown
   * for every run of the final model's size), then is evaluated on `blocks` validation blocks (default: the whole
   * validation split). Its FLOPs come on top of the budget; its points are not part of the constant-LR curve.
   * `frontier`: fractions of the budget at which each baseline run also cools down a copy of itself the same way
   * (result.json `frontier`): the baseline's cooled-down frontier, which says how many FLOPs the model from scratch
   * needs to reach a cooled-down loss, and so what a staged run's cooled-down loss saved. Fractions above 1 extend
   * it past the budget (a staged run that ends below the baseline is priced there, not extrapolated): the baseline
   * then trains on after its budget, its final loss is a copy cooled down at the budget, and its curve, final loss
   * and result stay those of the budget.
   */
  cooldown?: { steps: number; blocks?: number; frontier?: number[] };
  /** Training compute of every run: FLOPs (as the trainer counts them) or tokens (× the final model's FLOPs per token). */
  budget: { flops: number } | { tokens: number };
  /** The first model (a fresh GPT-2; vocabulary 256 with bytes). */
  model: ModelSpec;
  /** The growths, in order. */
  stages: StageSpec[];
  /**
   * The scaling law, needed by `auto` and `plan` timings and continueAt "law": a Chinchilla-form fit (`staged plan fit
   * --form chinchilla` output), or `{"name": n}`, a Chinchilla-form law registered under "scheduler" in the run's
   * registry (checkRunPlugins).
   */
  law?: string | { name: string };
  /** The trainer: a "trainer" plugin of the run's registry (default "ort", @staged/trainer-ort's). */
  trainer?: string;
  /** Seeds of the staged runs (init and data order); default [0]. */
  seeds: number[];
  /** The final model trained from scratch with the same budget and hyperparameters; its seeds (default: none). */
  baseline?: { seeds: number[] };
  /** The first model trained for the whole budget without growing (is the target really compute-optimal?). */
  noGrowth?: { seeds: number[] };
  /** CPU threads of the trainer (default: all cores). */
  threads?: number;
  /** The trainer's execution provider (@staged/trainer-ort's DEVICES; default cpu); like threads, not part of a run's identity. */
  device?: Device;
}

export interface ModelSpec {
  /** A registered architecture: gpt2 (default) or llama. */
  arch: string;
  layers: number;
  dModel: number;
  heads: number;
  /** Key/value heads (grouped-query attention; default: one per query head). */
  kvHeads?: number;
  ffn?: number;
  vocab: number;
  /** Tie the output layer to the token embedding; absent: the architecture's default (GPT-2 ties, Llama does not). */
  tie?: boolean;
  /**
   * Dropout in [0, 1), written into every dropout field of the architecture's config (GPT-2: embd_pdrop,
   * attn_pdrop, resid_pdrop; Llama: attention_dropout) of the first model, which growth keeps, and of the
   * baseline; absent: 0.
   */
  dropout?: number;
}

/** When a growth happens. */
export type Timing =
  | { step: number } // at this step of the stage's model
  | { flops: number } // once the run has spent this many FLOPs
  | { fraction: number } // once the run has spent this fraction of the budget
  | "auto" // online: the marginal-efficiency rule of @staged/scheduler on the run's own validation curve
  | "plan" // ahead of time: the same rule on the law's simulated curve
  | { rule: string }; // a growth-timing rule registered under "growthTiming" (ExecuteOptions.registry)

export interface StageSpec {
  grow: "width" | "depth";
  /** Width: hidden/heads/FFN × factor; depth: layers × factor (default 2). */
  factor: number;
  at: Timing;
  /** Operator options (width: moments, symmetry, units, noiseStd, ffnFactor; depth: placement, init, moments). */
  options: Record<string, unknown>;
  /** LR re-warmup steps after the growth (default: the run's warmup, schedule.warmup). */
  rewarmup: number;
  /** The peak LR after the growth is the previous one × lrScale (default: the operator's; width 1/factor, depth 1). */
  lrScale?: number;
  /** Which parameters lrScale applies to: "all" (default) or "fanIn" (the matrices whose input dimension grew). */
  lrScaleParams?: LrScaleParams;
  /** Steps over which lrScale returns linearly to 1 (default 0: it stays). */
  lrRamp?: number;
  /** The step the grown model continues from: "keep" (default), "law" (the law's equal-loss step), or a step. */
  continueAt: "keep" | "law" | number;
}

/** The furthest a baseline's cooled-down frontier reaches past its budget (cooldown.frontier), as a fraction of it. */
const MAX_FRONTIER = 4;
const FRACTION = `a fraction of the budget in (0, ${MAX_FRONTIER}] other than 1 (the budget's own point is the run's final loss)`;
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Parse and check a spec; `file` names it in errors and anchors relative paths. */
export function parseRunSpec(raw: unknown, file: string): RunSpec {
  const fail = (field: string, what: string): never => {
    throw new Error(`${file}: ${field} ${what}`);
  };
  if (!isObj(raw)) fail("the spec", "must be a JSON object");
  const r = raw as Record<string, unknown>;
  const known = new Set([
    "name",
    "data",
    "valData",
    "tokenizer",
    "context",
    "batch",
    "microBatch",
    "precision",
    "optimizer",
    "schedule",
    "eval",
    "cooldown",
    "budget",
    "model",
    "stages",
    "law",
    "trainer",
    "seeds",
    "baseline",
    "noGrowth",
    "threads",
    "device",
    "$comment",
  ]);
  for (const k of Object.keys(r))
    if (!known.has(k)) fail(JSON.stringify(k), `is not a spec field (fields: ${[...known].filter((x) => x !== "$comment").join(", ")})`);

  const int = (v: unknown, field: string, min: number, max = Number.MAX_SAFE_INTEGER): number =>
    typeof v === "number" && Number.isInteger(v) && v >= min && v <= max
      ? v
      : fail(field, `must be an integer in [${min}, ${max}], got ${JSON.stringify(v)}`);
  const pos = (v: unknown, field: string): number =>
    typeof v === "number" && Number.isFinite(v) && v > 0 ? v : fail(field, `must be a number > 0, got ${JSON.stringify(v)}`);
  const str = (v: unknown, field: string): string =>
    typeof v === "string" && v !== "" ? v : fail(field, `must be a non-empty string, got ${JSON.stringify(v)}`);
  const path = (v: string) => (v === "brown" || isAbsolute(v) ? v : resolve(dirname(file), v));
  const device = (v: unknown): Device =>
    typeof v === "string" && (DEVICES as readonly string[]).includes(v)
      ? (v as Device)
      : fail("device", `must be one of ${DEVICES.join(", ")}, got ${JSON.stringify(v)}`);
  const precision = (v: unknown): Precision =>
    typeof v === "string" && (PRECISIONS as readonly string[]).includes(v)
      ? (v as Precision)
      : fail("precision", `must be one of ${PRECISIONS.join(", ")}, got ${JSON.stringify(v)}`);
  const seeds = (v: unknown, field: string): number[] => {
    if (!Array.isArray(v) || v.length === 0) return fail(field, "must be a non-empty list of seeds");
    const out = v.map((s, i) => int(s, `${field}[${i}]`, 0, 0xffffffff));
    if (new Set(out).size !== out.length) fail(field, "has a seed twice");
    return out;
  };
  const fields = (v: Record<string, unknown>, where: string, allowed: string[]) => {
    for (const k of Object.keys(v)) if (!allowed.includes(k)) fail(`${where}.${k}`, `is not a field (fields: ${allowed.join(", ")})`);
  };

  const name = r.name === undefined ? "staged" : str(r.name, "name");
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name) || name === "baseline" || name === "no-growth") {
    fail("name", `must be letters, digits, '.', '_', '-' and not "baseline" or "no-growth", got ${JSON.stringify(name)}`);
  }
  const context = int(r.context, "context", 2, 1 << 16);
  const batch = int(r.batch, "batch", 1, 1 << 16);
  const microBatch = r.microBatch === undefined ? undefined : int(r.microBatch, "microBatch", 1, batch);
  if (microBatch !== undefined && batch % microBatch !== 0) fail("microBatch", `must divide batch ${batch}, got ${microBatch}`);

  if (!isObj(r.optimizer)) fail("optimizer", "must be an object with lr");
  const o = r.optimizer as Record<string, unknown>;
  fields(o, "optimizer", ["lr", "betas", "eps", "weightDecay", "clip", "biasCorrection"]);
  const optimizer: RunSpec["optimizer"] = { lr: pos(o.lr, "optimizer.lr") };
  if (o.betas !== undefined) {
    const b = o.betas;
    if (!Array.isArray(b) || b.length !== 2 || !b.every((x) => typeof x === "number" && x >= 0 && x < 1))
      fail("optimizer.betas", "must be two numbers in [0, 1)");
    optimizer.betas = [(b as number[])[0]!, (b as number[])[1]!];
  }
  if (o.eps !== undefined) optimizer.eps = pos(o.eps, "optimizer.eps");
  if (o.weightDecay !== undefined) {
    optimizer.weightDecay =
      typeof o.weightDecay === "number" && o.weightDecay >= 0 && Number.isFinite(o.weightDecay)
        ? o.weightDecay
        : fail("optimizer.weightDecay", "must be a number ≥ 0");
  }
  if (o.clip !== undefined) optimizer.clip = o.clip === null ? null : pos(o.clip, "optimizer.clip");
  if (o.biasCorrection !== undefined) {
    optimizer.biasCorrection =
      typeof o.biasCorrection === "boolean"
        ? o.biasCorrection
        : fail("optimizer.biasCorrection", `must be true or false, got ${JSON.stringify(o.biasCorrection)}`);
  }

  const sch = r.schedule === undefined ? { kind: "constant", warmup: 0 } : r.schedule;
  if (!isObj(sch)) fail("schedule", "must be an object");
  const s = sch as Record<string, unknown>;
  fields(s, "schedule", ["kind", "warmup"]);
  if (s.kind !== undefined && s.kind !== "constant" && (typeof s.kind !== "string" || s.kind === "" || LR_SCHEDULE_KINDS.includes(s.kind))) {
    fail(
      "schedule.kind",
      `must be "constant" (staged and baseline runs are compared at every FLOP count, which a schedule decaying over one run's length breaks) ` +
        `or a registered schedule of your own, got ${JSON.stringify(s.kind)}`,
    );
  }
  const schedule = {
    kind: typeof s.kind === "string" ? s.kind : "constant",
    warmup: s.warmup === undefined ? 0 : int(s.warmup, "schedule.warmup", 0),
  };

  if (!isObj(r.eval)) fail("eval", "must be an object {every, blocks}");
  const e = r.eval as Record<string, unknown>;
  fields(e, "eval", ["every", "blocks"]);
  const evalSpec = { every: int(e.every, "eval.every", 1), blocks: e.blocks === undefined ? 64 : int(e.blocks, "eval.blocks", 1) };

  let cooldown: RunSpec["cooldown"];
  if (r.cooldown !== undefined) {
    if (!isObj(r.cooldown)) fail("cooldown", "must be an object {steps, blocks}");
    const c = r.cooldown as Record<string, unknown>;
    fields(c, "cooldown", ["steps", "blocks", "frontier"]);
    let frontier: number[] | undefined;
    if (c.frontier !== undefined) {
      if (!Array.isArray(c.frontier) || c.frontier.length === 0) fail("cooldown.frontier", `must be a non-empty list, each ${FRACTION}`);
      frontier = (c.frontier as unknown[]).map((f, i) => {
        if (typeof f !== "number" || !(f > 0 && f <= MAX_FRONTIER && f !== 1))
          fail(`cooldown.frontier[${i}]`, `must be ${FRACTION}, got ${JSON.stringify(f)}`);
        return f as number;
      });
      if (frontier.some((f, i) => i > 0 && f <= frontier![i - 1]!)) fail("cooldown.frontier", "must be increasing");
    }
    cooldown = {
      steps: int(c.steps, "cooldown.steps", 1),
      ...(c.blocks === undefined ? {} : { blocks: int(c.blocks, "cooldown.blocks", 1) }),
      ...(frontier ? { frontier } : {}),
    };
  }

  if (!isObj(r.budget)) fail("budget", 'must be {"flops": N} or {"tokens": N}');
  const b = r.budget as Record<string, unknown>;
  const budget =
    Object.keys(b).length === 1 && b.flops !== undefined
      ? { flops: pos(b.flops, "budget.flops") }
      : Object.keys(b).length === 1 && b.tokens !== undefined
        ? { tokens: pos(b.tokens, "budget.tokens") }
        : fail("budget", 'must be {"flops": N} or {"tokens": N}');

  if (!isObj(r.model)) fail("model", "must be an object {layers, dModel, heads}");
  const m = r.model as Record<string, unknown>;
  fields(m, "model", ["arch", "layers", "dModel", "heads", "kvHeads", "ffn", "vocab", "tie", "dropout"]);
  const archs = createDefaultRegistry().list("architecture");
  if (m.arch !== undefined && !archs.includes(m.arch as string))
    fail("model.arch", `must be one of ${archs.join(", ")}, got ${JSON.stringify(m.arch)}`);
  const model: ModelSpec = {
    arch: (m.arch as string | undefined) ?? "gpt2",
    layers: int(m.layers, "model.layers", 1, 1024),
    dModel: int(m.dModel, "model.dModel", 1, 1 << 16),
    heads: int(m.heads, "model.heads", 1, 1024),
    vocab: m.vocab === undefined ? 256 : int(m.vocab, "model.vocab", 2, 1 << 20),
    ...(m.tie === undefined ? {} : { tie: typeof m.tie === "boolean" ? m.tie : fail("model.tie", "must be true or false") }),
    ...(m.ffn === undefined ? {} : { ffn: int(m.ffn, "model.ffn", 1, 1 << 20) }),
    ...(m.kvHeads === undefined ? {} : { kvHeads: int(m.kvHeads, "model.kvHeads", 1, 1024) }),
    ...(m.dropout === undefined
      ? {}
      : {
          dropout:
            typeof m.dropout === "number" && m.dropout >= 0 && m.dropout < 1
              ? m.dropout
              : fail("model.dropout", `must be a number in [0, 1), got ${JSON.stringify(m.dropout)}`),
        }),
  };
  if (model.kvHeads !== undefined && model.heads % model.kvHeads !== 0)
    fail("model.kvHeads", `${model.kvHeads} does not divide model.heads ${model.heads}`);
  if (model.dModel % model.heads !== 0) fail("model.dModel", `${model.dModel} is not divisible by model.heads ${model.heads}`);

  if (!Array.isArray(r.stages)) fail("stages", "must be a list (empty: no growth)");
  const stages = (r.stages as unknown[]).map((v, i) => parseStage(v, `stages[${i}]`, fail, int, pos, schedule.warmup));
  const law = r.law === undefined ? undefined : isObj(r.law) ? registeredName(r.law) : path(str(r.law, "law"));
  function registeredName(v: Record<string, unknown>): { name: string } {
    fields(v, "law", ["name"]);
    return { name: str(v.name, "law.name") };
  }
  if (!law && stages.some((st) => st.at === "auto" || st.at === "plan" || st.continueAt === "law")) {
    fail("law", 'is needed by an "auto" or "plan" timing or continueAt "law" (a fit.json from `staged plan fit --form chinchilla`)');
  }
  const group = (v: unknown, field: string) => {
    if (v === undefined) return undefined;
    if (!isObj(v)) return fail(field, "must be an object {seeds: [...]}");
    fields(v, field, ["seeds"]);
    return { seeds: seeds(v.seeds, `${field}.seeds`) };
  };
  return {
    name,
    data: path(str(r.data, "data")),
    context,
    batch,
    optimizer,
    schedule,
    eval: evalSpec,
    budget,
    model,
    stages,
    seeds: r.seeds === undefined ? [0] : seeds(r.seeds, "seeds"),
    ...(r.valData === undefined ? {} : { valData: path(str(r.valData, "valData")) }),
    ...(r.tokenizer === undefined ? {} : { tokenizer: path(str(r.tokenizer, "tokenizer")) }),
    ...(microBatch === undefined ? {} : { microBatch }),
    ...(r.precision === undefined ? {} : { precision: precision(r.precision) }),
    ...(cooldown === undefined ? {} : { cooldown }),
    ...(law === undefined ? {} : { law }),
    ...(r.trainer === undefined ? {} : { trainer: str(r.trainer, "trainer") }),
    ...(r.baseline === undefined ? {} : { baseline: group(r.baseline, "baseline")! }),
    ...(r.noGrowth === undefined ? {} : { noGrowth: group(r.noGrowth, "noGrowth")! }),
    ...(r.threads === undefined ? {} : { threads: int(r.threads, "threads", 1, 1024) }),
    ...(r.device === undefined ? {} : { device: device(r.device) }),
  };
}

function parseStage(
  v: unknown,
  where: string,
  fail: (f: string, w: string) => never,
  int: (v: unknown, f: string, min: number, max?: number) => number,
  pos: (v: unknown, f: string) => number,
  warmup: number,
): StageSpec {
  if (!isObj(v)) fail(where, "must be an object {grow, at, ...}");
  const s = v as Record<string, unknown>;
  const allowed = ["grow", "factor", "at", "options", "rewarmup", "lrScale", "lrScaleParams", "lrRamp", "continueAt"];
  for (const k of Object.keys(s)) if (!allowed.includes(k)) fail(`${where}.${k}`, `is not a field (fields: ${allowed.join(", ")})`);
  if (s.grow !== "width" && s.grow !== "depth") fail(`${where}.grow`, `must be "width" or "depth", got ${JSON.stringify(s.grow)}`);
  let at: Timing;
  if (s.at === "auto" || s.at === "plan") at = s.at;
  else if (isObj(s.at) && Object.keys(s.at).length === 1) {
    const a = s.at;
    if (a.step !== undefined) at = { step: int(a.step, `${where}.at.step`, 1) };
    else if (a.flops !== undefined) at = { flops: pos(a.flops, `${where}.at.flops`) };
    else if (a.rule !== undefined) {
      if (typeof a.rule !== "string" || a.rule === "")
        fail(`${where}.at.rule`, `must be the name of a registered growth-timing rule, got ${JSON.stringify(a.rule)}`);
      at = { rule: a.rule };
    } else if (a.fraction !== undefined) {
      const f = pos(a.fraction, `${where}.at.fraction`);
      if (f >= 1) fail(`${where}.at.fraction`, `must be below 1, got ${f}`);
      at = { fraction: f };
    } else at = fail(`${where}.at`, 'must be "auto", "plan", {"step": N}, {"flops": N}, {"fraction": f} or {"rule": name}');
  } else at = fail(`${where}.at`, 'must be "auto", "plan", {"step": N}, {"flops": N} or {"fraction": f}');
  const options = s.options === undefined ? {} : isObj(s.options) ? { ...s.options } : fail(`${where}.options`, "must be an object");
  const ownFields = ["rewarmup", "continueAt", "lrScale", "lrScaleParams", "lrRamp"];
  for (const k of ["factor", "layers", "layerMap", ...ownFields, "registry"]) {
    if (k in options) fail(`${where}.options.${k}`, `is set by the stage itself (${ownFields.includes(k) ? k : "factor"}), not in options`);
  }
  if (s.lrScaleParams !== undefined && !LR_SCALE_PARAMS.includes(s.lrScaleParams as LrScaleParams)) {
    fail(
      `${where}.lrScaleParams`,
      `must be one of ${LR_SCALE_PARAMS.map((x) => JSON.stringify(x)).join(", ")}, got ${JSON.stringify(s.lrScaleParams)}`,
    );
  }
  const continueAt =
    s.continueAt === undefined || s.continueAt === "keep"
      ? ("keep" as const)
      : s.continueAt === "law"
        ? ("law" as const)
        : int(s.continueAt, `${where}.continueAt`, 0);
  return {
    grow: s.grow as "width" | "depth",
    factor: s.factor === undefined ? 2 : int(s.factor, `${where}.factor`, 2, 64),
    at,
    options,
    rewarmup: s.rewarmup === undefined ? warmup : int(s.rewarmup, `${where}.rewarmup`, 0),
    ...(s.lrScale === undefined ? {} : { lrScale: pos(s.lrScale, `${where}.lrScale`) }),
    ...(s.lrScaleParams === undefined ? {} : { lrScaleParams: s.lrScaleParams as LrScaleParams }),
    ...(s.lrRamp === undefined ? {} : { lrRamp: int(s.lrRamp, `${where}.lrRamp`, 0) }),
    continueAt,
  };
}

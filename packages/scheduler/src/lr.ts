import type { LrRestart, LrSchedulePlugin, LrScheduleSpec, ParamLrScale, Registry } from "@staged/core";

/** A learning rate as a pure function of the optimizer step (the number of updates already applied). */
export type LrFunction = (step: number) => number;

/** Base schedules without restarts, keyed by kind. */
type BaseFactory = (spec: LrScheduleSpec) => LrFunction;

function fail(kind: string, message: string): never {
  throw new Error(`invalid LR schedule "${kind}": ${message}`);
}

function nonNegativeNumber(spec: LrScheduleSpec, key: string, value: unknown, integer = false): number {
  if (typeof value !== "number" || !Number.isFinite(value) || value < 0 || (integer && !Number.isInteger(value))) {
    fail(spec.kind, `${key} must be a ${integer ? "non-negative integer" : "finite number ≥ 0"}, got ${JSON.stringify(value)}`);
  }
  return value;
}

function optionalNumber(spec: LrScheduleSpec, key: string, dflt: number, integer = false): number {
  const v = spec[key];
  return v === undefined ? dflt : nonNegativeNumber(spec, key, v, integer);
}

/** Linear warmup from 0: the factor HF's schedules use, `step / max(1, warmup)`. */
function warmupFactor(step: number, warmup: number): number {
  return step / Math.max(1, warmup);
}

/** Validation shared by every kind; returns the min LR (default 0). */
function validateCommon(spec: LrScheduleSpec, needsTotal: boolean): number {
  if (!spec || typeof spec !== "object") throw new Error("invalid LR schedule: expected an object");
  if (typeof spec.kind !== "string" || !spec.kind) throw new Error("invalid LR schedule: kind must be a non-empty string");
  const peak = nonNegativeNumber(spec, "peakLr", spec.peakLr);
  const warmup = nonNegativeNumber(spec, "warmupSteps", spec.warmupSteps, true);
  const total = nonNegativeNumber(spec, "totalSteps", spec.totalSteps, true);
  if (needsTotal && total < 1) fail(spec.kind, `totalSteps must be ≥ 1, got ${total}`);
  if (needsTotal && warmup > total) fail(spec.kind, `warmupSteps (${warmup}) exceeds totalSteps (${total})`);
  const minLr = spec.minLr === undefined ? 0 : nonNegativeNumber(spec, "minLr", spec.minLr);
  if (minLr > peak) fail(spec.kind, `minLr (${minLr}) exceeds peakLr (${peak})`);
  if (!Array.isArray(spec.restarts)) fail(spec.kind, "restarts must be an array (use [] for none)");
  spec.restarts.forEach((r: LrRestart, i: number) => {
    if (!r || typeof r !== "object") fail(spec.kind, `restarts[${i}] must be an object {step, warmupSteps}`);
    nonNegativeNumber(spec, `restarts[${i}].step`, r.step, true);
    nonNegativeNumber(spec, `restarts[${i}].warmupSteps`, r.warmupSteps, true);
  });
  validateParamScales(spec);
  return minLr;
}

function validateParamScales(spec: LrScheduleSpec): ParamLrScale[] {
  const list = spec.paramScales ?? [];
  if (!Array.isArray(list)) fail(spec.kind, "paramScales must be an array");
  list.forEach((p: ParamLrScale, i: number) => {
    if (!p || typeof p !== "object") fail(spec.kind, `paramScales[${i}] must be an object {step, scale, rampSteps, roles}`);
    nonNegativeNumber(spec, `paramScales[${i}].step`, p.step, true);
    nonNegativeNumber(spec, `paramScales[${i}].rampSteps`, p.rampSteps, true);
    if (!(typeof p.scale === "number" && Number.isFinite(p.scale) && p.scale > 0))
      fail(spec.kind, `paramScales[${i}].scale must be a number > 0, got ${JSON.stringify(p.scale)}`);
    if (p.roles !== null && !(Array.isArray(p.roles) && p.roles.every((r) => typeof r === "string"))) {
      fail(spec.kind, `paramScales[${i}].roles must be null (every parameter) or a list of parameter roles`);
    }
  });
  return list;
}

/** A per-parameter LR factor as a function of the step and the parameter's role (1 for every role when there is none). */
export type ParamLrScaleFunction = (step: number, role: string) => number;

/**
 * The product, over the schedule's `paramScales` (set by growths), of each one's factor for a parameter of this
 * role at this step: 1 before its step and for roles it does not name; from its step, `scale` rising linearly
 * to 1 over `rampSteps` (0: `scale` for good). The trainer multiplies each parameter's LR by it.
 */
export function paramLrScale(spec: LrScheduleSpec): ParamLrScaleFunction {
  const list = validateParamScales(spec);
  return (step, role) => {
    let f = 1;
    for (const p of list) {
      if (step < p.step || (p.roles !== null && !p.roles.includes(role))) continue;
      const t = p.rampSteps === 0 ? 0 : Math.min(1, (step - p.step) / p.rampSteps);
      f *= p.scale + (1 - p.scale) * t;
    }
    return f;
  };
}

/** Whether the schedule gives some parameters another LR than the others at some step. */
export const hasParamLrScales = (spec: LrScheduleSpec): boolean => (spec.paramScales ?? []).some((p) => p.scale !== 1);

/** Constant LR after a linear warmup (HF `get_constant_schedule_with_warmup`). */
const constant: BaseFactory = (spec) => {
  validateCommon(spec, false);
  const { peakLr, warmupSteps } = spec;
  return (s) => (s < warmupSteps ? peakLr * warmupFactor(s, warmupSteps) : peakLr);
};

/**
 * The paper's schedule: linear warmup from 0 to peakLr, then linear decay reaching minLr at totalSteps and
 * staying there (HF `get_linear_schedule_with_warmup` when minLr = 0).
 */
const linear: BaseFactory = (spec) => {
  const minLr = validateCommon(spec, true);
  const { peakLr, warmupSteps, totalSteps } = spec;
  return (s) => {
    if (s < warmupSteps) return peakLr * warmupFactor(s, warmupSteps);
    const frac = Math.max(0, (totalSteps - s) / Math.max(1, totalSteps - warmupSteps));
    return minLr + (peakLr - minLr) * frac;
  };
};

/** Linear warmup, then half a cosine from peakLr down to minLr at totalSteps (HF cosine schedule, 0.5 cycles). */
const cosine: BaseFactory = (spec) => {
  const minLr = validateCommon(spec, true);
  const { peakLr, warmupSteps, totalSteps } = spec;
  return (s) => {
    if (s < warmupSteps) return peakLr * warmupFactor(s, warmupSteps);
    const progress = Math.min(1, (s - warmupSteps) / Math.max(1, totalSteps - warmupSteps));
    return minLr + (peakLr - minLr) * 0.5 * (1 + Math.cos(Math.PI * progress));
  };
};

const WSD_SHAPES = ["linear", "cosine", "sqrt"] as const;

/**
 * Warmup-stable-decay: linear warmup, peakLr held, then a decay over the last `decayFraction` of totalSteps
 * (default 0.1) down to minLr. Option `decayShape`: "linear" (default), "cosine", or "sqrt" (1 − √progress).
 */
const wsd: BaseFactory = (spec) => {
  const minLr = validateCommon(spec, true);
  const { peakLr, warmupSteps, totalSteps } = spec;
  const fraction = optionalNumber(spec, "decayFraction", 0.1);
  if (fraction > 1) fail(spec.kind, `decayFraction must be in [0, 1], got ${fraction}`);
  const shape = spec.decayShape === undefined ? "linear" : spec.decayShape;
  if (!WSD_SHAPES.includes(shape as (typeof WSD_SHAPES)[number])) {
    fail(spec.kind, `decayShape must be one of ${WSD_SHAPES.join(", ")}, got ${JSON.stringify(shape)}`);
  }
  const decaySteps = Math.round(fraction * totalSteps);
  const decayStart = totalSteps - decaySteps;
  if (decayStart < warmupSteps) fail(spec.kind, `the decay (${decaySteps} steps) overlaps the warmup (${warmupSteps} steps)`);
  return (s) => {
    if (s < warmupSteps) return peakLr * warmupFactor(s, warmupSteps);
    if (s < decayStart) return peakLr;
    const p = Math.min(1, (s - decayStart) / Math.max(1, decaySteps));
    const f = shape === "cosine" ? 0.5 * (1 + Math.cos(Math.PI * p)) : shape === "sqrt" ? 1 - Math.sqrt(p) : 1 - p;
    return minLr + (peakLr - minLr) * f;
  };
};

/**
 * The seed code's `get_restart_linear_schedule_with_warmup` (allenai/staged-training), exactly, times peakLr.
 * Options: `restartSteps` (default 0) and `restartWarmupSteps` (default 0); with both non-zero, for steps in
 * [restartSteps, restartSteps + restartWarmupSteps) the factor is
 *   (s − r)/max(1, rw) · (r + rw)/max(1, warmup)                  while s < warmupSteps, else
 *   (s − r)/max(1, rw) · (total − r − rw)/max(1, total − warmup),
 * i.e. a linear re-warmup to the value the linear schedule has at r + rw; everywhere else the factor is HF's
 * linear warmup + linear decay to 0. minLr is not part of the seed's schedule and must be 0 or absent.
 */
const restartLinear: BaseFactory = (spec) => {
  const minLr = validateCommon(spec, false);
  if (minLr !== 0) fail(spec.kind, "minLr is not supported (the seed schedule decays to 0)");
  const { peakLr, warmupSteps, totalSteps } = spec;
  const r = optionalNumber(spec, "restartSteps", 0, true);
  const rw = optionalNumber(spec, "restartWarmupSteps", 0, true);
  const factor = (s: number): number => {
    if (r !== 0 && rw !== 0 && s < r + rw && s >= r) {
      if (s < warmupSteps) return ((s - r) / Math.max(1, rw)) * ((r + rw) / Math.max(1, warmupSteps));
      return ((s - r) / Math.max(1, rw)) * ((totalSteps - r - rw) / Math.max(1, totalSteps - warmupSteps));
    }
    if (s < warmupSteps) return s / Math.max(1, warmupSteps);
    return Math.max(0, (totalSteps - s) / Math.max(1, totalSteps - warmupSteps));
  };
  return (s) => peakLr * factor(s);
};

const BASE: Record<string, BaseFactory> = {
  constant,
  linear,
  cosine,
  wsd,
  "restart-linear": restartLinear,
};

/** The built-in schedule kinds, which createLrSchedule knows with or without a registry. */
export const LR_SCHEDULE_KINDS: readonly string[] = Object.keys(BASE);

/** The built-in kinds as lrSchedule plugins (registerScheduler registers them); `create` checks that the spec's kind matches. */
export const BUILTIN_LR_SCHEDULES: readonly LrSchedulePlugin[] = Object.entries(BASE).map(([name, factory]) => ({
  name,
  create(spec: LrScheduleSpec) {
    if (spec?.kind !== name) throw new Error(`lrSchedule plugin "${name}" got a spec of kind ${JSON.stringify(spec?.kind)}`);
    return factory(spec);
  },
}));
const BUILTIN = new Map(BUILTIN_LR_SCHEDULES.map((p) => [p.name, p]));

/** The schedule kinds known with this registry: the built-in ones, then the registry's other lrSchedule plugins. */
export function lrScheduleKinds(registry?: Registry): string[] {
  return [...LR_SCHEDULE_KINDS, ...(registry?.list("lrSchedule") ?? []).filter((k) => !BUILTIN.has(k))];
}

/** The plugin of a kind: the registry's lrSchedule plugin of that name, else the built-in kind; an unknown kind lists the known ones. */
function lrSchedulePlugin(kind: string, registry: Registry | undefined): LrSchedulePlugin {
  const plugin = registry?.has("lrSchedule", kind) ? registry.get("lrSchedule", kind) : BUILTIN.get(kind);
  if (!plugin) throw new Error(`unknown LR schedule kind ${JSON.stringify(kind)} (kinds: ${lrScheduleKinds(registry).join(", ")})`);
  return plugin;
}

/**
 * Apply one restart to a schedule: for steps in [r.step, r.step + r.warmupSteps) the LR ramps linearly from 0
 * towards the value `inner` has at r.step + r.warmupSteps (the seed code's re-warmup semantics), so the
 * schedule continues without a jump afterwards; outside that window it is `inner`.
 */
function applyRestart(inner: LrFunction, r: LrRestart): LrFunction {
  if (r.warmupSteps === 0) return inner;
  const end = r.step + r.warmupSteps;
  const target = inner(end);
  return (s) => (s >= r.step && s < end ? ((s - r.step) / r.warmupSteps) * target : inner(s));
}

/**
 * Turn a serializable schedule description into a pure function of the step.
 *
 * Built-in kinds: "constant", "linear" (the paper's: linear warmup + linear decay to minLr), "cosine", "wsd"
 * (warmup-stable-decay, option `decayFraction`, default 0.1, and `decayShape`), "restart-linear" (the seed
 * code's `get_restart_linear_schedule_with_warmup`, options `restartSteps`, `restartWarmupSteps`). With a
 * `registry`, a kind it holds an lrSchedule plugin of is that plugin's (research code registers its own kinds;
 * the fields every kind shares are checked first). Every kind then applies `spec.restarts` in step order (see
 * {@link withRestart}). The spec is validated up front; an invalid spec or an unknown kind throws an Error that
 * says what is wrong (and lists the kinds).
 */
export function createLrSchedule(spec: LrScheduleSpec, registry?: Registry): LrFunction {
  if (!spec || typeof spec !== "object") throw new Error("invalid LR schedule: expected an object");
  const plugin = lrSchedulePlugin(spec.kind, registry);
  // The built-in kinds check the common fields themselves, with their own needs (totalSteps ≥ 1 where they decay).
  if (BUILTIN.get(spec.kind) !== plugin) validateCommon(spec, false);
  let fn = plugin.create(spec);
  const restarts = [...spec.restarts].sort((a, b) => a.step - b.step);
  for (const r of restarts) fn = applyRestart(fn, r);
  const kind = spec.kind;
  return (step: number) => {
    if (typeof step !== "number" || !Number.isFinite(step) || step < 0) {
      throw new RangeError(`LR schedule "${kind}": step must be a finite number ≥ 0, got ${step}`);
    }
    return fn(step);
  };
}

/**
 * A cooldown appended to a schedule at `step`: the LR decays linearly from the schedule's value there to 0 over
 * `steps` steps (kind "wsd" ending at step + steps, with the schedule's warmup, completed restarts and per-parameter
 * factors kept). A re-warmup still under way at `step` is dropped: it would ramp towards the decayed LR, 0 at the
 * end. The input spec is not modified.
 */
export function withCooldown(spec: LrScheduleSpec, step: number, steps: number): LrScheduleSpec {
  for (const [k, v] of [
    ["step", step],
    ["steps", steps],
  ] as const) {
    if (!Number.isInteger(v) || v < (k === "steps" ? 1 : 0))
      throw new Error(`withCooldown: ${k} must be an integer ≥ ${k === "steps" ? 1 : 0}, got ${v}`);
  }
  const total = step + steps;
  const out: LrScheduleSpec = {
    ...spec,
    kind: "wsd",
    totalSteps: total,
    decayFraction: steps / total,
    minLr: 0,
    restarts: spec.restarts.filter((r) => r.step + r.warmupSteps <= step),
  };
  createLrSchedule(out); // validates
  return out;
}

/**
 * A copy of `spec` with one more restart: from `step` the LR re-warms up linearly from 0 over `warmupSteps`
 * steps towards the value the schedule has at `step + warmupSteps`, then continues the schedule unchanged.
 * Throws if the arguments are not non-negative integers. The input spec is not modified.
 */
export function withRestart(spec: LrScheduleSpec, step: number, warmupSteps: number): LrScheduleSpec {
  for (const [k, v] of [
    ["step", step],
    ["warmupSteps", warmupSteps],
  ] as const) {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
      throw new Error(`withRestart: ${k} must be a non-negative integer, got ${v}`);
    }
  }
  const restarts = [...(Array.isArray(spec.restarts) ? spec.restarts : []), { step, warmupSteps }].sort((a, b) => a.step - b.step);
  return { ...spec, restarts };
}

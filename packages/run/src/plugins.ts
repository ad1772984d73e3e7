/**
 * The plugins a staged run uses, looked up in its registry (core's Registry): the growth operators, the growth-timing
 * rules, the scaling law, the LR schedule and the trainer. Each name a spec gives is checked before anything is
 * written, with a one-line error naming the spec's file and field.
 */
import { createDefaultRegistry, parseJsonFile, readTextInput, type GrowthTimingPlugin, type Registry } from "@staged/core";
import { widthGrowth } from "@staged/grow-width";
import { depthGrowth } from "@staged/grow-depth";
import {
  fitLossCeiling,
  isChinchillaLaw,
  lawFromFit,
  lrScheduleKinds,
  registerScheduler,
  registeredLaw,
  type ChinchillaLaw,
  type FitResult,
} from "@staged/scheduler";
import { ortTrainer, type OrtTrainerPlugin } from "@staged/trainer-ort";
import type { RunSpec, StageSpec } from "./spec.js";
import { autoTiming, planTiming } from "./timing.js";

/**
 * What a staged run needs: core's architectures, the growth operators, the growth-timing rules "auto" and "plan",
 * @staged/scheduler's LR schedule kinds and scaling laws, and @staged/trainer-ort's trainer "ort" (the CLI adds
 * checkpoint formats to it). Research code registers its own plugins in it and passes it as executeRun's `registry`.
 */
export function createRunRegistry(): Registry {
  return registerScheduler(createDefaultRegistry())
    .register("growth", widthGrowth)
    .register("growth", depthGrowth)
    .register("growthTiming", autoTiming)
    .register("growthTiming", planTiming)
    .register("trainer", ortTrainer);
}

/** The trainer a spec names when it names none. */
export const DEFAULT_TRAINER = "ort";

/** The growth-timing rule a stage names: "auto", "plan" or {"rule": name}; null for a fixed moment. */
export function timingRule(stage: StageSpec): string | null {
  const at = stage.at;
  return typeof at === "string" ? at : "rule" in at ? at.rule : null;
}

const where = (file: string | undefined, field: string) => `${file === undefined ? "" : `${file}: `}${field}`;
const registered = (registry: Registry, kind: "growthTiming" | "scheduler" | "trainer") => registry.list(kind).join(", ") || "none";

/**
 * The growth-timing rules a spec's stages name, each registered, and a law in the spec for those that need one; else a
 * one-line error naming the stage (and `file`, the spec's path, when given).
 */
export function checkTimingRules(spec: RunSpec, registry: Registry = createRunRegistry(), file?: string): GrowthTimingPlugin[] {
  return spec.stages.flatMap((stage, i) => {
    const name = timingRule(stage);
    if (name === null) return [];
    const at = where(file, `stages[${i}].at`);
    if (!registry.has("growthTiming", name))
      throw new Error(`${at}: unknown growth-timing rule "${name}" (registered: ${registered(registry, "growthTiming")})`);
    const rule = registry.get("growthTiming", name);
    if (rule.needsLaw && spec.law === undefined)
      throw new Error(`${at}: the rule "${name}" needs the spec's law (a fit.json from \`staged plan fit --form chinchilla\`)`);
    return [rule];
  });
}

/**
 * Every plugin a spec names, checked against the registry before anything is written: the growth-timing rules
 * (checkTimingRules), the law `{"name": n}` (registered under "scheduler", Chinchilla-form), the schedule's kind (an
 * lrSchedule plugin, or a built-in kind) and the trainer. An unknown name is a one-line error naming the field (and
 * `file`, the spec's path, when given). Returns the rules and the trainer.
 */
export function checkRunPlugins(
  spec: RunSpec,
  registry: Registry = createRunRegistry(),
  file?: string,
): { rules: GrowthTimingPlugin[]; trainer: OrtTrainerPlugin } {
  const rules = checkTimingRules(spec, registry, file);
  if (spec.law !== undefined && typeof spec.law !== "string") registeredRunLaw(spec.law.name, registry, file);
  const kinds = lrScheduleKinds(registry);
  if (!kinds.includes(spec.schedule.kind)) {
    throw new Error(`${where(file, "schedule.kind")}: unknown LR schedule "${spec.schedule.kind}" (registered: ${kinds.join(", ")})`);
  }
  return { rules, trainer: runTrainer(spec, registry, file) };
}

/**
 * The trainer a spec names (default "ort"), from the registry. A registered trainer is called with @staged/trainer-ort's
 * options and callbacks (OrtTrainerPlugin), which a registry cannot check: registering one under "trainer" says it takes them.
 */
export function runTrainer(spec: RunSpec, registry: Registry, file?: string): OrtTrainerPlugin {
  const name = spec.trainer ?? DEFAULT_TRAINER;
  if (!registry.has("trainer", name))
    throw new Error(`${where(file, "trainer")}: unknown trainer "${name}" (registered: ${registered(registry, "trainer")})`);
  return registry.get("trainer", name) as OrtTrainerPlugin;
}

/** The law registered under `name`, which a staged run's growth timing (run units) needs in Chinchilla form. */
function registeredRunLaw(name: string, registry: Registry, file?: string): ChinchillaLaw {
  const field = where(file, "law.name");
  if (!registry.has("scheduler", name)) throw new Error(`${field}: unknown scaling law "${name}" (registered: ${registered(registry, "scheduler")})`);
  const law = registeredLaw(registry, name);
  if (!isChinchillaLaw(law))
    throw new Error(`${field}: the law "${name}" is ${law.form}-form: growth timing in run units needs a Chinchilla-form law`);
  return law;
}

/** Load the Chinchilla-form law a spec names, with the loss below which its fit is backed by data. */
export async function loadLaw(file: string): Promise<{ law: ChinchillaLaw; maxLoss: number | null }> {
  const fit = parseJsonFile(await readTextInput(file, "the law"), file) as FitResult;
  const law = lawFromFit(fit, file);
  if (!isChinchillaLaw(law))
    throw new Error(`${file}: growth timing in run units needs a Chinchilla-form fit (staged plan fit --law chinchilla), got ${law.form}`);
  return { law, maxLoss: fitLossCeiling(fit) };
}

/**
 * The law of a spec: its fit file loaded (loadLaw), or the registered law it names (no data backs a registered law's
 * losses: maxLoss null).
 */
export async function runLaw(law: NonNullable<RunSpec["law"]>, registry: Registry): Promise<{ law: ChinchillaLaw; maxLoss: number | null }> {
  return typeof law === "string" ? loadLaw(law) : { law: registeredRunLaw(law.name, registry), maxLoss: null };
}

import type { LrSchedulePlugin, Registry } from "@staged/core";
import { BUILTIN_LR_SCHEDULES } from "./lr.js";
import { chinchilla, isScalingLaw, kaplan, type ScalingLaw } from "./laws.js";

/** One lrSchedule plugin per built-in schedule kind; `create(spec)` checks that the spec's kind matches. */
export function lrSchedulePlugins(): LrSchedulePlugin[] {
  return [...BUILTIN_LR_SCHEDULES];
}

/**
 * Register this package's plugins: every built-in LR schedule kind as an `lrSchedule` plugin, and the Kaplan and
 * Chinchilla scaling laws (the papers' constants) as `scheduler` plugins. Returns the registry for chaining.
 */
export function registerScheduler(registry: Registry): Registry {
  for (const p of lrSchedulePlugins()) registry.register("lrSchedule", p);
  registry.register("scheduler", kaplan);
  registry.register("scheduler", chinchilla);
  return registry;
}

/** The scaling law registered under `name` (a "scheduler" plugin), checked to be one (ScalingLaw: form, curve, ...). */
export function registeredLaw(registry: Registry, name: string): ScalingLaw {
  const law = registry.get("scheduler", name);
  if (!isScalingLaw(law))
    throw new Error(
      `the scheduler plugin "${name}" is not a scaling law (it needs form "kaplan" or "chinchilla", constants, lossAtConvergence and curve)`,
    );
  return law;
}

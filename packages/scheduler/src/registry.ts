import type { LrSchedulePlugin, LrScheduleSpec, Registry } from "@staged/core";
import { LR_SCHEDULE_KINDS, createLrSchedule } from "./lr.js";
import { chinchilla, kaplan } from "./laws.js";

/** One lrSchedule plugin per schedule kind; `create(spec)` checks that the spec's kind matches. */
export function lrSchedulePlugins(): LrSchedulePlugin<LrScheduleSpec>[] {
  return LR_SCHEDULE_KINDS.map((name) => ({
    name,
    create(spec: LrScheduleSpec) {
      if (spec?.kind !== name) throw new Error(`lrSchedule plugin "${name}" got a spec of kind ${JSON.stringify(spec?.kind)}`);
      return createLrSchedule(spec);
    },
  }));
}

/**
 * Register this package's plugins: every LR schedule kind as an `lrSchedule` plugin, and the Kaplan and
 * Chinchilla scaling laws as `scheduler` plugins. Returns the registry for chaining.
 */
export function registerScheduler(registry: Registry): Registry {
  for (const p of lrSchedulePlugins()) registry.register("lrSchedule", p as LrSchedulePlugin<never>);
  registry.register("scheduler", kaplan);
  registry.register("scheduler", chinchilla);
  return registry;
}

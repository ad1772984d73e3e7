import type { ArchitecturePlugin, PluginKind, PluginKinds } from "./plugins.js";
import { gpt2 } from "./gpt2.js";
import { llama } from "./llama.js";

export interface Registry {
  register<K extends PluginKind>(kind: K, plugin: PluginKinds[K]): Registry;
  get<K extends PluginKind>(kind: K, name: string): PluginKinds[K];
  has(kind: PluginKind, name: string): boolean;
  list(kind: PluginKind): string[];
  /** The architecture that reads configs of this HF `model_type` (ArchitecturePlugin.modelTypes), or undefined. */
  architectureFor(modelType: unknown): ArchitecturePlugin | undefined;
}

const KINDS: readonly PluginKind[] = ["architecture", "growth", "scheduler", "lrSchedule", "trainer", "checkpointFormat", "growthTiming"];

/** An empty registry; nothing is shared between registries. */
export function createRegistry(): Registry {
  const byKind = new Map<PluginKind, Map<string, unknown>>(KINDS.map((k) => [k, new Map()]));
  const table = (kind: PluginKind): Map<string, unknown> => {
    const t = byKind.get(kind);
    if (!t) throw new Error(`unknown plugin kind "${String(kind)}" (kinds: ${KINDS.join(", ")})`);
    return t;
  };
  const registry: Registry = {
    register(kind, plugin) {
      const t = table(kind);
      if (!plugin || typeof plugin.name !== "string" || !plugin.name) throw new Error(`a ${kind} plugin needs a name`);
      if (t.has(plugin.name)) throw new Error(`${kind} plugin "${plugin.name}" is already registered`);
      t.set(plugin.name, plugin);
      return registry;
    },
    get(kind, name) {
      const t = table(kind);
      const p = t.get(name);
      if (!p) {
        const known = [...t.keys()];
        throw new Error(`unknown ${kind} "${name}" (registered: ${known.length ? known.join(", ") : "none"})`);
      }
      return p as PluginKinds[typeof kind];
    },
    has: (kind, name) => table(kind).has(name),
    list: (kind) => [...table(kind).keys()].sort(),
    architectureFor: (modelType) =>
      [...(table("architecture") as Map<string, ArchitecturePlugin>).values()].find((arch) => arch.modelTypes.includes(String(modelType))),
  };
  return registry;
}

/** A registry holding core's built-in plugins (the GPT-2 architecture); other packages add theirs. */
export function createDefaultRegistry(): Registry {
  return createRegistry().register("architecture", gpt2).register("architecture", llama);
}

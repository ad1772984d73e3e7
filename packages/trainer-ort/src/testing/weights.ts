import type { ArchitecturePlugin } from "@staged/core";

/** A fresh model's weights as float32 arrays by name: the plugin's own initialization of `config` with `seed`. */
export const initWeights = (plugin: ArchitecturePlugin, config: Record<string, unknown>, seed: number): Map<string, Float32Array> =>
  new Map([...plugin.init(plugin.parseConfig(config).config, seed)].map(([n, t]) => [n, Float32Array.from(t.f32)]));

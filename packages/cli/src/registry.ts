import { createDefaultRegistry, type Registry } from "@staged/core";
import { widthGrowth } from "@staged/grow-width";
import { depthGrowth } from "@staged/grow-depth";

/** Every built-in plugin: core's architectures plus the growth operators. */
export function createCliRegistry(): Registry {
  return createDefaultRegistry()
    .register("growth", widthGrowth)
    .register("growth", depthGrowth);
}

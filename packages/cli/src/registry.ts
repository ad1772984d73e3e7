import { createDefaultRegistry, type Registry } from "@staged/core";
import { widthGrowth } from "@staged/grow-width";
import { depthGrowth } from "@staged/grow-depth";
import { hfTrainerFormat } from "@staged/hf-trainer";

/** Every built-in plugin: core's architectures, the growth operators, and Hugging Face Trainer checkpoints as a format. */
export function createCliRegistry(): Registry {
  return createDefaultRegistry()
    .register("growth", widthGrowth)
    .register("growth", depthGrowth)
    .register("checkpointFormat", hfTrainerFormat);
}

import type { Registry } from "@staged/core";
import { hfTrainerFormat } from "@staged/hf-trainer";
import { createRunRegistry } from "@staged/run";

/** Every built-in plugin: a staged run's (core's architectures, the growth operators) and Hugging Face Trainer checkpoints as a format. */
export function createCliRegistry(): Registry {
  return createRunRegistry().register("checkpointFormat", hfTrainerFormat);
}

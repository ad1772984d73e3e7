import type { TrainerPlugin } from "@staged/core";
import { evaluate, train, type EvaluateOptions, type TrainCallbacks, type TrainOptions } from "./trainer.js";

/** A trainer with this package's options and callbacks: what `staged run` (@staged/run) calls a registered trainer with. */
export type OrtTrainerPlugin = TrainerPlugin<TrainOptions, TrainCallbacks, EvaluateOptions>;

/** This package's trainer (`train`, `evaluate`) as the "trainer" plugin "ort", the default of a `staged run` spec. */
export const ortTrainer: OrtTrainerPlugin = { name: "ort", train, evaluate };

import type { ParamSpec } from "@staged/core";

/**
 * Trainer's two AdamW parameter groups (transformers' Trainer.create_optimizer, get_decay_parameter_names): first the
 * parameters it decays, then the others (biases and every norm's parameters), each in `named_parameters()` order, tied
 * weights once. The architecture's `params()` is that order, and its `decay` flag is that rule (tested on the
 * fixtures' named_parameters and groups): optimizer.pt stores no names, only these positions.
 */
export function trainerGroups(specs: readonly ParamSpec[]): [decayed: string[], notDecayed: string[]] {
  return [specs.filter((p) => p.decay).map((p) => p.name), specs.filter((p) => !p.decay).map((p) => p.name)];
}

import { namedParameters, type ArchitecturePlugin, type ParamSpec } from "@staged/core";

/**
 * Trainer's two AdamW parameter groups (transformers' Trainer.create_optimizer, get_decay_parameter_names): first the
 * parameters it decays, then the others (biases and every norm's parameters), each in `named_parameters()` order, tied
 * weights once. The architecture gives that order (core's namedParameters: params() with its blockModuleOrder) and
 * the rule (ParamSpec.decay), tested on the fixtures' named_parameters and groups: optimizer.pt stores no names, only
 * these positions.
 */
export function trainerGroups(arch: ArchitecturePlugin, specs: readonly ParamSpec[]): [decayed: string[], notDecayed: string[]] {
  const ordered = namedParameters(arch, specs);
  return [ordered.filter((p) => p.decay).map((p) => p.name), ordered.filter((p) => !p.decay).map((p) => p.name)];
}

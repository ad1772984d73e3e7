import { createDefaultRegistry, gpt2, type Registry } from "@staged/core";
import { decoderGraph } from "./decoder.js";
import type { ModelGraph } from "./types.js";

export type { ApplyDropout, ComputeType, DropoutSite, KvCache, ModelGraph } from "./types.js";
export { decoderGraph, geluNew, rmsNorm, silu } from "./decoder.js";
export { rotaryTables } from "@staged/core";

/**
 * The model graph of a registered architecture: the generic decoder built from its plugin (parameter roles
 * and DecoderSpec). Unknown names get the registry's error, which lists the registered ones.
 */
export function modelGraph(architecture: string, registry: Registry = createDefaultRegistry()): ModelGraph {
  return decoderGraph(registry.get("architecture", architecture));
}

/** Architectures that have a model graph: every one the registry holds. */
export const modelGraphNames = (registry: Registry = createDefaultRegistry()): string[] => registry.list("architecture");

/** GPT-2's graph (HF GPT2LMHeadModel), the decoder of core's gpt2 plugin. */
export const gpt2Graph: ModelGraph = decoderGraph(gpt2);

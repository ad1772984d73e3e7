import { gpt2 } from "./gpt2.js";
import type { ModelGraph } from "./types.js";

export type { ModelGraph } from "./types.js";
export { gpt2 as gpt2Graph, geluNew } from "./gpt2.js";

const MODEL_GRAPHS: Readonly<Record<string, ModelGraph>> = { gpt2 };

/** The model-graph module of an architecture; throws listing the known ones. */
export function modelGraph(architecture: string): ModelGraph {
  const m = Object.hasOwn(MODEL_GRAPHS, architecture) ? MODEL_GRAPHS[architecture] : undefined;
  if (!m) throw new Error(`no model graph for architecture "${architecture}" (known: ${Object.keys(MODEL_GRAPHS).join(", ")})`);
  return m;
}

export const modelGraphNames = (): string[] => Object.keys(MODEL_GRAPHS);

/**
 * The project's own checkpoint format in memory (docs/formats.md): a state's parameters and moments as the tensors a
 * save writes, the files that travel with a checkpoint, and what a checkpoint's parameters must be. The save protocol
 * around it is ./save.ts; reading a checkpoint directory, ./load.ts.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { DType } from "../dtype.js";
import { parseJsonFile } from "../files.js";
import { parseMetrics } from "../metrics-format.js";
import type { ArchitecturePlugin, ParamSpec } from "../plugins.js";
import type { TensorEntry, WriteObserver } from "../safetensors/writer.js";
import { writeCheckpoint } from "../shards.js";
import { formatStateFile, STATE_FILE } from "../state-format.js";
import { byteLevelTokenizerFiles } from "../tokenizer-json.js";
import type { LazyTensor, TrainingState } from "../types.js";
import type { SaveOptions } from "./save.js";

/** Files of an HF model directory that travel with a checkpoint unchanged. */
export const COPIED_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "vocab.json",
  "merges.txt",
  "generation_config.json",
  // The trainer's learning curve travels with the state, through growth too, for the scheduler to read.
  "metrics.jsonl",
];

/**
 * Check a file that travels with a checkpoint before it is carried into the next one: what a later command will
 * parse must parse now, so a grown or exported checkpoint never inherits a file that makes it unusable. JSON files
 * must be JSON objects (tokenizer.json one with a "model" object, as every tokenizers file has), text must be UTF-8,
 * metrics.jsonl must be the trainer's lines.
 */
export function checkCopiedFile(name: string, bytes: Uint8Array, display: string): Uint8Array {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`${display}: not UTF-8 text`);
  }
  if (name === "metrics.jsonl") {
    parseMetrics(text, display);
  } else if (name.endsWith(".json")) {
    const v = parseJsonFile(text, display);
    if (!isObject(v)) throw new Error(`${display}: expected a JSON object`);
    if (name === "tokenizer.json" && !isObject(v.model)) throw new Error(`${display}: not a tokenizer.json (no "model" object)`);
  }
  return bytes;
}

/** A JSON object (not null, not an array). */
export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Parameter dtypes a checkpoint may hold (F64 and integers are refused, not silently converted). */
export const PARAM_DTYPES: readonly DType[] = ["F32", "F16", "BF16"];

/** Refuse a parameter or moment of another dtype or shape than the config says, naming it (`what`). */
export function checkTensor(t: LazyTensor, shape: readonly number[], what: string): void {
  if (!PARAM_DTYPES.includes(t.dtype)) throw new Error(`${what} has dtype ${t.dtype}; parameters must be ${PARAM_DTYPES.join(", ")}`);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`${what} has shape [${t.shape}], the config says [${shape}]`);
  }
}

/** The project's own checkpoint layout (docs/formats.md): HF model files, optimizer.safetensors, training_state.json. */
export const STAGED_FORMAT = "staged";

/** What a save knows of the state's model before anything is written (the config with the state's shape, its parameters in order). */
export interface ModelToSave {
  arch: ArchitecturePlugin;
  config: Record<string, unknown>;
  specs: ParamSpec[];
  model: { entries: TensorEntry[]; dtype: string };
}

/** What a checkpoint format writes into a new directory (see saveCheckpointDirectory, CheckpointFormatPlugin). */
export interface CheckpointContents {
  /** Every tensor the save writes: the totals of its progress. */
  tensors: readonly TensorEntry[];
  /** Write the checkpoint's files into `tmp`, a new empty directory; each tensor's pieces go through `observer`. */
  write(tmp: string, observer: WriteObserver): Promise<void>;
  /**
   * Whether the files of a replaced directory that this write does not write (a README, notes) are carried into the
   * new one (default true). An ONNX export, whose every file is its own, says false: a file of the old one is stale.
   */
  carryOtherFiles?: boolean;
  /** What the directory is, in messages ("checkpoint" by default, "export"). */
  what?: string;
}

/** What a save in the project's own format writes: the HF model files, optimizer.safetensors, training_state.json. */
export function stagedContents(state: TrainingState, m: ModelToSave, options: SaveOptions): CheckpointContents {
  const moments = momentEntries(m.specs, state);
  return {
    tensors: [...m.model.entries, ...(moments ?? [])],
    write: async (tmp, observer) => {
      await writeModelFiles(tmp, state, m, observer, options);
      if (moments) await writeCheckpoint(tmp, "optimizer", moments, { maxShardBytes: options.maxShardBytes, metadata: { format: "pt" }, observer });
      await writeFile(join(tmp, STATE_FILE), formatStateFile(state, moments !== null));
    },
  };
}

/**
 * The files of an HF model directory: config.json (with the state's shape and torch_dtype), the weights
 * (model.safetensors, sharded above maxShardBytes), and the files that travel with the state (tokenizer files, ...).
 */
export async function writeModelFiles(
  tmp: string,
  state: TrainingState,
  m: ModelToSave,
  observer: WriteObserver,
  options: SaveOptions,
): Promise<void> {
  // transformers ≥ 5 names the dtype "dtype" (and still reads "torch_dtype"): a config that has it gets both.
  const dtype = { torch_dtype: m.model.dtype, ...("dtype" in m.config ? { dtype: m.model.dtype } : {}) };
  await writeFile(join(tmp, "config.json"), JSON.stringify({ ...m.config, ...dtype }, null, 2) + "\n");
  await writeCheckpoint(tmp, "model", m.model.entries, { maxShardBytes: options.maxShardBytes, metadata: { format: "pt" }, observer });
  for (const [name, bytes] of filesToWrite(state)) await writeFile(join(tmp, name), bytes);
}

/**
 * The files that travel with the state; a byte-level state also gets the 256-entry byte-level BPE
 * tokenizer.json (and tokenizer_config.json), so HF tools (transformers, transformers.js) can decode it.
 */
function filesToWrite(state: TrainingState): Map<string, Uint8Array> {
  const files = new Map(state.files ?? []);
  if (state.tokenizer.kind === "bytes" && !files.has("tokenizer.json")) {
    for (const [name, bytes] of byteLevelTokenizerFiles()) if (!files.has(name)) files.set(name, bytes);
  }
  return files;
}

/** The parameters in the architecture's order, each checked against the config, and the config's torch_dtype for them. */
export function modelEntries(specs: ParamSpec[], state: TrainingState): { entries: TensorEntry[]; dtype: string } {
  const entries = specs.map((spec) => {
    const t = state.params.get(spec.name);
    if (!t) throw new Error(`state has no parameter ${spec.name}`);
    checkTensor(t, spec.shape, `parameter ${spec.name}`);
    return { name: spec.name, tensor: t };
  });
  const dtypes = new Set(entries.map((e) => e.tensor.dtype));
  const dtype = dtypes.size === 1 ? { F64: "float64", F32: "float32", F16: "float16", BF16: "bfloat16" }[[...dtypes][0] as "F32"] : "float32";
  return { entries, dtype };
}

/** The moments exp_avg.<name>, exp_avg_sq.<name> in the architecture's order, each checked; null for a state without. */
export function momentEntries(specs: ParamSpec[], state: TrainingState): TensorEntry[] | null {
  const { expAvg, expAvgSq } = state.optimizer;
  if (!expAvg && !expAvgSq) return null;
  const entries: TensorEntry[] = [];
  for (const [prefix, map] of [
    ["exp_avg", expAvg],
    ["exp_avg_sq", expAvgSq],
  ] as const) {
    for (const spec of specs) {
      const t = map?.get(spec.name);
      if (!t) throw new Error(`optimizer state has no ${prefix} for ${spec.name}`);
      checkTensor(t, spec.shape, `moment ${prefix}.${spec.name}`);
      entries.push({ name: `${prefix}.${spec.name}`, tensor: t });
    }
  }
  return entries;
}

import { constants as bufferConstants } from "node:buffer";
import { freemem, totalmem } from "node:os";
import { stat, statfs } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { DTYPE_SIZES } from "./dtype.js";
import type { LazyTensor, ModelShape, TrainingState } from "./types.js";

/**
 * Sanity bounds on a model's size, checked before any allocation or per-layer work (reading a config,
 * `staged init`, growth options). They are far above every released checkpoint, so a real header always
 * passes: the largest dense models (Llama 3.1 405B: 126 layers, hidden 16384, FFN 53248, vocabulary 128256,
 * 131072 positions; PaLM 540B: FFN 73728) and the largest published ones of any kind (about 2·10¹²
 * parameters) are 5 to 100 times below them. What they stop is a typo or a corrupt config (n_layer 100000000)
 * that would otherwise allocate or loop for minutes before failing.
 */
export interface ModelLimits {
  /** Distinct trainable values. 10¹³, 40 TB as F32. */
  parameters: number;
  /** Transformer blocks. 10⁴ (the deepest trained transformers have about 10³). */
  layers: number;
  /** Hidden size and attention heads. 2²⁰. */
  dModel: number;
  heads: number;
  /** MLP inner size. 2²⁰. */
  ffn: number;
  /** Vocabulary. 2²⁴ (the largest in use are about 2.6·10⁵). */
  vocab: number;
  /** Positions. 2²⁴ (the longest configured contexts are about 10⁷). */
  context: number;
}

export const MODEL_LIMITS: Readonly<ModelLimits> = Object.freeze({
  parameters: 1e13,
  layers: 10_000,
  dModel: 2 ** 20,
  heads: 2 ** 20,
  ffn: 2 ** 20,
  vocab: 2 ** 24,
  context: 2 ** 24,
});

/** What each shape field is called where the numbers came from (a config's keys, a command's options). */
export type ShapeNames = Partial<Record<keyof ModelShape, string>>;

const SHAPE_WORDS: Required<ShapeNames> = {
  layers: "layers",
  dModel: "d_model",
  heads: "heads",
  headDim: "head_dim",
  ffn: "ffn",
  vocab: "vocab",
  context: "context",
  kvHeads: "kv_heads",
  gatedMlp: "gated_mlp",
};
/** The fields that set the parameter count, in the order a message lists them. */
const SIZE_FIELDS = ["layers", "dModel", "ffn", "vocab", "context"] as const;
const BOUNDED_FIELDS = ["layers", "dModel", "heads", "ffn", "vocab", "context"] as const;

/** Bytes per value of a model held as float32, the dtype every size message assumes. */
export const F32_BYTES = 4;

/** A count for a message: exact below a million, else 7.1e14 (1e13, not 1.0e13). */
export function formatCount(n: number): string {
  if (!Number.isFinite(n)) return "more than 1e308";
  if (n < 1e6) return String(n);
  return n.toExponential(1).replace("e+", "e").replace(".0e", "e");
}

/** Bytes in decimal units: 498 MB, 12.3 GB, 2.8 PB. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return "more than 1e308 bytes";
  const units = ["bytes", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
  let u = 0,
    v = n;
  while (v >= 1000 && u < units.length - 1) {
    v /= 1000;
    u++;
  }
  if (u === 0) return `${n} bytes`;
  return `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ${units[u]}`;
}

/**
 * Throw when a model is above {@link MODEL_LIMITS}: one line with the parameter count and its size as F32.
 * `where` names the file or command ("x/config.json"), `names` what the fields are called there;
 * `cause` is what produced the shape when it is not the fields themselves ("factor 30000").
 *   config.json: n_layer 100000000 gives 7.1e14 parameters (2.8 PB as F32); the limits are n_layer ≤ 10000 and 1e13 parameters
 */
export function checkModelSize(
  where: string,
  shape: ModelShape,
  parameters: number,
  options: { names?: ShapeNames; cause?: string; limits?: ModelLimits } = {},
): void {
  const limits = options.limits ?? MODEL_LIMITS;
  const name = (f: keyof ModelShape) => options.names?.[f] ?? SHAPE_WORDS[f];
  // `!(x <= limit)` also catches NaN.
  const over = BOUNDED_FIELDS.filter((f) => !(shape[f] <= limits[f]));
  const tooMany = !(parameters <= limits.parameters);
  if (!over.length && !tooMany) return;
  const fields = (list: readonly (keyof ModelShape)[]) => list.map((f) => `${name(f)} ${shape[f]}`).join(", ");
  const subject = options.cause ?? fields(over.length ? over : SIZE_FIELDS);
  const gives = options.cause && over.length ? `${fields(over)} and ${formatCount(parameters)} parameters` : `${formatCount(parameters)} parameters`;
  const bounds = [...over.map((f) => `${name(f)} ≤ ${limits[f]}`), ...(tooMany ? [`${formatCount(limits.parameters)} parameters`] : [])];
  const boundText = bounds.length > 1 ? `the limits are ${bounds.slice(0, -1).join(", ")} and ${bounds.at(-1)}` : `the limit is ${bounds[0]}`;
  throw new Error(`${where ? `${where}: ` : ""}${subject} gives ${gives} (${formatBytes(parameters * F32_BYTES)} as F32); ${boundText}`);
}

const tensorBytes = (t: LazyTensor): number => t.shape.reduce((a, b) => a * b, DTYPE_SIZES[t.dtype]);

/** The bytes a save of this state writes: parameters and moments in their dtypes, and the copied files. */
export function checkpointBytes(state: TrainingState): number {
  let bytes = 0;
  for (const map of [state.params, state.optimizer.expAvg, state.optimizer.expAvgSq]) {
    for (const t of map?.values() ?? []) bytes += tensorBytes(t);
  }
  for (const f of state.files?.values() ?? []) bytes += f.byteLength;
  return bytes;
}

/** The most values one typed array holds in V8 (2³² − 1): the largest tensor held in memory at once. */
export const MAX_TENSOR_VALUES = 2 ** 32 - 1;

/** Throw when a tensor of the state is too large to hold in one array (before any of them is computed). */
export function checkTensorSizes(where: string, params: ReadonlyMap<string, { shape: readonly number[] }>): void {
  for (const [name, t] of params) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n > MAX_TENSOR_VALUES) {
      throw new Error(
        `${where ? `${where}: ` : ""}tensor ${name} [${t.shape.join(", ")}] has ${formatCount(n)} values; one array holds at most ${MAX_TENSOR_VALUES}`,
      );
    }
  }
}

/**
 * The memory this process can still allocate: the OS's free memory (os.freemem, MemAvailable on Linux),
 * capped by a cgroup limit (process.constrainedMemory) less what the process already uses.
 */
export function freeMemory(): number {
  const free = freemem();
  const limit = (process as { constrainedMemory?: () => number | undefined }).constrainedMemory?.() ?? 0;
  return limit > 0 && limit < totalmem() ? Math.min(free, Math.max(0, limit - process.memoryUsage.rss())) : free;
}

/**
 * Throw when `bytes` exceed the free memory. `what` says who needs them:
 *   runs/big: initializing 1.1e12 parameters needs 4.3 TB of memory (F32); 21.3 GB is free (os.freemem, of 25.3 GB in all)
 */
export function checkMemory(what: string, bytes: number, free: number = freeMemory()): void {
  if (!(bytes <= free)) {
    throw new Error(
      `${what} needs ${formatBytes(bytes)} of memory (F32); ${formatBytes(free)} is free (os.freemem, of ${formatBytes(totalmem())} in all)`,
    );
  }
}

/** The free space (for an unprivileged user) of the filesystem that `path` would be written to, and the existing directory measured. */
export async function freeDiskSpace(path: string): Promise<{ bytes: number; at: string }> {
  let at = resolve(path);
  for (;;) {
    const st = await stat(at).catch(() => null);
    if (st) {
      if (!st.isDirectory()) at = dirname(at);
      const fs = await statfs(at);
      return { bytes: fs.bavail * fs.bsize, at };
    }
    const parent = dirname(at);
    if (parent === at) throw new Error(`${path}: no existing parent directory`);
    at = parent;
  }
}

/**
 * Throw when writing `bytes` to `dir` would not fit the free space of its filesystem; `detail` says what they are:
 *   runs/big: writing 5.5 TB (1.4e12 parameters and their moments) needs more than the 81.1 GB free on the filesystem of /work
 */
export async function checkDiskSpace(dir: string, bytes: number, detail?: string, free?: { bytes: number; at: string }): Promise<void> {
  const space = free ?? (await freeDiskSpace(dir));
  if (!(bytes <= space.bytes)) {
    throw new Error(
      `${dir}: writing ${formatBytes(bytes)}${detail ? ` (${detail})` : ""} needs more than the ` +
        `${formatBytes(space.bytes)} free on the filesystem of ${space.at}`,
    );
  }
}

/** Writes above this many bytes are announced before they start (on stderr, also with --json). */
export const ANNOUNCE_WRITE_BYTES = 1e9;

/** "writing 12.3 GB to runs/big" for a write above the threshold, else null. */
export const writeAnnouncement = (dir: string, bytes: number, threshold = ANNOUNCE_WRITE_BYTES): string | null =>
  bytes > threshold ? `writing ${formatBytes(bytes)} to ${dir}` : null;

/**
 * The longest string this JavaScript engine holds (V8: 2²⁹ − 24 UTF-16 units, 536870888), so the most bytes of
 * UTF-8 text read as one string: each byte decodes to at most one unit. Text data above it cannot be decoded
 * at once; a corpus that large belongs in a `.bin` file of token ids, read in pieces at any size.
 */
export const MAX_TEXT_BYTES: number = bufferConstants.MAX_STRING_LENGTH;

/**
 * The largest tokenizer.json read: 256 MiB. The largest published ones are about 33 MB (Gemma 3's, 262144
 * tokens; GPT-2's is 1.4 MB, Llama 3's 9 MB), so a real one passes 7 times over; the file is decoded to one
 * string and parsed whole (V8 refuses strings past MAX_TEXT_BYTES, 512 MiB, and the parsed objects take
 * several times the file's size), so a larger file is a wrong file, refused before it is read.
 */
export const MAX_TOKENIZER_BYTES = 256 * 2 ** 20;

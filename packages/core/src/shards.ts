/**
 * Hugging Face checkpoints: a single `<base>.safetensors`, or shards `<base>-00001-of-0000N.safetensors`
 * listed by `<base>.safetensors.index.json` = {"metadata": {"total_size": ...}, "weight_map": {...}}.
 */
import { readdir, readFile, unlink, writeFile } from "node:fs/promises";
import { isAbsolute, join } from "node:path";
import { type DType, DTYPE_SIZES, isDType } from "./dtype.js";
import { SafetensorsError, type SafetensorsErrorCode } from "./safetensors/errors.js";
import { findDuplicateKey } from "./safetensors/json.js";
import { SafetensorsFile } from "./safetensors/reader.js";
import { writeSafetensors, type TensorEntry, type WriteObserver } from "./safetensors/writer.js";
import type { LazyTensor } from "./types.js";
import { checkCheckpointFile } from "./files.js";

/** HF's default `max_shard_size` ("5GB" = 5·10⁹ bytes). */
export const DEFAULT_MAX_SHARD_BYTES = 5e9;

export interface CheckpointTensor {
  /** Shard file name, relative to the checkpoint directory. */
  file: string;
  dtype: DType;
  shape: number[];
  lazy: LazyTensor;
}

export interface CheckpointFiles {
  /** File names relative to the directory, in order (one entry for a single-file checkpoint). */
  files: string[];
  /** Every tensor, shard by shard in file order, each shard in data-offset order. */
  tensors: Map<string, CheckpointTensor>;
  /** `__metadata__` of the first file. */
  metadata: Record<string, string> | null;
  /** The open files, one per entry of `files`. */
  shards: SafetensorsFile[];
  /** Path of the index file, or null for a single-file checkpoint. */
  index: string | null;
}

const indexName = (base: string): string => `${base}.safetensors.index.json`;
const singleName = (base: string): string => `${base}.safetensors`;
const pad5 = (n: number): string => String(n).padStart(5, "0");
/** HF's shard names: `model-00001-of-00003.safetensors`. */
export const shardName = (base: string, i: number, n: number): string => `${base}-${pad5(i)}-of-${pad5(n)}.safetensors`;

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const shardPattern = (base: string): RegExp => new RegExp(`^${escapeRe(base)}-\\d{5}-of-\\d{5}\\.safetensors$`);

const q = (s: unknown): string => JSON.stringify(s) ?? String(s);

/**
 * A tensor read from its file on demand; read after the file is closed, it says why that happens: a state
 * derived from a loaded checkpoint (grown, converted) still reads from the checkpoint's files.
 */
function readWhileOpen(shard: SafetensorsFile, name: string): LazyTensor {
  const lazy = shard.lazy(name);
  const open = (): void => {
    if (shard.closed) {
      throw new SafetensorsError(
        shard.path,
        "Closed",
        `closed before tensor ${q(name)} was read: a state derived from a loaded checkpoint ` +
          "reads its tensors from the checkpoint's files, so save it (or read its tensors) before closing the checkpoint it came from",
      );
    }
  };
  return {
    dtype: lazy.dtype,
    shape: lazy.shape,
    read: async () => {
      open();
      return lazy.read();
    },
    readBytes: async () => {
      open();
      return shard.readRaw(name);
    },
    streamBytes: (buffer?: (bytes: number) => Uint8Array) => {
      open();
      return shard.streamRaw(name, buffer);
    },
  };
}

function fromFiles(files: string[], shards: SafetensorsFile[], index: string | null): CheckpointFiles {
  const tensors = new Map<string, CheckpointTensor>();
  shards.forEach((shard, i) => {
    for (const [name, info] of shard.tensors) {
      tensors.set(name, { file: files[i]!, dtype: info.dtype, shape: info.shape, lazy: readWhileOpen(shard, name) });
    }
  });
  return { files, tensors, metadata: shards[0]?.metadata ?? null, shards, index };
}

/**
 * Open `<dir>/<base>.safetensors.index.json` and its shards if the index exists, else
 * `<dir>/<base>.safetensors`; null when neither exists. Only headers are read. Each shard is opened
 * once; close with `closeCheckpoint`.
 */
export async function openCheckpoint(dir: string, base: string): Promise<CheckpointFiles | null> {
  const indexPath = join(dir, indexName(base));
  // Each file is checked before it is opened: a regular file, not a symlink out of the checkpoint (./files.ts).
  const present = (name: string): Promise<boolean> => checkCheckpointFile(dir, name, join(dir, name));
  await present(indexName(base));
  let raw: Uint8Array;
  try {
    raw = await readFile(indexPath);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== "ENOENT" && code !== "ENOTDIR") throw new SafetensorsError(indexPath, "IoError", `cannot read: ${(e as Error).message}`);
    const single = join(dir, singleName(base));
    if (!(await present(singleName(base)))) return null;
    const file = await SafetensorsFile.open(single);
    return fromFiles([singleName(base)], [file], null);
  }
  const fail = (problem: string, code: SafetensorsErrorCode = "InvalidIndex"): never => {
    throw new SafetensorsError(indexPath, code, problem);
  };

  let text = "";
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(raw);
  } catch {
    fail("index is not valid UTF-8");
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    fail(`index is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) fail("index is not a JSON object");
  const dup = findDuplicateKey(text);
  if (dup) fail(`duplicate key ${q(dup.key)}${dup.path.length ? ` in ${q(dup.path.join("."))}` : ""}`, "DuplicateKey");
  const { weight_map: weightMap, metadata } = json as Record<string, unknown>;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    fail(`"weight_map" must be an object of tensor name → shard file (got ${q(weightMap)})`);
  }
  let totalSize: number | null = null;
  if (metadata !== undefined && metadata !== null) {
    if (typeof metadata !== "object" || Array.isArray(metadata)) fail(`"metadata" is not an object (got ${q(metadata)})`);
    const t = (metadata as Record<string, unknown>)["total_size"];
    if (t !== undefined) {
      if (typeof t !== "number" || !Number.isSafeInteger(t) || t < 0) fail(`"metadata.total_size" is not a non-negative integer (got ${q(t)})`);
      totalSize = t as number;
    }
  }
  const map = weightMap as Record<string, unknown>;
  const fileSet = new Set<string>();
  for (const name of Object.keys(map)) {
    const f = map[name];
    if (typeof f !== "string" || f === "") fail(`weight_map[${q(name)}] is not a file name (got ${q(f)})`);
    const file = f as string;
    if (isAbsolute(file) || file.split(/[\\/]/).includes("..")) fail(`weight_map[${q(name)}] = ${q(file)} points outside the checkpoint directory`);
    fileSet.add(file);
  }
  if (fileSet.size === 0) fail("weight_map lists no tensors");
  const files = [...fileSet].sort();
  for (const f of files) {
    if (!(await present(f))) fail(`shard ${q(f)} listed in weight_map does not exist`);
  }

  const shards: SafetensorsFile[] = [];
  try {
    for (const f of files) shards.push(await SafetensorsFile.open(join(dir, f)));
    const where = new Map<string, string>();
    let bytes = 0;
    shards.forEach((shard, i) => {
      const file = files[i]!;
      for (const [name, info] of shard.tensors) {
        const other = where.get(name);
        if (other !== undefined) fail(`tensor ${q(name)} is in two shards: ${q(other)} and ${q(file)}`, "DuplicateKey");
        where.set(name, file);
        if (!Object.hasOwn(map, name)) fail(`tensor ${q(name)} in shard ${q(file)} is not listed in weight_map`);
        if (map[name] !== file) fail(`tensor ${q(name)} is mapped to ${q(map[name])} but is in shard ${q(file)}`);
        bytes += info.dataOffsets[1] - info.dataOffsets[0];
      }
    });
    for (const name of Object.keys(map)) {
      if (!where.has(name)) fail(`tensor ${q(name)} is mapped to ${q(map[name])} but that shard does not contain it`);
    }
    if (totalSize !== null && totalSize !== bytes) {
      fail(`metadata.total_size is ${totalSize} but the shards hold ${bytes} bytes of tensors`);
    }
    return fromFiles(files, shards, indexPath);
  } catch (e) {
    await Promise.all(shards.map((s) => s.close().catch(() => undefined)));
    throw e;
  }
}

export async function closeCheckpoint(c: CheckpointFiles): Promise<void> {
  await Promise.all(c.shards.map((s) => s.close()));
}

/**
 * HF's greedy split (huggingface_hub `split_torch_state_dict_into_shards`): tensors in entry order
 * fill a shard until the next would pass `maxShardBytes`; a tensor larger than the limit gets a
 * shard of its own (placed before the shard being filled, as HF does).
 */
export function planShards(sizes: readonly number[], maxShardBytes: number): number[][] {
  const shards: number[][] = [];
  let current: number[] = [];
  let currentSize = 0;
  sizes.forEach((size, i) => {
    if (size > maxShardBytes) {
      shards.push([i]);
      return;
    }
    if (currentSize + size > maxShardBytes) {
      shards.push(current);
      current = [];
      currentSize = 0;
    }
    current.push(i);
    currentSize += size;
  });
  if (current.length > 0) shards.push(current);
  return shards;
}

/** Python's `json.dumps` string (ensure_ascii): every character outside space..~ escaped. */
const pyString = (s: string): string => JSON.stringify(s).replace(/[\u007f-\uffff]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

/** The index exactly as transformers writes it: `json.dumps(index, indent=2, sort_keys=True) + "\n"`. */
export function indexJson(totalSize: number, weightMap: ReadonlyMap<string, string>): string {
  const names = [...weightMap.keys()].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const lines = names.map((n) => `    ${pyString(n)}: ${pyString(weightMap.get(n)!)}`);
  return `{\n  "metadata": {\n    "total_size": ${totalSize}\n  },\n  "weight_map": {\n${lines.join(",\n")}\n  }\n}\n`;
}

/**
 * Write `<base>.safetensors` when all tensors fit in `maxShardBytes` (default 5·10⁹), else HF shards
 * plus the index (written last). Tensors are read and written one at a time. Stale files of the
 * other layout (an old index or single file, shards of another count) are removed afterwards.
 * `totalBytes` counts the bytes written to the safetensors files; `totalSize` the tensor bytes. `observer` sees every
 * piece before it is written and the bytes as they are (see writeSafetensors: a tensor given under several names is read
 * once per file).
 */
export async function writeCheckpoint(
  dir: string,
  base: string,
  entries: readonly TensorEntry[],
  opts: { maxShardBytes?: number | undefined; metadata?: Record<string, string>; observer?: WriteObserver } = {},
): Promise<{ files: string[]; totalBytes: number; totalSize: number }> {
  const max = opts.maxShardBytes ?? DEFAULT_MAX_SHARD_BYTES;
  if (!(max > 0)) throw new Error(`maxShardBytes must be positive (got ${max})`);
  const seen = new Set<string>();
  const sizes = entries.map(({ name, tensor }) => {
    if (seen.has(name)) throw new SafetensorsError(join(dir, singleName(base)), "DuplicateKey", `duplicate tensor name ${q(name)}`);
    seen.add(name);
    if (!isDType(tensor.dtype))
      throw new SafetensorsError(join(dir, singleName(base)), "UnsupportedDType", `tensor ${q(name)}: unknown dtype ${q(tensor.dtype)}`);
    return tensor.shape.reduce((a, d) => a * d, DTYPE_SIZES[tensor.dtype]);
  });
  const totalSize = sizes.reduce((a, b) => a + b, 0);
  const plan = planShards(sizes, max);
  const files: string[] = [];
  let totalBytes = 0;
  if (plan.length <= 1) {
    files.push(singleName(base));
    totalBytes += await writeSafetensors(join(dir, files[0]!), entries, opts.metadata, opts.observer);
  } else {
    const weightMap = new Map<string, string>();
    for (let i = 0; i < plan.length; i++) {
      const file = shardName(base, i + 1, plan.length);
      const shardEntries = plan[i]!.map((j) => entries[j]!);
      for (const e of shardEntries) weightMap.set(e.name, file);
      files.push(file);
      totalBytes += await writeSafetensors(join(dir, file), shardEntries, opts.metadata, opts.observer);
    }
    await writeFile(join(dir, indexName(base)), indexJson(totalSize, weightMap));
  }
  // Remove files of an older checkpoint with the same base that would contradict this one.
  const keep = new Set(files);
  const pattern = shardPattern(base);
  for (const f of await readdir(dir)) {
    const stale = keep.has(f) ? false : pattern.test(f) || (plan.length <= 1 ? f === indexName(base) : f === singleName(base));
    if (stale) await unlink(join(dir, f));
  }
  return { files, totalBytes, totalSize };
}

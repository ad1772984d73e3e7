/**
 * The export cache of a checkpoint: `<parent>/.<name>.staged-export/`, beside the checkpoint and never in it (a
 * checkpoint stays what HF tools and staged saves expect; a save replaces the checkpoint directory, and the
 * cache with it would be carried along). Its manifest records a fingerprint of the checkpoint's model, config
 * and tokenizer files; a cache whose fingerprint differs, or that lacks the dtype asked for, is made again.
 * The cache has its own write lock (core's checkpoint locks), so concurrent commands export it once.
 */
import { stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import {
  canonicalPath,
  LockedError,
  lockCheckpoint,
  recoverInterruptedSave,
  systemReason,
  withCheckpointLock,
  type CheckpointLock,
  type Registry,
} from "@staged/core";
import { EXPORT_VERSION, exportModel, ONNX_FILES, readManifest, sourceFingerprint, type ExportDType, type ExportProgress } from "./export.js";

export const CACHE_SUFFIX = ".staged-export";

/** Where the export cache of checkpoint `dir` (a canonical path) lives. */
export const exportCachePath = (dir: string): string => join(dirname(dir), `.${basename(dir)}${CACHE_SUFFIX}`);

const isFile = (p: string): Promise<boolean> =>
  stat(p).then(
    (s) => s.isFile(),
    () => false,
  );
const isDir = (p: string): Promise<boolean> =>
  stat(p).then(
    (s) => s.isDirectory(),
    () => false,
  );

/** Whether `dir` is an export already (a transformers.js model directory: config.json and onnx/model.onnx). */
export async function isExportDir(dir: string): Promise<boolean> {
  return (await isFile(join(dir, "config.json"))) && (await isFile(join(dir, ONNX_FILES.fp32)));
}

export interface EnsureExportOptions {
  dtype?: ExportDType;
  registry?: Registry;
  onProgress?: (p: ExportProgress) => void;
  /** Lines for the user (waiting for another process, crash recovery); default: stderr. */
  notice?: (line: string) => void;
  /** How long to wait for another process exporting the same checkpoint (default 30 minutes). */
  waitMs?: number;
}

export interface EnsuredExport {
  /** The export directory (the cache, or `dir` itself when it is an export). */
  dir: string;
  /** Whether this call wrote it. */
  exported: boolean;
  /** Whether `dir` was an export directory already (no cache involved). */
  direct: boolean;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Exports of this process in progress, by cache path: a second caller waits for the first (locks are between processes). */
const inProcess = new Map<string, Promise<unknown>>();

/** Take `mode` on `dir`, waiting while another process holds a conflicting lock. */
export async function lockWaiting(
  dir: string,
  mode: "shared" | "exclusive",
  waitMs: number,
  notice: (line: string) => void,
): Promise<CheckpointLock> {
  const deadline = Date.now() + waitMs;
  let told = false;
  for (;;) {
    try {
      return await lockCheckpoint(dir, mode);
    } catch (e) {
      if (!(e instanceof LockedError) || Date.now() > deadline) throw e;
      if (!told) notice(`staged: waiting: ${e.message.replace(/; try again when it has finished$/, "")}`);
      told = true;
      await sleep(250);
    }
  }
}

/**
 * The export of checkpoint `dir`, made into its cache when missing or stale; `dir` itself when it is an export
 * directory already (with the ONNX file of the dtype asked for).
 */
export async function ensureExport(dir: string, options: EnsureExportOptions = {}): Promise<EnsuredExport> {
  const dtype = options.dtype ?? "fp32";
  const root = await canonicalPath(dir);
  const missing = (): Error => new Error(`${dir}: not a checkpoint directory (it does not exist or is not a directory)`);
  if (!(await isDir(dirname(root)))) throw missing();
  // Looked at under the read lock, after what a killed save left is settled (as loadTrainingState does): a save in
  // progress renames the checkpoint away for an instant, and its writer is named instead of the checkpoint said missing.
  await recoverInterruptedSave(root, options.notice);
  const direct = await withCheckpointLock(root, "shared", async () => {
    if (!(await isDir(root))) throw missing();
    if (!(await isExportDir(root))) return false;
    if (!(await isFile(join(root, ONNX_FILES[dtype]))))
      throw new Error(`${dir}: an export without ${ONNX_FILES[dtype]} (export it with --dtype ${dtype})`);
    return true;
  });
  if (direct) return { dir: root, exported: false, direct: true };
  const cache = exportCachePath(root);
  for (;;) {
    const running = inProcess.get(cache);
    if (!running) break;
    await running.catch(() => undefined);
  }
  const work = ensureCache(root, cache, dtype, options);
  inProcess.set(cache, work);
  try {
    return await work;
  } finally {
    inProcess.delete(cache);
  }
}

async function ensureCache(root: string, cache: string, dtype: ExportDType, options: EnsureExportOptions): Promise<EnsuredExport> {
  const notice =
    options.notice ??
    ((line: string) => {
      process.stderr.write(`${line}\n`);
    });
  let lock: CheckpointLock;
  try {
    lock = await lockWaiting(cache, "exclusive", options.waitMs ?? 30 * 60_000, notice);
  } catch (e) {
    if (/cannot write here/.test((e as Error).message)) {
      const cause = (e as Error).cause;
      const full = ["ENOSPC", "EDQUOT"].includes(String((cause as NodeJS.ErrnoException | undefined)?.code));
      throw new Error(
        `${root}: cannot write its export cache ${cache} (${full ? systemReason(cause) : "the directory is read-only"}); ` +
          `export it elsewhere with \`staged export ${root} --out <dir>\` and generate from that directory`,
        { cause: e },
      );
    }
    throw e;
  }
  try {
    const manifest = await readManifest(cache);
    const fingerprint = await withCheckpointLock(root, "shared", () => sourceFingerprint(root));
    const fresh =
      manifest !== null &&
      manifest.version === EXPORT_VERSION &&
      manifest.source === fingerprint &&
      manifest.dtypes.includes(dtype) &&
      (await isFile(join(cache, ONNX_FILES[dtype])));
    if (fresh) return { dir: cache, exported: false, direct: false };
    // The checkpoint is read (and fingerprinted again) under its read lock by exportModel.
    const want: ExportDType = dtype === "fp16" || manifest?.dtypes.includes("fp16") ? "fp16" : "fp32";
    await exportModel(root, cache, {
      dtype: want,
      lock,
      ...(options.registry ? { registry: options.registry } : {}),
      ...(options.onProgress ? { onProgress: options.onProgress } : {}),
      notice,
    });
    return { dir: cache, exported: true, direct: false };
  } finally {
    await lock.release();
  }
}

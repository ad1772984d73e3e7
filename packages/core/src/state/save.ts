/**
 * The save protocol every checkpoint format goes through (saveCheckpointDirectory): the directory's write lock
 * (../lock.ts), recovery of what interrupted saves left (../recovery.ts), a temporary sibling written, checked
 * (no non-finite value) and fsynced, then renamed into place. saveTrainingState saves a state in its format
 * (./format.ts for the project's own, a CheckpointFormatPlugin's otherwise).
 */
import { cp, mkdir, readdir, rename, rm, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { DTYPE_SIZES, firstNonFiniteStored, storedValue } from "../dtype.js";
import { isInside, syncDir, syncTree, systemCode, systemReason } from "../files.js";
import { lockCheckpoint, type CheckpointLock } from "../lock.js";
import { claimSibling, recoverCheckpoint, siblingPath } from "../recovery.js";
import type { TensorEntry, WriteObserver } from "../safetensors/writer.js";
import { createDefaultRegistry, type Registry } from "../registry.js";
import type { Tensor } from "../tensor.js";
import type { LazyTensor, TrainingState } from "../types.js";
import { STATE_FILE } from "../state-format.js";
import { TRAINER_RNG_FILE, TRAINER_STATE_FILES } from "../trainer-files.js";
import { STAGED_FORMAT, modelEntries, stagedContents, type CheckpointContents } from "./format.js";
import { architectureOf } from "./init.js";
import { isLoaded, stderrNotice } from "./load.js";
import { canonicalPath, checkOutputPath } from "./paths.js";

export interface SaveOptions {
  registry?: Registry | undefined;
  /**
   * The checkpoint format to write: STAGED_FORMAT ("staged", the project's own) or a registered CheckpointFormatPlugin's
   * name ("hf-trainer"). Default: the format the state was read from (TrainingState.foreign), else the project's own.
   */
  format?: string | undefined;
  /** Replace an existing directory (atomically). Without it an existing target is an error. */
  overwrite?: boolean | undefined;
  /** Shard model and optimizer files above this many bytes (HF's default 5 GB). */
  maxShardBytes?: number | undefined;
  /** Called as each tensor has been written (`bytes`: of the tensors written so far). */
  onTensor?: ((p: SaveProgress) => void) | undefined;
  /**
   * Called as bytes are written, piece by piece (a few MiB each for computed tensors, a tensor for one read from a
   * file; `bytes`: written so far, `tensors`: written whole so far): the progress of a long save from its first second.
   */
  onProgress?: ((p: SaveProgress) => void) | undefined;
  /** The write lock of the target, held by the caller across several saves (see lockCheckpoint); default: taken for this save. */
  lock?: CheckpointLock | undefined;
  /** Where to say what crash recovery did (default: a line on stderr each). */
  notice?: ((line: string) => void) | undefined;
  /**
   * Abandon the save once aborted (Ctrl-C in the CLI): checked before each piece written, it ends the save with an
   * error, its temporary files removed and the target as it was.
   */
  signal?: AbortSignal | undefined;
}

export interface SaveProgress {
  name: string;
  tensors: number;
  totalTensors: number;
  bytes: number;
  totalBytes: number;
}

/**
 * Write a TrainingState directory atomically and durably. Holding the directory's write lock (see ../lock.ts),
 * after settling what interrupted saves left (../recovery.ts), everything goes to a temporary sibling that is
 * fsynced and renamed into place only when complete; a kill -9 at any moment leaves the old checkpoint or the
 * new one, never a mix. Tensors are read and written one at a time, and a non-finite value in any of them
 * stops the save with nothing replaced.
 */
export async function saveTrainingState(dir: string, state: TrainingState, options: SaveOptions = {}): Promise<void> {
  const registry = options.registry ?? createDefaultRegistry();
  const arch = architectureOf(state, registry);
  const config = arch.withShape(state.config, state.shape);
  const specs = arch.params(config);
  const model = modelEntries(specs, state);
  const format = options.format ?? state.foreign?.format ?? STAGED_FORMAT;
  const contents =
    format === STAGED_FORMAT
      ? stagedContents(state, { arch, config, specs, model }, options)
      : registry.get("checkpointFormat", format).contents(state, { arch, config, specs, model }, options);
  await saveCheckpointDirectory(dir, state, contents, options);
}

/**
 * The save protocol every checkpoint format goes through. Holding the directory's write lock (see ../lock.ts),
 * after settling what interrupted saves left (../recovery.ts), `contents` writes everything into a temporary sibling
 * that is fsynced and renamed into place only when complete; a kill -9 at any moment leaves the old checkpoint or
 * the new one, never a mix. A non-finite value in any tensor stops the save with nothing replaced.
 */
export async function saveCheckpointDirectory(
  dir: string,
  state: TrainingState,
  contents: CheckpointContents,
  options: SaveOptions = {},
): Promise<void> {
  const what = contents.what ?? "checkpoint";
  await checkOutputPath(dir);
  const target = await canonicalPath(dir);
  const source = isLoaded(state) ? state.source : undefined;
  if (source && isInside(target, source)) throw new Error(`${dir}: output is inside the input checkpoint ${source}`);
  if (source && isInside(source, target)) throw new Error(`${dir}: output contains the input checkpoint ${source}`);
  if (options.lock && (options.lock.path !== target || options.lock.mode !== "exclusive")) {
    throw new Error(`${dir}: the lock given is ${options.lock.mode} on ${options.lock.path}, not the write lock of this directory`);
  }
  try {
    await mkdir(dirname(target), { recursive: true });
  } catch (e) {
    throw new Error(`${dir}: cannot create its parent directory (${systemReason(e)})`, { cause: e });
  }
  // The write lock: given, or brought by a state loaded with it from this directory, or taken for this save.
  const carried = isLoaded(state) ? state.lock : undefined;
  const held = options.lock ?? (carried?.mode === "exclusive" && carried.held && carried.path === target ? carried : undefined);
  const lock = held ?? (await lockCheckpoint(target, "exclusive"));
  const claimed: { path: string; done(): void }[] = [];
  const claim = (kind: "tmp" | "new" | "old"): string => {
    const c = claimSibling(siblingPath(target, kind));
    claimed.push(c);
    return c.path;
  };
  let tmp: string | null = null,
    done: string | null = null;
  try {
    for (const line of await recoverCheckpoint(target)) (options.notice ?? stderrNotice)(line);
    const existing = await stat(target).catch(() => null);
    if (existing && !options.overwrite) throw new Error(`${dir}: already exists (refusing to overwrite)`);
    if (existing && !existing.isDirectory()) throw new Error(`${dir}: exists and is not a directory`);
    const observer = saveObserver(contents.tensors, dir, options);

    tmp = claim("tmp");
    await mkdir(tmp);
    await contents.write(tmp, observer);
    if (existing && contents.carryOtherFiles !== false) await carryOtherFiles(target, tmp);
    await syncTree(tmp);
    // Complete and durable: from here on a kill leaves a checkpoint that recovery puts in place.
    done = claim("new");
    await rename(tmp, done);
    tmp = null;
    await syncDir(dirname(target));
    await lock.verify();
    if (existing) {
      const old = claim("old");
      await rename(target, old);
      try {
        await rename(done, target);
      } catch (e) {
        try {
          await rename(old, target);
        } catch {
          // Both copies stay, complete, for the next command's recovery to put the newer in place.
          for (const c of claimed) c.done();
          done = null;
          throw new Error(
            `${dir}: cannot save (${systemReason(e)}); the previous ${what} is at ${old} and the new one at ` +
              `${claimed[1]!.path}: the next staged command on ${dir} puts the newer in place`,
            { cause: e },
          );
        }
        throw e;
      }
      done = null;
      await syncDir(dirname(target));
      await rm(old, { recursive: true, force: true });
    } else {
      await rename(done, target);
      done = null;
    }
    await syncDir(dirname(target));
  } catch (e) {
    for (const p of [tmp, done]) if (p) await rm(p, { recursive: true, force: true }).catch(() => undefined);
    if (systemCode(e)) throw new Error(`${dir}: cannot save (${systemReason(e)}); the ${what} there is unchanged`, { cause: e });
    throw e;
  } finally {
    for (const c of claimed) c.done();
    if (!held) await lock.release();
  }
}

/**
 * What a save does with each piece of stored bytes before it is written, and as bytes are written: refuses a value that
 * is not finite (a diverged run is never saved) and reports progress. Pieces encoded from values are checked on the
 * values (the message names the value computed, e.g. an F16 overflow), BF16 ones also on the bytes (rounding may
 * overflow); stored bytes copied as they are, on their exponent bits.
 */
function saveObserver(entries: readonly TensorEntry[], dir: string, options: SaveOptions): WriteObserver {
  const sizeOf = (t: LazyTensor | Tensor) => t.shape.reduce((a, b) => a * b, DTYPE_SIZES[t.dtype]);
  const totalBytes = entries.reduce((s, e) => s + sizeOf(e.tensor), 0);
  const totalTensors = entries.length;
  let tensors = 0,
    written = 0,
    done = 0;
  return {
    piece: (name, dtype, bytes, at, values) => {
      if (options.signal?.aborted)
        throw new Error(`${dir}: not saved: interrupted (${String(options.signal.reason ?? "aborted")}); nothing was written there`);
      let bad = values ? firstNonFinite(values) : null;
      if (!bad && (!values || dtype === "BF16")) {
        const i = firstNonFiniteStored(dtype, bytes);
        if (i >= 0) bad = { index: at + i, value: storedValue(dtype, bytes, i) };
      }
      if (bad !== null)
        throw new Error(`${dir}: not saved: ${name} holds ${bad.value} at index ${bad.index} (a diverged run?); the checkpoint there is unchanged`);
    },
    bytesWritten: (name, bytes) => {
      written += bytes;
      options.onProgress?.({ name, tensors, totalTensors, bytes: written, totalBytes });
    },
    tensorWritten: (name, bytes) => {
      done += bytes;
      tensors++;
      options.onTensor?.({ name, tensors, totalTensors, bytes: done, totalBytes });
    },
  };
}

/**
 * Whether every float32 is finite, branch-free on the bits (about 4× a comparison per value): an exponent
 * of all ones (NaN, ±Infinity) plus one carries into bit 31, any other exponent does not.
 */
function allFiniteF32(d: Float32Array): boolean {
  const u = new Uint32Array(d.buffer, d.byteOffset, d.length);
  const n = u.length,
    m = n - (n % 4);
  let acc = 0;
  for (let i = 0; i < m; i += 4) {
    acc |=
      ((u[i]! & 0x7f800000) + 0x00800000) |
      ((u[i + 1]! & 0x7f800000) + 0x00800000) |
      ((u[i + 2]! & 0x7f800000) + 0x00800000) |
      ((u[i + 3]! & 0x7f800000) + 0x00800000);
  }
  for (let i = m; i < n; i++) acc |= (u[i]! & 0x7f800000) + 0x00800000;
  return (acc & 0x80000000) === 0;
}

/** Largest magnitude that rounds to a finite float16 (65504 + half an ulp). */
const F16_LIMIT = 65520;

/** The first value of a float tensor that is not finite (or would not be once stored as F16), else null. */
export function firstNonFinite(t: Tensor): { index: number; value: number } | null {
  const d = t.data;
  if (!(d instanceof Float32Array || d instanceof Float64Array)) return null;
  if (d instanceof Float32Array && t.dtype !== "F16" && allFiniteF32(d)) return null;
  const limit = t.dtype === "F16" ? F16_LIMIT : Infinity;
  for (let i = 0; i < d.length; i++) {
    const x = d[i]!;
    // NaN fails both comparisons.
    if (!(x < limit && x > -limit)) return { index: i, value: x };
  }
  return null;
}

/**
 * Files a save of some checkpoint format writes anew: weights of either layout, the project's state, and a Hugging Face
 * Trainer checkpoint's state files (TRAINER_FILES). Any other file of a replaced checkpoint is kept; these are not,
 * even when the new checkpoint's format does not write them (a stale scheduler.pt beside a converted state would lie).
 */
const WEIGHT_FILE = /^(model|optimizer)(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$/;
const formatFile = (f: string): boolean => WEIGHT_FILE.test(f) || f === STATE_FILE || TRAINER_STATE_FILES.includes(f) || TRAINER_RNG_FILE.test(f);

/** Copy into the new checkpoint the files of the old one that the save did not write (a README, notes, ...). */
async function carryOtherFiles(from: string, to: string): Promise<void> {
  const written = new Set(await readdir(to));
  for (const f of await readdir(from)) {
    // Symlinks as they are (a relative one stays relative, wherever it points), not resolved to absolute paths.
    if (!written.has(f) && !formatFile(f))
      await cp(join(from, f), join(to, f), { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
  }
}

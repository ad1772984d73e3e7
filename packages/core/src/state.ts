import { cp, lstat, mkdir, readdir, readFile, readlink, realpath, rename, rm, stat, writeFile } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";
import { DTYPE_SIZES, firstNonFiniteStored, storedValue, type DType } from "./dtype.js";
import { checkCheckpointFile, isInside, parseJsonFile, readTextInput, syncDir, syncTree, systemReason } from "./files.js";
import { lockCheckpoint, ownsWriteLock, type CheckpointLock } from "./lock.js";
import { claimSibling, needsRecovery, recoverCheckpoint, siblingPath } from "./recovery.js";
import { byteLevelTokenizerFiles } from "./tokenizer-json.js";
import { closeCheckpoint, openCheckpoint, writeCheckpoint, type CheckpointFiles } from "./shards.js";
import type { TensorEntry, WriteObserver } from "./safetensors/writer.js";
import { createDefaultRegistry, type Registry } from "./registry.js";
import type { ArchitecturePlugin, CheckpointFormatPlugin, ParamSpec } from "./plugins.js";
import type { AdamWState, LazyTensor, TokenizerSpec, TrainingState } from "./types.js";
import { Tensor } from "./tensor.js";
import { formatStateFile, parseStateFile, STATE_FILE } from "./state-format.js";
import { parseMetrics } from "./metrics-format.js";
import { TRAINER_FILES, TRAINER_RNG_FILE, TRAINER_STATE_FILES } from "./trainer-files.js";

export { STATE_FILE, STATE_FORMAT, STATE_VERSION } from "./state-format.js";
/** Files of an HF model directory that travel with a checkpoint unchanged. */
const COPIED_FILES = [
  "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json", "merges.txt", "generation_config.json",
  // The trainer's learning curve travels with the state, through growth too, for the scheduler to read.
  "metrics.jsonl",
];

/**
 * Check a file that travels with a checkpoint before it is carried into the next one: what a later command will
 * parse must parse now, so a grown or exported checkpoint never inherits a file that makes it unusable. JSON files
 * must be JSON objects (tokenizer.json one with a "model" object, as every tokenizers file has), text must be UTF-8,
 * metrics.jsonl must be the trainer's lines.
 */
function checkCopiedFile(name: string, bytes: Uint8Array, display: string): Uint8Array {
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

/** PyTorch AdamW's defaults, used when a checkpoint carries no optimizer settings. */
export const DEFAULT_ADAMW: Omit<AdamWState, "noDecay"> = {
  name: "adamw", lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01, step: 0,
};

export interface LoadOptions {
  registry?: Registry;
  /** Where to say what crash recovery did (default: a line on stderr each). */
  notice?: (line: string) => void;
  /**
   * "shared" (default): a read lock, so no other process replaces the checkpoint while it is read. "exclusive":
   * the write lock, for a command that will save over it (train): a second such command is refused at once.
   */
  lock?: "shared" | "exclusive";
}

/**
 * A loaded state whose tensors still read from the directory; `close()` releases its files and its read
 * lock (until then no other process can replace the checkpoint, so every tensor read is from one save).
 */
export interface LoadedTrainingState extends TrainingState {
  /** The directory the state was read from. */
  source: string;
  /** The lock held on `source` until close() (the write lock can be given to saveTrainingState and train). */
  lock: CheckpointLock;
  close(): Promise<void>;
}

/** Whether a state was read from a directory (loadTrainingState): its source, lock and close are then there, typed. */
export const isLoaded = (state: TrainingState): state is LoadedTrainingState =>
  typeof (state as Partial<LoadedTrainingState>).source === "string";

const stderrNotice = (line: string): void => { process.stderr.write(`${line}\n`); };

/**
 * Settle what interrupted saves (kill -9, power loss) left beside checkpoint `target` (canonical path), so it is
 * the newest complete checkpoint: under the write lock (see ./recovery.ts), each thing done told to `notice`.
 * Nothing to do costs one readdir. A directory whose parent is read-only is left as it is.
 */
export async function recoverInterruptedSave(target: string, notice: (line: string) => void = stderrNotice): Promise<void> {
  if (!(await needsRecovery(target))) return;
  if (ownsWriteLock(target)) {
    for (const line of await recoverCheckpoint(target)) notice(line);
    return;
  }
  let lock: CheckpointLock;
  try {
    lock = await lockCheckpoint(target, "exclusive");
  } catch (e) {
    if (/cannot write here/.test((e as Error).message)) return;
    throw e;
  }
  try {
    for (const line of await recoverCheckpoint(target)) notice(line);
  } finally {
    await lock.release();
  }
}

export const architectureOf = (state: TrainingState, registry: Registry = createDefaultRegistry()): ArchitecturePlugin =>
  registry.get("architecture", state.architecture);

const readJson = async (file: string): Promise<unknown> => parseJsonFile(await readTextInput(file), file);

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);
const exists = (p: string): Promise<boolean> => stat(p).then(() => true, () => false);

/** The absolute path with symlinks resolved, for the part of it that exists: a checkpoint is known by where it really is. */
export async function canonicalPath(p: string): Promise<string> {
  const abs = resolve(p);
  try {
    return await realpath(abs);
  } catch {
    const parent = dirname(abs);
    return parent === abs ? abs : join(await canonicalPath(parent), basename(abs));
  }
}

/**
 * Refuse an output path that is, or lies under, a symlink to nothing: writing there would fail with a misleading
 * system error (ENOTDIR, EEXIST). Says which symlink and where it points, as written.
 */
export async function checkOutputPath(dir: string): Promise<void> {
  const abs = resolve(dir);
  for (let p = abs; ; p = dirname(p)) {
    if ((await lstat(p).catch(() => null))?.isSymbolicLink()) {
      const missing = await stat(p).then(() => false, (e: NodeJS.ErrnoException) => e.code === "ENOENT" || e.code === "ENOTDIR");
      if (missing) throw new Error(`${p === abs ? dir : p}: a symlink to ${await readlink(p).catch(() => "?")}, which does not exist`);
    }
    if (dirname(p) === p) return;
  }
}

function findArchitecture(registry: Registry, config: Record<string, unknown>, file: string): ArchitecturePlugin {
  const arch = registry.architectureFor(config.model_type);
  if (arch) return arch;
  throw new Error(`${file}: unknown architecture model_type ${JSON.stringify(config.model_type)} ` +
    `(registered: ${registry.list("architecture").join(", ") || "none"})`);
}

/**
 * The registered checkpoint format (other than the project's own) that a directory's file names say it is, or null for
 * the project's own layout or a plain HF model directory. A Hugging Face Trainer checkpoint with no format registered
 * to read it is refused: read as a model directory it would silently lose its optimizer state.
 */
function formatOf(registry: Registry, names: readonly string[], dir: string): CheckpointFormatPlugin | null {
  for (const name of registry.list("checkpointFormat")) {
    const plugin = registry.get("checkpointFormat", name);
    if (plugin.detect(names)) return plugin;
  }
  if (names.includes(TRAINER_FILES.optimizer) && !names.includes(STATE_FILE)) {
    throw new Error(`${dir}: a Hugging Face Trainer checkpoint (${TRAINER_FILES.optimizer}), and no checkpoint format to read it is registered ` +
      `(@staged/hf-trainer's; the staged CLI has it)`);
  }
  return null;
}

/**
 * Read a TrainingState directory or a plain HF model directory (config.json + safetensors weights).
 * Only headers are read here; tensor values are read when a LazyTensor is asked for them.
 */
export async function loadTrainingState(dir: string, options: LoadOptions = {}): Promise<LoadedTrainingState> {
  const registry = options.registry ?? createDefaultRegistry();
  const root = await canonicalPath(dir);
  const missing = (): Error => new Error(`${dir}: not a checkpoint directory (it does not exist or is not a directory)`);
  if (!(await stat(dirname(root)).catch(() => null))?.isDirectory()) throw missing();
  // The read lock first: while it is held no save can be between its renames, so the directory is there or not.
  const mode = options.lock ?? "shared";
  let lock = await lockCheckpoint(root, mode);
  try {
    if (await needsRecovery(root)) {
      if (mode === "exclusive") {
        for (const line of await recoverCheckpoint(root)) (options.notice ?? stderrNotice)(line);
      } else {
        await lock.release();
        await recoverInterruptedSave(root, options.notice);
        lock = await lockCheckpoint(root, mode);
      }
    }
    if (!(await stat(root).catch(() => null))?.isDirectory()) throw missing();
    return await readState(dir, root, registry, lock);
  } catch (e) {
    await lock.release();
    throw e;
  }
}

async function readState(dir: string, root: string, registry: Registry, lock: CheckpointLock): Promise<LoadedTrainingState> {
  const configFile = join(dir, "config.json");
  // Every file read from the checkpoint is checked first: a regular file, not a symlink out of the directory.
  const present = (name: string): Promise<boolean> => checkCheckpointFile(root, name, join(dir, name));
  if (!(await present("config.json"))) throw new Error(`${configFile}: cannot read the file (no such file)`);
  const rawConfig = await readJson(configFile);
  if (!isObject(rawConfig)) throw new Error(`${configFile}: expected a JSON object`);
  const arch = findArchitecture(registry, rawConfig, configFile);
  const { config, shape } = arch.parseConfig(rawConfig, configFile);
  const specs = arch.params(config);

  const opened: CheckpointFiles[] = [];
  const closers: (() => Promise<void>)[] = [];
  const close = async (): Promise<void> => {
    try {
      await Promise.all([...opened.map(closeCheckpoint), ...closers.map((f) => f())]);
    } finally {
      await lock.release();
    }
  };
  try {
    const model = await openCheckpoint(root, "model");
    if (!model) {
      const legacy = await exists(join(root, "pytorch_model.bin"));
      throw new Error(`${dir}: no model.safetensors or model.safetensors.index.json` +
        (legacy ? " (pytorch_model.bin is not supported: convert it to safetensors)" : ""));
    }
    opened.push(model);
    const params = collectParams(arch, specs, model, join(dir, model.files.length > 1 ? "model.safetensors.index.json" : "model.safetensors"), config);

    const names = await readdir(root);
    const format = formatOf(registry, names, dir);
    const stateFile = join(dir, STATE_FILE);
    const saved = !format && (await present(STATE_FILE)) ? parseStateFile(await readJson(stateFile), stateFile) : null;
    const optimizer: AdamWState = saved?.optimizer ?? { ...DEFAULT_ADAMW, betas: [...DEFAULT_ADAMW.betas], noDecay: specs.filter((p) => !p.decay).map((p) => p.name) };

    const moments = format ? null : await openCheckpoint(root, "optimizer");
    if (moments) {
      opened.push(moments);
      const file = join(dir, moments.files.length > 1 ? "optimizer.safetensors.index.json" : "optimizer.safetensors");
      const [expAvg, expAvgSq] = collectMoments(arch, specs, moments, file);
      optimizer.expAvg = expAvg;
      optimizer.expAvgSq = expAvgSq;
    }

    const files = new Map<string, Uint8Array>();
    for (const name of COPIED_FILES) {
      const p = join(root, name);
      if (await present(name)) files.set(name, checkCopiedFile(name, await readFile(p), join(dir, name)));
    }
    // A plain HF checkpoint without tokenizer.json: bytes only fit a vocabulary of 256.
    const tokenizer: TokenizerSpec = saved?.tokenizer ??
      (files.has("tokenizer.json") ? { kind: "hf", file: "tokenizer.json" } : shape.vocab > 256 ? { kind: "none" } : { kind: "bytes" });
    if (tokenizer.kind === "hf" && !files.has("tokenizer.json")) throw new Error(`${stateFile}: names tokenizer.json, which is missing`);
    const base: TrainingState = {
      architecture: arch.name, config, shape, params, optimizer,
      schedule: saved?.schedule ?? null,
      progress: saved?.progress ?? { step: 0, tokensSeen: 0, flopsSeen: 0, samplerSeed: 0, stages: [] },
      ...(saved?.training ? { training: saved.training } : {}),
      tokenizer, files,
    };
    if (!format) return { ...base, source: root, lock, close };
    // The format's own files complete the state; what it opens is closed with the state's files.
    const read = await format.read(base, { dir, root, names, specs, arch, file: async (name) => (await present(name)) ? join(root, name) : null });
    if (read.close) closers.push(read.close);
    return { ...read.state, source: root, lock, close };
  } catch (e) {
    await close();
    throw e;
  }
}

function collectParams(arch: ArchitecturePlugin, specs: ParamSpec[], model: CheckpointFiles, file: string,
                       config: Record<string, unknown>): Map<string, LazyTensor> {
  const found = new Map<string, { lazy: LazyTensor; original: string }>();
  for (const [name, t] of model.tensors) {
    const canonical = arch.canonicalName(name);
    if (canonical === null) continue;
    // A tied model may still store lm_head.weight (a copy of wte): HF ignores it, so do we.
    if (canonical === "lm_head.weight" && config.tie_word_embeddings !== false) continue;
    const prev = found.get(canonical);
    if (prev) throw new Error(`${file}: tensors "${prev.original}" and "${name}" are the same parameter ${canonical}`);
    found.set(canonical, { lazy: t.lazy, original: name });
  }
  const params = new Map<string, LazyTensor>();
  for (const spec of specs) {
    const f = found.get(spec.name);
    if (!f) throw new Error(`${file}: missing tensor ${spec.name} [${spec.shape}]`);
    checkTensor(f.lazy, spec.shape, `${file}: tensor ${f.original}`);
    params.set(spec.name, f.lazy);
    found.delete(spec.name);
  }
  const extra = [...found.values()].map((f) => f.original);
  if (extra.length) throw new Error(`${file}: unexpected tensor${extra.length > 1 ? "s" : ""} ${extra.slice(0, 5).join(", ")} for this config`);
  return params;
}

/** Parameter dtypes a checkpoint may hold (F64 and integers are refused, not silently converted). */
const PARAM_DTYPES: readonly DType[] = ["F32", "F16", "BF16"];

function checkTensor(t: LazyTensor, shape: readonly number[], what: string): void {
  if (!PARAM_DTYPES.includes(t.dtype)) throw new Error(`${what} has dtype ${t.dtype}; parameters must be ${PARAM_DTYPES.join(", ")}`);
  if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
    throw new Error(`${what} has shape [${t.shape}], the config says [${shape}]`);
  }
}

/**
 * The moments `exp_avg.<param>` and `exp_avg_sq.<param>`, the parameter part normalized like the model's own
 * names (an HF prefix such as `transformer.` is accepted), each exactly once.
 */
function collectMoments(arch: ArchitecturePlugin, specs: ParamSpec[], moments: CheckpointFiles, file: string): [Map<string, LazyTensor>, Map<string, LazyTensor>] {
  const prefixes = ["exp_avg", "exp_avg_sq"] as const;
  const found = new Map<string, { lazy: LazyTensor; original: string }>();
  for (const [name, t] of moments.tensors) {
    const m = /^(exp_avg|exp_avg_sq)\.(.+)$/.exec(name);
    const canonical = m ? arch.canonicalName(m[2]!) : null;
    if (!m || canonical === null) throw new Error(`${file}: moment ${name} matches no parameter of the model`);
    const key = `${m[1]}.${canonical}`;
    const prev = found.get(key);
    if (prev) throw new Error(`${file}: moments "${prev.original}" and "${name}" are the same moment ${key}`);
    found.set(key, { lazy: t.lazy, original: name });
  }
  const maps: [Map<string, LazyTensor>, Map<string, LazyTensor>] = [new Map(), new Map()];
  prefixes.forEach((prefix, i) => {
    for (const spec of specs) {
      const key = `${prefix}.${spec.name}`;
      const t = found.get(key);
      if (!t) throw new Error(`${file}: missing moment ${key} (the optimizer state does not match the model)`);
      checkTensor(t.lazy, spec.shape, `${file}: moment ${t.original}`);
      maps[i]!.set(spec.name, t.lazy);
      found.delete(key);
    }
  });
  const extra = [...found.values()].map((f) => f.original);
  if (extra.length) throw new Error(`${file}: moment ${extra[0]} matches no parameter of the model`);
  return maps;
}

export interface SaveOptions {
  registry?: Registry;
  /**
   * The checkpoint format to write: STAGED_FORMAT ("staged", the project's own) or a registered CheckpointFormatPlugin's
   * name ("hf-trainer"). Default: the format the state was read from (TrainingState.foreign), else the project's own.
   */
  format?: string;
  /** Replace an existing directory (atomically). Without it an existing target is an error. */
  overwrite?: boolean;
  /** Shard model and optimizer files above this many bytes (HF's default 5 GB). */
  maxShardBytes?: number;
  /** Called as each tensor has been written (`bytes`: of the tensors written so far). */
  onTensor?: (p: SaveProgress) => void;
  /**
   * Called as bytes are written, piece by piece (a few MiB each for computed tensors, a tensor for one read from a
   * file; `bytes`: written so far, `tensors`: written whole so far): the progress of a long save from its first second.
   */
  onProgress?: (p: SaveProgress) => void;
  /** The write lock of the target, held by the caller across several saves (see lockCheckpoint); default: taken for this save. */
  lock?: CheckpointLock;
  /** Where to say what crash recovery did (default: a line on stderr each). */
  notice?: (line: string) => void;
  /**
   * Abandon the save once aborted (Ctrl-C in the CLI): checked before each piece written, it ends the save with an
   * error, its temporary files removed and the target as it was.
   */
  signal?: AbortSignal;
}

export interface SaveProgress { name: string; tensors: number; totalTensors: number; bytes: number; totalBytes: number }

/**
 * Write a TrainingState directory atomically and durably. Holding the directory's write lock (see ./lock.ts),
 * after settling what interrupted saves left (./recovery.ts), everything goes to a temporary sibling that is
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
  const contents = format === STAGED_FORMAT
    ? stagedContents(state, { arch, config, specs, model }, options)
    : registry.get("checkpointFormat", format).contents(state, { arch, config, specs, model }, options);
  await saveCheckpointDirectory(dir, state, contents, options);
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

function stagedContents(state: TrainingState, m: ModelToSave, options: SaveOptions): CheckpointContents {
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
export async function writeModelFiles(tmp: string, state: TrainingState, m: ModelToSave, observer: WriteObserver, options: SaveOptions): Promise<void> {
  // transformers ≥ 5 names the dtype "dtype" (and still reads "torch_dtype"): a config that has it gets both.
  const dtype = { torch_dtype: m.model.dtype, ...("dtype" in m.config ? { dtype: m.model.dtype } : {}) };
  await writeFile(join(tmp, "config.json"), JSON.stringify({ ...m.config, ...dtype }, null, 2) + "\n");
  await writeCheckpoint(tmp, "model", m.model.entries, { maxShardBytes: options.maxShardBytes, metadata: { format: "pt" }, observer });
  for (const [name, bytes] of filesToWrite(state)) await writeFile(join(tmp, name), bytes);
}

/**
 * The save protocol every checkpoint format goes through. Holding the directory's write lock (see ./lock.ts),
 * after settling what interrupted saves left (./recovery.ts), `contents` writes everything into a temporary sibling
 * that is fsynced and renamed into place only when complete; a kill -9 at any moment leaves the old checkpoint or
 * the new one, never a mix. A non-finite value in any tensor stops the save with nothing replaced.
 */
export async function saveCheckpointDirectory(dir: string, state: TrainingState, contents: CheckpointContents, options: SaveOptions = {}): Promise<void> {
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
  const lock = held ?? await lockCheckpoint(target, "exclusive");
  const claimed: { path: string; done(): void }[] = [];
  const claim = (kind: "tmp" | "new" | "old"): string => {
    const c = claimSibling(siblingPath(target, kind));
    claimed.push(c);
    return c.path;
  };
  let tmp: string | null = null, done: string | null = null;
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
          throw new Error(`${dir}: cannot save (${systemReason(e)}); the previous ${what} is at ${old} and the new one at ` +
            `${claimed[1]!.path}: the next staged command on ${dir} puts the newer in place`, { cause: e });
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
    const code = (e as NodeJS.ErrnoException).code;
    if (code) throw new Error(`${dir}: cannot save (${systemReason(e)}); the ${what} there is unchanged`, { cause: e });
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
  let tensors = 0, written = 0, done = 0;
  return {
    piece: (name, dtype, bytes, at, values) => {
      if (options.signal?.aborted) throw new Error(`${dir}: not saved: interrupted (${String(options.signal.reason ?? "aborted")}); nothing was written there`);
      let bad = values ? firstNonFinite(values) : null;
      if (!bad && (!values || dtype === "BF16")) {
        const i = firstNonFiniteStored(dtype, bytes);
        if (i >= 0) bad = { index: at + i, value: storedValue(dtype, bytes, i) };
      }
      if (bad !== null) throw new Error(`${dir}: not saved: ${name} holds ${bad.value} at index ${bad.index} (a diverged run?); the checkpoint there is unchanged`);
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
  const n = u.length, m = n - (n % 4);
  let acc = 0;
  for (let i = 0; i < m; i += 4) {
    acc |= ((u[i]! & 0x7f800000) + 0x00800000) | ((u[i + 1]! & 0x7f800000) + 0x00800000) |
      ((u[i + 2]! & 0x7f800000) + 0x00800000) | ((u[i + 3]! & 0x7f800000) + 0x00800000);
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

/**
 * Files a save of some checkpoint format writes anew: weights of either layout, the project's state, and a Hugging Face
 * Trainer checkpoint's state files (TRAINER_FILES). Any other file of a replaced checkpoint is kept; these are not,
 * even when the new checkpoint's format does not write them (a stale scheduler.pt beside a converted state would lie).
 */
const WEIGHT_FILE = /^(model|optimizer)(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$/;
const formatFile = (f: string): boolean =>
  WEIGHT_FILE.test(f) || f === STATE_FILE || TRAINER_STATE_FILES.includes(f) || TRAINER_RNG_FILE.test(f);

/** Copy into the new checkpoint the files of the old one that the save did not write (a README, notes, ...). */
async function carryOtherFiles(from: string, to: string): Promise<void> {
  const written = new Set(await readdir(to));
  for (const f of await readdir(from)) {
    // Symlinks as they are (a relative one stays relative, wherever it points), not resolved to absolute paths.
    if (!written.has(f) && !formatFile(f)) await cp(join(from, f), join(to, f), { recursive: true, preserveTimestamps: true, verbatimSymlinks: true });
  }
}

function modelEntries(specs: ParamSpec[], state: TrainingState): { entries: TensorEntry[]; dtype: string } {
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

function momentEntries(specs: ParamSpec[], state: TrainingState): TensorEntry[] | null {
  const { expAvg, expAvgSq } = state.optimizer;
  if (!expAvg && !expAvgSq) return null;
  const entries: TensorEntry[] = [];
  for (const [prefix, map] of [["exp_avg", expAvg], ["exp_avg_sq", expAvgSq]] as const) {
    for (const spec of specs) {
      const t = map?.get(spec.name);
      if (!t) throw new Error(`optimizer state has no ${prefix} for ${spec.name}`);
      checkTensor(t, spec.shape, `moment ${prefix}.${spec.name}`);
      entries.push({ name: `${prefix}.${spec.name}`, tensor: t });
    }
  }
  return entries;
}

/** A LazyTensor over values already in memory. */
export const inMemory = (t: Tensor): LazyTensor => ({ dtype: t.dtype, shape: t.shape, read: async () => t });

/** A fresh state: initialized weights, no moments, zero progress. */
export function initTrainingState(architecture: string, config: Record<string, unknown>, seed: number,
                                  registry: Registry = createDefaultRegistry()): TrainingState {
  const arch = registry.get("architecture", architecture);
  const parsed = arch.parseConfig(config);
  const weights = arch.init(parsed.config, seed);
  const specs = arch.params(parsed.config);
  return {
    architecture: arch.name,
    config: arch.withShape(parsed.config, parsed.shape),
    shape: parsed.shape,
    params: new Map([...weights].map(([n, t]) => [n, inMemory(t)])),
    optimizer: { ...DEFAULT_ADAMW, betas: [...DEFAULT_ADAMW.betas], noDecay: specs.filter((p) => !p.decay).map((p) => p.name) },
    schedule: null,
    progress: { step: 0, tokensSeen: 0, flopsSeen: 0, samplerSeed: seed, stages: [] },
    tokenizer: { kind: "bytes" },
  };
}

/** Count of distinct trainable values (a tied output layer once, buffers never). */
export const parameterCount = (state: TrainingState): number =>
  [...state.params.values()].reduce((s, t) => s + t.shape.reduce((a, b) => a * b, 1), 0);

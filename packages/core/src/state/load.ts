/**
 * Reading a checkpoint directory: the project's own (docs/formats.md), a plain Hugging Face model directory, or one a
 * registered CheckpointFormatPlugin reads (a Trainer checkpoint). Only headers are read; tensors read on demand, under
 * the directory's read lock (../lock.ts) after settling what interrupted saves left (../recovery.ts).
 */
import { readdir, readFile, stat } from "node:fs/promises";
import { dirname, join } from "node:path";
import { checkCheckpointFile, parseJsonFile, readTextInput } from "../files.js";
import { lockCheckpoint, ownsWriteLock, type CheckpointLock } from "../lock.js";
import { needsRecovery, recoverCheckpoint } from "../recovery.js";
import { closeCheckpoint, openCheckpoint, type CheckpointFiles } from "../shards.js";
import { createDefaultRegistry, type Registry } from "../registry.js";
import type { ArchitecturePlugin, CheckpointFormatPlugin, ParamSpec } from "../plugins.js";
import type { AdamWState, LazyTensor, TokenizerSpec, TrainingState } from "../types.js";
import { parseStateFile, STATE_FILE } from "../state-format.js";
import { TRAINER_FILES } from "../trainer-files.js";
import { COPIED_FILES, checkCopiedFile, checkTensor, isObject } from "./format.js";
import { freshAdamW } from "./init.js";
import { canonicalPath } from "./paths.js";

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
export const isLoaded = (state: TrainingState): state is LoadedTrainingState => typeof (state as Partial<LoadedTrainingState>).source === "string";

/** Crash recovery's notices, by default: a line on stderr each. */
export const stderrNotice = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

/**
 * Settle what interrupted saves (kill -9, power loss) left beside checkpoint `target` (canonical path), so it is
 * the newest complete checkpoint: under the write lock (see ../recovery.ts), each thing done told to `notice`.
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

const readJson = async (file: string): Promise<unknown> => parseJsonFile(await readTextInput(file), file);
const exists = (p: string): Promise<boolean> =>
  stat(p).then(
    () => true,
    () => false,
  );

function findArchitecture(registry: Registry, config: Record<string, unknown>, file: string): ArchitecturePlugin {
  const arch = registry.architectureFor(config.model_type);
  if (arch) return arch;
  throw new Error(
    `${file}: unknown architecture model_type ${JSON.stringify(config.model_type)} ` +
      `(registered: ${registry.list("architecture").join(", ") || "none"})`,
  );
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
    throw new Error(
      `${dir}: a Hugging Face Trainer checkpoint (${TRAINER_FILES.optimizer}), and no checkpoint format to read it is registered ` +
        `(@staged/hf-trainer's; the staged CLI has it)`,
    );
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
      throw new Error(
        `${dir}: no model.safetensors or model.safetensors.index.json` +
          (legacy ? " (pytorch_model.bin is not supported: convert it to safetensors)" : ""),
      );
    }
    opened.push(model);
    const params = collectParams(
      arch,
      specs,
      model,
      join(dir, model.files.length > 1 ? "model.safetensors.index.json" : "model.safetensors"),
      config,
    );

    const names = await readdir(root);
    const format = formatOf(registry, names, dir);
    const stateFile = join(dir, STATE_FILE);
    const saved = !format && (await present(STATE_FILE)) ? parseStateFile(await readJson(stateFile), stateFile) : null;
    const optimizer: AdamWState = saved?.optimizer ?? freshAdamW(specs);

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
    const tokenizer: TokenizerSpec =
      saved?.tokenizer ??
      (files.has("tokenizer.json") ? { kind: "hf", file: "tokenizer.json" } : shape.vocab > 256 ? { kind: "none" } : { kind: "bytes" });
    if (tokenizer.kind === "hf" && !files.has("tokenizer.json")) throw new Error(`${stateFile}: names tokenizer.json, which is missing`);
    const base: TrainingState = {
      architecture: arch.name,
      config,
      shape,
      params,
      optimizer,
      schedule: saved?.schedule ?? null,
      progress: saved?.progress ?? { step: 0, tokensSeen: 0, flopsSeen: 0, samplerSeed: 0, stages: [] },
      ...(saved?.training ? { training: saved.training } : {}),
      tokenizer,
      files,
    };
    if (!format) return { ...base, source: root, lock, close };
    // The format's own files complete the state; what it opens is closed with the state's files.
    const read = await format.read(base, { dir, root, names, specs, arch, file: async (name) => ((await present(name)) ? join(root, name) : null) });
    if (read.close) closers.push(read.close);
    return { ...read.state, source: root, lock, close };
  } catch (e) {
    await close();
    throw e;
  }
}

function collectParams(
  arch: ArchitecturePlugin,
  specs: ParamSpec[],
  model: CheckpointFiles,
  file: string,
  config: Record<string, unknown>,
): Map<string, LazyTensor> {
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

/**
 * The moments `exp_avg.<param>` and `exp_avg_sq.<param>`, the parameter part normalized like the model's own
 * names (an HF prefix such as `transformer.` is accepted), each exactly once.
 */
function collectMoments(
  arch: ArchitecturePlugin,
  specs: ParamSpec[],
  moments: CheckpointFiles,
  file: string,
): [Map<string, LazyTensor>, Map<string, LazyTensor>] {
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

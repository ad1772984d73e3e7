/**
 * `exportModel`: a directory that @huggingface/transformers (transformers.js) loads from a local path —
 * onnx/model.onnx (and onnx/model_fp16.onnx), config.json, generation_config.json, tokenizer.json and
 * tokenizer_config.json — written atomically through core's save protocol (saveCheckpointDirectory: a temporary
 * sibling renamed into place, recovered after a crash like a checkpoint).
 */
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile, stat, writeFile } from "node:fs/promises";
import { createRequire } from "node:module";
import { basename, dirname, join } from "node:path";
import {
  byteLevelTokenizerConfig,
  byteLevelTokenizerJson,
  BYTE_LEVEL_PAD_ID,
  canonicalPath,
  checkOutputPath,
  createDefaultRegistry,
  loadTrainingState,
  isInside,
  isLoaded,
  lockCheckpoint,
  parseJsonFile,
  saveCheckpointDirectory,
  systemReason,
  type CheckpointLock,
  type LoadedTrainingState,
  type Registry,
  type TrainingState,
} from "@staged/core";
import { decoderGraph, type ExportDType } from "./graph.js";
import { writeOnnxModel } from "@staged/trainer-ort";
import { EXPORT_VERSION, formatManifest, MANIFEST, MANIFEST_FORMAT, readManifest, type ExportManifest } from "./manifest.js";

export type { ExportDType } from "./graph.js";

// The manifest every export carries, its schema and its reader: manifest.ts.
export { EXPORT_VERSION, MANIFEST, MANIFEST_FORMAT, readManifest, type ExportManifest } from "./manifest.js";

/** ONNX files by dtype, as transformers.js names them (its dtype option picks the suffix). */
export const ONNX_FILES: Readonly<Record<ExportDType, string>> = { fp32: "onnx/model.onnx", fp16: "onnx/model_fp16.onnx" };

/** Above this many bytes of weights a model is written with its weights as ONNX external data (protobuf's limit is 2 GiB). */
export const EXTERNAL_DATA_BYTES = 2 ** 31 - 2 ** 26;

export interface ExportProgress {
  /** The file being written (onnx/model.onnx, onnx/model_fp16.onnx). */
  file: string;
  tensors: number;
  totalTensors: number;
  bytes: number;
  totalBytes: number;
}

export interface ExportOptions {
  /** fp32 (default) writes onnx/model.onnx; fp16 writes onnx/model_fp16.onnx as well. */
  dtype?: ExportDType;
  registry?: Registry;
  /** Weights as external data (onnx/model.onnx_data): "auto" (default) above 2 GB of weights, or always, or never. */
  externalData?: "auto" | boolean;
  /** Called as each tensor is written. */
  onProgress?: (p: ExportProgress) => void;
  /** Where to say what crash recovery beside `outDir` did (default: a line on stderr each). */
  notice?: (line: string) => void;
}

export interface ExportResult {
  dir: string;
  files: string[];
  bytes: number;
  manifest: ExportManifest;
}

const VERSION = (createRequire(import.meta.url)("../package.json") as { version: string }).version;
const stderrNotice = (line: string): void => {
  process.stderr.write(`${line}\n`);
};
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Files of a checkpoint whose change changes the export: the model, its config and its tokenizer. */
const SOURCE_FILE =
  /^(config\.json|training_state\.json|generation_config\.json|tokenizer\.json|tokenizer_config\.json|special_tokens_map\.json|model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?)$/;

/**
 * A fingerprint of what a checkpoint's export depends on: the content of its JSON files and the identity of
 * its weight files (size, modification time, inode: a save writes new files). Read it holding a lock.
 */
export async function sourceFingerprint(dir: string): Promise<string> {
  const h = createHash("sha256").update(`${MANIFEST_FORMAT} ${EXPORT_VERSION}\n`);
  for (const name of (await readdir(dir)).filter((f) => SOURCE_FILE.test(f)).sort()) {
    const p = join(dir, name);
    if (name.endsWith(".safetensors")) {
      const s = await stat(p, { bigint: true });
      h.update(`${name} ${s.size} ${s.mtimeNs} ${s.ino}\n`);
    } else {
      h.update(`${name} `)
        .update(await readFile(p))
        .update("\n");
    }
  }
  return h.digest("hex");
}

/** The config.json of the export: the checkpoint's, with what transformers.js reads for external data. */
function exportConfig(config: Record<string, unknown>, external: Record<string, string>): Record<string, unknown> {
  const { "transformers.js_config": prior, ...rest } = config;
  const jsConfig: Record<string, unknown> = isObject(prior) ? { ...prior } : {};
  delete jsConfig.use_external_data_format;
  const onnxFiles = Object.keys(external).map((f) => basename(f));
  if (onnxFiles.length) jsConfig.use_external_data_format = Object.fromEntries(onnxFiles.map((f) => [f, 1]));
  return { ...rest, use_cache: true, ...(Object.keys(jsConfig).length ? { "transformers.js_config": jsConfig } : {}) };
}

const textBytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const jsonText = (v: unknown): string => JSON.stringify(v, null, 2) + "\n";

/** The tokenizer files of the export (none for a checkpoint without a tokenizer), and the padding token id. */
function tokenizerFiles(state: TrainingState): { files: Map<string, Uint8Array>; padId: number | null } {
  const files = new Map<string, Uint8Array>();
  if (state.tokenizer.kind === "bytes") {
    files.set("tokenizer.json", textBytes(byteLevelTokenizerJson()));
    files.set("tokenizer_config.json", textBytes(byteLevelTokenizerConfig()));
    return { files, padId: BYTE_LEVEL_PAD_ID };
  }
  if (state.tokenizer.kind === "none") return { files, padId: null };
  const json = state.files?.get("tokenizer.json");
  if (!json) throw new Error("the checkpoint names tokenizer.json as its tokenizer, but has no such file");
  files.set("tokenizer.json", json);
  for (const name of ["tokenizer_config.json", "special_tokens_map.json"]) {
    const bytes = state.files?.get(name);
    if (bytes) files.set(name, bytes);
  }
  if (!files.has("tokenizer_config.json")) files.set("tokenizer_config.json", textBytes(jsonText({ tokenizer_class: "PreTrainedTokenizerFast" })));
  return { files, padId: null };
}

/** generation_config.json: the checkpoint's, else the special tokens of its config that are in the vocabulary (and the byte-level padding). */
function generationConfig(state: TrainingState, config: Record<string, unknown>, padId: number | null): Uint8Array {
  const given = state.files?.get("generation_config.json");
  if (given) {
    const parsed = parseJsonFile(new TextDecoder().decode(given), "generation_config.json");
    if (!isObject(parsed)) throw new Error("generation_config.json: expected a JSON object");
    return given;
  }
  // Ids outside the vocabulary (GPT-2's default 50256 in a byte-level model) name no token: left out.
  const vocab = state.shape.vocab;
  const inVocab = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v >= 0 && v < vocab;
  const pick = (k: string) => {
    const v = config[k];
    if (Array.isArray(v)) {
      const ids = v.filter(inVocab);
      return ids.length ? ids : null;
    }
    return inVocab(v) ? v : null;
  };
  return textBytes(
    jsonText({
      _from_model_config: true,
      bos_token_id: pick("bos_token_id"),
      eos_token_id: pick("eos_token_id"),
      pad_token_id: pick("pad_token_id") ?? padId,
    }),
  );
}

export interface ExportInternals {
  /** The write lock of `outDir`, already held by the caller (the export cache). */
  lock?: CheckpointLock;
  /** The fingerprint to record (the export cache). */
  source?: string | null;
}

/**
 * Export a checkpoint directory (read under its read lock) or an in-memory state to `outDir`. An existing
 * `outDir` is replaced only when it is an export (it has staged-export.json); the checkpoint itself is never written.
 */
export async function exportModel(
  source: string | TrainingState,
  outDir: string,
  options: ExportOptions & ExportInternals = {},
): Promise<ExportResult> {
  const registry = options.registry ?? createDefaultRegistry();
  await checkOutputPath(outDir);
  const target = await canonicalPath(outDir);
  const loaded: LoadedTrainingState | null = typeof source === "string" ? await loadTrainingState(source, { registry }) : null;
  const state: TrainingState = loaded ?? (source as TrainingState);
  try {
    const from = isLoaded(state) ? state.source : undefined;
    if (from && (target === from || isInside(target, from) || isInside(from, target))) {
      throw new Error(`${outDir}: the export must go outside the checkpoint ${from} (and not contain it)`);
    }
    const fingerprint = options.source !== undefined ? options.source : from ? await sourceFingerprint(from) : null;
    const arch = registry.get("architecture", state.architecture);
    const config = arch.withShape(state.config, state.shape);
    const parsed = arch.parseConfig(config, "config.json");
    const dtype = options.dtype ?? "fp32";
    if (dtype !== "fp32" && dtype !== "fp16") throw new Error(`dtype must be fp32 or fp16, got ${JSON.stringify(dtype)}`);
    const dtypes: ExportDType[] = dtype === "fp16" ? ["fp32", "fp16"] : ["fp32"];
    // Every setting the graph needs is checked (the plugin's decoder throws by name) before anything is written.
    const graphs = dtypes.map((dt) => ({
      dt,
      g: decoderGraph(arch, parsed.config, {
        dtype: dt,
        tensor: async (name) => {
          const t = state.params.get(name);
          if (!t) throw new Error(`the state has no parameter ${name}`);
          return t.read();
        },
      }),
    }));
    const tokenizer = tokenizerFiles(state);
    const generation = generationConfig(state, parsed.config, tokenizer.padId);

    const held = options.lock;
    if (!held) {
      await mkdir(dirname(target), { recursive: true }).catch((e: unknown) => {
        throw new Error(`${outDir}: cannot create its parent directory (${systemReason(e)})`, { cause: e });
      });
    }
    const lock = held ?? (await lockCheckpoint(target, "exclusive"));
    try {
      const existing = await stat(target).catch(() => null);
      if (existing && !(existing.isDirectory() && (await readManifest(target)))) {
        throw new Error(`${outDir}: already exists and is not an export of staged (refusing to overwrite)`);
      }
      const external: Record<string, string> = {};
      const useExternal = (bytes: number) => options.externalData === true || (options.externalData !== false && bytes > EXTERNAL_DATA_BYTES);
      for (const { dt, g } of graphs) if (useExternal(g.graph.weightBytes)) external[ONNX_FILES[dt]] = `${ONNX_FILES[dt]}_data`;
      const manifest: ExportManifest = {
        format: MANIFEST_FORMAT,
        version: EXPORT_VERSION,
        exporter: `@staged/export ${VERSION}`,
        architecture: arch.name,
        dtypes,
        externalData: external,
        source: fingerprint,
      };
      const files = [
        "config.json",
        "generation_config.json",
        ...tokenizer.files.keys(),
        ...dtypes.flatMap((dt) => [ONNX_FILES[dt], ...(external[ONNX_FILES[dt]] ? [external[ONNX_FILES[dt]]!] : [])]),
        MANIFEST,
      ];
      let bytes = 0;
      // Core's save protocol (lock, crash recovery, temporary sibling, fsync, renames), every file the export's own.
      await saveCheckpointDirectory(
        target,
        state,
        {
          tensors: [],
          carryOtherFiles: false,
          what: "export",
          write: async (tmp: string) => {
            await mkdir(join(tmp, "onnx"));
            await writeFile(join(tmp, "config.json"), jsonText(exportConfig(parsed.config, external)));
            await writeFile(join(tmp, "generation_config.json"), generation);
            for (const [name, data] of tokenizer.files) await writeFile(join(tmp, name), data);
            for (const { dt, g } of graphs) {
              const file = ONNX_FILES[dt];
              const ext = external[file];
              const r = await writeOnnxModel(join(tmp, file), g.graph, {
                producer: { name: "@staged/export", version: VERSION },
                metadata: { architecture: arch.name, model_type: String(parsed.config.model_type ?? arch.name), dtype: dt },
                ...(ext ? { externalData: { path: join(tmp, ext), location: basename(ext) } } : {}),
                onTensor: (tensors, totalTensors, done, totalBytes) => options.onProgress?.({ file, tensors, totalTensors, bytes: done, totalBytes }),
              });
              bytes += r.bytes;
            }
            await writeFile(join(tmp, MANIFEST), formatManifest(manifest));
          },
        },
        { overwrite: true, lock, notice: options.notice ?? stderrNotice },
      );
      return { dir: target, files, bytes, manifest };
    } finally {
      if (!held) await lock.release();
    }
  } finally {
    await loaded?.close();
  }
}

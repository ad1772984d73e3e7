/**
 * Text generation through @huggingface/transformers' pipeline("text-generation") on a checkpoint's export
 * (made into the cache beside it when missing or stale): greedy by default, sampling with a temperature,
 * top-k and top-p (HF's order: temperature, top-k, top-p), streaming text as it is decoded.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { createDefaultRegistry, type Registry } from "@staged/core";
import { DEVICE_HINTS, DEVICES, webgpuReason, type Device } from "@staged/trainer-ort";
import { ensureExport, lockWaiting, type EnsureExportOptions } from "./cache.js";
import type { ExportDType } from "./export.js";

export interface SamplingOptions {
  /** New tokens per prompt (default 64). */
  maxNewTokens?: number;
  /** 0 (default): greedy decoding; above 0: sampling at this temperature. */
  temperature?: number;
  /** Sample among the k most likely tokens only (0: all). Implies sampling (at temperature 1 unless given). */
  topK?: number;
  /** Sample among the most likely tokens whose probabilities add up to p (1: all). Implies sampling. */
  topP?: number;
  /** Seed of the sampler (transformers.js' random), for reproducible samples. */
  seed?: number;
}

export interface GenerateOptions extends SamplingOptions {
  /** Called with each piece of the continuation's text as it is decoded (one prompt only). */
  onText?: (piece: string) => void;
}

export interface GeneratorOptions extends EnsureExportOptions {
  /** CPU threads of the ONNX runtime session (default: its own choice, all cores). */
  threads?: number;
  /**
   * Where transformers.js runs the model (onnxruntime-node's providers, as the trainer's: DEVICES; default cpu). A
   * provider that cannot start is one line with what it needs (DEVICE_HINTS).
   */
  device?: Device;
}

export interface GenerateResult {
  prompt: string;
  /** The prompt and the continuation, decoded from the ids (special tokens skipped). */
  text: string;
  /** The continuation alone. */
  completion: string;
  /** The prompt's token ids, the new ones, and both. */
  promptIds: number[];
  newIds: number[];
  ids: number[];
  /** Whether generation stopped at an end-of-sequence token (else at maxNewTokens). */
  stoppedAtEos: boolean;
}

export interface GenerateTiming {
  /** Seconds from the call to the first new token (the prompt's forward pass, then one sample). */
  firstTokenSeconds: number;
  /** Seconds of the whole call. */
  seconds: number;
  /** Decoding steps (new tokens per prompt) and the batch. */
  steps: number;
  batch: number;
  /** New tokens per second after the first: batch × (steps − 1) / (seconds − firstTokenSeconds). */
  tokensPerSecond: number;
}

export interface Generator {
  /** The export directory the pipeline was loaded from. */
  readonly dir: string;
  /** Whether loading wrote the export (the cache was missing or stale). */
  readonly exported: boolean;
  readonly dtype: ExportDType;
  /** The model's context (positions), null for an export of an architecture the registry lacks. */
  readonly context: number | null;
  /** One prompt, or several (left-padded into one batch). */
  generate(prompt: string, options?: GenerateOptions): Promise<GenerateResult & { timing: GenerateTiming }>;
  generateBatch(prompts: readonly string[], options?: SamplingOptions): Promise<{ results: GenerateResult[]; timing: GenerateTiming }>;
  dispose(): Promise<void>;
}

const DEFAULT_MAX_NEW_TOKENS = 64;

/** Check sampling options, each error one line naming the option. */
export function checkSamplingOptions(o: SamplingOptions): void {
  const int = (name: string, v: number | undefined, min: number) => {
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= min)) throw new Error(`${name} must be an integer ≥ ${min}, got ${v}`);
  };
  int("maxNewTokens", o.maxNewTokens, 1);
  int("topK", o.topK, 0);
  int("seed", o.seed, 0);
  if (o.temperature !== undefined && !(Number.isFinite(o.temperature) && o.temperature >= 0))
    throw new Error(`temperature must be a number ≥ 0, got ${o.temperature}`);
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new Error(`topP must be in (0, 1], got ${o.topP}`);
}

/** Whether the options sample (else greedy): a temperature above 0, or top-k / top-p without a temperature. */
function sampling(o: SamplingOptions): { sample: boolean; temperature: number } {
  if (o.temperature !== undefined) return { sample: o.temperature > 0, temperature: o.temperature };
  const filtered = (o.topK ?? 0) > 0 || (o.topP ?? 1) < 1;
  return { sample: filtered, temperature: 1 };
}

/** HF's TopKLogitsWarper then TopPLogitsWarper on one row of logits, in place (removed tokens: −∞). */
export function filterTopKTopP(row: Float32Array, topK: number, topP: number): void {
  const n = row.length;
  if (topK > 0 && topK < n) {
    const kth = Float32Array.from(row).sort()[n - topK]!;
    for (let i = 0; i < n; i++) if (row[i]! < kth) row[i] = -Infinity;
  }
  if (topP < 1) {
    const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => row[a]! - row[b]!); // ascending
    const max = row[order[n - 1]!]!;
    const exps = order.map((i) => Math.exp(row[i]! - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    let cumulative = 0;
    for (let j = 0; j < n - 1; j++) {
      cumulative += exps[j]! / sum;
      if (cumulative <= 1 - topP) row[order[j]!] = -Infinity;
    }
  }
}

async function readJson(path: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
}

/** The model's context and vocabulary from its config, by the registry's architecture for its model_type. */
function shapeOf(config: Record<string, unknown>, registry: Registry): { context: number; vocab: number } | null {
  return registry.architectureFor(config.model_type)?.parseConfig(config, "config.json").shape ?? null;
}

type Transformers = typeof import("@huggingface/transformers");

/**
 * Load a generator for checkpoint `dir` (or an export directory): the export is made into the cache beside the
 * checkpoint when missing or stale, then loaded by transformers.js with remote models off.
 */
export async function loadGenerator(dir: string, options: GeneratorOptions = {}): Promise<Generator> {
  const dtype = options.dtype ?? "fp32";
  if (options.threads !== undefined && !(Number.isSafeInteger(options.threads) && options.threads >= 1))
    throw new Error(`threads must be an integer ≥ 1, got ${options.threads}`);
  const device = options.device ?? "cpu";
  if (!DEVICES.includes(device)) throw new Error(`device must be one of ${DEVICES.join(", ")}, got ${JSON.stringify(device)}`);
  const ensured = await ensureExport(dir, options);
  const registry = options.registry ?? createDefaultRegistry();
  const tf: Transformers = await import("@huggingface/transformers");
  // A shared lock while its files are read (config.json too): no other command replaces the cache meanwhile.
  const notice =
    options.notice ??
    ((line: string) => {
      process.stderr.write(`${line}\n`);
    });
  const lock = ensured.direct ? null : await lockWaiting(ensured.dir, "shared", options.waitMs ?? 30 * 60_000, notice);
  let pipe: Awaited<ReturnType<typeof tf.pipeline<"text-generation">>>;
  let config: Record<string, unknown>;
  try {
    config = await readJson(join(ensured.dir, "config.json"));
    pipe = await tf
      .pipeline("text-generation", ensured.dir, {
        dtype,
        device,
        local_files_only: true,
        session_options: options.threads ? { intraOpNumThreads: options.threads, interOpNumThreads: 1 } : {},
      })
      .catch((e: unknown) => {
        const message = (e as Error).message;
        if (device !== "cpu") {
          const reason = device === "webgpu" ? webgpuReason(message) : message.split("\n")[0];
          throw new Error(`${ensured.dir}: transformers.js cannot run the export on ${device}: ${reason} ${DEVICE_HINTS[device]}`, { cause: e });
        }
        throw new Error(`${ensured.dir}: transformers.js cannot load the export (${message.split("\n")[0]})`, { cause: e });
      });
  } finally {
    await lock?.release();
  }
  const shape = shapeOf(config, registry);
  const context = shape?.context ?? null;
  const tokenizer = pipe.tokenizer;
  const generationConfig = (pipe.model as unknown as { generation_config?: Record<string, unknown> }).generation_config ?? {};
  const eosRaw = generationConfig.eos_token_id ?? config.eos_token_id ?? null;
  const eos = new Set<number>((Array.isArray(eosRaw) ? eosRaw : eosRaw === null ? [] : [eosRaw]).map(Number));
  const addSpecial = Boolean(tokenizer.add_bos_token || tokenizer.add_eos_token);
  const decode = (ids: number[]) => (ids.length ? tokenizer.decode(ids, { skip_special_tokens: true }) : "");

  async function run(prompts: readonly string[], o: GenerateOptions): Promise<{ results: GenerateResult[]; timing: GenerateTiming }> {
    checkSamplingOptions(o);
    if (prompts.length === 0) throw new Error("no prompt given");
    const maxNewTokens = o.maxNewTokens ?? DEFAULT_MAX_NEW_TOKENS;
    const encoded = prompts.map((p) => tokenizer.encode(p, { add_special_tokens: addSpecial }).map(Number));
    encoded.forEach((ids, i) => {
      if (ids.length === 0)
        throw new Error(`prompt ${prompts.length > 1 ? `${i + 1} ` : ""}gives no tokens (the tokenizer adds no start token): give some text`);
    });
    for (const ids of encoded) {
      const outside = shape ? ids.find((id) => id >= shape.vocab) : undefined;
      // A byte-level tokenizer (256 ids) with a model of a smaller vocabulary.
      if (outside !== undefined) throw new Error(`the prompt has token ${outside}, outside the model's vocabulary of ${shape!.vocab}`);
    }
    const longest = Math.max(...encoded.map((ids) => ids.length));
    if (context !== null && longest + maxNewTokens > context) {
      throw new Error(`the prompt (${longest} tokens) and ${maxNewTokens} new tokens exceed the model's context of ${context} positions`);
    }
    if (prompts.length > 1 && tokenizer.pad_token_id === undefined) {
      throw new Error(`${ensured.dir}/tokenizer_config.json names no padding token (pad_token or eos_token), which several prompts need`);
    }
    const { sample, temperature } = sampling(o);
    if (sample && o.seed !== undefined) tf.random.seed(o.seed);

    const rows: number[][] = prompts.map(() => []);
    const t0 = performance.now();
    let tFirst = 0,
      steps = 0,
      printed = 0;
    const promptText = prompts.length === 1 ? decode(encoded[0]!) : "";
    const stream = (final: boolean) => {
      if (!o.onText || prompts.length !== 1) return;
      let text = decode([...encoded[0]!, ...rows[0]!]).slice(promptText.length);
      // An incomplete UTF-8 sequence at the end decodes to U+FFFD until its last byte comes.
      if (!final) text = text.replace(/\uFFFD+$/, "");
      if (text.length > printed) {
        o.onText(text.slice(printed));
        printed = text.length;
      }
    };
    class Streamer extends tf.BaseStreamer {
      #prompt = true;
      override put(value: bigint[][]): void {
        if (this.#prompt) {
          this.#prompt = false;
          return;
        }
        if (steps++ === 0) tFirst = performance.now();
        value.forEach((ids, b) => {
          for (const id of ids) rows[b]?.push(Number(id));
        });
        stream(false);
      }
      override end(): void {
        stream(true);
      }
    }
    class Filter extends tf.LogitsProcessor {
      override _call(_ids: bigint[][], logits: InstanceType<Transformers["Tensor"]>) {
        const data = logits.data as Float32Array;
        const vocab = logits.dims.at(-1)!;
        for (let at = 0; at < data.length; at += vocab) filterTopKTopP(data.subarray(at, at + vocab), o.topK ?? 0, o.topP ?? 1);
        return logits;
      }
    }
    const filtered = sample && ((o.topK ?? 0) > 0 || (o.topP ?? 1) < 1);
    await pipe(prompts.length === 1 ? prompts[0]! : [...prompts], {
      max_new_tokens: maxNewTokens,
      do_sample: sample,
      temperature,
      top_k: 0,
      top_p: 1,
      streamer: new Streamer(),
      ...(filtered ? { logits_processor: [new Filter()] } : {}),
    } as Record<string, unknown>);
    const seconds = (performance.now() - t0) / 1000;
    const firstTokenSeconds = (tFirst - t0) / 1000;
    const results = prompts.map((prompt, b) => {
      const all = rows[b]!;
      // Rows that met an end-of-sequence token keep being sampled until every row has: cut them there.
      const stop = all.findIndex((id) => eos.has(id));
      const newIds = stop < 0 ? all : all.slice(0, stop + 1);
      const promptIds = encoded[b]!;
      const ids = [...promptIds, ...newIds];
      const text = decode(ids);
      return { prompt, text, completion: text.slice(decode(promptIds).length), promptIds, newIds, ids, stoppedAtEos: stop >= 0 };
    });
    const timing: GenerateTiming = {
      firstTokenSeconds,
      seconds,
      steps,
      batch: prompts.length,
      tokensPerSecond: steps > 1 ? (prompts.length * (steps - 1)) / Math.max(seconds - firstTokenSeconds, 1e-9) : 0,
    };
    return { results, timing };
  }

  return {
    dir: ensured.dir,
    exported: ensured.exported,
    dtype,
    context,
    async generate(prompt, o = {}) {
      const { results, timing } = await run([prompt], o);
      return { ...results[0]!, timing };
    },
    generateBatch: (prompts, o = {}) => run(prompts, o),
    async dispose() {
      await pipe.dispose();
    },
  };
}

/** Generate a continuation of `prompt` with the model of checkpoint (or export) `dir`; see loadGenerator. */
export async function generate(
  dir: string,
  prompt: string,
  options: GenerateOptions & GeneratorOptions = {},
): Promise<GenerateResult & { timing: GenerateTiming; dir: string; exported: boolean }> {
  checkSamplingOptions(options);
  const g = await loadGenerator(dir, options);
  try {
    return { ...(await g.generate(prompt, options)), dir: g.dir, exported: g.exported };
  } finally {
    await g.dispose();
  }
}

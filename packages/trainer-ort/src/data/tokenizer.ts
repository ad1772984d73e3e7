import { checkInputSize, MAX_TOKENIZER_BYTES, parseJsonFile, readInputWithin, type InputLimit, type TokenizerSpec } from "@staged/core";
import { join } from "node:path";

/** Turns text into token ids. */
export interface TextTokenizer {
  readonly kind: TokenizerSpec["kind"];
  /** One more than the largest id it can produce. */
  readonly vocabSize: number;
  encode(text: string): Int32Array;
  decode(ids: ArrayLike<number>): string;
}

/** The default tokenizer: the UTF-8 bytes of the text, vocabulary 256. */
export function byteTokenizer(): TextTokenizer {
  const enc = new TextEncoder();
  const dec = new TextDecoder();
  return {
    kind: "bytes",
    vocabSize: 256,
    encode: (text) => Int32Array.from(enc.encode(text)),
    decode: (ids) => dec.decode(Uint8Array.from(Array.from(ids))),
  };
}

/** Text is encoded in pieces of about this many characters, cut after a newline (see hfTokenizer). */
const CHUNK_CHARS = 16384;

/** The size limit of a tokenizer.json (core/limits.ts MAX_TOKENIZER_BYTES says why). */
const TOKENIZER_LIMIT: InputLimit = { maxBytes: MAX_TOKENIZER_BYTES, kind: "a tokenizer.json" };

/** The text of a tokenizer.json's bytes: at most MAX_TOKENIZER_BYTES of UTF-8, else one line naming the file. */
function tokenizerText(bytes: Uint8Array, name: string): string {
  checkInputSize(name, bytes.byteLength, TOKENIZER_LIMIT);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new Error(`${name}: not a tokenizer.json (not UTF-8 text)`);
  }
}

/**
 * A Hugging Face `tokenizer.json` through `@huggingface/tokenizers`. Special tokens are not added.
 * Long texts are encoded piece by piece, each piece ending at a newline, so a token never spans a
 * newline that ends a piece (byte-level BPE tokenizers split there anyway).
 */
export async function hfTokenizer(json: Uint8Array | string, name = "tokenizer.json"): Promise<TextTokenizer> {
  const parsed = parseJsonFile(typeof json === "string" ? json : tokenizerText(json, name), name);
  if (typeof parsed !== "object" || parsed === null || typeof (parsed as { model?: unknown }).model !== "object") {
    throw new Error(`${name}: not a Hugging Face tokenizer.json (no "model" object)`);
  }
  const { Tokenizer } = await import("@huggingface/tokenizers");
  let tok: InstanceType<typeof Tokenizer>;
  try {
    tok = new Tokenizer(parsed, {});
  } catch (e) {
    throw new Error(`${name}: cannot build the tokenizer (${(e as Error).message})`, { cause: e });
  }
  let vocabSize = 0;
  for (const id of tok.get_vocab(true).values()) vocabSize = Math.max(vocabSize, id + 1);
  for (const id of tok.get_added_tokens_decoder().keys()) vocabSize = Math.max(vocabSize, id + 1);
  return {
    kind: "hf",
    vocabSize,
    encode(text) {
      const out: number[] = [];
      for (let start = 0; start < text.length;) {
        let end = Math.min(text.length, start + CHUNK_CHARS);
        if (end < text.length) {
          const nl = text.indexOf("\n", end);
          end = nl < 0 ? text.length : nl + 1;
        }
        const ids = tok.encode(text.slice(start, end), { add_special_tokens: false }).ids;
        for (const id of ids) out.push(id);
        start = end;
      }
      return Int32Array.from(out);
    },
    decode: (ids) => tok.decode(Array.from(ids)),
  };
}

/** Read a tokenizer.json file (refused from its size when above MAX_TOKENIZER_BYTES, before it is read). */
export async function loadHfTokenizer(file: string): Promise<{ tokenizer: TextTokenizer; bytes: Uint8Array }> {
  const bytes = await readInputWithin(file, "the tokenizer", TOKENIZER_LIMIT);
  return { tokenizer: await hfTokenizer(bytes, file), bytes };
}

/**
 * The tokenizer a state describes: bytes, or its stored tokenizer.json; for a checkpoint without one
 * (kind "none"), a tokenizer that refuses text, saying what to give instead (`where` names the checkpoint).
 */
export async function tokenizerOf(spec: TokenizerSpec, files?: ReadonlyMap<string, Uint8Array>, where = "the checkpoint"): Promise<TextTokenizer> {
  if (spec.kind === "bytes") return byteTokenizer();
  if (spec.kind === "none") {
    const refuse = (): never => {
      throw new Error(
        `${where}: has a vocabulary larger than 256 but no tokenizer.json, so text cannot be tokenized for it ` +
          "(give its tokenizer: --tokenizer <tokenizer.json>, or token ids in a .bin file)",
      );
    };
    return { kind: "none", vocabSize: 0, encode: refuse, decode: refuse };
  }
  const bytes = files?.get(spec.file);
  if (!bytes) throw new Error(`${where}: names ${spec.file} as its tokenizer, but has no such file`);
  return hfTokenizer(bytes, where === "the checkpoint" ? `the checkpoint's ${spec.file}` : join(where, spec.file));
}

/** Fail unless every id the tokenizer can produce is a row of the model's embedding. */
export function checkTokenizerFits(tokenizer: TextTokenizer, modelVocab: number, name: string): void {
  if (tokenizer.vocabSize > modelVocab) {
    throw new Error(`${name}: the tokenizer's vocabulary has ${tokenizer.vocabSize} ids, more than the model's vocab_size ${modelVocab}`);
  }
}

import { readInput } from "@staged/core";
import { extname } from "node:path";
import { brownText, type BrownSplit } from "./brown.js";
import type { TextTokenizer } from "./tokenizer.js";

/** A named stream of token ids. */
export interface TokenStream {
  /** What it came from, for messages ("brown (train split)", a file path, "data.txt (last 5%)"). */
  name: string;
  tokens: Int32Array;
}

/** Fraction of the training stream held out for validation when no validation data is named. */
export const HELD_OUT_FRACTION = 0.05;

/** `brown`, `brown:train`, `brown:validation`, `brown:all`, or null for a file. */
export function brownSplitOf(source: string): BrownSplit | "default" | null {
  if (source === "brown") return "default";
  const m = /^brown:(train|validation|all)$/.exec(source);
  return m ? (m[1] as BrownSplit) : null;
}

/** Read a `.bin` file of little-endian uint16 token ids, each checked against the vocabulary. */
export function decodeTokenFile(bytes: Uint8Array, vocab: number, name: string): Int32Array {
  if (bytes.byteLength % 2 !== 0) {
    throw new Error(`${name}: ${bytes.byteLength} bytes, an odd length: not a file of uint16 token ids`);
  }
  const n = bytes.byteLength / 2;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const id = view.getUint16(2 * i, true);
    if (id >= vocab) {
      throw new Error(`${name}: token id ${id} at byte offset ${2 * i} is outside the model's vocabulary (vocab_size ${vocab})`);
    }
    out[i] = id;
  }
  return out;
}

/** Encode `.bin` ids to bytes (little-endian uint16), the inverse of decodeTokenFile. */
export function encodeTokenFile(ids: ArrayLike<number>): Uint8Array {
  const out = new Uint8Array(ids.length * 2);
  const view = new DataView(out.buffer);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (!Number.isInteger(id) || id < 0 || id > 0xffff) throw new Error(`token id ${id} does not fit in uint16`);
    view.setUint16(2 * i, id, true);
  }
  return out;
}

function checkIds(tokens: Int32Array, vocab: number, name: string): void {
  for (let i = 0; i < tokens.length; i++) {
    const id = tokens[i]!;
    if (id < 0 || id >= vocab) {
      throw new Error(`${name}: token id ${id} at token ${i} is outside the model's vocabulary (vocab_size ${vocab})`);
    }
  }
}

/**
 * Token ids of a data source: `brown[:split]` (the embedded Brown corpus; `brown` alone means
 * `defaultBrownSplit`), a `.bin` file of uint16 ids, or any other file read as UTF-8 text.
 * Every id is checked against `vocab`; empty data is an error.
 */
export async function readTokens(source: string, tokenizer: TextTokenizer, vocab: number,
                                 defaultBrownSplit: BrownSplit = "train"): Promise<TokenStream> {
  const split = brownSplitOf(source);
  let stream: TokenStream;
  if (split !== null) {
    const s = split === "default" ? defaultBrownSplit : split;
    const tokens = tokenizer.encode(await brownText(s));
    stream = { name: `brown (${s} split)`, tokens };
    checkIds(tokens, vocab, stream.name);
  } else {
    const bytes = await readInput(source, "the data");
    if (extname(source).toLowerCase() === ".bin") {
      stream = { name: source, tokens: decodeTokenFile(bytes, vocab, source) };
    } else {
      let text: string;
      try { text = new TextDecoder("utf-8", { fatal: true }).decode(bytes); } catch {
        throw new Error(`${source}: not UTF-8 text (token files must end in .bin)`);
      }
      stream = { name: source, tokens: tokenizer.encode(text) };
      checkIds(stream.tokens, vocab, source);
    }
  }
  if (stream.tokens.length === 0) throw new Error(`${stream.name}: empty data (no tokens)`);
  return stream;
}

/** Fail unless the stream holds at least one block of `context` tokens. */
export function requireBlock(stream: TokenStream, context: number, what = "data"): void {
  if (stream.tokens.length < context) {
    throw new Error(`${stream.name}: ${stream.tokens.length} tokens of ${what}, shorter than one block of ${context} tokens`);
  }
}

export interface PreparedData {
  train: TokenStream;
  validation: TokenStream;
  /** How the validation stream was chosen. */
  validationFrom: "val-data" | "brown-split" | "held-out";
}

export interface PrepareOptions {
  data: string;
  valData?: string;
  tokenizer: TextTokenizer;
  vocab: number;
  context: number;
}

/**
 * Training and validation streams. Validation is `valData` when given; for `brown` the Brown validation
 * split; otherwise the last 5% of the training stream (at least one block of `context` tokens), which is
 * then cut off the training stream and never trained on. Each stream must hold at least one block.
 */
export async function prepareData(o: PrepareOptions): Promise<PreparedData> {
  const split = brownSplitOf(o.data);
  if (o.valData !== undefined) {
    const train = await readTokens(o.data, o.tokenizer, o.vocab, "train");
    const validation = await readTokens(o.valData, o.tokenizer, o.vocab, "validation");
    requireBlock(train, o.context, "training data");
    requireBlock(validation, o.context, "validation data");
    return { train, validation, validationFrom: "val-data" };
  }
  if (split === "default" || split === "train") {
    const train = await readTokens("brown:train", o.tokenizer, o.vocab);
    const validation = await readTokens("brown:validation", o.tokenizer, o.vocab);
    requireBlock(train, o.context, "training data");
    requireBlock(validation, o.context, "validation data");
    return { train, validation, validationFrom: "brown-split" };
  }
  const all = await readTokens(o.data, o.tokenizer, o.vocab);
  requireBlock(all, o.context);
  const n = all.tokens.length;
  const held = Math.max(Math.ceil(n * HELD_OUT_FRACTION), o.context);
  if (n - held < o.context) {
    throw new Error(`${all.name}: ${n} tokens, too short to train on one block of ${o.context} tokens and hold out ` +
      `${held} for validation (give --val-data, or more data)`);
  }
  return {
    train: { name: all.name, tokens: all.tokens.subarray(0, n - held) },
    validation: { name: `${all.name} (last ${held} tokens, held out)`, tokens: all.tokens.subarray(n - held) },
    validationFrom: "held-out",
  };
}

import { formatBytes, formatCount, freeMemory, inputError, MAX_TENSOR_VALUES, MAX_TEXT_BYTES, openInput, readInputWithin } from "@staged/core";
import { basename, extname } from "node:path";
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

/** The integer type of a token file's ids (little-endian). */
export type TokenDtype = "uint16" | "uint32";

/**
 * The id type of a token file, by its name: uint16 for `.bin` (nanoGPT's format, the default), uint32 for
 * `.u32.bin` (vocabularies past 65,536); null for any other name (text).
 */
export function tokenFileDtype(path: string): TokenDtype | null {
  const ext = extname(path);
  if (ext.toLowerCase() !== ".bin") return null;
  return extname(basename(path, ext)).toLowerCase() === ".u32" ? "uint32" : "uint16";
}

const WIDTH: Record<TokenDtype, number> = { uint16: 2, uint32: 4 };
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

function checkLength(bytes: number, dtype: TokenDtype, name: string): void {
  const width = WIDTH[dtype];
  if (bytes % width === 0) return;
  throw new Error(
    dtype === "uint16"
      ? `${name}: ${bytes} bytes, an odd length: not a file of uint16 token ids`
      : `${name}: ${bytes} bytes, not a multiple of 4: not a file of uint32 token ids (.u32.bin)`,
  );
}

/**
 * Decode `bytes` (whole ids) into `out` from index `at`, each id checked against the vocabulary; `offset` is
 * where the bytes start in the file, for the message.
 */
function decodeInto(bytes: Uint8Array, dtype: TokenDtype, out: Int32Array, at: number, vocab: number, name: string, offset: number): void {
  const width = WIDTH[dtype];
  const n = bytes.byteLength / width;
  const outside = (i: number, id: number): never => {
    throw new Error(`${name}: token id ${id} at byte offset ${offset + width * i} is outside the model's vocabulary (vocab_size ${vocab})`);
  };
  if (!LITTLE_ENDIAN) {
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i < n; i++) {
      const id = dtype === "uint16" ? view.getUint16(width * i, true) : view.getUint32(width * i, true);
      if (id >= vocab) outside(i, id);
      out[at + i] = id;
    }
    return;
  }
  // A typed view needs an aligned offset: slice() copies to a fresh buffer otherwise.
  const aligned = bytes.byteOffset % width === 0 ? bytes : bytes.slice();
  const ids = dtype === "uint16" ? new Uint16Array(aligned.buffer, aligned.byteOffset, n) : new Uint32Array(aligned.buffer, aligned.byteOffset, n);
  for (let i = 0; i < n; i++) if (ids[i]! >= vocab) outside(i, ids[i]!);
  // Every id is below vocab (≤ 2²⁴), so uint32 → int32 keeps it.
  out.set(ids, at);
}

/** Read the ids of a token file's bytes (little-endian `dtype`), each checked against the vocabulary. */
export function decodeTokenFile(bytes: Uint8Array, vocab: number, name: string, dtype: TokenDtype = "uint16"): Int32Array {
  checkLength(bytes.byteLength, dtype, name);
  const out = new Int32Array(bytes.byteLength / WIDTH[dtype]);
  decodeInto(bytes, dtype, out, 0, vocab, name, 0);
  return out;
}

/** Encode ids as a token file's bytes (little-endian `dtype`), the inverse of decodeTokenFile. */
export function encodeTokenFile(ids: ArrayLike<number>, dtype: TokenDtype = "uint16"): Uint8Array {
  const width = WIDTH[dtype];
  const max = dtype === "uint16" ? 0xffff : 0xffffffff;
  const out = new Uint8Array(ids.length * width);
  const view = new DataView(out.buffer);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    if (!Number.isInteger(id) || id < 0 || id > max) throw new Error(`token id ${id} does not fit in ${dtype}`);
    if (dtype === "uint16") view.setUint16(2 * i, id, true);
    else view.setUint32(4 * i, id, true);
  }
  return out;
}

/** Bytes read at a time from a token file: 16 MiB (8 M uint16 ids). */
export const TOKEN_FILE_CHUNK_BYTES = 16 * 2 ** 20;

export interface ReadTokenFileOptions {
  /** Bytes per read (a multiple of 4; default TOKEN_FILE_CHUNK_BYTES): tests read small files in many pieces. */
  chunkBytes?: number;
  /** The memory free for the ids (default freeMemory()): tests check the refusal. */
  freeBytes?: number;
}

/**
 * The ids of a token file (`.bin`: uint16, `.u32.bin`: uint32, little-endian; see tokenFileDtype), read in
 * pieces of `chunkBytes` into one Int32Array, so a file of any size is read (a single read stops at 2 GiB),
 * each id checked against the vocabulary. The ids take 4 bytes each in memory (twice a uint16 file's size):
 * that much memory must be free, and the file must hold at most MAX_TENSOR_VALUES ids (one array's limit).
 */
export async function readTokenFile(path: string, vocab: number, options: ReadTokenFileOptions = {}): Promise<Int32Array> {
  const dtype = tokenFileDtype(path) ?? "uint16";
  const width = WIDTH[dtype];
  const chunkBytes = options.chunkBytes ?? TOKEN_FILE_CHUNK_BYTES;
  if (!(Number.isSafeInteger(chunkBytes) && chunkBytes > 0 && chunkBytes % 4 === 0)) {
    throw new Error(`chunkBytes must be a positive multiple of 4, got ${chunkBytes}`);
  }
  const { handle, stats } = await openInput(path, "the data");
  try {
    if (!stats.isFile()) throw new Error(`${path}: cannot read the data (not a regular file: a token file is read in pieces, by its size)`);
    const size = stats.size;
    checkLength(size, dtype, path);
    const n = size / width;
    if (n > MAX_TENSOR_VALUES) {
      throw new Error(`${path}: ${formatCount(n)} token ids, more than one array holds (${MAX_TENSOR_VALUES}); split the file`);
    }
    const free = options.freeBytes ?? freeMemory();
    if (4 * n > free) {
      throw new Error(`${path}: ${formatCount(n)} token ids need ${formatBytes(4 * n)} of memory (4 bytes each); ${formatBytes(free)} is free`);
    }
    const out = new Int32Array(n);
    const buffer = new Uint8Array(Math.min(chunkBytes, size));
    for (let pos = 0; pos < size;) {
      const want = Math.min(buffer.byteLength, size - pos);
      for (let got = 0; got < want;) {
        let bytesRead: number;
        try {
          ({ bytesRead } = await handle.read(buffer, got, want - got, pos + got));
        } catch (e) {
          throw inputError(path, "the data", e);
        }
        if (bytesRead === 0) throw new Error(`${path}: ended at byte ${pos + got} of ${size} (the file shrank while it was read)`);
        got += bytesRead;
      }
      decodeInto(buffer.subarray(0, want), dtype, out, pos / width, vocab, path, pos);
      pos += want;
    }
    return out;
  } finally {
    await handle.close().catch(() => undefined);
  }
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
 * `defaultBrownSplit`), a token file (`.bin`: uint16 ids, `.u32.bin`: uint32, read in pieces, see
 * readTokenFile), or any other file read as UTF-8 text (at most MAX_TEXT_BYTES, one string's limit).
 * Every id is checked against `vocab`; empty data is an error.
 */
export async function readTokens(
  source: string,
  tokenizer: TextTokenizer,
  vocab: number,
  defaultBrownSplit: BrownSplit = "train",
): Promise<TokenStream> {
  const split = brownSplitOf(source);
  let stream: TokenStream;
  if (split !== null) {
    const s = split === "default" ? defaultBrownSplit : split;
    const tokens = tokenizer.encode(await brownText(s));
    stream = { name: `brown (${s} split)`, tokens };
    checkIds(tokens, vocab, stream.name);
  } else {
    if (tokenFileDtype(source) !== null) {
      stream = { name: source, tokens: await readTokenFile(source, vocab) };
    } else {
      const bytes = await readInputWithin(source, "the data", {
        maxBytes: MAX_TEXT_BYTES,
        kind: "text data",
        why: "the longest string JavaScript holds: tokenize it into a .bin file of token ids",
      });
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
      } catch {
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
  valData?: string | undefined;
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
    throw new Error(
      `${all.name}: ${n} tokens, too short to train on one block of ${o.context} tokens and hold out ` +
        `${held} for validation (give --val-data, or more data)`,
    );
  }
  return {
    train: { name: all.name, tokens: all.tokens.subarray(0, n - held) },
    validation: { name: `${all.name} (last ${held} tokens, held out)`, tokens: all.tokens.subarray(n - held) },
    validationFrom: "held-out",
  };
}

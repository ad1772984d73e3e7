/**
 * safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
 * N bytes of UTF-8 JSON (`name → {dtype, shape, data_offsets}` plus an optional `__metadata__` of
 * string → string), then the byte buffer. Reading is lazy (header first, one tensor's byte range on
 * demand) and writing streams one tensor at a time.
 *
 * The reader accepts exactly the files the reference reader accepts — `SafeTensors::read_metadata`,
 * `HashMetadata`, `TensorInfo`, `Dtype` and `Metadata::validate` in safetensors/src/tensor.rs of
 * https://github.com/huggingface/safetensors, whose header goes through serde_json
 * (https://github.com/serde-rs/json, src/de.rs and src/read.rs) — except where noted "stricter".
 * These are the rules of the reference's current main branch (older releases knew fewer dtypes and
 * allowed NUL characters):
 *  - file ≥ 8 bytes; N (u64 LE) ≤ 100,000,000 (`MAX_HEADER_SIZE`); 8 + N ≤ file size;
 *  - the header is strict UTF-8 (a BOM is kept, and is not JSON whitespace, so it is refused);
 *  - the header is one JSON value with optional JSON whitespace (space, tab, CR, LF) before and
 *    after it (the reference writer pads with spaces; leading whitespace is allowed too), nothing else;
 *  - JSON as serde_json reads it: RFC 8259 grammar; no raw control characters in strings; every
 *    `\uD800`–`\uDBFF` escape immediately followed by a `\uDC00`–`\uDFFF` escape and no other low
 *    surrogate escape; a number whose magnitude overflows f64 (`1e400`) is refused ("number out of
 *    range") — within the last unit of f64's range serde_json's own rounding may decide either way;
 *    at most 127 nested arrays/objects counting the outer object (serde_json's recursion limit of
 *    128), checked without recursion, so a deep header fails at once;
 *  - the value is an object. `__metadata__` at most once, `null` (no metadata) or an object of
 *    string values. Every other member is a tensor, in one of serde's two forms of `TensorInfo`: an
 *    object with `dtype`, `shape` and `data_offsets` each exactly once (other members are ignored,
 *    whatever they hold), or the array `[dtype, shape, data_offsets]`;
 *  - `dtype`: one of `SAFETENSORS_DTYPES` as a string, or serde's enum form `{"F32": null}`;
 *  - `shape`: array of integers, `data_offsets`: array of exactly two; each written as a plain
 *    non-negative integer (no sign, fraction or exponent: `2.0`, `2e0`, `-0` are refused, as serde
 *    refuses them for usize) ≤ 2^64 − 1. Stricter: ≤ 2^53 − 1, the largest integer a JavaScript
 *    number holds exactly (no real file comes near it);
 *  - no NUL character in a tensor name or in a `__metadata__` key or value;
 *  - sorted by (begin, end), the tensors tile [0, end of the last) with no gap or overlap, each
 *    with end ≥ begin; per tensor the shape's product, multiplied left to right, times the dtype's
 *    bits, stays ≤ 2^64 − 1 at every step (`ValidationOverflow`, even if a later dimension is 0),
 *    is a whole number of bytes, and equals end − begin; the file holds exactly 8 + N + that many bytes.
 * Stricter: duplicate member names in the outer object (two tensors of one name) or in
 * `__metadata__` are refused. The reference keeps the last silently (a serde HashMap), so a reader
 * that keeps the first would see another dtype or shape for the same bytes; the reference's own
 * issue tracker asks for this error (huggingface/safetensors#401).
 *
 * The writer lays tensors out as the reference's `prepare` does: by descending `Dtype` enum order
 * (8-byte dtypes first), then by name (Unicode code point order, Rust's `str` order); `__metadata__`
 * first; compact JSON; padded with spaces to a multiple of 8 bytes, so every tensor starts at a
 * file offset that is a multiple of its element size. It refuses what the reference writer refuses
 * (NUL in a name or metadata, a header over `MAX_HEADER_SIZE`) and names or metadata holding a lone
 * UTF-16 surrogate, which no reader could take back.
 *
 * Every dtype parses and reads as raw bytes (`readRaw`); only `DType` (F64, F32, F16, BF16, the
 * integers, BOOL) decodes to a `Tensor` and can be written; the others are refused naming the dtype.
 */
import { open, unlink, type FileHandle } from "node:fs/promises";
import {
  type DType, type SafetensorsDType, DTYPE_SIZES, HOST_LITTLE_ENDIAN, SAFETENSORS_DTYPES, SAFETENSORS_DTYPE_BITS,
  isDType, isSafetensorsDType, decodeBF16, decodeF16, encodeBF16, encodeF16,
} from "./dtype.js";
import { PIECE_BYTES, Tensor, type TypedArray } from "./tensor.js";
import { DIRECT_ALIGN, DirectWriter, alignedMemory, alignedRange, isAlignedMemory, openDirect, readAligned, wantDirectIo } from "./direct.js";
import type { LazyTensor } from "./types.js";

/** The reference implementation's bound on the header length. */
export const MAX_HEADER_SIZE = 100_000_000;

/** serde_json's recursion limit is 128: the 128th nested array/object fails. */
const MAX_JSON_DEPTH = 127;

/** Largest single read/write handed to the OS (Linux transfers at most ~2 GiB per call). */
const IO_CHUNK = 1 << 30;

const U64_MAX = 2n ** 64n - 1n;

export interface TensorInfo<D extends SafetensorsDType = DType> {
  dtype: D;
  shape: number[];
  /** [begin, end) relative to the start of the byte buffer (just after the header). */
  dataOffsets: [number, number];
}

/** A malformed or unreadable safetensors file (or checkpoint index); the message starts with the path. */
export class SafetensorsError extends Error {
  constructor(readonly path: string, readonly problem: string) {
    super(`${path}: ${problem}`);
    this.name = "SafetensorsError";
  }
}

export interface ParsedHeader {
  /** Every tensor in data-offset order, with any of the reference's dtypes. */
  tensors: Map<string, TensorInfo<SafetensorsDType>>;
  metadata: Record<string, string> | null;
  /** Length of the byte buffer the header describes (end of the last tensor). */
  dataLength: number;
}

const describe = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
};

const isIndex = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

// ---------------------------------------------------------------------------------------------
// Header JSON. One linear pass, no recursion, over the decoded text, into a tree that keeps what
// JSON.parse loses and serde sees: every member of an object in order (duplicates included) and how
// each number was written.

/** An object's members in order, duplicates kept: name, value, name, value, ... */
class JsonObject {
  readonly members: JsonValue[] = [];
}

/**
 * A number other than a plain unsigned integer ≤ 2^53 − 1 (those are JS numbers), as written.
 * `u64`: a plain unsigned integer ≤ 2^64 − 1, which serde would accept as a usize.
 */
class JsonNumber {
  constructor(readonly raw: string, readonly u64: boolean) {}
}

type JsonValue = null | boolean | string | number | JsonNumber | JsonValue[] | JsonObject;

class JsonSyntaxError extends Error {
  constructor(message: string, readonly at: number) { super(message); }
}

const isJsonWs = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

const hexValue = (c: number): number =>
  c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;

/** The JSON value of `text` (whitespace around it allowed), as serde_json would read it. */
function readJson(text: string): JsonValue {
  const n = text.length;
  let i = 0;
  const fail = (what: string, at: number = i): never => { throw new JsonSyntaxError(what, at); };

  const hex4 = (at: number): number => {
    let v = 0;
    for (let k = at; k < at + 4; k++) {
      const h = k < n ? hexValue(text.charCodeAt(k)) : -1;
      if (h < 0) fail("invalid \\u escape (needs 4 hex digits)", at - 2);
      v = (v << 4) | h;
    }
    return v;
  };

  /** The string starting at text[i] === '"'; leaves i after the closing quote. */
  const readString = (): string => {
    const start = i + 1;
    let j = start;
    for (;;) {
      if (j >= n) fail("unterminated string", start - 1);
      const c = text.charCodeAt(j);
      if (c === 0x22) { i = j + 1; return text.slice(start, j); }
      if (c === 0x5c) break;
      if (c < 0x20) fail("control character in a string (it must be escaped)", j);
      j++;
    }
    const parts = [text.slice(start, j)];
    for (;;) {
      if (j >= n) fail("unterminated string", start - 1);
      const c = text.charCodeAt(j);
      if (c === 0x22) { i = j + 1; return parts.join(""); }
      if (c !== 0x5c) {
        const from = j;
        while (j < n) {
          const d = text.charCodeAt(j);
          if (d === 0x22 || d === 0x5c) break;
          if (d < 0x20) fail("control character in a string (it must be escaped)", j);
          j++;
        }
        parts.push(text.slice(from, j));
        continue;
      }
      const e = j + 1 < n ? text.charCodeAt(j + 1) : -1;
      switch (e) {
        case 0x22: parts.push('"'); break;
        case 0x5c: parts.push("\\"); break;
        case 0x2f: parts.push("/"); break;
        case 0x62: parts.push("\b"); break;
        case 0x66: parts.push("\f"); break;
        case 0x6e: parts.push("\n"); break;
        case 0x72: parts.push("\r"); break;
        case 0x74: parts.push("\t"); break;
        case 0x75: {
          const u = hex4(j + 2);
          if (u >= 0xdc00 && u <= 0xdfff) fail(`unpaired surrogate escape \\u${text.slice(j + 2, j + 6)} (a low surrogate with no high surrogate before it)`, j);
          if (u >= 0xd800 && u <= 0xdbff) {
            const lowOk = text.charCodeAt(j + 6) === 0x5c && text.charCodeAt(j + 7) === 0x75;
            const low = lowOk ? hex4(j + 8) : -1;
            if (low < 0xdc00 || low > 0xdfff) fail(`unpaired surrogate escape \\u${text.slice(j + 2, j + 6)} (a high surrogate not followed by a \\uDC00-\\uDFFF escape)`, j);
            parts.push(String.fromCharCode(u, low));
            j += 12;
          } else {
            parts.push(String.fromCharCode(u));
            j += 6;
          }
          continue;
        }
        default:
          fail(e < 0 ? "unterminated string" : `invalid escape \\${String.fromCharCode(e)}`, j);
      }
      j += 2;
    }
  };

  /** The number starting at text[i]; leaves i after it. */
  const readNumber = (): number | JsonNumber => {
    const start = i;
    let plain = true;
    if (text.charCodeAt(i) === 0x2d) { plain = false; i++; }
    let c = i < n ? text.charCodeAt(i) : -1;
    let value = 0;
    let digits = 0;
    if (c === 0x30) {
      i++;
      digits = 1;
      c = i < n ? text.charCodeAt(i) : -1;
      if (c >= 0x30 && c <= 0x39) fail("invalid number (leading zero)", start);
    } else if (c >= 0x31 && c <= 0x39) {
      while (c >= 0x30 && c <= 0x39) {
        value = value * 10 + (c - 0x30);
        digits++;
        i++;
        c = i < n ? text.charCodeAt(i) : -1;
      }
    } else {
      fail("invalid number", start);
    }
    if (c === 0x2e) {
      plain = false;
      i++;
      c = i < n ? text.charCodeAt(i) : -1;
      if (!(c >= 0x30 && c <= 0x39)) fail("invalid number (no digit after the decimal point)", start);
      while (c >= 0x30 && c <= 0x39) { i++; c = i < n ? text.charCodeAt(i) : -1; }
    }
    if (c === 0x65 || c === 0x45) {
      plain = false;
      i++;
      c = i < n ? text.charCodeAt(i) : -1;
      if (c === 0x2b || c === 0x2d) { i++; c = i < n ? text.charCodeAt(i) : -1; }
      if (!(c >= 0x30 && c <= 0x39)) fail("invalid number (no digit in the exponent)", start);
      while (c >= 0x30 && c <= 0x39) { i++; c = i < n ? text.charCodeAt(i) : -1; }
    }
    if (plain && digits <= 15) return value; // < 10^15: exact
    const raw = text.slice(start, i);
    const approx = Number(raw);
    if (!Number.isFinite(approx)) fail(`number out of range (${raw.length > 24 ? `${raw.slice(0, 21)}...` : raw} overflows f64)`, start);
    if (!plain) return new JsonNumber(raw, false);
    if (approx <= Number.MAX_SAFE_INTEGER) return approx; // integers up to 2^53 are exact, so this is too
    return new JsonNumber(raw, BigInt(raw) <= U64_MAX);
  };

  const skipWs = (): void => { while (i < n && isJsonWs(text.charCodeAt(i))) i++; };

  /** A member name and its colon, at text[i] (after whitespace); leaves i at the value. */
  const readKey = (obj: JsonObject): void => {
    if (text.charCodeAt(i) !== 0x22) fail(i >= n ? "unexpected end of header, expected a member name" : "expected a member name in double quotes");
    obj.members.push(readString());
    skipWs();
    if (text.charCodeAt(i) !== 0x3a) fail(i >= n ? "unexpected end of header, expected ':'" : "expected ':'");
    i++;
    skipWs();
  };

  const stack: (JsonValue[] | JsonObject)[] = [];
  let root: JsonValue = null;
  skipWs();
  for (;;) {
    // A value starts at text[i].
    if (i >= n) fail("unexpected end of header, expected a value");
    const c = text.charCodeAt(i);
    let value: JsonValue;
    let opened = false;
    if (c === 0x7b || c === 0x5b) {
      if (stack.length >= MAX_JSON_DEPTH) {
        fail(`arrays/objects nested deeper than ${MAX_JSON_DEPTH} levels (serde_json's recursion limit)`);
      }
      value = c === 0x7b ? new JsonObject() : [];
      opened = true;
      i++;
    } else if (c === 0x22) {
      value = readString();
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      value = readNumber();
    } else if (c === 0x74 && text.startsWith("true", i)) {
      value = true; i += 4;
    } else if (c === 0x66 && text.startsWith("false", i)) {
      value = false; i += 5;
    } else if (c === 0x6e && text.startsWith("null", i)) {
      value = null; i += 4;
    } else {
      value = fail("expected a value");
    }
    const parent = stack[stack.length - 1];
    if (parent === undefined) root = value;
    else if (parent instanceof JsonObject) parent.members.push(value);
    else parent.push(value);
    skipWs();
    if (opened) {
      const container = value as JsonValue[] | JsonObject;
      stack.push(container);
      const isObject = container instanceof JsonObject;
      if (text.charCodeAt(i) !== (isObject ? 0x7d : 0x5d)) {
        if (isObject) readKey(container);
        continue;
      }
      i++;
      stack.pop();
      skipWs();
    }
    // After a complete value: close containers until one has a next element.
    for (;;) {
      const top = stack[stack.length - 1];
      if (top === undefined) {
        if (i < n) fail("trailing characters after the JSON value");
        return root;
      }
      const isObject = top instanceof JsonObject;
      const d = text.charCodeAt(i);
      if (d === 0x2c) {
        i++;
        skipWs();
        if (isObject) readKey(top);
        break;
      }
      if (d !== (isObject ? 0x7d : 0x5d)) {
        fail(i >= n ? "unexpected end of header" : isObject ? "expected ',' or '}'" : "expected ',' or ']'");
      }
      i++;
      stack.pop();
      skipWs();
    }
  }
}

/** Compact JSON-like text of a header value (numbers as written), cut at about 80 characters. */
function show(v: JsonValue): string {
  const out: string[] = [];
  let len = 0;
  const put = (s: string): void => { out.push(s); len += s.length; };
  const walk = (x: JsonValue): void => {
    if (len > 80) return;
    if (x instanceof JsonNumber) put(x.raw);
    else if (x instanceof JsonObject) {
      put("{");
      for (let k = 0; k < x.members.length && len <= 80; k += 2) {
        put(`${k ? "," : ""}${JSON.stringify(x.members[k])}:`);
        walk(x.members[k + 1]!);
      }
      put("}");
    } else if (Array.isArray(x)) {
      put("[");
      x.forEach((e, i) => { if (len > 80) return; if (i) put(","); walk(e); });
      put("]");
    } else put(JSON.stringify(x));
  };
  walk(v);
  const s = out.join("");
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** Byte offset in the UTF-8 header of character index `at` of its decoded text. */
const byteOffset = (text: string, at: number): number => new TextEncoder().encode(text.slice(0, at)).length;

// ---------------------------------------------------------------------------------------------
// Header validation.

/**
 * Validate a header (the N bytes after the length) as the reference reader does (see the top of
 * this file). With `dataLength` (file size − 8 − N), also check that the tensors cover the byte
 * buffer exactly.
 */
export function parseSafetensorsHeader(path: string, header: Uint8Array, dataLength?: number): ParsedHeader {
  const fail = (problem: string): never => { throw new SafetensorsError(path, problem); };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(header);
  } catch {
    return fail("header is not valid UTF-8");
  }
  let json: JsonValue;
  try {
    json = readJson(text);
  } catch (e) {
    if (!(e instanceof JsonSyntaxError)) throw e;
    return fail(`header is not valid JSON: ${e.message} at header byte ${byteOffset(text, e.at)}`);
  }
  if (!(json instanceof JsonObject)) return fail(`header is not a JSON object (got ${show(json)})`);

  let metadata: Record<string, string> | null = null;
  let sawMetadata = false;
  const entries: { name: string; info: TensorInfo<SafetensorsDType> }[] = [];
  const names = new Set<string>();
  const members = json.members;
  let sorted = true;
  for (let k = 0; k < members.length; k += 2) {
    const name = members[k] as string;
    const value = members[k + 1]!;
    if (name === "__metadata__") {
      if (sawMetadata) fail("__metadata__ appears twice in the header");
      sawMetadata = true;
      metadata = readMetadata(value, fail);
      continue;
    }
    const info = readTensorInfo(name, value, fail);
    if (names.has(name)) fail(`duplicate tensor name ${describe(name)} in header`);
    names.add(name);
    if (name.includes("\0")) fail(`tensor name ${describe(name)} contains a NUL character`);
    const last = entries[entries.length - 1];
    if (last && compareOffsets(last.info, info) > 0) sorted = false;
    entries.push({ name, info });
  }

  // Sorted by offsets, the tensors must tile [0, end) with no gap or overlap.
  if (!sorted) entries.sort((a, b) => compareOffsets(a.info, b.info));
  let at = 0;
  let prev: string | null = null;
  for (const { name, info: { dtype, shape, dataOffsets: [begin, end] } } of entries) {
    const where = (): string => `tensor ${describe(name)}`;
    if (begin < at) fail(`${where()}: data_offsets [${begin}, ${end}] overlap tensor ${describe(prev)} (which ends at ${at})`);
    if (begin > at) fail(`${where()}: data_offsets [${begin}, ${end}] leave a hole of ${begin - at} bytes after ${prev === null ? "the header" : `tensor ${describe(prev)}`} (expected begin ${at})`);
    const bytes = byteLength(dtype, shape);
    if (end - begin !== bytes) {
      if (bytes === "overflow") fail(`${where()}: shape ${describe(shape)} × ${dtype} size overflows 64 bits`);
      if (bytes === "misaligned") fail(`${where()}: shape ${describe(shape)} of ${dtype} (${SAFETENSORS_DTYPE_BITS[dtype]} bits each) is not a whole number of bytes`);
      fail(`${where()}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ${describe(shape)} of ${dtype} needs ${bytes}`);
    }
    at = end;
    prev = name;
  }
  if (dataLength !== undefined && dataLength !== at) {
    fail(`file size mismatch: the header describes ${at} bytes of tensor data but the file holds ${dataLength} after the header` +
      (dataLength > at ? " (bytes not covered by any tensor)" : " (file truncated)"));
  }
  return { tensors: new Map(entries.map((e) => [e.name, e.info])), metadata, dataLength: at };
}

const compareOffsets = (a: TensorInfo<SafetensorsDType>, b: TensorInfo<SafetensorsDType>): number =>
  a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1];

type Fail = (problem: string) => never;

/** `__metadata__`: null, or an object of string values. */
function readMetadata(value: JsonValue, fail: Fail): Record<string, string> | null {
  if (value === null) return null;
  if (!(value instanceof JsonObject)) return fail(`__metadata__ is not an object of string → string (got ${show(value)})`);
  const m: Record<string, string> = {};
  const members = value.members;
  for (let k = 0; k < members.length; k += 2) {
    const key = members[k] as string;
    const v = members[k + 1]!;
    if (typeof v !== "string") return fail(`__metadata__ value of ${describe(key)} is not a string (got ${show(v)})`);
    if (Object.hasOwn(m, key)) fail(`duplicate key ${describe(key)} in __metadata__`);
    if (key.includes("\0")) fail(`__metadata__ key ${describe(key)} contains a NUL character`);
    if (v.includes("\0")) fail(`__metadata__ value of ${describe(key)} contains a NUL character`);
    Object.defineProperty(m, key, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return m;
}

/**
 * A usize of serde's, as the JSON reader left it: a JS number is a plain unsigned integer ≤ 2^53 − 1;
 * a `JsonNumber` with `u64` is one up to 2^64 − 1 (stricter: refused); anything else is not a usize.
 */
function index(v: JsonValue, name: string, problem: () => string, fail: Fail): number {
  if (typeof v === "number") return v;
  if (v instanceof JsonNumber && v.u64) {
    fail(`tensor ${describe(name)}: ${v.raw} is above 2^53 − 1, the largest integer this reader represents exactly (the reference allows up to 2^64 − 1)`);
  }
  return fail(`tensor ${describe(name)}: ${problem()}`);
}

/** One tensor entry: serde's map form `{dtype, shape, data_offsets, ...ignored}` or its sequence form. */
function readTensorInfo(name: string, value: JsonValue, fail: Fail): TensorInfo<SafetensorsDType> {
  const bad = (problem: string): never => fail(`tensor ${describe(name)}: ${problem}`);
  let dtype: JsonValue | undefined;
  let shape: JsonValue | undefined;
  let offsets: JsonValue | undefined;
  if (value instanceof JsonObject) {
    const members = value.members;
    for (let k = 0; k < members.length; k += 2) {
      const key = members[k];
      const v = members[k + 1]!;
      if (key === "dtype") {
        if (dtype !== undefined) bad('duplicate field "dtype"');
        dtype = v;
      } else if (key === "shape") {
        if (shape !== undefined) bad('duplicate field "shape"');
        shape = v;
      } else if (key === "data_offsets") {
        if (offsets !== undefined) bad('duplicate field "data_offsets"');
        offsets = v;
      } // serde ignores any other member, whatever it holds
    }
    if (dtype === undefined) bad('missing field "dtype"');
    if (shape === undefined) bad('missing field "shape"');
    if (offsets === undefined) bad('missing field "data_offsets"');
  } else if (Array.isArray(value)) {
    if (value.length !== 3) bad(`header entry is an array of ${value.length} elements, not [dtype, shape, data_offsets]`);
    [dtype, shape, offsets] = value;
  } else {
    bad(`header entry is not an object (got ${show(value)})`);
  }

  let dt = dtype!;
  // serde's externally tagged form of a unit variant: {"F32": null}.
  if (dt instanceof JsonObject && dt.members.length === 2 && dt.members[1] === null) dt = dt.members[0]!;
  if (!isSafetensorsDType(dt)) bad(`unknown dtype ${show(dtype!)}`);

  if (!Array.isArray(shape)) return bad(`shape must be an array of non-negative integers (got ${show(shape!)})`);
  const shapeProblem = (): string => `shape must be an array of non-negative integers (got ${show(shape!)})`;
  for (let k = 0; k < shape.length; k++) {
    const d = shape[k];
    if (typeof d !== "number") index(d!, name, shapeProblem, fail);
  }
  const offsetsProblem = (): string => `data_offsets must be [begin, end] non-negative integers with begin <= end (got ${show(offsets!)})`;
  if (!Array.isArray(offsets) || offsets.length !== 2) return bad(offsetsProblem());
  const begin = index(offsets[0]!, name, offsetsProblem, fail);
  const end = index(offsets[1]!, name, offsetsProblem, fail);
  if (begin > end) bad(offsetsProblem());
  // Every element of `shape` is a number now, and the array is the reader's own.
  return { dtype: dt as SafetensorsDType, shape: shape as number[], dataOffsets: [begin, end] };
}

/**
 * Bytes of `shape` × `dtype` as the reference computes them: the product of the dimensions taken
 * left to right in u64 (any intermediate overflow is an error), times the dtype's bits, which must
 * fit u64 and be a whole number of bytes.
 */
function byteLength(dtype: SafetensorsDType, shape: readonly number[]): number | "overflow" | "misaligned" {
  const bits = SAFETENSORS_DTYPE_BITS[dtype];
  let count = 1;
  let k = 0;
  for (; k < shape.length; k++) {
    const next = count * shape[k]!;
    if (next > Number.MAX_SAFE_INTEGER) break;
    count = next;
  }
  if (k === shape.length && bits % 8 === 0) return count * (bits / 8); // may exceed 2^53 only when no offsets can match
  let big = BigInt(count);
  for (; k < shape.length; k++) {
    big *= BigInt(shape[k]!);
    if (big > U64_MAX) return "overflow";
  }
  const totalBits = big * BigInt(bits);
  if (totalBits > U64_MAX) return "overflow";
  if (totalBits % 8n !== 0n) return "misaligned";
  const bytes = totalBits / 8n;
  return bytes > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER + 1 : Number(bytes);
}

/**
 * The first duplicate key of any object in a JSON text already known to be valid (JSON.parse keeps
 * the last silently), with the keys leading to that object.
 */
export function findDuplicateKey(text: string): { path: string[]; key: string } | null {
  // One frame per open object/array: its keys so far (null for arrays) and its last key.
  const keys: (Set<string> | null)[] = [];
  const last: string[] = [];
  let expectKey = false;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      for (;;) {
        const d = text.charCodeAt(j);
        if (d === 0x22) break;
        if (d === 0x5c /* \\ */) { escaped = true; j += 2; } else j++;
      }
      if (expectKey) {
        const raw = text.slice(i + 1, j);
        const key = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : raw;
        const set = keys[keys.length - 1]!;
        if (set.has(key)) return { path: last.slice(0, keys.length - 1), key };
        set.add(key);
        last[keys.length - 1] = key;
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */) {
      keys.push(new Set());
      last.push("");
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      keys.push(null);
      last.push("");
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      keys.pop();
      last.pop();
    } else if (c === 0x2c /* , */) {
      expectKey = keys[keys.length - 1] != null;
    }
  }
  return null;
}

/** Read exactly `buf.length` bytes at `position`, in chunks the OS accepts. */
async function readFully(path: string, fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const want = Math.min(IO_CHUNK, buf.length - done);
    const { bytesRead } = await fh.read(buf, done, want, position + done);
    if (bytesRead === 0) throw new SafetensorsError(path, `unexpected end of file at byte ${position + done} (file truncated while open?)`);
    done += bytesRead;
  }
}

/** Write all of `buf` at `position`. */
async function writeFully(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const want = Math.min(IO_CHUNK, buf.length - done);
    const { bytesWritten } = await fh.write(buf, done, want, position + done);
    if (bytesWritten <= 0) throw new Error("write made no progress");
    done += bytesWritten;
  }
}

/** Reverse the bytes of each `size`-byte element in place (big-endian hosts only). */
function swapBytes(bytes: Uint8Array, size: number): void {
  for (let i = 0; i < bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a]!; bytes[a] = bytes[b]!; bytes[b] = t;
    }
  }
}

/** Why a dtype has no decoded form. */
const undecodable = (dtype: unknown): string => isSafetensorsDType(dtype)
  ? `cannot decode a ${dtype} tensor: only ${Object.keys(DTYPE_SIZES).join(", ")} have an in-memory form (read its bytes with readRaw)`
  : `unknown dtype ${describe(dtype)}`;

type ArrayCtor = new (buffer: ArrayBufferLike, byteOffset: number, length: number) => TypedArray;
const VIEW_OF: Record<Exclude<DType, "F16" | "BF16">, ArrayCtor> = {
  F64: Float64Array, F32: Float32Array,
  I64: BigInt64Array, U64: BigUint64Array, I32: Int32Array, U32: Uint32Array,
  I16: Int16Array, U16: Uint16Array, I8: Int8Array, U8: Uint8Array, BOOL: Uint8Array,
};

const byteCount = (dtype: DType, shape: readonly number[]): number => {
  let n = DTYPE_SIZES[dtype];
  for (const d of shape) n *= d;
  return n;
};

/**
 * Bytes → tensor. With `owned`, `bytes` is a fresh buffer nobody else holds and is viewed in place
 * when its layout allows (no copy); otherwise the values are copied.
 */
function decode(dtype: DType, shape: readonly number[], bytes: Uint8Array, owned: boolean): Tensor {
  if (!isDType(dtype)) throw new Error(undecodable(dtype));
  const size = DTYPE_SIZES[dtype];
  const expected = byteCount(dtype, shape);
  if (bytes.length !== expected) {
    throw new Error(`${bytes.length} bytes do not hold a ${dtype} tensor of shape [${shape.join(", ")}] (${expected} bytes)`);
  }
  const count = expected / size;
  if (dtype === "F16" || dtype === "BF16") {
    const out = new Float32Array(count);
    (dtype === "F16" ? decodeF16 : decodeBF16)(bytes, out);
    return new Tensor(dtype, [...shape], out);
  }
  let buf = bytes;
  if (!owned || bytes.byteOffset % size !== 0 || (!HOST_LITTLE_ENDIAN && size > 1)) {
    buf = bytes.slice(); // fresh, aligned ArrayBuffer
    if (!HOST_LITTLE_ENDIAN && size > 1) swapBytes(buf, size);
  }
  return new Tensor(dtype, [...shape], new VIEW_OF[dtype](buf.buffer, buf.byteOffset, count));
}

/** Little-endian bytes of `dtype`/`shape` → a tensor (F16/BF16 widened to float32 values). Copies. */
export function decodeTensor(dtype: DType, shape: readonly number[], bytes: Uint8Array): Tensor {
  return decode(dtype, shape, bytes, false);
}

function checkArray(t: Tensor): void {
  const want = t.dtype === "F16" || t.dtype === "BF16" ? Float32Array : VIEW_OF[t.dtype];
  if (!(t.data instanceof want)) {
    throw new Error(`a ${t.dtype} tensor must hold a ${want.name}, got ${t.data.constructor.name}`);
  }
}

/** Little-endian bytes of `t`, possibly a view of `t.data` (no copy) when the layout allows. */
function tensorBytes(t: Tensor): Uint8Array {
  checkArray(t);
  const d = t.data;
  if (t.dtype === "F16" || t.dtype === "BF16") {
    const out = new Uint8Array(d.length * 2);
    (t.dtype === "F16" ? encodeF16 : encodeBF16)(d as Float32Array, out);
    return out;
  }
  const view = new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
  if (HOST_LITTLE_ENDIAN || DTYPE_SIZES[t.dtype] === 1) return view;
  const copy = view.slice();
  swapBytes(copy, DTYPE_SIZES[t.dtype]);
  return copy;
}

/** Little-endian bytes of `t` in its dtype (F16/BF16 rounded to nearest even), in a fresh buffer. */
export function encodeTensor(t: Tensor): Uint8Array {
  const bytes = tensorBytes(t);
  return bytes.buffer === t.data.buffer ? bytes.slice() : bytes;
}

/** An open safetensors file: validated header in memory, tensor data read on demand. */
export class SafetensorsFile {
  /**
   * Every tensor, in data-offset order (the same map as `header`). Typed with `DType` for callers that
   * decode; a tensor of a dtype outside `DType` (F8_*, F4, F6_*, C64) carries its stored name all the
   * same: test with `isDType` before decoding, or use `header`.
   */
  readonly tensors: ReadonlyMap<string, TensorInfo>;

  private constructor(
    readonly path: string,
    private handle: FileHandle | null,
    /** Every tensor, in data-offset order, with its stored dtype (any of the reference's). */
    readonly header: ReadonlyMap<string, TensorInfo<SafetensorsDType>>,
    readonly metadata: Record<string, string> | null,
    /** Byte position of the buffer: 8 + N. */
    readonly dataStart: number,
    /** Size of the file in bytes. */
    readonly size: number,
  ) {
    this.tensors = header as ReadonlyMap<string, TensorInfo>;
  }

  /** A second handle for direct reads (see streamRaw): undefined until first wanted, then null where there is none. */
  private direct: Promise<FileHandle | null> | undefined;

  /** How many pieces streamRaw has read directly (bypassing the page cache), for diagnostics and tests. */
  directPieces = 0;

  /** Open and validate; reads only the 8-byte length and the header. */
  static async open(path: string): Promise<SafetensorsFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, "r");
    } catch (e) {
      throw new SafetensorsError(path, `cannot open: ${(e as Error).message}`);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new SafetensorsError(path, "not a regular file");
      const size = st.size;
      if (size < 8) throw new SafetensorsError(path, `file is ${size} bytes, too short for the 8-byte header length`);
      const head = new Uint8Array(8);
      await readFully(path, fh, head, 0);
      const n = new DataView(head.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_SIZE)) throw new SafetensorsError(path, `header too large: ${n} bytes (limit ${MAX_HEADER_SIZE})`);
      const len = Number(n);
      if (8 + len > size) {
        throw new SafetensorsError(path, `header length ${len} runs past the end of the file (${size} bytes)`);
      }
      const header = new Uint8Array(len);
      await readFully(path, fh, header, 8);
      const parsed = parseSafetensorsHeader(path, header, size - 8 - len);
      return new SafetensorsFile(path, fh, parsed.tensors, parsed.metadata, 8 + len, size);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw e;
    }
  }

  get closed(): boolean { return this.handle === null; }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError(this.path, `no tensor named ${describe(name)}`);
    return info;
  }

  /** Exactly the tensor's byte range, in one positioned read into a fresh buffer. */
  async readRaw(name: string): Promise<Uint8Array> {
    const { dataOffsets: [begin, end] } = this.info(name);
    if (!this.handle) throw new SafetensorsError(this.path, `cannot read tensor ${describe(name)}: file is closed`);
    // Uninitialised memory (no zero-fill): every byte is overwritten by the read. Own ArrayBuffer, offset 0.
    const buf = new Uint8Array(Buffer.allocUnsafeSlow(end - begin).buffer, 0, end - begin);
    await readFully(this.path, this.handle, buf, this.dataStart + begin);
    return buf;
  }

  /**
   * The tensor's byte range in order, in pieces of at most `maxPieceBytes`, each one positioned read into fresh memory
   * or into the memory `buffer(n)` gives (see LazyTensor.streamBytes). Where `buffer` gives page-aligned memory
   * (isAlignedMemory) and the file is large (wantDirectIo), the pieces are read directly, bypassing the page cache
   * (see direct.ts): each then asks `buffer` for up to 2 × DIRECT_ALIGN bytes more than it holds, and is a view inside.
   */
  async *streamRaw(name: string, buffer?: (bytes: number) => Uint8Array, maxPieceBytes = PIECE_BYTES): AsyncGenerator<Uint8Array> {
    const { dataOffsets: [begin, end] } = this.info(name);
    for (let at = begin; at < end; at += maxPieceBytes) {
      if (!this.handle) throw new SafetensorsError(this.path, `cannot read tensor ${describe(name)}: file is closed`);
      const n = Math.min(maxPieceBytes, end - at);
      const position = this.dataStart + at;
      const direct = buffer ? await this.directHandle() : null;
      let buf: Uint8Array;
      if (direct) {
        const { from, span, skew } = alignedRange(position, n);
        const b = buffer!(span);
        const got = isAlignedMemory(b) ? await this.readDirect(direct, b, from, name) : null;
        if (got !== null) {
          if (got < skew + n) throw new SafetensorsError(this.path, `unexpected end of file at byte ${from + got} (file truncated while open?)`);
          this.directPieces++;
          yield b.subarray(skew, skew + n);
          continue;
        }
        buf = b.subarray(0, n);
      } else {
        buf = buffer?.(n) ?? new Uint8Array(Buffer.allocUnsafeSlow(n).buffer, 0, n);
      }
      await readFully(this.path, this.handle, buf, position);
      yield buf;
    }
  }

  /**
   * A direct read into aligned memory `b` from aligned offset `from` (see readAligned): the bytes read, or null when
   * the file system refused the alignment (EINVAL), after which this file is read through the page cache.
   */
  private async readDirect(direct: FileHandle, b: Uint8Array, from: number, name: string): Promise<number | null> {
    try {
      return await readAligned(direct, b, from);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EINVAL") throw new SafetensorsError(this.path, `cannot read tensor ${describe(name)}: ${(e as Error).message}`);
      this.noDirect();
      return null;
    }
  }

  /** The handle for direct reads: opened on first use where wanted (wantDirectIo) and possible, else null. */
  private async directHandle(): Promise<FileHandle | null> {
    if (this.direct === undefined) {
      this.direct = wantDirectIo(this.size) ? openDirect(this.path) : Promise.resolve(null);
    }
    return this.direct;
  }

  private noDirect(): void {
    const d = this.direct;
    this.direct = Promise.resolve(null);
    void d?.then((fh) => fh?.close()).catch(() => undefined);
  }

  /**
   * Decoded tensor; F16/BF16 values widened to float32 (the tensor keeps its dtype). A dtype without
   * an in-memory form (see `header`) is an error naming it: read those with `readRaw`.
   */
  async readTensor(name: string): Promise<Tensor> {
    const { dtype, shape } = this.info(name);
    if (!isDType(dtype)) throw new SafetensorsError(this.path, `tensor ${describe(name)}: ${undecodable(dtype)}`);
    return decode(dtype, shape, await this.readRaw(name), true);
  }

  /**
   * Read on demand: `read` decodes, `readBytes` is `readRaw` and `streamBytes` `streamRaw` (the stored bytes, which a
   * writer copies as they are). For a dtype without an in-memory form, `dtype` is its stored name and `read` rejects.
   */
  lazy(name: string): LazyTensor {
    const { dtype, shape } = this.info(name);
    return {
      dtype, shape, read: () => this.readTensor(name), readBytes: () => this.readRaw(name),
      streamBytes: (buffer?: (bytes: number) => Uint8Array) => this.streamRaw(name, buffer),
    };
  }

  async close(): Promise<void> {
    const fh = this.handle;
    const direct = this.direct;
    this.handle = null;
    this.direct = Promise.resolve(null);
    await fh?.close();
    await (await direct?.catch(() => null))?.close();
  }
}

export interface TensorEntry {
  name: string;
  tensor: LazyTensor | Tensor;
}

const isLazy = (t: LazyTensor | Tensor): t is LazyTensor => typeof (t as Partial<LazyTensor>).read === "function";

/** A lone UTF-16 surrogate: JSON.stringify would write it as an escape the reference refuses. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** Rust's `str` order (UTF-8 bytes = Unicode code points), which differs from `<` on UTF-16 only past U+FFFF. */
export function compareCodePoints(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x === y) continue;
    // Surrogates (U+10000 and up) sort after U+E000..U+FFFF in code point order.
    if (x >= 0xd800 && y >= 0xd800) {
      x += x < 0xe000 ? 0x2000 : -0x800;
      y += y < 0xe000 ? 0x2000 : -0x800;
    }
    return x - y;
  }
  return a.length - b.length;
}

const DTYPE_RANK = new Map<string, number>(SAFETENSORS_DTYPES.map((d, i) => [d, i]));

/**
 * The reference writer's layout (`prepare`): by descending position in the `Dtype` enum, which puts
 * 8-byte dtypes first and so aligns every tensor, then by name.
 */
export function referenceOrder<T extends { name: string; tensor: { dtype: string } }>(entries: readonly T[]): T[] {
  return [...entries].sort((a, b) =>
    (DTYPE_RANK.get(b.tensor.dtype) ?? -1) - (DTYPE_RANK.get(a.tensor.dtype) ?? -1) || compareCodePoints(a.name, b.name));
}

/**
 * JSON text of a header whose `__metadata__` (if any) comes first and whose tensors are in the
 * reference writer's order (returned as `order`, the order their bytes follow).
 */
function headerJson(path: string, entries: readonly TensorEntry[], metadata?: Record<string, string>): { json: string; dataLength: number; order: TensorEntry[] } {
  const fail = (problem: string): never => { throw new SafetensorsError(path, problem); };
  const parts: string[] = [];
  if (metadata) {
    const m: string[] = [];
    for (const k of Object.keys(metadata)) {
      const v = metadata[k];
      if (typeof v !== "string") return fail(`__metadata__ value of ${describe(k)} is not a string (got ${describe(v)})`);
      if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v)) fail(`__metadata__ ${LONE_SURROGATE.test(k) ? "key" : "value of"} ${describe(k)} holds a lone UTF-16 surrogate (not Unicode text)`);
      if (k.includes("\0") || v.includes("\0")) fail(`__metadata__ ${k.includes("\0") ? "key" : "value of"} ${describe(k)} contains a NUL character`);
      m.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
    }
    parts.push(`"__metadata__":{${m.join(",")}}`);
  }
  const seen = new Set<string>();
  const sizes = new Map<TensorEntry, number>();
  for (const e of entries) {
    const { name, tensor } = e;
    const where = `tensor ${describe(name)}`;
    if (typeof name !== "string") fail(`tensor name ${describe(name)} is not a string`);
    if (name === "__metadata__") fail(`"__metadata__" is reserved and cannot name a tensor`);
    if (LONE_SURROGATE.test(name)) fail(`tensor name ${describe(name)} holds a lone UTF-16 surrogate (not Unicode text)`);
    if (name.includes("\0")) fail(`tensor name ${describe(name)} contains a NUL character`);
    if (seen.has(name)) fail(`duplicate tensor name ${describe(name)}`);
    seen.add(name);
    if (!isDType(tensor.dtype)) fail(`${where}: ${undecodable(tensor.dtype)}`);
    if (!Array.isArray(tensor.shape) || !tensor.shape.every(isIndex)) fail(`${where}: shape must be an array of non-negative integers (got ${describe(tensor.shape)})`);
    const bytes = byteCount(tensor.dtype, tensor.shape);
    if (!Number.isSafeInteger(bytes)) fail(`${where}: shape ${describe(tensor.shape)} overflows`);
    sizes.set(e, bytes);
  }
  const order = referenceOrder(entries);
  let offset = 0;
  for (const e of order) {
    const { name, tensor } = e;
    const end = offset + sizes.get(e)!;
    if (!Number.isSafeInteger(end)) fail(`tensor ${describe(name)}: the tensors add up to more than 2^53 − 1 bytes`);
    parts.push(`${JSON.stringify(name)}:{"dtype":"${tensor.dtype}","shape":[${tensor.shape.join(",")}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  return { json: `{${parts.join(",")}}`, dataLength: offset, order };
}

/**
 * Header bytes (8-byte LE length + JSON padded with spaces to a multiple of 8) for these entries,
 * laid out in the reference writer's order (`order`: the order the tensors' bytes must follow).
 */
export function encodeSafetensorsHeader(path: string, entries: readonly TensorEntry[], metadata?: Record<string, string>): { header: Uint8Array; dataLength: number; order: TensorEntry[] } {
  const { json, dataLength, order } = headerJson(path, entries, metadata);
  const body = new TextEncoder().encode(json);
  const padded = body.length + ((8 - (body.length % 8)) % 8);
  if (padded > MAX_HEADER_SIZE) throw new SafetensorsError(path, `header too large: ${padded} bytes (limit ${MAX_HEADER_SIZE})`);
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + body.length);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(body, 8);
  return { header, dataLength, order };
}

/**
 * The stored bytes of a tensor (see LazyTensor.readBytes): its own when it has them, else its values encoded
 * (F16/BF16 rounded to nearest even), in a fresh buffer or one only the caller holds.
 */
export async function readStoredBytes(t: LazyTensor | Tensor): Promise<Uint8Array> {
  if (!isLazy(t)) return encodeTensor(t);
  if (t.readBytes) return t.readBytes();
  if (t.streamBytes) {
    const pieces: Uint8Array[] = [];
    for await (const p of t.streamBytes()) pieces.push(p);
    if (pieces.length === 1) return pieces[0]!.slice();
    const out = new Uint8Array(pieces.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of pieces) { out.set(p, at); at += p.length; }
    return out;
  }
  return encodeTensor(await t.read());
}

/**
 * What a write reports as it goes (a save's finite check and progress are built on it). A tensor given under several
 * names (one object: depth growth's layer copies) is produced once per file and written at each of its places.
 */
export interface WriteObserver {
  /**
   * Each piece of a tensor's stored bytes before any of it is written; a throw stops the write (and the file is
   * removed). `at`: the piece's first element in the tensor. `values`: the tensor the piece was encoded from, when it
   * was (absent for stored bytes written as they are). Seen once per produced piece, under the first name in file order.
   */
  piece?(name: string, dtype: DType, bytes: Uint8Array, at: number, values?: Tensor): void;
  /** `bytes` more bytes of tensor `name` were written (each place of a tensor given under several names, by its name). */
  bytesWritten?(name: string, bytes: number): void;
  /** All `bytes` bytes of tensor `name` are written. */
  tensorWritten?(name: string, bytes: number): void;
}

/**
 * Positioned writes: the file in order goes through a buffer that gathers small writes (the order may skip a region
 * already written); a write `ahead` of it (another place of a tensor given under several names) goes straight to the
 * file, as do large ones.
 */
class PositionedWriter {
  private readonly buf = alignedMemory(4 << 20);
  private used = 0;
  private start = 0;
  private skew = 0;
  written = 0;
  /** `direct`: where the file's large writes go straight to the disk (see direct.ts), else null. */
  constructor(private readonly fh: FileHandle, private readonly direct: DirectWriter | null) {}

  private sink(bytes: Uint8Array, position: number): Promise<void> {
    return this.direct ? this.direct.write(bytes, position) : writeFully(this.fh, bytes, position);
  }

  async write(bytes: Uint8Array, position: number, ahead = false): Promise<void> {
    this.written += bytes.length;
    if (ahead) return this.sink(bytes, position);
    if (this.used > 0 && (position !== this.start + this.used || bytes.length > this.buf.length - DIRECT_ALIGN - this.skew - this.used)) await this.flush();
    if (this.used > 0 || bytes.length < this.buf.length / 4) {
      if (this.used === 0) {
        this.start = position;
        // Gathered at the file position's offset within a block, so that whole blocks are aligned in memory too.
        this.skew = position % DIRECT_ALIGN;
      }
      this.buf.set(bytes, this.skew + this.used);
      this.used += bytes.length;
    } else {
      await this.sink(bytes, position);
    }
  }

  async flush(): Promise<void> {
    if (this.used > 0) await this.sink(this.buf.subarray(this.skew, this.skew + this.used), this.start);
    this.used = 0;
  }
}

/** The writer's piece memory: a piece of PIECE_BYTES with its direct read's aligned ends. */
const POOL_BYTES = PIECE_BYTES + 2 * DIRECT_ALIGN;

const sameShape = (a: readonly number[], b: readonly number[]): boolean =>
  a.length === b.length && a.every((d, i) => d === b[i]);

/** One tensor of a file and every place it goes (several when one object is given under several names). */
interface Placed { tensor: LazyTensor | Tensor; dtype: DType; names: string[]; offsets: number[]; size: number }

/** The pieces of a tensor's stored bytes, with the values they were encoded from, if they were. */
async function* piecesOf(path: string, p: Placed, buffer: (bytes: number) => Uint8Array): AsyncGenerator<{ bytes: Uint8Array; values?: Tensor }> {
  const t = p.tensor;
  if (!isLazy(t)) {
    yield { bytes: tensorBytes(t), values: t };
  } else if (t.streamBytes) {
    for await (const bytes of t.streamBytes(buffer)) yield { bytes };
  } else if (t.readBytes) {
    yield { bytes: await t.readBytes() };
  } else {
    const v = await t.read();
    if (v.dtype !== t.dtype || !sameShape(v.shape, t.shape)) {
      throw new SafetensorsError(path, `tensor ${describe(p.names[0])} was declared ${t.dtype} [${t.shape.join(", ")}] but read as ${v.dtype} [${v.shape.join(", ")}]`);
    }
    yield { bytes: tensorBytes(v), values: v };
  }
}

/**
 * Stream a safetensors file: the header is computed from dtypes and shapes, then each tensor's stored bytes (its own
 * when it has them, see LazyTensor.readBytes/streamBytes, else its values encoded) go to their place, in the reference
 * writer's order (`referenceOrder`: dtype alignment, then name), up to three pieces being produced while the current
 * one is written: four pieces in memory (two whole tensors where a tensor gives its bytes or values only whole), plus
 * what a computed tensor holds. One object given under several names is produced once and written at each of its places.
 * An observer sees every piece before it is written and the bytes as they are. A failed write removes the partial file.
 * Returns the number of bytes written.
 */
export async function writeSafetensors(path: string, entries: readonly TensorEntry[], metadata?: Record<string, string>,
                                       observer: WriteObserver = {}): Promise<number> {
  const { header, dataLength, order } = encodeSafetensorsHeader(path, entries, metadata);
  const placed: Placed[] = [];
  const byObject = new Map<object, Placed>();
  let offset = header.length;
  for (const { name, tensor } of order) {
    const size = byteCount(tensor.dtype, tensor.shape);
    const same = byObject.get(tensor);
    if (same && same.dtype === tensor.dtype && sameShape(same.tensor.shape, tensor.shape)) {
      same.names.push(name);
      same.offsets.push(offset);
    } else {
      const p = { tensor, dtype: tensor.dtype, names: [name], offsets: [offset], size };
      placed.push(p);
      byObject.set(tensor, p);
    }
    offset += size;
  }
  let fh: FileHandle;
  try {
    fh = await open(path, "w");
  } catch (e) {
    throw new SafetensorsError(path, `cannot create: ${(e as Error).message}`);
  }
  let direct: DirectWriter | null = null;
  try {
    const total = header.length + dataLength;
    const d = wantDirectIo(total) ? await openDirect(path, "write") : null;
    if (d) {
      direct = new DirectWriter(fh, d, writeFully);
      // Direct writes land inside the file's final size (set first), so none of them extends it.
      await fh.truncate(total);
    }
    const out = new PositionedWriter(fh, direct);
    await out.write(header, 0);
    // Memory for computed and streamed pieces, recycled once a piece is written: with up to three pieces produced
    // ahead of the writes, four buffers go round (fresh pages would cost a fault and a zeroing each).
    // Page-aligned, with room for a piece read directly (see SafetensorsFile.streamRaw: a piece and its aligned ends).
    const pool: Uint8Array[] = [];
    const ours = new Set<ArrayBufferLike>();
    const buffer = (n: number): Uint8Array => {
      if (n > POOL_BYTES) return new Uint8Array(n);
      const b = pool.pop() ?? alignedMemory(POOL_BYTES);
      ours.add(b.buffer);
      return b.subarray(0, n);
    };
    const recycle = (piece: Uint8Array): void => {
      if (ours.delete(piece.buffer)) pool.push(new Uint8Array(piece.buffer, 0, POOL_BYTES));
    };
    // Every piece of every tensor, counted and shown to the observer (its checks), then an end mark per tensor:
    // produced one piece ahead of the writes, so that producing and checking a piece overlaps writing the previous one.
    const stream = (async function* () {
      for (const p of placed) {
        const name = p.names[0]!;
        let at = 0;
        for await (const piece of piecesOf(path, p, buffer)) {
          const { bytes } = piece;
          if (at + bytes.length > p.size) throw new SafetensorsError(path, `tensor ${describe(name)} gave more than the ${p.size} bytes of ${p.dtype} [${p.tensor.shape.join(", ")}]`);
          observer.piece?.(name, p.dtype, bytes, at / DTYPE_SIZES[p.dtype], piece.values);
          at += bytes.length;
          yield { p, bytes };
        }
        if (at !== p.size) throw new SafetensorsError(path, `tensor ${describe(name)} gave ${at} bytes, but ${p.dtype} [${p.tensor.shape.join(", ")}] is ${p.size}`);
        yield { p, bytes: null };
      }
    })();
    // Pieces asked for ahead of the one being written: reading (or computing) goes on while a write waits for the
    // disk. Three, in the pool's buffers; one only after a piece larger than those (a tensor given whole).
    const asked: ReturnType<typeof stream.next>[] = [];
    const ask = (ahead: number): void => {
      while (asked.length < ahead) {
        const n = stream.next();
        n.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"
        asked.push(n);
      }
    };
    ask(1);
    let at = 0;
    for (;;) {
      const r = await asked.shift()!;
      if (r.done) break;
      ask(r.value.bytes !== null && r.value.bytes.length > PIECE_BYTES ? 1 : 3);
      const { p, bytes } = r.value;
      if (bytes === null) {
        for (const n of p.names) observer.tensorWritten?.(n, p.size);
        at = 0;
        continue;
      }
      try {
        for (let k = 0; k < p.offsets.length; k++) {
          await out.write(bytes, p.offsets[k]! + at, k > 0);
          observer.bytesWritten?.(p.names[k]!, bytes.length);
        }
      } catch (e) {
        throw new SafetensorsError(path, `tensor ${describe(p.names[0])}: ${(e as Error).message}`);
      }
      recycle(bytes);
      at += bytes.length;
    }
    await out.flush();
    if (out.written !== total) throw new SafetensorsError(path, `wrote ${out.written} bytes, expected ${total}`);
    await direct?.close();
    await fh.close();
    return out.written;
  } catch (e) {
    await direct?.close().catch(() => undefined);
    await fh.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw e;
  }
}

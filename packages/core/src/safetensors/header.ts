/**
 * The safetensors header, validated. safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
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
 * The file's first 8 bytes and the reading of tensors are ./reader.ts's; the writer (./writer.ts) lays
 * files out as the reference writer does. Each refusal is a SafetensorsError whose `code` names the reference's error kind where it has one
 * (./errors.ts).
 */
import { type DType, type SafetensorsDType, SAFETENSORS_DTYPE_BITS, isSafetensorsDType } from "../dtype.js";
import { SafetensorsError, describe, type SafetensorsErrorCode } from "./errors.js";
import { JsonNumber, JsonObject, JsonSyntaxError, U64_MAX, byteOffset, readJson, show, type JsonValue } from "./json.js";

/** The reference implementation's bound on the header length. */
export const MAX_HEADER_SIZE = 100_000_000;

export interface TensorInfo<D extends SafetensorsDType = DType> {
  dtype: D;
  shape: number[];
  /** [begin, end) relative to the start of the byte buffer (just after the header). */
  dataOffsets: [number, number];
}

export interface ParsedHeader {
  /** Every tensor in data-offset order, with any of the reference's dtypes. */
  tensors: Map<string, TensorInfo<SafetensorsDType>>;
  metadata: Record<string, string> | null;
  /** Length of the byte buffer the header describes (end of the last tensor). */
  dataLength: number;
}

/**
 * Validate a header (the N bytes after the length) as the reference reader does (see the top of
 * this file). With `dataLength` (file size − 8 − N), also check that the tensors cover the byte
 * buffer exactly.
 */
export function parseSafetensorsHeader(path: string, header: Uint8Array, dataLength?: number): ParsedHeader {
  const fail: Fail = (code, problem) => {
    throw new SafetensorsError(path, code, problem);
  };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(header);
  } catch {
    return fail("InvalidHeader", "header is not valid UTF-8");
  }
  let json: JsonValue;
  try {
    json = readJson(text);
  } catch (e) {
    if (!(e instanceof JsonSyntaxError)) throw e;
    return fail("InvalidHeaderDeserialization", `header is not valid JSON: ${e.message} at header byte ${byteOffset(text, e.at)}`);
  }
  if (!(json instanceof JsonObject)) return fail("InvalidHeaderDeserialization", `header is not a JSON object (got ${show(json)})`);

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
      if (sawMetadata) fail("InvalidHeaderDeserialization", "__metadata__ appears twice in the header");
      sawMetadata = true;
      metadata = readMetadata(value, fail);
      continue;
    }
    const info = readTensorInfo(name, value, fail);
    if (names.has(name)) fail("DuplicateKey", `duplicate tensor name ${describe(name)} in header`);
    names.add(name);
    const last = entries[entries.length - 1];
    if (last && compareOffsets(last.info, info) > 0) sorted = false;
    entries.push({ name, info });
  }

  // The checks run in the reference's order, so that a header with several problems gets the reference's kind:
  // serde's (above, every member), then Metadata::new's (NUL characters), then Metadata::validate's (offsets and
  // sizes, in offset order), then the file's size.
  for (const { name } of entries) {
    if (name.includes("\0")) fail("InvalidTensorName", `tensor name ${describe(name)} contains a NUL character`);
  }
  for (const [key, v] of Object.entries(metadata ?? {})) {
    if (key.includes("\0")) fail("InvalidMetadata", `__metadata__ key ${describe(key)} contains a NUL character`);
    if (v.includes("\0")) fail("InvalidMetadata", `__metadata__ value of ${describe(key)} contains a NUL character`);
  }

  // Sorted by offsets, the tensors must tile [0, end) with no gap or overlap.
  if (!sorted) entries.sort((a, b) => compareOffsets(a.info, b.info));
  let at = 0;
  let prev: string | null = null;
  for (const {
    name,
    info: {
      dtype,
      shape,
      dataOffsets: [begin, end],
    },
  } of entries) {
    const where = (): string => `tensor ${describe(name)}`;
    if (end < begin) fail("InvalidOffset", `${where()}: ${offsetsProblem(`[${begin},${end}]`)}`);
    if (begin < at) fail("InvalidOffset", `${where()}: data_offsets [${begin}, ${end}] overlap tensor ${describe(prev)} (which ends at ${at})`);
    if (begin > at)
      fail(
        "InvalidOffset",
        `${where()}: data_offsets [${begin}, ${end}] leave a hole of ${begin - at} bytes after ${prev === null ? "the header" : `tensor ${describe(prev)}`} (expected begin ${at})`,
      );
    const bytes = byteLength(dtype, shape);
    if (end - begin !== bytes) {
      if (bytes === "overflow") fail("ValidationOverflow", `${where()}: shape ${describe(shape)} × ${dtype} size overflows 64 bits`);
      if (bytes === "misaligned")
        fail(
          "MisalignedSlice",
          `${where()}: shape ${describe(shape)} of ${dtype} (${SAFETENSORS_DTYPE_BITS[dtype]} bits each) is not a whole number of bytes`,
        );
      fail(
        "TensorInvalidInfo",
        `${where()}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ${describe(shape)} of ${dtype} needs ${bytes}`,
      );
    }
    at = end;
    prev = name;
  }
  if (dataLength !== undefined && dataLength !== at) {
    fail(
      "MetadataIncompleteBuffer",
      `file size mismatch: the header describes ${at} bytes of tensor data but the file holds ${dataLength} after the header` +
        (dataLength > at ? " (bytes not covered by any tensor)" : " (file truncated)"),
    );
  }
  return { tensors: new Map(entries.map((e) => [e.name, e.info])), metadata, dataLength: at };
}

const compareOffsets = (a: TensorInfo<SafetensorsDType>, b: TensorInfo<SafetensorsDType>): number =>
  a.dataOffsets[0] - b.dataOffsets[0] || a.dataOffsets[1] - b.dataOffsets[1];

type Fail = (code: SafetensorsErrorCode, problem: string) => never;

/** `__metadata__`: null, or an object of string values (NUL characters are checked later, as the reference does). */
function readMetadata(value: JsonValue, fail: Fail): Record<string, string> | null {
  if (value === null) return null;
  if (!(value instanceof JsonObject))
    return fail("InvalidHeaderDeserialization", `__metadata__ is not an object of string → string (got ${show(value)})`);
  const m: Record<string, string> = {};
  const members = value.members;
  for (let k = 0; k < members.length; k += 2) {
    const key = members[k] as string;
    const v = members[k + 1]!;
    if (typeof v !== "string") return fail("InvalidHeaderDeserialization", `__metadata__ value of ${describe(key)} is not a string (got ${show(v)})`);
    if (Object.hasOwn(m, key)) fail("DuplicateKey", `duplicate key ${describe(key)} in __metadata__`);
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
    fail(
      "IntegerTooLarge",
      `tensor ${describe(name)}: ${v.raw} is above 2^53 − 1, the largest integer this reader represents exactly (the reference allows up to 2^64 − 1)`,
    );
  }
  return fail("InvalidHeaderDeserialization", `tensor ${describe(name)}: ${problem()}`);
}

const offsetsProblem = (got: string): string => `data_offsets must be [begin, end] non-negative integers with begin <= end (got ${got})`;

/** One tensor entry: serde's map form `{dtype, shape, data_offsets, ...ignored}` or its sequence form. */
function readTensorInfo(name: string, value: JsonValue, fail: Fail): TensorInfo<SafetensorsDType> {
  const bad = (problem: string, code: SafetensorsErrorCode = "InvalidHeaderDeserialization"): never =>
    fail(code, `tensor ${describe(name)}: ${problem}`);
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
  const problem = (): string => offsetsProblem(show(offsets!));
  if (!Array.isArray(offsets) || offsets.length !== 2) return bad(problem());
  const begin = index(offsets[0]!, name, problem, fail);
  const end = index(offsets[1]!, name, problem, fail); // end < begin is Metadata::validate's (parseSafetensorsHeader)
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

/**
 * safetensors (https://github.com/huggingface/safetensors): an 8-byte little-endian header length N,
 * N bytes of UTF-8 JSON (`name → {dtype, shape, data_offsets}` plus an optional `__metadata__` of
 * string → string), then the byte buffer. Validation follows the reference implementation
 * (safetensors/src/tensor.rs); reading is lazy (header first, one tensor's byte range on demand) and
 * writing streams one tensor at a time.
 */
import { open, unlink, type FileHandle } from "node:fs/promises";
import {
  type DType, DTYPE_SIZES, HOST_LITTLE_ENDIAN, isDType,
  decodeBF16, decodeF16, encodeBF16, encodeF16,
} from "./dtype.js";
import { Tensor, type TypedArray } from "./tensor.js";
import type { LazyTensor } from "./types.js";

/** The reference implementation's bound on the header length. */
export const MAX_HEADER_SIZE = 100_000_000;

/** Largest single read/write handed to the OS (Linux transfers at most ~2 GiB per call). */
const IO_CHUNK = 1 << 30;

export interface TensorInfo {
  dtype: DType;
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
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string> | null;
  /** Length of the byte buffer the header describes (end of the last tensor). */
  dataLength: number;
}

const describe = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
};

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

const isIndex = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

/**
 * Validate a header (the N bytes after the length) exactly as the reference reader does. With
 * `dataLength` (file size − 8 − N), also check that the tensors cover the byte buffer exactly.
 */
export function parseSafetensorsHeader(path: string, header: Uint8Array, dataLength?: number): ParsedHeader {
  const fail = (problem: string): never => { throw new SafetensorsError(path, problem); };
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(header);
  } catch {
    return fail("header is not valid UTF-8");
  }
  if (!text.startsWith("{")) fail(`header does not start with '{' (starts with ${describe(text.slice(0, 16))})`);
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON: ${(e as Error).message}`);
  }
  if (!isPlainObject(json)) return fail("header is not a JSON object");
  const dup = findDuplicateKey(text);
  if (dup) {
    if (dup.path.length === 0) fail(`duplicate tensor name ${describe(dup.key)} in header`);
    else if (dup.path[0] === "__metadata__" && dup.path.length === 1) fail(`duplicate key ${describe(dup.key)} in __metadata__`);
    else fail(`duplicate key ${describe(dup.key)} in header entry ${describe(dup.path[0])}`);
  }

  let metadata: Record<string, string> | null = null;
  const entries: { name: string; info: TensorInfo }[] = [];
  for (const name of Object.keys(json)) {
    const value = json[name];
    if (name === "__metadata__") {
      if (!isPlainObject(value)) fail(`__metadata__ is not an object of string → string (got ${describe(value)})`);
      const m = value as Record<string, unknown>;
      for (const k of Object.keys(m)) {
        if (typeof m[k] !== "string") fail(`__metadata__ value of ${describe(k)} is not a string (got ${describe(m[k])})`);
      }
      metadata = m as Record<string, string>;
      continue;
    }
    const where = `tensor ${describe(name)}`;
    if (!isPlainObject(value)) fail(`${where}: header entry is not an object (got ${describe(value)})`);
    const entry = value as Record<string, unknown>;
    for (const field of ["dtype", "shape", "data_offsets"]) {
      if (!Object.hasOwn(entry, field)) fail(`${where}: missing field "${field}"`);
    }
    const { dtype, shape, data_offsets: offsets } = entry;
    if (!isDType(dtype)) fail(`${where}: unknown dtype ${describe(dtype)}`);
    if (!Array.isArray(shape) || !shape.every(isIndex)) fail(`${where}: shape must be an array of non-negative integers (got ${describe(shape)})`);
    if (!Array.isArray(offsets) || offsets.length !== 2 || !isIndex(offsets[0]) || !isIndex(offsets[1]) || offsets[0] > offsets[1]) {
      fail(`${where}: data_offsets must be [begin, end] non-negative integers with begin <= end (got ${describe(offsets)})`);
    }
    const dims = shape as number[];
    const [begin, end] = offsets as [number, number];
    let bytes = DTYPE_SIZES[dtype as DType];
    for (const d of dims) bytes *= d;
    if (!Number.isSafeInteger(bytes)) fail(`${where}: shape ${describe(dims)} × ${dtype} size overflows`);
    if (end - begin !== bytes) {
      fail(`${where}: data_offsets [${begin}, ${end}] span ${end - begin} bytes but shape ${describe(dims)} of ${dtype} needs ${bytes}`);
    }
    entries.push({ name, info: { dtype: dtype as DType, shape: [...dims], dataOffsets: [begin, end] } });
  }

  // Sorted by offsets, the tensors must tile [0, end) with no gap or overlap.
  entries.sort((a, b) => a.info.dataOffsets[0] - b.info.dataOffsets[0] || a.info.dataOffsets[1] - b.info.dataOffsets[1]);
  let at = 0;
  let prev: string | null = null;
  for (const { name, info: { dataOffsets: [begin, end] } } of entries) {
    if (begin < at) fail(`tensor ${describe(name)}: data_offsets [${begin}, ${end}] overlap tensor ${describe(prev)} (which ends at ${at})`);
    if (begin > at) fail(`tensor ${describe(name)}: data_offsets [${begin}, ${end}] leave a hole of ${begin - at} bytes after ${prev === null ? "the header" : `tensor ${describe(prev)}`} (expected begin ${at})`);
    at = end;
    prev = name;
  }
  if (dataLength !== undefined && dataLength !== at) {
    fail(`file size mismatch: the header describes ${at} bytes of tensor data but the file holds ${dataLength} after the header` +
      (dataLength > at ? " (bytes not covered by any tensor)" : " (file truncated)"));
  }
  return { tensors: new Map(entries.map((e) => [e.name, e.info])), metadata, dataLength: at };
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

/** Write all of `buf` at the handle's current position. */
async function writeFully(fh: FileHandle, buf: Uint8Array): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const want = Math.min(IO_CHUNK, buf.length - done);
    const { bytesWritten } = await fh.write(buf, done, want);
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
  if (!isDType(dtype)) throw new Error(`unknown dtype ${describe(dtype)}`);
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
  private constructor(
    readonly path: string,
    private handle: FileHandle | null,
    readonly tensors: ReadonlyMap<string, TensorInfo>,
    readonly metadata: Record<string, string> | null,
    /** Byte position of the buffer: 8 + N. */
    readonly dataStart: number,
    /** Size of the file in bytes. */
    readonly size: number,
  ) {}

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

  /** Decoded tensor; F16/BF16 values widened to float32 (the tensor keeps its dtype). */
  async readTensor(name: string): Promise<Tensor> {
    const { dtype, shape } = this.info(name);
    return decode(dtype, shape, await this.readRaw(name), true);
  }

  lazy(name: string): LazyTensor {
    const { dtype, shape } = this.info(name);
    return { dtype, shape, read: () => this.readTensor(name) };
  }

  async close(): Promise<void> {
    const fh = this.handle;
    this.handle = null;
    await fh?.close();
  }
}

export interface TensorEntry {
  name: string;
  tensor: LazyTensor | Tensor;
}

const isLazy = (t: LazyTensor | Tensor): t is LazyTensor => typeof (t as Partial<LazyTensor>).read === "function";

/** Unicode-safe JSON text of a header whose `__metadata__` (if any) comes first, like the reference writer. */
function headerJson(path: string, entries: readonly TensorEntry[], metadata?: Record<string, string>): { json: string; dataLength: number } {
  const fail = (problem: string): never => { throw new SafetensorsError(path, problem); };
  const parts: string[] = [];
  if (metadata) {
    const m: string[] = [];
    for (const k of Object.keys(metadata)) {
      if (typeof metadata[k] !== "string") fail(`__metadata__ value of ${describe(k)} is not a string (got ${describe(metadata[k])})`);
      m.push(`${JSON.stringify(k)}:${JSON.stringify(metadata[k])}`);
    }
    parts.push(`"__metadata__":{${m.join(",")}}`);
  }
  const seen = new Set<string>();
  let offset = 0;
  for (const { name, tensor } of entries) {
    const where = `tensor ${describe(name)}`;
    if (typeof name !== "string") fail(`tensor name ${describe(name)} is not a string`);
    if (name === "__metadata__") fail(`"__metadata__" is reserved and cannot name a tensor`);
    if (seen.has(name)) fail(`duplicate tensor name ${describe(name)}`);
    seen.add(name);
    if (!isDType(tensor.dtype)) fail(`${where}: unknown dtype ${describe(tensor.dtype)}`);
    if (!Array.isArray(tensor.shape) || !tensor.shape.every(isIndex)) fail(`${where}: shape must be an array of non-negative integers (got ${describe(tensor.shape)})`);
    const bytes = byteCount(tensor.dtype, tensor.shape);
    if (!Number.isSafeInteger(bytes)) fail(`${where}: shape ${describe(tensor.shape)} overflows`);
    parts.push(`${JSON.stringify(name)}:{"dtype":"${tensor.dtype}","shape":[${tensor.shape.join(",")}],"data_offsets":[${offset},${offset + bytes}]}`);
    offset += bytes;
  }
  return { json: `{${parts.join(",")}}`, dataLength: offset };
}

/** Header bytes (8-byte LE length + JSON padded with spaces to a multiple of 8) for these entries. */
export function encodeSafetensorsHeader(path: string, entries: readonly TensorEntry[], metadata?: Record<string, string>): { header: Uint8Array; dataLength: number } {
  const { json, dataLength } = headerJson(path, entries, metadata);
  const body = new TextEncoder().encode(json);
  const padded = body.length + ((8 - (body.length % 8)) % 8);
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + body.length);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(body, 8);
  return { header, dataLength };
}

/** Small writes are gathered into one buffer; large ones go straight to the file. */
class BufferedWriter {
  private readonly buf = new Uint8Array(4 << 20);
  private used = 0;
  written = 0;
  constructor(private readonly fh: FileHandle) {}

  async write(bytes: Uint8Array): Promise<void> {
    this.written += bytes.length;
    if (bytes.length <= this.buf.length - this.used) {
      this.buf.set(bytes, this.used);
      this.used += bytes.length;
      return;
    }
    await this.flush();
    if (bytes.length < this.buf.length / 4) {
      this.buf.set(bytes, 0);
      this.used = bytes.length;
    } else {
      await writeFully(this.fh, bytes);
    }
  }

  async flush(): Promise<void> {
    if (this.used > 0) await writeFully(this.fh, this.buf.subarray(0, this.used));
    this.used = 0;
  }
}

const sameShape = (a: readonly number[], b: readonly number[]): boolean =>
  a.length === b.length && a.every((d, i) => d === b[i]);

/**
 * Stream a safetensors file: the header is computed from dtypes and shapes, then each tensor is
 * read (if lazy), encoded, appended and dropped, in entry order, the next one being read while the
 * current one is written (at most two tensors in memory). A failed write removes the partial file.
 * Returns the number of bytes written.
 */
export async function writeSafetensors(path: string, entries: readonly TensorEntry[], metadata?: Record<string, string>): Promise<number> {
  const { header, dataLength } = encodeSafetensorsHeader(path, entries, metadata);
  let fh: FileHandle;
  try {
    fh = await open(path, "w");
  } catch (e) {
    throw new SafetensorsError(path, `cannot create: ${(e as Error).message}`);
  }
  try {
    const out = new BufferedWriter(fh);
    await out.write(header);
    // Produce tensor i+1 while tensor i is being written: a computed tensor (growth) overlaps the I/O.
    const produce = (i: number): Promise<Tensor> | null => {
      const e = entries[i];
      if (!e) return null;
      const p = isLazy(e.tensor) ? e.tensor.read() : Promise.resolve(e.tensor);
      p.catch(() => undefined); // awaited below; this only keeps an early failure from being "unhandled"
      return p;
    };
    let next = produce(0);
    for (let i = 0; i < entries.length; i++) {
      const { name, tensor } = entries[i]!;
      const t = await next!;
      next = produce(i + 1);
      if (t.dtype !== tensor.dtype || !sameShape(t.shape, tensor.shape)) {
        throw new SafetensorsError(path, `tensor ${describe(name)} was declared ${tensor.dtype} [${tensor.shape.join(", ")}] but read as ${t.dtype} [${t.shape.join(", ")}]`);
      }
      try {
        await out.write(tensorBytes(t));
      } catch (e) {
        if (e instanceof SafetensorsError) throw e;
        throw new SafetensorsError(path, `tensor ${describe(name)}: ${(e as Error).message}`);
      }
    }
    await out.flush();
    if (out.written !== header.length + dataLength) {
      throw new SafetensorsError(path, `wrote ${out.written} bytes, expected ${header.length + dataLength}`);
    }
    await fh.close();
    return out.written;
  } catch (e) {
    await fh.close().catch(() => undefined);
    await unlink(path).catch(() => undefined);
    throw e;
  }
}

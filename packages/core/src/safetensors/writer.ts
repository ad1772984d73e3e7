/**
 * The safetensors writer. It lays tensors out as the reference's `prepare` does: by descending `Dtype` enum order
 * (8-byte dtypes first), then by name (Unicode code point order, Rust's `str` order); `__metadata__` first; compact
 * JSON; padded with spaces to a multiple of 8 bytes, so every tensor starts at a file offset that is a multiple of
 * its element size. It refuses what the reference writer refuses (NUL in a name or metadata, a header over
 * `MAX_HEADER_SIZE`) and names or metadata holding a lone UTF-16 surrogate, which no reader could take back. Only
 * `DType` (F64, F32, F16, BF16, the integers, BOOL) can be written; the others are refused naming the dtype.
 *
 * Tensors are streamed, from their stored bytes where they have them (./codec.ts), large files with direct I/O
 * (../direct.ts).
 */
import { open, unlink, type FileHandle } from "node:fs/promises";
import { type DType, DTYPE_SIZES, SAFETENSORS_DTYPES, isDType } from "../dtype.js";
import { PIECE_BYTES, type Tensor } from "../tensor.js";
import { DIRECT_ALIGN, DirectWriter, alignedMemory, openDirect, wantDirectIo } from "../direct.js";
import type { LazyTensor } from "../types.js";
import { SafetensorsError, describe, type SafetensorsErrorCode } from "./errors.js";
import { MAX_HEADER_SIZE } from "./header.js";
import { writeFully } from "./io.js";
import { byteCount, isLazy, tensorBytes, undecodable } from "./codec.js";

export interface TensorEntry {
  name: string;
  tensor: LazyTensor | Tensor;
}

const isIndex = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v) && v >= 0;

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
  return [...entries].sort(
    (a, b) => (DTYPE_RANK.get(b.tensor.dtype) ?? -1) - (DTYPE_RANK.get(a.tensor.dtype) ?? -1) || compareCodePoints(a.name, b.name),
  );
}

/**
 * JSON text of a header whose `__metadata__` (if any) comes first and whose tensors are in the
 * reference writer's order (returned as `order`, the order their bytes follow).
 */
function headerJson(
  path: string,
  entries: readonly TensorEntry[],
  metadata?: Record<string, string>,
): { json: string; dataLength: number; order: TensorEntry[] } {
  const fail = (code: SafetensorsErrorCode, problem: string): never => {
    throw new SafetensorsError(path, code, problem);
  };
  const parts: string[] = [];
  if (metadata) {
    const m: string[] = [];
    for (const k of Object.keys(metadata)) {
      const v = metadata[k];
      if (typeof v !== "string") return fail("InvalidMetadata", `__metadata__ value of ${describe(k)} is not a string (got ${describe(v)})`);
      if (LONE_SURROGATE.test(k) || LONE_SURROGATE.test(v))
        fail(
          "InvalidMetadata",
          `__metadata__ ${LONE_SURROGATE.test(k) ? "key" : "value of"} ${describe(k)} holds a lone UTF-16 surrogate (not Unicode text)`,
        );
      if (k.includes("\0") || v.includes("\0"))
        fail("InvalidMetadata", `__metadata__ ${k.includes("\0") ? "key" : "value of"} ${describe(k)} contains a NUL character`);
      m.push(`${JSON.stringify(k)}:${JSON.stringify(v)}`);
    }
    parts.push(`"__metadata__":{${m.join(",")}}`);
  }
  const seen = new Set<string>();
  const sizes = new Map<TensorEntry, number>();
  for (const e of entries) {
    const { name, tensor } = e;
    const where = `tensor ${describe(name)}`;
    if (typeof name !== "string") fail("InvalidTensorName", `tensor name ${describe(name)} is not a string`);
    if (name === "__metadata__") fail("InvalidTensorName", `"__metadata__" is reserved and cannot name a tensor`);
    if (LONE_SURROGATE.test(name)) fail("InvalidTensorName", `tensor name ${describe(name)} holds a lone UTF-16 surrogate (not Unicode text)`);
    if (name.includes("\0")) fail("InvalidTensorName", `tensor name ${describe(name)} contains a NUL character`);
    if (seen.has(name)) fail("DuplicateKey", `duplicate tensor name ${describe(name)}`);
    seen.add(name);
    if (!isDType(tensor.dtype)) fail("UnsupportedDType", `${where}: ${undecodable(tensor.dtype)}`);
    if (!Array.isArray(tensor.shape) || !tensor.shape.every(isIndex))
      fail("TensorInvalidInfo", `${where}: shape must be an array of non-negative integers (got ${describe(tensor.shape)})`);
    const bytes = byteCount(tensor.dtype, tensor.shape);
    if (!Number.isSafeInteger(bytes)) fail("IntegerTooLarge", `${where}: shape ${describe(tensor.shape)} overflows`);
    sizes.set(e, bytes);
  }
  const order = referenceOrder(entries);
  let offset = 0;
  for (const e of order) {
    const { name, tensor } = e;
    const end = offset + sizes.get(e)!;
    if (!Number.isSafeInteger(end)) fail("IntegerTooLarge", `tensor ${describe(name)}: the tensors add up to more than 2^53 − 1 bytes`);
    parts.push(`${JSON.stringify(name)}:{"dtype":"${tensor.dtype}","shape":[${tensor.shape.join(",")}],"data_offsets":[${offset},${end}]}`);
    offset = end;
  }
  return { json: `{${parts.join(",")}}`, dataLength: offset, order };
}

/**
 * Header bytes (8-byte LE length + JSON padded with spaces to a multiple of 8) for these entries,
 * laid out in the reference writer's order (`order`: the order the tensors' bytes must follow).
 */
export function encodeSafetensorsHeader(
  path: string,
  entries: readonly TensorEntry[],
  metadata?: Record<string, string>,
): { header: Uint8Array; dataLength: number; order: TensorEntry[] } {
  const { json, dataLength, order } = headerJson(path, entries, metadata);
  const body = new TextEncoder().encode(json);
  const padded = body.length + ((8 - (body.length % 8)) % 8);
  if (padded > MAX_HEADER_SIZE) throw new SafetensorsError(path, "HeaderTooLarge", `header too large: ${padded} bytes (limit ${MAX_HEADER_SIZE})`);
  const header = new Uint8Array(8 + padded).fill(0x20, 8 + body.length);
  new DataView(header.buffer).setBigUint64(0, BigInt(padded), true);
  header.set(body, 8);
  return { header, dataLength, order };
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
  constructor(
    private readonly fh: FileHandle,
    private readonly direct: DirectWriter | null,
  ) {}

  private sink(bytes: Uint8Array, position: number): Promise<void> {
    return this.direct ? this.direct.write(bytes, position) : writeFully(this.fh, bytes, position);
  }

  async write(bytes: Uint8Array, position: number, ahead = false): Promise<void> {
    this.written += bytes.length;
    if (ahead) return this.sink(bytes, position);
    if (this.used > 0 && (position !== this.start + this.used || bytes.length > this.buf.length - DIRECT_ALIGN - this.skew - this.used))
      await this.flush();
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

const sameShape = (a: readonly number[], b: readonly number[]): boolean => a.length === b.length && a.every((d, i) => d === b[i]);

/** One tensor of a file and every place it goes (several when one object is given under several names). */
interface Placed {
  tensor: LazyTensor | Tensor;
  dtype: DType;
  names: string[];
  offsets: number[];
  size: number;
}

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
      throw new SafetensorsError(
        path,
        "InvalidTensorView",
        `tensor ${describe(p.names[0])} was declared ${t.dtype} [${t.shape.join(", ")}] but read as ${v.dtype} [${v.shape.join(", ")}]`,
      );
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
export async function writeSafetensors(
  path: string,
  entries: readonly TensorEntry[],
  metadata?: Record<string, string>,
  observer: WriteObserver = {},
): Promise<number> {
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
    throw new SafetensorsError(path, "IoError", `cannot create: ${(e as Error).message}`);
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
          if (at + bytes.length > p.size)
            throw new SafetensorsError(
              path,
              "InvalidTensorView",
              `tensor ${describe(name)} gave more than the ${p.size} bytes of ${p.dtype} [${p.tensor.shape.join(", ")}]`,
            );
          observer.piece?.(name, p.dtype, bytes, at / DTYPE_SIZES[p.dtype], piece.values);
          at += bytes.length;
          yield { p, bytes };
        }
        if (at !== p.size)
          throw new SafetensorsError(
            path,
            "InvalidTensorView",
            `tensor ${describe(name)} gave ${at} bytes, but ${p.dtype} [${p.tensor.shape.join(", ")}] is ${p.size}`,
          );
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
        throw new SafetensorsError(path, "IoError", `tensor ${describe(p.names[0])}: ${(e as Error).message}`);
      }
      recycle(bytes);
      at += bytes.length;
    }
    await out.flush();
    if (out.written !== total) throw new SafetensorsError(path, "IoError", `wrote ${out.written} bytes, expected ${total}`);
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

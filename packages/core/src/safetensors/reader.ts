/**
 * The safetensors reader: an open file whose header (validated as ./header.ts says) is in memory and whose tensors
 * are read on demand, one byte range at a time, whole (`readRaw`, `readTensor`) or streamed in pieces (`streamRaw`,
 * read directly, bypassing the page cache, into page-aligned memory: ../direct.ts).
 */
import { open, type FileHandle } from "node:fs/promises";
import { type SafetensorsDType, isDType } from "../dtype.js";
import { PIECE_BYTES, type Tensor } from "../tensor.js";
import { alignedRange, isAlignedMemory, openDirect, readAligned, wantDirectIo } from "../direct.js";
import type { LazyTensor } from "../types.js";
import { SafetensorsError, describe } from "./errors.js";
import { MAX_HEADER_SIZE, parseSafetensorsHeader, type TensorInfo } from "./header.js";
import { readFully } from "./io.js";
import { decode, undecodable } from "./codec.js";

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
      throw new SafetensorsError(path, "IoError", `cannot open: ${(e as Error).message}`);
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new SafetensorsError(path, "IoError", "not a regular file");
      const size = st.size;
      if (size < 8) throw new SafetensorsError(path, "HeaderTooSmall", `file is ${size} bytes, too short for the 8-byte header length`);
      const head = new Uint8Array(8);
      await readFully(path, fh, head, 0);
      const n = new DataView(head.buffer).getBigUint64(0, true);
      if (n > BigInt(MAX_HEADER_SIZE)) throw new SafetensorsError(path, "HeaderTooLarge", `header too large: ${n} bytes (limit ${MAX_HEADER_SIZE})`);
      const len = Number(n);
      if (8 + len > size) {
        throw new SafetensorsError(path, "InvalidHeaderLength", `header length ${len} runs past the end of the file (${size} bytes)`);
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

  get closed(): boolean {
    return this.handle === null;
  }

  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new SafetensorsError(this.path, "TensorNotFound", `no tensor named ${describe(name)}`);
    return info;
  }

  /** Exactly the tensor's byte range, in one positioned read into a fresh buffer. */
  async readRaw(name: string): Promise<Uint8Array> {
    const {
      dataOffsets: [begin, end],
    } = this.info(name);
    if (!this.handle) throw new SafetensorsError(this.path, "Closed", `cannot read tensor ${describe(name)}: file is closed`);
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
    const {
      dataOffsets: [begin, end],
    } = this.info(name);
    for (let at = begin; at < end; at += maxPieceBytes) {
      if (!this.handle) throw new SafetensorsError(this.path, "Closed", `cannot read tensor ${describe(name)}: file is closed`);
      const n = Math.min(maxPieceBytes, end - at);
      const position = this.dataStart + at;
      const direct = buffer ? await this.directHandle() : null;
      let buf: Uint8Array;
      if (direct) {
        const { from, span, skew } = alignedRange(position, n);
        const b = buffer!(span);
        const got = isAlignedMemory(b) ? await this.readDirect(direct, b, from, name) : null;
        if (got !== null) {
          if (got < skew + n)
            throw new SafetensorsError(this.path, "IoError", `unexpected end of file at byte ${from + got} (file truncated while open?)`);
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
      if ((e as NodeJS.ErrnoException).code !== "EINVAL")
        throw new SafetensorsError(this.path, "IoError", `cannot read tensor ${describe(name)}: ${(e as Error).message}`);
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
    if (!isDType(dtype)) throw new SafetensorsError(this.path, "UnsupportedDType", `tensor ${describe(name)}: ${undecodable(dtype)}`);
    return decode(dtype, shape, await this.readRaw(name), true);
  }

  /**
   * Read on demand: `read` decodes, `readBytes` is `readRaw` and `streamBytes` `streamRaw` (the stored bytes, which a
   * writer copies as they are). For a dtype without an in-memory form, `dtype` is its stored name and `read` rejects.
   */
  lazy(name: string): LazyTensor {
    const { dtype, shape } = this.info(name);
    return {
      dtype,
      shape,
      read: () => this.readTensor(name),
      readBytes: () => this.readRaw(name),
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

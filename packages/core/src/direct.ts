/**
 * Direct I/O (O_DIRECT, Linux): a large checkpoint's bytes going between the disk and the process without passing
 * through the page cache. A buffered copy costs a kernel copy of every byte each way and a fresh page-cache page for
 * every byte read and written; `cp` pays less, because the kernel copies file to file itself, which Node cannot ask
 * for a byte range. See the core README, "Direct I/O for large files".
 *
 * Direct I/O needs its file offset, its length and its memory aligned (to the device's logical block, at most 4096
 * bytes here): `alignedMemory` gives memory whose first byte is at a page boundary (a WebAssembly memory, which the
 * engine maps page-aligned); a read is widened to aligned ends and the tensor's bytes taken from inside it, a write
 * sends its whole blocks directly and its partial end blocks through the page cache (DirectWriter).
 */
import { constants } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";

/** The alignment of direct reads' offsets, lengths and memory: 4096 bytes covers every logical block size in use. */
export const DIRECT_ALIGN = 4096;

/**
 * Files smaller than this are read through the page cache (a direct read skips the cache, which is the faster source
 * for a small file read again): 1 GiB. The environment variable STAGED_DIRECT_IO sets it: `0` never reads directly,
 * `1` always does where the file system allows it.
 */
export const DIRECT_IO_MIN_FILE_BYTES = 2 ** 30;

const aligned = new WeakSet<ArrayBufferLike>();
/** The one WebAssembly API used (typed here: the compiler's libraries in use do not declare WebAssembly). */
const WasmMemory = (globalThis as { WebAssembly?: { Memory: new (d: { initial: number }) => { buffer: ArrayBuffer } } }).WebAssembly?.Memory;
const WASM_PAGE = 65536;

/**
 * `bytes` bytes of zeroed memory starting at a page boundary, which direct reads can fill (its own ArrayBuffer, which
 * `isAlignedMemory` knows). Falls back to ordinary memory (not known aligned) where WebAssembly is not available.
 */
export function alignedMemory(bytes: number): Uint8Array {
  if (WasmMemory) {
    try {
      const memory = new WasmMemory({ initial: Math.max(1, Math.ceil(bytes / WASM_PAGE)) });
      aligned.add(memory.buffer);
      return new Uint8Array(memory.buffer, 0, bytes);
    } catch {
      /* out of address space for WebAssembly memories: ordinary memory */
    }
  }
  return new Uint8Array(bytes);
}

/** Whether `b` starts at a page boundary (memory from alignedMemory, at an aligned offset). */
export const isAlignedMemory = (b: Uint8Array): boolean => aligned.has(b.buffer) && b.byteOffset % DIRECT_ALIGN === 0;

/** Whether files of `size` bytes are read (or written) directly (see DIRECT_IO_MIN_FILE_BYTES). */
export function wantDirectIo(size: number): boolean {
  const env = process.env.STAGED_DIRECT_IO;
  if (env === "0") return false;
  if (env === "1") return true;
  return size >= DIRECT_IO_MIN_FILE_BYTES;
}

/** A second handle on `path` for direct reads (or writes), or null where the platform or file system has none. */
export async function openDirect(path: string, mode: "read" | "write" = "read"): Promise<FileHandle | null> {
  const flag = (constants as Record<string, number | undefined>).O_DIRECT;
  if (process.platform !== "linux" || flag === undefined) return null;
  try {
    return await open(path, (mode === "read" ? constants.O_RDONLY : constants.O_WRONLY) | flag);
  } catch {
    return null; // e.g. EINVAL: a file system without direct I/O
  }
}

/** Where a direct read of bytes [position, position + length) starts (`from`, aligned), how many bytes it spans (a
 * multiple of DIRECT_ALIGN) and where the wanted bytes begin inside it (`skew`). */
export function alignedRange(position: number, length: number): { from: number; span: number; skew: number } {
  const skew = position % DIRECT_ALIGN;
  return { from: position - skew, span: Math.ceil((skew + length) / DIRECT_ALIGN) * DIRECT_ALIGN, skew };
}

/**
 * Fill aligned memory `b` (see isAlignedMemory) with a direct read from aligned offset `from`, up to its length or the
 * end of the file, whichever comes first; returns the bytes read. An unaligned request fails with EINVAL.
 */
export async function readAligned(fh: FileHandle, b: Uint8Array, from: number): Promise<number> {
  let done = 0;
  while (done < b.length) {
    const { bytesRead } = await fh.read(b, done, b.length - done, from + done);
    if (bytesRead === 0) break;
    done += bytesRead;
  }
  return done;
}

/**
 * Writes at any position and length into a file opened twice, once for direct writes: the aligned blocks a write covers
 * whole go straight to the disk (from the caller's memory where it is aligned there, else through an aligned staging
 * buffer), the partial blocks at its ends through the page cache (no block is ever written both ways, so the two stay
 * coherent). The first direct write the file system refuses (EINVAL) sends everything through the page cache.
 */
export class DirectWriter {
  private readonly stage = alignedMemory(STAGE_BYTES);
  directBytes = 0;
  /** `writeAll(handle, bytes, position)`: all of `bytes` written at `position` through `handle` (either of the two). */
  constructor(
    private readonly fh: FileHandle,
    private direct: FileHandle | null,
    private readonly writeAll: (fh: FileHandle, bytes: Uint8Array, position: number) => Promise<void>,
  ) {}

  async write(bytes: Uint8Array, position: number): Promise<void> {
    const end = position + bytes.length;
    const a = Math.ceil(position / DIRECT_ALIGN) * DIRECT_ALIGN;
    const b = Math.floor(end / DIRECT_ALIGN) * DIRECT_ALIGN;
    if (!this.direct || b - a < MIN_DIRECT_SPAN) return this.writeAll(this.fh, bytes, position);
    if (a > position) await this.writeAll(this.fh, bytes.subarray(0, a - position), position);
    if (end > b) await this.writeAll(this.fh, bytes.subarray(b - position), b);
    for (let x = a; x < b;) {
      const src = bytes.subarray(x - position, Math.min(b, x + STAGE_BYTES) - position);
      let mem = src;
      if (!isAlignedMemory(src)) {
        mem = this.stage.subarray(0, src.length);
        mem.set(src);
      }
      try {
        await this.writeAll(this.direct, mem, x);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EINVAL") throw e;
        await this.close(); // the file system refused the alignment: the page cache from now on
        await this.writeAll(this.fh, bytes.subarray(x - position, b - position), x);
        return;
      }
      this.directBytes += mem.length;
      x += mem.length;
    }
  }

  async close(): Promise<void> {
    const d = this.direct;
    this.direct = null;
    await d?.close();
  }
}

/** The staging buffer of DirectWriter (a write larger than it goes in several). */
const STAGE_BYTES = 4 * 2 ** 20;
/** Writes that cover fewer whole blocks than this go through the page cache. */
const MIN_DIRECT_SPAN = 16 * DIRECT_ALIGN;

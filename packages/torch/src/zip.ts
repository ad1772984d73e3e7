/**
 * The zip container of torch.save, read and written by hand (PKWARE APPNOTE.TXT 6.3: local headers 4.3.7, data
 * descriptors 4.3.9, central directory 4.3.12, ZIP64 end records 4.3.14-4.3.15, the ZIP64 extra field 4.5.3).
 *
 * Reading parses the end record (ZIP64 when present, as torch always writes it) and the central directory only, then
 * each entry's local header for where its bytes start: a storage is then read in bounded pieces at its offset with
 * positioned reads, however large the archive. Only stored (uncompressed) entries have an offset to read from;
 * deflated small records are inflated whole (torch never compresses, other zip tools might).
 *
 * Writing lays entries out as torch's writer (caffe2/serialize/inline_container.cc over miniz) does, byte for byte:
 * a local header with sizes and CRC zero and bit 3 set (UTF-8 names, bit 11, too), the name, a ZIP64 extra field when
 * the entry's size or offset reaches 2^32 − 1, then an "FB" extra field of 'Z' padding that puts the data at a
 * multiple of 64 bytes; the data; a data descriptor (64-bit sizes when the local header had the ZIP64 field); at the
 * end the central directory, a ZIP64 end record and locator (always, as miniz with MZ_ZIP_FLAG_WRITE_ZIP64), and the
 * classic end record. See the package README for why no zip library is used.
 */
/**
 * What the zip reader and writer use of a node:fs FileHandle (typed here so that the package's public types need no
 * @types/node; a FileHandle is one).
 */
export interface FileHandle {
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  write(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesWritten: number }>;
}
import * as zlib from "node:zlib";
import { TorchFormatError } from "./errors.js";

const SIG_LOCAL = 0x04034b50;
const SIG_CENTRAL = 0x02014b50;
const SIG_DESCRIPTOR = 0x08074b50;
const SIG_EOCD = 0x06054b50;
const SIG_ZIP64_EOCD = 0x06064b50;
const SIG_ZIP64_LOCATOR = 0x07064b50;
const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;
/** torch's storage alignment (`.storage_alignment`). */
export const STORAGE_ALIGNMENT = 64;
/** The largest central directory read (a 1,000-storage checkpoint's is about 100 KB). */
export const MAX_CENTRAL_DIRECTORY_BYTES = 64 * 2 ** 20;

export interface ZipEntry {
  name: string;
  /** 0 stored, 8 deflated. */
  method: number;
  flags: number;
  crc32: number;
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
  /** Where the entry's bytes start in the file. */
  dataOffset: number;
}

export interface ZipDirectory {
  /** In central-directory order. */
  entries: ZipEntry[];
  byName: Map<string, ZipEntry>;
  /** Whether the archive has ZIP64 end records. */
  zip64: boolean;
}

// --- CRC-32 -----------------------------------------------------------------------------------------------------

let table: Uint32Array | undefined;
/** CRC-32 in JavaScript (the fallback where zlib has none). */
export function crc32Js(data: Uint8Array, value = 0): number {
  if (!table) {
    table = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      table[n] = c >>> 0;
    }
  }
  let c = ~value >>> 0;
  for (let i = 0; i < data.length; i++) c = table[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}
const nativeCrc = (zlib as { crc32?: (data: Uint8Array, value?: number) => number }).crc32;
/** CRC-32 (zip's) of `data` continuing from `value`: zlib's (Node ≥ 20.15), else a table-driven one. */
export const crc32: (data: Uint8Array, value?: number) => number = nativeCrc ?? crc32Js;

// --- reading ----------------------------------------------------------------------------------------------------

/** Fill `buf` from `position`; a short file is a "truncated" TorchFormatError naming `what`. */
export async function readFully(fh: FileHandle, path: string, buf: Uint8Array, position: number, what: string): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    let n: number;
    try {
      ({ bytesRead: n } = await fh.read(buf, done, Math.min(buf.length - done, 1 << 30), position + done));
    } catch (e) {
      throw new TorchFormatError(path, "io", `cannot read ${what}: ${(e as Error).message}`, { cause: e });
    }
    if (n === 0) throw new TorchFormatError(path, "truncated", `${what} runs past the end of the file (byte ${position + done})`);
    done += n;
  }
}

const safe = (path: string, v: bigint, what: string): number => {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new TorchFormatError(path, "zip", `${what} ${v} is beyond 2^53 bytes`);
  return Number(v);
};

/** The central directory of the zip `fh` (of `size` bytes), with each entry's data offset from its local header. */
export async function readZipDirectory(fh: FileHandle, path: string, size: number): Promise<ZipDirectory> {
  const notZip = (why: string): never => {
    throw new TorchFormatError(path, "zip", `not a torch.save zip archive (${why})`);
  };
  if (size < 22) notZip(`${size} bytes, shorter than a zip end record`);
  const tailLen = Math.min(size, 22 + U16_MAX + 20);
  const tail = new Uint8Array(tailLen);
  await readFully(fh, path, tail, size - tailLen, "the zip end record");
  const tv = new DataView(tail.buffer);
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--) {
    if (tv.getUint32(i, true) === SIG_EOCD && i + 22 + tv.getUint16(i + 20, true) <= tailLen) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) notZip("no end-of-central-directory record");
  const eocdPos = size - tailLen + eocd;
  if (tv.getUint16(eocd + 4, true) !== 0 || tv.getUint16(eocd + 6, true) !== 0) {
    throw new TorchFormatError(path, "zip", "a multi-disk zip archive (not read)");
  }
  let count = tv.getUint16(eocd + 10, true);
  let cdSize = tv.getUint32(eocd + 12, true);
  let cdOffset = tv.getUint32(eocd + 16, true);
  let cdEnd = eocdPos;
  let zip64 = false;
  // The ZIP64 locator sits just before the end record.
  if (eocdPos >= 20) {
    const loc = new Uint8Array(20);
    await readFully(fh, path, loc, eocdPos - 20, "the ZIP64 end locator");
    const lv = new DataView(loc.buffer);
    if (lv.getUint32(0, true) === SIG_ZIP64_LOCATOR) {
      zip64 = true;
      const at = safe(path, lv.getBigUint64(8, true), "ZIP64 end record offset");
      if (at + 56 > eocdPos - 20) notZip(`ZIP64 end record offset ${at} is past its locator`);
      const rec = new Uint8Array(56);
      await readFully(fh, path, rec, at, "the ZIP64 end record");
      const rv = new DataView(rec.buffer);
      if (rv.getUint32(0, true) !== SIG_ZIP64_EOCD) notZip(`no ZIP64 end record at byte ${at}`);
      if (rv.getUint32(16, true) !== 0 || rv.getUint32(20, true) !== 0)
        throw new TorchFormatError(path, "zip", "a multi-disk zip archive (not read)");
      count = safe(path, rv.getBigUint64(32, true), "entry count");
      cdSize = safe(path, rv.getBigUint64(40, true), "central directory size");
      cdOffset = safe(path, rv.getBigUint64(48, true), "central directory offset");
      cdEnd = at;
    }
  }
  if (!zip64 && (count === U16_MAX || cdSize === U32_MAX || cdOffset === U32_MAX)) notZip("ZIP64 values without a ZIP64 end record");
  if (cdOffset + cdSize > cdEnd) notZip(`central directory [${cdOffset}, ${cdOffset + cdSize}) runs past its end record at ${cdEnd}`);
  if (cdSize > MAX_CENTRAL_DIRECTORY_BYTES)
    throw new TorchFormatError(path, "zip", `central directory of ${cdSize} bytes (at most ${MAX_CENTRAL_DIRECTORY_BYTES} are read)`);
  if (count * 46 > cdSize) notZip(`${count} entries do not fit a central directory of ${cdSize} bytes`);

  const cd = new Uint8Array(cdSize);
  await readFully(fh, path, cd, cdOffset, "the central directory");
  const v = new DataView(cd.buffer);
  const entries: ZipEntry[] = [];
  const byName = new Map<string, ZipEntry>();
  const names = new TextDecoder("utf-8", { fatal: true });
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cdSize || v.getUint32(p, true) !== SIG_CENTRAL) notZip(`central directory entry ${i} is malformed`);
    const flags = v.getUint16(p + 8, true);
    const method = v.getUint16(p + 10, true);
    const crc = v.getUint32(p + 16, true);
    let compressedSize = v.getUint32(p + 20, true);
    let entrySize = v.getUint32(p + 24, true);
    const nameLen = v.getUint16(p + 28, true),
      extraLen = v.getUint16(p + 30, true),
      commentLen = v.getUint16(p + 32, true);
    const disk = v.getUint16(p + 34, true);
    let localHeaderOffset = v.getUint32(p + 42, true);
    const end = p + 46 + nameLen + extraLen + commentLen;
    if (end > cdSize) notZip(`central directory entry ${i} runs past the directory`);
    let name: string;
    try {
      name = names.decode(cd.subarray(p + 46, p + 46 + nameLen));
    } catch {
      name = Buffer.from(cd.subarray(p + 46, p + 46 + nameLen)).toString("latin1");
    }
    // ZIP64 extra field: 8-byte values for the 32-bit fields that hold 0xFFFFFFFF, in this order.
    for (let e = p + 46 + nameLen; e + 4 <= p + 46 + nameLen + extraLen;) {
      const id = v.getUint16(e, true),
        len = v.getUint16(e + 2, true);
      if (e + 4 + len > p + 46 + nameLen + extraLen) notZip(`entry ${name}: an extra field runs past its entry`);
      if (id === 0x0001) {
        let f = e + 4;
        const next = (what: string): number => {
          if (f + 8 > e + 4 + len) notZip(`entry ${name}: ZIP64 extra field lacks the ${what}`);
          const x = safe(path, v.getBigUint64(f, true), what);
          f += 8;
          return x;
        };
        if (entrySize === U32_MAX) entrySize = next("size");
        if (compressedSize === U32_MAX) compressedSize = next("compressed size");
        if (localHeaderOffset === U32_MAX) localHeaderOffset = next("local header offset");
      }
      e += 4 + len;
    }
    if (disk !== 0 && disk !== U16_MAX) throw new TorchFormatError(path, "zip", "a multi-disk zip archive (not read)");
    if (byName.has(name)) throw new TorchFormatError(path, "zip", `the archive holds ${name} twice`);
    const entry: ZipEntry = { name, method, flags, crc32: crc, compressedSize, size: entrySize, localHeaderOffset, dataOffset: -1 };
    entries.push(entry);
    byName.set(name, entry);
    p = end;
  }

  // Each entry's data starts after its local header, whose name and extra field lengths may differ from the central ones.
  for (const e of entries) {
    if (e.localHeaderOffset + 30 > cdOffset) notZip(`entry ${e.name}: local header at ${e.localHeaderOffset} is past the central directory`);
    const head = new Uint8Array(30);
    await readFully(fh, path, head, e.localHeaderOffset, `the local header of ${e.name}`);
    const hv = new DataView(head.buffer);
    if (hv.getUint32(0, true) !== SIG_LOCAL) notZip(`entry ${e.name}: no local header at byte ${e.localHeaderOffset}`);
    e.dataOffset = e.localHeaderOffset + 30 + hv.getUint16(26, true) + hv.getUint16(28, true);
    if (e.dataOffset + e.compressedSize > cdOffset)
      notZip(`entry ${e.name}: its ${e.compressedSize} bytes at ${e.dataOffset} run into the central directory at ${cdOffset}`);
  }
  return { entries, byName, zip64 };
}

/** The whole (small) entry, inflated if deflated; at most `limit` bytes. */
export async function readEntry(fh: FileHandle, path: string, e: ZipEntry, limit: number): Promise<Uint8Array> {
  if (e.flags & 1) throw new TorchFormatError(path, "zip", `${e.name} is encrypted`);
  if (e.size > limit) throw new TorchFormatError(path, "unsupported", `${e.name} is ${e.size} bytes (at most ${limit} are read)`);
  if (e.method !== 0 && e.method !== 8)
    throw new TorchFormatError(path, "zip", `${e.name} is compressed with method ${e.method} (stored and deflated records are read)`);
  if (e.method === 8 && e.compressedSize > limit)
    throw new TorchFormatError(path, "unsupported", `${e.name} is ${e.compressedSize} bytes compressed (at most ${limit} are read)`);
  const raw = new Uint8Array(e.compressedSize);
  await readFully(fh, path, raw, e.dataOffset, e.name);
  let data = raw;
  if (e.method === 8) {
    try {
      data = new Uint8Array(zlib.inflateRawSync(raw, { maxOutputLength: Math.max(1, e.size) }));
    } catch (err) {
      throw new TorchFormatError(path, "zip", `${e.name} does not inflate (${(err as Error).message})`, { cause: err });
    }
  }
  if (data.length !== e.size) throw new TorchFormatError(path, "zip", `${e.name} holds ${data.length} bytes, its directory entry says ${e.size}`);
  if (crc32(data) !== e.crc32) throw new TorchFormatError(path, "crc-mismatch", `${e.name} does not match its CRC-32`);
  return data;
}

// --- writing ----------------------------------------------------------------------------------------------------

interface CentralRecord {
  name: Uint8Array;
  crc: number;
  size: number;
  offset: number;
}

/** A piece source for one entry: pieces in order; the writer checks they add up to the declared size. */
export type Pieces = AsyncIterable<Uint8Array> | Iterable<Uint8Array>;

/**
 * Writes a zip as torch's writer does (see the top of this file) through `fh`, sequentially from byte 0, gathering
 * small writes into one buffer and sending large pieces straight to the file.
 */
export class ZipWriter {
  private readonly records: CentralRecord[] = [];
  private readonly buf = new Uint8Array(4 << 20);
  private used = 0;
  /** Bytes of the archive so far (written and buffered). */
  position = 0;

  /** `forceZip64`: give every entry ZIP64 fields (as if its size and offset reached 2^32), for tests and interop checks. */
  constructor(
    private readonly fh: FileHandle,
    private readonly path: string,
    private readonly forceZip64 = false,
  ) {}

  private async sink(b: Uint8Array): Promise<void> {
    let done = 0;
    while (done < b.length) {
      const { bytesWritten } = await this.fh.write(b, done, Math.min(b.length - done, 1 << 30), this.position - this.used - b.length + done);
      done += bytesWritten;
    }
  }

  private async flush(): Promise<void> {
    if (this.used === 0) return;
    const b = this.buf.subarray(0, this.used);
    const at = this.position - this.used;
    let done = 0;
    while (done < b.length) {
      const { bytesWritten } = await this.fh.write(b, done, b.length - done, at + done);
      done += bytesWritten;
    }
    this.used = 0;
  }

  /** Append bytes (copied into the buffer, or written at once when large; `b` may be reused when this resolves). */
  async write(b: Uint8Array): Promise<void> {
    if (b.length >= this.buf.length / 4) {
      await this.flush();
      this.position += b.length;
      await this.sink(b);
      return;
    }
    if (this.used + b.length > this.buf.length) await this.flush();
    this.buf.set(b, this.used);
    this.used += b.length;
    this.position += b.length;
  }

  /**
   * One stored entry of `size` bytes from `pieces`; `what` names the entry's source in errors. `knownCrc`: the CRC-32
   * of the bytes, when the source vouches for it (a stored record whose pieces check it as they are read), which
   * spares computing it again.
   */
  async add(name: string, size: number, pieces: Pieces, what = name, knownCrc?: number): Promise<void> {
    const nameBytes = Buffer.from(name, "utf8");
    const offset = this.position;
    const bigSize = this.forceZip64 || size >= U32_MAX;
    const bigOffset = this.forceZip64 || offset >= U32_MAX;
    const z64 = bigSize || bigOffset ? 4 + (bigSize ? 16 : 0) + (bigOffset ? 8 : 0) : 0;
    const start = offset + 30 + nameBytes.length + z64 + 4;
    const pad = (STORAGE_ALIGNMENT - (start % STORAGE_ALIGNMENT)) % STORAGE_ALIGNMENT;
    const head = new Uint8Array(30 + nameBytes.length + z64 + 4 + pad);
    const hv = new DataView(head.buffer);
    hv.setUint32(0, SIG_LOCAL, true);
    hv.setUint16(4, 0, true); // version needed: miniz writes 0 for a stored entry
    hv.setUint16(6, 0x0808, true); // data descriptor follows; UTF-8 name
    hv.setUint16(26, nameBytes.length, true);
    hv.setUint16(28, z64 + 4 + pad, true);
    head.set(nameBytes, 30);
    let at = 30 + nameBytes.length;
    if (z64) {
      hv.setUint16(at, 0x0001, true);
      hv.setUint16(at + 2, z64 - 4, true);
      at += 4;
      if (bigSize) {
        hv.setBigUint64(at, BigInt(size), true);
        hv.setBigUint64(at + 8, BigInt(size), true);
        at += 16;
      }
      if (bigOffset) {
        hv.setBigUint64(at, BigInt(offset), true);
        at += 8;
      }
    }
    head[at] = 0x46;
    head[at + 1] = 0x42; // "FB"
    hv.setUint16(at + 2, pad, true);
    head.fill(0x5a, at + 4, at + 4 + pad); // 'Z'
    await this.write(head);

    let crc = 0;
    let written = 0;
    const it = (Symbol.asyncIterator in pieces ? pieces[Symbol.asyncIterator]() : (pieces as Iterable<Uint8Array>)[Symbol.iterator]()) as
      AsyncIterator<Uint8Array> | Iterator<Uint8Array>;
    const ahead = (): Promise<IteratorResult<Uint8Array>> => {
      const p = Promise.resolve(it.next());
      p.catch(() => undefined); // seen by the await below; never an unhandled rejection if the write fails first
      return p;
    };
    try {
      // One piece ahead: the next is produced (read from its file) while this one is written.
      let next = ahead();
      for (;;) {
        const r = await next;
        if (r.done) break;
        const piece = r.value;
        if (written + piece.length > size) throw new TorchFormatError(this.path, "bad-value", `${what}: more than the ${size} bytes declared`);
        next = ahead();
        if (knownCrc === undefined) crc = crc32(piece, crc);
        await this.write(piece);
        written += piece.length;
      }
    } catch (e) {
      await Promise.resolve(it.return?.()).catch(() => undefined);
      throw e;
    }
    if (written !== size) throw new TorchFormatError(this.path, "bad-value", `${what}: ${written} bytes given, ${size} declared`);
    if (knownCrc !== undefined) crc = knownCrc;

    const desc = new Uint8Array(z64 ? 24 : 16);
    const dv = new DataView(desc.buffer);
    dv.setUint32(0, SIG_DESCRIPTOR, true);
    dv.setUint32(4, crc, true);
    if (z64) {
      dv.setBigUint64(8, BigInt(size), true);
      dv.setBigUint64(16, BigInt(size), true);
    } else {
      dv.setUint32(8, size, true);
      dv.setUint32(12, size, true);
    }
    await this.write(desc);
    this.records.push({ name: nameBytes, crc, size, offset });
  }

  /** The central directory and end records; flushes everything. Returns the archive's size in bytes. */
  async finish(): Promise<number> {
    const cdOffset = this.position;
    for (const r of this.records) {
      const bigSize = this.forceZip64 || r.size >= U32_MAX;
      const bigOffset = this.forceZip64 || r.offset >= U32_MAX;
      const z64 = bigSize || bigOffset ? 4 + (bigSize ? 16 : 0) + (bigOffset ? 8 : 0) : 0;
      const c = new Uint8Array(46 + r.name.length + z64);
      const cv = new DataView(c.buffer);
      cv.setUint32(0, SIG_CENTRAL, true);
      cv.setUint16(8, 0x0808, true);
      cv.setUint32(16, r.crc, true);
      cv.setUint32(20, bigSize ? U32_MAX : r.size, true);
      cv.setUint32(24, bigSize ? U32_MAX : r.size, true);
      cv.setUint16(28, r.name.length, true);
      cv.setUint16(30, z64, true);
      cv.setUint32(42, bigOffset ? U32_MAX : r.offset, true);
      c.set(r.name, 46);
      if (z64) {
        let at = 46 + r.name.length;
        cv.setUint16(at, 0x0001, true);
        cv.setUint16(at + 2, z64 - 4, true);
        at += 4;
        if (bigSize) {
          cv.setBigUint64(at, BigInt(r.size), true);
          cv.setBigUint64(at + 8, BigInt(r.size), true);
          at += 16;
        }
        if (bigOffset) cv.setBigUint64(at, BigInt(r.offset), true);
      }
      await this.write(c);
    }
    const cdSize = this.position - cdOffset;
    const n = this.records.length;
    const z64At = this.position;
    const end = new Uint8Array(56 + 20 + 22);
    const ev = new DataView(end.buffer);
    ev.setUint32(0, SIG_ZIP64_EOCD, true);
    ev.setBigUint64(4, 44n, true);
    ev.setUint16(12, 0x031e, true); // made by: Unix, spec 3.0 (miniz's)
    ev.setUint16(14, 0x002d, true); // needed: 4.5 (ZIP64)
    ev.setBigUint64(24, BigInt(n), true);
    ev.setBigUint64(32, BigInt(n), true);
    ev.setBigUint64(40, BigInt(cdSize), true);
    ev.setBigUint64(48, BigInt(cdOffset), true);
    ev.setUint32(56, SIG_ZIP64_LOCATOR, true);
    ev.setBigUint64(64, BigInt(z64At), true);
    ev.setUint32(72, 1, true);
    ev.setUint32(76, SIG_EOCD, true);
    ev.setUint16(84, Math.min(n, U16_MAX), true);
    ev.setUint16(86, Math.min(n, U16_MAX), true);
    ev.setUint32(88, Math.min(cdSize, U32_MAX), true);
    ev.setUint32(92, Math.min(cdOffset, U32_MAX), true);
    await this.write(end);
    await this.flush();
    return this.position;
  }
}

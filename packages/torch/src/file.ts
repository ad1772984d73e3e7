/**
 * torch.save files (torch/serialization.py `_save` / `_load`, the zip format of torch ≥ 1.6): read lazily, written
 * streamed and atomically. Layout: `<archive>/data.pkl` (the pickle), `<archive>/data/<key>` (one record per
 * storage, raw little-endian bytes), `byteorder`, `.format_version`, `.storage_alignment`, `version` and, from torch
 * 2.x, `.data/serialization_id`. The pickle refers to each storage by the persistent id
 * `('storage', <storage class>, <key>, <location>, <numel>)`, and builds each tensor with
 * `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, backward_hooks)`.
 */
import { open, rename, rm, stat, type FileHandle } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import {
  type DType,
  DTYPE_SIZES,
  type LazyTensor,
  PIECE_BYTES,
  Tensor,
  encodeTensor,
  isDType,
  syncDir,
  systemCode,
  systemReason,
} from "@staged/core";
import { NEW_DTYPES, STORAGE_DTYPES } from "./allowlist.js";
import { TorchFormatError, printableName } from "./errors.js";
import { PersistentId, type Reduction, pickle } from "./pickle.js";
import { DTYPE_TO_TORCH, type StorageSource, TORCH_TO_DTYPE, TorchStorage, TorchTensor } from "./tensor.js";
import { unpickle } from "./unpickle.js";
import { PyDict, PyGlobal, PyTuple, type PyValue, pyRepr, pyTypeName } from "./values.js";
import { type Pieces, type ZipEntry, ZipWriter, readEntry, readFully, readZipDirectory } from "./zip.js";

/** The largest data.pkl read (a 7B model's optimizer pickle is under 1 MB: the tensors are in other records). */
export const MAX_PICKLE_BYTES = 256 * 2 ** 20;
/** The largest small record (byteorder, version, ...) read. */
const MAX_RECORD_BYTES = 4096;

/** The storage class torch.save names for each dtype it saves with `_rebuild_tensor_v2`. */
const STORAGE_CLASS: Partial<Record<DType, string>> = Object.fromEntries(
  Object.entries(STORAGE_DTYPES).flatMap(([cls, torchName]) => (TORCH_TO_DTYPE[torchName] ? [[TORCH_TO_DTYPE[torchName]!, cls]] : [])),
);

/** The records of a torch.save archive besides the pickle and the storages. */
export interface TorchRecords {
  /** "little" (torch ≥ 1.13 writes it; absent in older files, which are little-endian). */
  byteorder: string | null;
  /** `version`: the zip format version ("3"), whitespace trimmed. */
  version: string | null;
  /** `.format_version` ("1"), `.storage_alignment` ("64"), `.data/serialization_id`: torch 2.x's. */
  formatVersion: string | null;
  storageAlignment: string | null;
  serializationId: string | null;
}

const dtypeList = Object.keys(TORCH_TO_DTYPE).join(", ");

const asCount = (path: string, v: PyValue | undefined, what: string): number => {
  if (typeof v !== "bigint" || v < 0n || v > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new TorchFormatError(path, "malformed", `${what} is ${pyRepr(v, 60)}, not a non-negative int`);
  }
  return Number(v);
};

const asCounts = (path: string, v: PyValue | undefined, what: string): number[] => {
  if (!(v instanceof PyTuple)) throw new TorchFormatError(path, "malformed", `${what} is a ${pyTypeName(v)}, not a tuple`);
  return v.items.map((x, i) => asCount(path, x, `${what}[${i}]`));
};

/**
 * An open torch.save file: the unpickled value and its tensors, whose bytes are read on demand (keep it open while
 * they are read; `close` when done).
 */
export class TorchFile {
  private constructor(
    readonly path: string,
    /** The open handle the storages read through; null once closed. */
    private readonly holder: { fh: FileHandle | null },
    /** The archive's top folder ("optimizer" for optimizer.pt): the prefix of its first record, as torch finds it. */
    readonly archiveName: string,
    /** What the pickle holds: for optimizer.pt a PyDict {state, param_groups}. */
    readonly value: PyValue,
    /** Every tensor the pickle builds, in pickle order. */
    readonly tensors: readonly TorchTensor[],
    /** Every storage by key. */
    readonly storages: ReadonlyMap<string, TorchStorage>,
    readonly records: TorchRecords,
    /** The zip entries, in central-directory order. */
    readonly entries: readonly ZipEntry[],
  ) {}

  get closed(): boolean {
    return this.holder.fh === null;
  }

  /**
   * Open and unpickle: reads the zip's directory, data.pkl and the small records, not the storages. A global outside
   * torch.load(weights_only=True)'s allow-list is refused (RefusedGlobalError) before anything else happens; every
   * other problem is a TorchFormatError naming the file.
   */
  static async open(path: string): Promise<TorchFile> {
    let fh: FileHandle;
    try {
      fh = await open(path, "r");
    } catch (e) {
      throw new TorchFormatError(path, "io", `cannot open (${systemReason(e)})`, { cause: e });
    }
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new TorchFormatError(path, "io", "not a regular file");
      const dir = await readZipDirectory(fh, path, st.size);
      const first = dir.entries[0];
      if (!first) throw new TorchFormatError(path, "zip", "not a torch.save archive (an empty zip)");
      const slash = first.name.indexOf("/");
      if (slash <= 0)
        throw new TorchFormatError(path, "zip", `not a torch.save archive (its first record ${printableName(first.name)} is not in a folder)`);
      const archive = first.name.slice(0, slash);
      const record = async (name: string): Promise<string | null> => {
        const e = dir.byName.get(`${archive}/${name}`);
        return e ? new TextDecoder().decode(await readEntry(fh, path, e, MAX_RECORD_BYTES)) : null;
      };
      const records: TorchRecords = {
        byteorder: await record("byteorder"),
        version: (await record("version"))?.trim() ?? null,
        formatVersion: (await record(".format_version"))?.trim() ?? null,
        storageAlignment: (await record(".storage_alignment"))?.trim() ?? null,
        serializationId: (await record(".data/serialization_id"))?.trim() ?? null,
      };
      if (records.byteorder !== null && records.byteorder !== "little") {
        throw new TorchFormatError(
          path,
          "unsupported",
          `storages are ${printableName(records.byteorder)}-endian (only little-endian files are read)`,
        );
      }
      const pklEntry = dir.byName.get(`${archive}/data.pkl`);
      if (!pklEntry) throw new TorchFormatError(path, "missing-record", `no ${printableName(archive)}/data.pkl in the archive`);
      const pkl = await readEntry(fh, path, pklEntry, MAX_PICKLE_BYTES);

      const holder: { fh: FileHandle | null } = { fh };
      const source = (e: ZipEntry): StorageSource => ({
        path,
        entry: e.name,
        dataOffset: e.dataOffset,
        crc32: e.crc32,
        read: async (buf, position) => {
          if (!holder.fh) throw new TorchFormatError(path, "io", `cannot read ${e.name}: the file is closed`);
          await readFully(holder.fh, path, buf, position, e.name);
        },
      });
      const storages = new Map<string, TorchStorage>();
      const tensors: TorchTensor[] = [];
      const value = unpickle(
        pkl,
        path,
        {
          persistentLoad: (pid) => loadStorage(path, archive, dir.byName, storages, source, pid),
          reduce: (callee, args) => {
            const t = rebuildTensor(path, callee, args);
            if (t) tensors.push(t);
            return t;
          },
        },
        `${archive}/data.pkl`,
      );
      return new TorchFile(path, holder, archive, value, tensors, storages, records, dir.entries);
    } catch (e) {
      await fh.close().catch(() => undefined);
      throw e;
    }
  }

  async close(): Promise<void> {
    const fh = this.holder.fh;
    this.holder.fh = null;
    await fh?.close();
  }
}

/** The storage a persistent id names, one object per key. */
function loadStorage(
  path: string,
  archive: string,
  byName: ReadonlyMap<string, ZipEntry>,
  storages: Map<string, TorchStorage>,
  source: (e: ZipEntry) => StorageSource,
  pid: PyValue,
): TorchStorage {
  const bad = (why: string): never => {
    throw new TorchFormatError(path, "malformed", `persistent id ${pyRepr(pid, 120)}: ${why}`);
  };
  if (!(pid instanceof PyTuple)) return bad("not a tuple");
  const [kind, cls, key, location, numelV] = pid.items;
  const kindText = kind instanceof Uint8Array ? Buffer.from(kind).toString("latin1") : kind;
  if (kindText !== "storage") return bad("only ('storage', ...) ids are read (torch.load(weights_only=True) reads no other)");
  if (pid.length !== 5) return bad(`${pid.length} items, a storage id has 5`);
  if (!(cls instanceof PyGlobal)) return bad("its storage type is not a global");
  if (typeof key !== "string" || typeof location !== "string") return bad("its key and location are not strings");
  const numel = asCount(path, numelV, `storage ${printableName(key)}'s numel`);
  let torchDtype: string | undefined;
  if (cls.dotted === "torch.storage.UntypedStorage") torchDtype = "uint8";
  else if ((cls.module === "torch" || cls.module === "torch.cuda") && Object.hasOwn(STORAGE_DTYPES, cls.name)) torchDtype = STORAGE_DTYPES[cls.name];
  if (torchDtype === undefined) return bad(`${cls.dotted} is not a storage type`);
  const dtype = TORCH_TO_DTYPE[torchDtype];
  if (!dtype) throw new TorchFormatError(path, "unsupported", `storage ${printableName(key)} holds ${torchDtype} (read: ${dtypeList})`);
  const known = storages.get(key);
  if (known) {
    if (known.torchDtype !== torchDtype || known.numel !== numel)
      bad(`storage ${printableName(key)} was ${known.torchDtype} × ${known.numel} before`);
    return known;
  }
  const name = `${archive}/data/${key}`;
  const e = byName.get(name);
  if (!e) throw new TorchFormatError(path, "missing-record", `no ${printableName(name)} in the archive (storage ${printableName(key)})`);
  if (e.method !== 0) throw new TorchFormatError(path, "zip", `${printableName(name)} is compressed (storages are read from stored records only)`);
  if (e.flags & 1) throw new TorchFormatError(path, "zip", `${printableName(name)} is encrypted`);
  const byteLength = numel * DTYPE_SIZES[dtype];
  if (e.size !== byteLength)
    throw new TorchFormatError(
      path,
      "malformed",
      `${printableName(name)} holds ${e.size} bytes, its ${numel} ${torchDtype} values take ${byteLength}`,
    );
  const s = new TorchStorage(key, torchDtype, location, numel, byteLength, source(e));
  storages.set(key, s);
  return s;
}

/** `_rebuild_tensor`, `_rebuild_tensor_v2` or `_rebuild_tensor_v3` as a TorchTensor; undefined for other calls. */
function rebuildTensor(path: string, callee: PyGlobal, args: PyTuple): TorchTensor | undefined {
  const fn = callee.dotted;
  if (fn !== "torch._utils._rebuild_tensor" && fn !== "torch._utils._rebuild_tensor_v2" && fn !== "torch._utils._rebuild_tensor_v3") return undefined;
  const what = fn.slice("torch._utils.".length);
  const bad = (why: string): never => {
    throw new TorchFormatError(path, "malformed", `${what}${pyRepr(args, 160)}: ${why}`);
  };
  const a = args.items;
  const arity = fn.endsWith("v3") ? [7, 8] : fn.endsWith("v2") ? [6, 7] : [4, 4];
  if (a.length < arity[0]! || a.length > arity[1]!) bad(`${a.length} arguments`);
  const storage = a[0];
  if (!(storage instanceof TorchStorage)) return bad(`its storage is a ${pyTypeName(storage)}`);
  const offset = asCount(path, a[1], `${what}'s storage offset`);
  const shape = asCounts(path, a[2], `${what}'s size`);
  const stride = asCounts(path, a[3], `${what}'s stride`);
  if (stride.length !== shape.length) bad(`${shape.length} sizes and ${stride.length} strides`);
  const requiresGrad = a.length > 4 ? a[4] : false;
  if (typeof requiresGrad !== "boolean") bad("requires_grad is not a bool");
  let dtype = TORCH_TO_DTYPE[storage.torchDtype]!;
  if (fn.endsWith("v3")) {
    const d = a[6];
    const name = d instanceof PyGlobal && d.module === "torch" ? d.name : undefined;
    const t = name !== undefined && Object.hasOwn(TORCH_TO_DTYPE, name) ? TORCH_TO_DTYPE[name] : undefined;
    if (!t) {
      if (name !== undefined && (NEW_DTYPES.includes(name) || Object.values(STORAGE_DTYPES).includes(name))) {
        throw new TorchFormatError(path, "unsupported", `a tensor of dtype ${name} (read: ${dtypeList})`);
      }
      return bad(`its dtype is ${pyRepr(d, 40)}`);
    }
    dtype = t;
  }
  const metadata = fn.endsWith("v3") ? a[7] : fn.endsWith("v2") ? a[6] : undefined;
  if (metadata !== undefined && metadata !== null && !(metadata instanceof PyDict && metadata.size === 0)) {
    throw new TorchFormatError(path, "unsupported", `a tensor with metadata ${pyRepr(metadata, 60)} (a conjugate or negative view; not read)`);
  }
  // Every element it views lies inside the storage.
  const es = DTYPE_SIZES[dtype];
  if (shape.every((d) => d > 0)) {
    let last = offset;
    for (let i = 0; i < shape.length; i++) last += (shape[i]! - 1) * stride[i]!;
    if (!Number.isSafeInteger(last) || (last + 1) * es > storage.byteLength) {
      bad(`it views elements up to ${last} of ${dtype}, its storage holds ${Math.floor(storage.byteLength / es)}`);
    }
  }
  return new TorchTensor(dtype, shape, stride, offset, storage, requiresGrad as boolean);
}

// --- writing ----------------------------------------------------------------------------------------------------

/**
 * What the writer takes: the values of values.ts (a TorchTensor is copied with its whole storage), plain objects as
 * dicts with string keys, and as tensors core's Tensor and LazyTensor (their stored bytes, contiguous).
 */
export type TorchInput = PyValue | Tensor | LazyTensor | { readonly [key: string]: TorchInput } | readonly TorchInput[];

export interface WriteTorchOptions {
  /** The archive's top folder; default the file's name without its extension, as torch.save names it. */
  archiveName?: string;
  /** `.data/serialization_id` to write (torch 2.x writes a random one); default none, as torch 1.x. */
  serializationId?: string | null;
  /**
   * The location written for every storage ("cpu", "cuda:0": where torch.load puts it unless told otherwise). Default: a
   * TorchTensor's own, "cpu" for core tensors.
   */
  location?: string;
  /** Give every zip entry ZIP64 fields, as an archive of more than 4 GiB has (for tests and interop checks). */
  forceZip64?: boolean;
  /**
   * Sees each piece of a storage's bytes before it is written (a throw abandons the write: the temporary file is
   * removed, `path` stays as it was) and is told when a storage is written whole: a caller's progress, its check of
   * the values, its Ctrl-C. `where` names the tensor in the value ("value.state[0].exp_avg"), `at` is the piece's
   * first byte in the storage.
   */
  observer?: TorchWriteObserver;
}

/** See WriteTorchOptions.observer. */
export interface TorchWriteObserver {
  piece?(where: string, dtype: DType, bytes: Uint8Array, at: number): void;
  storageWritten?(where: string, bytes: number): void;
}

/** The pieces, each shown to the observer before it is written. */
async function* observed(pieces: Pieces, where: string, dtype: DType, observer: TorchWriteObserver): AsyncGenerator<Uint8Array> {
  let at = 0;
  for await (const piece of pieces) {
    observer.piece?.(where, dtype, piece, at);
    at += piece.byteLength;
    yield piece;
  }
}

export interface WriteTorchResult {
  /** Size of the file written. */
  bytes: number;
  /** Storages written. */
  storages: number;
}

const isLazy = (v: object): v is LazyTensor => {
  const t = v as Partial<LazyTensor>;
  return typeof t.read === "function" && isDType(t.dtype) && Array.isArray(t.shape);
};

interface PlannedStorage {
  key: string;
  byteLength: number;
  /** The dtype its tensors view it as (one per storage, as torch.save requires). */
  dtype: DType;
  pieces: (buffer: (n: number) => Uint8Array) => Pieces;
  /** What it comes from, for errors ("value.state[0].exp_avg"). */
  where: string;
  /** The CRC-32 of a stored record copied whole (its stream checks it). */
  crc?: number;
}

const TORCH = "torch";
const REBUILD_V2 = new PyGlobal("torch._utils", "_rebuild_tensor_v2");

/** Row-major strides of `shape`. */
const contiguousStrides = (shape: readonly number[]): bigint[] => {
  const s: bigint[] = new Array<bigint>(shape.length);
  let m = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = BigInt(m);
    m *= shape[i]!;
  }
  return s;
};

/**
 * Write `value` as torch.save would write it, so that `torch.load(path, weights_only=True)` loads it (torch ≥ 2.0;
 * see the README for 1.13): the pickle (protocol 2), then each storage as a stored record whose bytes start at a
 * multiple of 64, streamed in pieces (a TorchTensor's storage straight from its open file, with its CRC-32 checked),
 * ZIP64 where needed. The bytes go to a temporary sibling that is flushed to disk and renamed over `path`, so a reader
 * sees the old file or the new one; a failure removes the temporary file and leaves `path` as it was.
 */
export async function writeTorchFile(path: string, value: TorchInput, options: WriteTorchOptions = {}): Promise<WriteTorchResult> {
  const base = basename(path);
  const archive = options.archiveName ?? (base.lastIndexOf(".") > 0 ? base.slice(0, base.lastIndexOf(".")) : base);
  if (!archive || /[/\\]/.test(archive))
    throw new TorchFormatError(path, "bad-value", `archive name ${printableName(archive)} (one folder name, no slash)`);
  const location = options.location ?? "cpu"; // for core tensors; a TorchTensor's own unless options.location
  const planned: PlannedStorage[] = [];
  const byStorage = new Map<object, PlannedStorage>();

  const storageId = (cls: string, key: string, loc: string, numel: number): PersistentId =>
    new PersistentId(new PyTuple(["storage", new PyGlobal(TORCH, cls), key, loc, BigInt(numel)]));
  const reduction = (pid: PersistentId, offset: number, shape: readonly number[], stride: readonly bigint[], requiresGrad: boolean): Reduction => ({
    callee: REBUILD_V2,
    args: [pid, BigInt(offset), new PyTuple(shape.map(BigInt)), new PyTuple([...stride]), requiresGrad, new PyDict("OrderedDict")],
  });
  const classOf = (dtype: DType, where: string): string => {
    const cls = STORAGE_CLASS[dtype];
    if (!cls)
      throw new TorchFormatError(
        path,
        "bad-value",
        `${where}: a ${dtype} tensor (torch.save writes ${DTYPE_TO_TORCH[dtype]} with _rebuild_tensor_v3, which this writer does not write; torch ≤ 2.2 cannot load it)`,
      );
    return cls;
  };

  const data = pickle(value, path, {
    reduce: (v, where) => {
      if (v instanceof TorchTensor) {
        const cls = classOf(v.dtype, where);
        const s = v.storage;
        let p = byStorage.get(s);
        if (!p) {
          // The whole storage is streamed, which checks its CRC-32 at the end: the record's CRC is the source's.
          p = {
            key: String(planned.length),
            byteLength: s.byteLength,
            dtype: v.dtype,
            where,
            pieces: (buffer) => s.stream(0, s.byteLength, buffer),
            crc: s.source.crc32,
          };
          planned.push(p);
          byStorage.set(s, p);
        } else if (p.dtype !== v.dtype) {
          // torch.save refuses this too ("Cannot save multiple tensors or storages that view the same data as different types").
          throw new TorchFormatError(path, "bad-value", `${where}: views the storage of ${p.where} as ${v.dtype}, that one as ${p.dtype}`);
        }
        const es = DTYPE_SIZES[v.dtype];
        if (s.byteLength % es !== 0)
          throw new TorchFormatError(path, "bad-value", `${where}: a storage of ${s.byteLength} bytes is not whole ${v.dtype} values`);
        const pid = storageId(cls, p.key, options.location ?? s.location, s.byteLength / es);
        return reduction(pid, v.storageOffset, v.shape, v.stride.map(BigInt), v.requiresGrad);
      }
      if (v instanceof Tensor || isLazy(v)) {
        const t = v as Tensor | LazyTensor;
        const cls = classOf(t.dtype, where);
        const numel = t.shape.reduce((a, b) => a * b, 1);
        for (const d of t.shape)
          if (!Number.isSafeInteger(d) || d < 0) throw new TorchFormatError(path, "bad-value", `${where}: shape [${t.shape.join(", ")}]`);
        const byteLength = numel * DTYPE_SIZES[t.dtype];
        const p: PlannedStorage = {
          key: String(planned.length),
          byteLength,
          dtype: t.dtype,
          where,
          pieces: (buffer) => tensorPieces(path, t, where, buffer),
        };
        planned.push(p);
        return reduction(storageId(cls, p.key, location, numel), 0, t.shape, contiguousStrides(t.shape), false);
      }
      return undefined;
    },
  });

  const dir = dirname(path);
  const tmp = join(dir, `.${base}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
  let fh: FileHandle | null = null;
  try {
    fh = await open(tmp, "wx");
    const zip = new ZipWriter(fh, path, options.forceZip64 ?? false);
    const text = (s: string): Uint8Array[] => [new TextEncoder().encode(s)];
    await zip.add(`${archive}/data.pkl`, data.length, [data]);
    await zip.add(`${archive}/.format_version`, 1, text("1"));
    await zip.add(`${archive}/.storage_alignment`, 2, text("64"));
    await zip.add(`${archive}/byteorder`, 6, text("little"));
    const ring = Array.from({ length: 4 }, () => new Uint8Array(PIECE_BYTES));
    let turn = 0;
    const buffer = (n: number): Uint8Array => {
      const b = ring[turn++ % ring.length]!;
      return n <= b.length ? b.subarray(0, n) : new Uint8Array(n);
    };
    const observer = options.observer;
    for (const p of planned) {
      await zip.add(
        `${archive}/data/${p.key}`,
        p.byteLength,
        observer ? observed(p.pieces(buffer), p.where, p.dtype, observer) : p.pieces(buffer),
        p.where,
        p.crc,
      );
      observer?.storageWritten?.(p.where, p.byteLength);
    }
    await zip.add(`${archive}/version`, 2, text("3\n"));
    if (options.serializationId) {
      const id = new TextEncoder().encode(options.serializationId);
      await zip.add(`${archive}/.data/serialization_id`, id.length, [id]);
    }
    const bytes = await zip.finish();
    await fh.sync();
    await fh.close();
    fh = null;
    await rename(tmp, path);
    await syncDir(dir);
    return { bytes, storages: planned.length };
  } catch (e) {
    await fh?.close().catch(() => undefined);
    await rm(tmp, { force: true }).catch(() => undefined);
    if (e instanceof TorchFormatError) throw e;
    // An observer's own error (a check of the values, an interrupt) is the caller's, as it threw it.
    if (!systemCode(e)) throw e;
    throw new TorchFormatError(path, "io", `cannot write (${systemReason(e)})`, { cause: e });
  }
}

/** A core tensor's stored bytes in pieces: its own streamed bytes, else its read bytes, else its values encoded. */
async function* tensorPieces(path: string, t: Tensor | LazyTensor, where: string, buffer: (n: number) => Uint8Array): AsyncGenerator<Uint8Array> {
  if (t instanceof Tensor) {
    yield encodeTensor(t);
    return;
  }
  if (t.streamBytes) {
    yield* t.streamBytes(buffer);
    return;
  }
  if (t.readBytes) {
    yield await t.readBytes();
    return;
  }
  const v = await t.read();
  if (v.dtype !== t.dtype || v.shape.length !== t.shape.length || v.shape.some((d, i) => d !== t.shape[i])) {
    throw new TorchFormatError(
      path,
      "bad-value",
      `${where}: declared ${t.dtype} [${t.shape.join(", ")}], read as ${v.dtype} [${v.shape.join(", ")}]`,
    );
  }
  yield encodeTensor(v);
}

/** Whether `path` is a file torch.save could have written (a zip with a data.pkl), without unpickling it. */
export async function isTorchFile(path: string): Promise<boolean> {
  try {
    if (!(await stat(path)).isFile()) return false;
    const fh = await open(path, "r");
    try {
      const dir = await readZipDirectory(fh, path, (await fh.stat()).size);
      const first = dir.entries[0]?.name ?? "";
      const slash = first.indexOf("/");
      return slash > 0 && dir.byName.has(`${first.slice(0, slash)}/data.pkl`);
    } finally {
      await fh.close();
    }
  } catch {
    return false;
  }
}

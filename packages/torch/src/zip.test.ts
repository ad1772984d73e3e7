import { mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as zlib from "node:zlib";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { TorchFormatError } from "./errors.js";
import { TorchFile, writeTorchFile } from "./file.js";
import { PersistentId, pickle } from "./pickle.js";
import type { TorchStorage, TorchTensor } from "./tensor.js";
import { f32Bytes, writeRawArchive } from "./test-archive.js";
import { PyDict, PyGlobal, PyObject, PyTuple } from "./values.js";
import { crc32Js, readZipDirectory } from "./zip.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-torch-zip-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const GiB = 2 ** 30;
const tensorPickle = (path: string, numel: number): Uint8Array =>
  pickle(
    PyDict.from({
      w: new PyObject(
        new PyGlobal("torch._utils", "_rebuild_tensor_v2"),
        new PyTuple([
          new PersistentId(new PyTuple(["storage", new PyGlobal("torch", "FloatStorage"), "0", "cpu", BigInt(numel)])) as never,
          0n,
          new PyTuple([BigInt(numel)]),
          new PyTuple([1n]),
          false,
          new PyDict("OrderedDict"),
        ]),
      ),
    }),
    path,
  );

/** Whether `path` takes far less disk than its size (the file system made a hole). */
const sparse = async (path: string): Promise<boolean> => {
  const s = await stat(path);
  return s.blocks * 512 < s.size / 16;
};

describe("ZIP64", () => {
  test("entries past 4 GiB (a sparse file): offsets from the ZIP64 extra fields and end records", async () => {
    const path = join(dir, "far.pt");
    await writeRawArchive(
      path,
      "far",
      [
        { name: "data.pkl", bytes: tensorPickle(path, 3) },
        { name: "data/0", bytes: f32Bytes([1, 2, 3]) },
      ],
      5 * GiB,
    );
    if (!(await sparse(path))) return; // no holes on this file system: 5 GiB of zeros are not worth a test
    const raw = await open(path, "r");
    const size = (await raw.stat()).size;
    const tail = new Uint8Array(22);
    await raw.read(tail, 0, 22, size - 22);
    const dirInfo = await readZipDirectory(raw, path, size);
    await raw.close();
    // The classic end record holds 0xFFFFFFFF for the directory's offset; the entries' offsets are past 2^32.
    expect(new DataView(tail.buffer).getUint32(16, true)).toBe(0xffffffff);
    expect(dirInfo.zip64).toBe(true);
    expect(dirInfo.entries.every((e) => e.localHeaderOffset >= 5 * GiB && e.dataOffset % 64 === 0)).toBe(true);
    const f = await TorchFile.open(path);
    const w = (f.value as PyDict).get("w") as TorchTensor;
    expect(Array.from((await w.read()).f32)).toEqual([1, 2, 3]);
    const out = join(dir, "near.pt");
    await writeTorchFile(out, f.value);
    await f.close();
    expect((await stat(out)).size).toBeLessThan(4096);
  });

  test("an entry of 5 GiB: its sizes from the ZIP64 extra field", async () => {
    // Local header at 0 with a 5 GiB hole for data, then the central directory with ZIP64 sizes, the ZIP64 end records.
    const path = join(dir, "big-entry.zip");
    const name = Buffer.from("a/data/0");
    const size = 5 * GiB;
    const fh = await open(path, "w+");
    const local = new Uint8Array(30 + name.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(26, name.length, true);
    local.set(name, 30);
    await fh.write(local, 0, local.length, 0);
    const cdAt = local.length + size;
    const cd = new Uint8Array(46 + name.length + 20);
    const cv = new DataView(cd.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint32(20, 0xffffffff, true);
    cv.setUint32(24, 0xffffffff, true);
    cv.setUint16(28, name.length, true);
    cv.setUint16(30, 20, true);
    cd.set(name, 46);
    cv.setUint16(46 + name.length, 1, true);
    cv.setUint16(48 + name.length, 16, true);
    cv.setBigUint64(50 + name.length, BigInt(size), true);
    cv.setBigUint64(58 + name.length, BigInt(size), true);
    const end = new Uint8Array(56 + 20 + 22);
    const ev = new DataView(end.buffer);
    ev.setUint32(0, 0x06064b50, true);
    ev.setBigUint64(24, 1n, true);
    ev.setBigUint64(32, 1n, true);
    ev.setBigUint64(40, BigInt(cd.length), true);
    ev.setBigUint64(48, BigInt(cdAt), true);
    ev.setUint32(56, 0x07064b50, true);
    ev.setBigUint64(64, BigInt(cdAt + cd.length), true);
    ev.setUint32(76, 0x06054b50, true);
    ev.setUint16(84, 1, true);
    ev.setUint16(86, 1, true);
    ev.setUint32(88, 0xffffffff, true);
    ev.setUint32(92, 0xffffffff, true);
    await fh.write(cd, 0, cd.length, cdAt);
    await fh.write(end, 0, end.length, cdAt + cd.length);
    const st = await fh.stat();
    const d = await readZipDirectory(fh, path, st.size);
    await fh.close();
    expect(d.entries.map((e) => [e.name, e.size, e.compressedSize, e.dataOffset])).toEqual([["a/data/0", size, size, local.length]]);
  });
});

describe("archives other zip writers made (Python's zipfile)", () => {
  const hex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));
  test("a deflated data.pkl is inflated", async () => {
    const path = join(dir, "deflated.pt");
    await writeFile(
      path,
      hex(
        "504b030414000000080000002100bbf72cc70e0000000c0000000c0000006172632f646174612e706b6c6b608a2d64d0f066f4664ad50300504b030414000000000000002100d19e675502000000020000000b0000006172632f76657273696f6e330a504b0102140314000000080000002100bbf72cc70e0000000c0000000c00000000000000000000008001000000006172632f646174612e706b6c504b0102140314000000000000002100d19e675502000000020000000b00000000000000000000008001380000006172632f76657273696f6e504b0506000000000200020073000000630000000000",
      ),
    );
    const f = await TorchFile.open(path);
    expect(f.value).toEqual([1n, 2n]);
    expect([f.archiveName, f.records.version, f.records.byteorder]).toEqual(["arc", "3", null]);
    await f.close();
  });
  test("a deflated storage is refused: storages are read from stored records only", async () => {
    const path = join(dir, "deflated-storage.pt");
    await writeFile(
      path,
      hex(
        "504b030414000000000000002100e5e6262c37000000370000000c0000006172632f646174612e706b6c80022828580700000073746f7261676563746f7263680a466c6f617453746f726167650a58010000003058030000006370754b0274512e504b03041400000008000000210076a53f2e0a000000080000000a0000006172632f646174612f30636068b0676060700000504b0102140314000000000000002100e5e6262c37000000370000000c00000000000000000000008001000000006172632f646174612e706b6c504b010214031400000008000000210076a53f2e0a000000080000000a00000000000000000000008001610000006172632f646174612f30504b0506000000000200020072000000930000000000",
      ),
    );
    const e = await TorchFile.open(path).catch((x: unknown) => x);
    expect((e as TorchFormatError).code).toBe("zip");
    expect((e as Error).message).toBe(`${path}: arc/data/0 is compressed (storages are read from stored records only)`);
  });
  test("a bare storage as the value", async () => {
    const path = join(dir, "bare.pt");
    const pkl = pickle(new PersistentId(new PyTuple(["storage", new PyGlobal("torch", "FloatStorage"), "0", "cpu", 2n])), path);
    await writeRawArchive(path, "bare", [
      { name: "data.pkl", bytes: pkl },
      { name: "data/0", bytes: f32Bytes([1, 2]) },
    ]);
    const f = await TorchFile.open(path);
    const s = f.value as TorchStorage;
    expect(Array.from(new Float32Array((await s.read()).buffer))).toEqual([1, 2]);
    await f.close();
  });
});

test("CRC-32: the JavaScript fallback agrees with zlib's", () => {
  const native = (zlib as { crc32?: (d: Uint8Array, v?: number) => number }).crc32;
  if (!native) return;
  fc.assert(
    fc.property(fc.uint8Array({ maxLength: 300 }), fc.nat({ max: 0xffffffff }), (b, v) => {
      expect(crc32Js(b, v)).toBe(native(b, v));
    }),
    { numRuns: 200 },
  );
});

test("every record is aligned to 64 bytes, as torch writes them", async () => {
  const path = join(dir, "aligned.pt");
  await writeTorchFile(path, { a: new PyTuple([1n]), long_name_to_shift_offsets: [0.5] });
  const fh = await open(path, "r");
  const d = await readZipDirectory(fh, path, (await fh.stat()).size);
  await fh.close();
  expect(d.entries.map((e) => e.name)).toEqual([
    "aligned/data.pkl",
    "aligned/.format_version",
    "aligned/.storage_alignment",
    "aligned/byteorder",
    "aligned/version",
  ]);
  expect(d.entries.every((e) => e.dataOffset % 64 === 0)).toBe(true);
  expect((await readFile(path)).subarray(0, 4)).toEqual(Buffer.from("PK\u0003\u0004", "latin1"));
});

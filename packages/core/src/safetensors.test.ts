import { mkdir, mkdtemp, open, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { DType } from "./dtype.js";
import {
  MAX_HEADER_SIZE, SafetensorsError, SafetensorsFile, decodeTensor, encodeSafetensorsHeader, encodeTensor,
  findDuplicateKey, writeSafetensors, type TensorEntry,
} from "./safetensors.js";
import { Tensor } from "./tensor.js";
import type { LazyTensor } from "./types.js";

let dir = "";
beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), "staged-safetensors-")); });
afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

let counter = 0;
const fresh = (name = "t"): string => join(dir, `${name}-${counter++}.safetensors`);

/** A file from raw parts: 8-byte LE length (default: the header's byte length), header text, data. */
async function rawFile(header: string | Uint8Array, data: Uint8Array | number = 0, n?: bigint): Promise<string> {
  const h = typeof header === "string" ? new TextEncoder().encode(header) : header;
  const d = typeof data === "number" ? new Uint8Array(data) : data;
  const buf = new Uint8Array(8 + h.length + d.length);
  new DataView(buf.buffer).setBigUint64(0, n ?? BigInt(h.length), true);
  buf.set(h, 8);
  buf.set(d, 8 + h.length);
  const path = fresh("raw");
  await writeFile(path, buf);
  return path;
}

async function openError(path: string): Promise<string> {
  try {
    const f = await SafetensorsFile.open(path);
    await f.close();
  } catch (e) {
    expect(e).toBeInstanceOf(SafetensorsError);
    const msg = (e as Error).message;
    expect(msg.startsWith(`${path}: `)).toBe(true);
    return msg.slice(path.length + 2);
  }
  throw new Error(`${path} opened without error`);
}

const entry = (dtype: string, shape: unknown, offsets: unknown): string =>
  JSON.stringify({ dtype, shape, data_offsets: offsets });

async function roundTrip(entries: TensorEntry[], metadata?: Record<string, string>): Promise<{ file: SafetensorsFile; bytes: number; path: string }> {
  const path = fresh("rt");
  const bytes = await writeSafetensors(path, entries, metadata);
  expect((await stat(path)).size).toBe(bytes);
  return { file: await SafetensorsFile.open(path), bytes, path };
}

describe("dtype round trips", () => {
  const cases: [DType, Tensor][] = [
    ["F64", new Tensor("F64", [2, 3], Float64Array.of(0, -0, Math.PI, -1e300, Number.MIN_VALUE, Infinity))],
    ["F32", new Tensor("F32", [5], Float32Array.of(1.5, -0, 3.4028234663852886e38, 1e-45, -Infinity))],
    ["I64", new Tensor("I64", [3], BigInt64Array.of(-(2n ** 63n), 2n ** 63n - 1n, -5n))],
    ["U64", new Tensor("U64", [2], BigUint64Array.of(0n, 2n ** 64n - 1n))],
    ["I32", new Tensor("I32", [3], Int32Array.of(-(2 ** 31), 2 ** 31 - 1, 7))],
    ["U32", new Tensor("U32", [2], Uint32Array.of(0, 2 ** 32 - 1))],
    ["I16", new Tensor("I16", [2, 2], Int16Array.of(-32768, 32767, 0, -1))],
    ["U16", new Tensor("U16", [2], Uint16Array.of(0, 65535))],
    ["I8", new Tensor("I8", [3], Int8Array.of(-128, 127, 0))],
    ["U8", new Tensor("U8", [3], Uint8Array.of(0, 255, 42))],
    ["BOOL", new Tensor("BOOL", [4], Uint8Array.of(1, 0, 0, 1))],
    ["F16", new Tensor("F16", [6], Float32Array.of(1, -0, 65504, 2 ** -24, -(2 ** -14), 0.5))],
    ["BF16", new Tensor("BF16", [5], Float32Array.of(1, -0, 3.140625, -(2 ** 127), 2 ** -133))],
  ];

  it.each(cases)("%s survives write and read, values and dtype exact", async (dtype, t) => {
    const { file } = await roundTrip([{ name: "x", tensor: t }, { name: "scalar", tensor: Tensor.zeros(dtype, []) }, { name: "empty", tensor: Tensor.zeros(dtype, [0, 3]) }]);
    const back = await file.readTensor("x");
    expect(back.dtype).toBe(dtype);
    expect(back.shape).toEqual(t.shape);
    expect(back.data.constructor).toBe(t.data.constructor);
    expect(Array.from(back.data as ArrayLike<number>, (v) => Object.is(v, -0) ? "-0" : v))
      .toEqual(Array.from(t.data as ArrayLike<number>, (v) => Object.is(v, -0) ? "-0" : v));
    expect((await file.readTensor("scalar")).shape).toEqual([]);
    expect((await file.readTensor("empty")).size).toBe(0);
    await file.close();
  });

  it("F16 rounds to nearest even on write: overflow → Inf, NaN stays NaN, subnormals kept", async () => {
    const t = new Tensor("F16", [7], Float32Array.of(65520, 1e9, NaN, 2 ** -25, 3 * 2 ** -25, 1 + 2 ** -11, 0.1));
    const { file } = await roundTrip([{ name: "h", tensor: t }]);
    const raw = await file.readRaw("h");
    expect(Array.from(new Uint16Array(raw.buffer, raw.byteOffset, 7)).map((h) => h.toString(16)))
      .toEqual(["7c00", "7c00", "7e00", "0", "2", "3c00", "2e66"]);
    const back = (await file.readTensor("h")).f32;
    expect(back[0]).toBe(Infinity);
    expect(Number.isNaN(back[2])).toBe(true);
    expect(back[4]).toBe(2 * 2 ** -24);
    expect(back[6]).toBe(0.0999755859375);
    await file.close();
  });

  it("BF16 rounds ties to even on write", async () => {
    const v = new Float32Array(new Uint32Array([0x3f808000, 0x3f818000, 0x3f808001, 0x7f7fffff]).buffer);
    const { file } = await roundTrip([{ name: "b", tensor: new Tensor("BF16", [4], v) }]);
    const raw = await file.readRaw("b");
    expect(Array.from(new Uint16Array(raw.buffer, raw.byteOffset, 4)).map((h) => h.toString(16)))
      .toEqual(["3f80", "3f82", "3f81", "7f80"]);
    await file.close();
  });

  it("encodeTensor / decodeTensor are little-endian and copy", () => {
    const t = new Tensor("I32", [2], Int32Array.of(1, -2));
    const bytes = encodeTensor(t);
    expect(Array.from(bytes)).toEqual([1, 0, 0, 0, 0xfe, 0xff, 0xff, 0xff]);
    bytes[0] = 9;
    expect(t.data[0]).toBe(1);
    const unaligned = new Uint8Array(9).subarray(1);
    unaligned.set(encodeTensor(t));
    const d = decodeTensor("I32", [2], unaligned);
    expect(Array.from(d.data as Int32Array)).toEqual([1, -2]);
    expect(() => decodeTensor("I32", [3], unaligned)).toThrow(/8 bytes do not hold a I32 tensor of shape \[3\]/);
    expect(Array.from(encodeTensor(new Tensor("F16", [1], Float32Array.of(1))))).toEqual([0x00, 0x3c]);
    expect(() => encodeTensor(new Tensor("F64", [1], Float32Array.of(1)))).toThrow(/F64 tensor must hold a Float64Array/);
  });

  it("writes a tensor whose data is a view at an offset into a larger buffer", async () => {
    const big = Float32Array.of(9, 1, 2, 3, 9);
    const { file } = await roundTrip([{ name: "v", tensor: new Tensor("F32", [3], big.subarray(1, 4)) }]);
    expect(Array.from((await file.readTensor("v")).f32)).toEqual([1, 2, 3]);
    await file.close();
  });
});

describe("file format", () => {
  it("writes exactly the bytes of the Python safetensors library (header padded to 8 with spaces)", async () => {
    // safetensors.torch.save_file({"a": torch.tensor([1.0, 2.0])}, path, metadata={"format": "pt"})
    const json = '{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}   ';
    const expected = Uint8Array.from([
      88, 0, 0, 0, 0, 0, 0, 0,
      ...Array.from(json, (c) => c.charCodeAt(0)),
      0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0x40,
    ]);
    const path = fresh("exact");
    const n = await writeSafetensors(path, [{ name: "a", tensor: Tensor.fromArray([2], [1, 2]) }], { format: "pt" });
    expect(n).toBe(expected.length);
    expect(new Uint8Array(await readFile(path))).toEqual(expected);
    const file = await SafetensorsFile.open(path);
    expect(file.dataStart).toBe(96);
    expect(file.metadata).toEqual({ format: "pt" });
    expect(file.tensors.get("a")).toEqual({ dtype: "F32", shape: [2], dataOffsets: [0, 8] });
    await file.close();
  });

  it("reads the reference implementation's documented example (unpadded header)", async () => {
    const path = await rawFile('{"test":{"dtype":"I32","shape":[2,2],"data_offsets":[0,16]}}', 16);
    const file = await SafetensorsFile.open(path);
    expect(file.dataStart).toBe(8 + 60);
    expect(file.metadata).toBeNull();
    const t = await file.readTensor("test");
    expect(t.shape).toEqual([2, 2]);
    expect(Array.from(t.data as Int32Array)).toEqual([0, 0, 0, 0]);
    await file.close();
  });

  it("keeps tensors in data-offset order and preserves __metadata__", async () => {
    const data = new Uint8Array(12);
    data.set([1, 0, 0, 0], 0); // "z" at 0
    data.set([2, 0, 0, 0, 3, 0, 0, 0], 4); // "a" at 4
    const header = `{"a":${entry("I32", [2], [4, 12])},"__metadata__":{"format":"pt","note":"é ✓"},"z":${entry("I32", [1], [0, 4])}}`;
    const file = await SafetensorsFile.open(await rawFile(header, data));
    expect([...file.tensors.keys()]).toEqual(["z", "a"]);
    expect(file.metadata).toEqual({ format: "pt", note: "é ✓" });
    expect(Array.from((await file.readTensor("a")).data as Int32Array)).toEqual([2, 3]);
    await file.close();

    const { file: again } = await roundTrip([{ name: "w", tensor: Tensor.fromArray([1], [1]) }], { format: "pt", "ünï": "cödé" });
    expect(again.metadata).toEqual({ format: "pt", "ünï": "cödé" });
    expect(again.dataStart % 8).toBe(0);
    await again.close();
  });

  it("accepts a header padded with trailing spaces and zero-size tensors", async () => {
    const header = `{"e":${entry("F32", [0], [0, 0])},"x":${entry("U8", [2], [0, 2])}}      `;
    const file = await SafetensorsFile.open(await rawFile(header, Uint8Array.of(5, 6)));
    expect(Array.from((await file.readTensor("x")).data as Uint8Array)).toEqual([5, 6]);
    expect((await file.readTensor("e")).size).toBe(0);
    await file.close();
  });

  it("handles names that are special in JavaScript or JSON", async () => {
    const names = ["__proto__", "constructor", "a\"b\\c", "1", "0", "ünï\u2028"];
    const entries = names.map((name, i) => ({ name, tensor: Tensor.fromArray([1], [i]) }));
    const { file } = await roundTrip(entries);
    expect([...file.tensors.keys()]).toEqual(names);
    for (const [i, name] of names.entries()) expect((await file.readTensor(name)).f32[0]).toBe(i);
    await file.close();
  });
});

describe("lazy reading", () => {
  it("open reads only the length and header; a tensor read is one positioned read of its range", async () => {
    const entries = ["a", "b", "c"].map((name, i) => ({ name, tensor: Tensor.fromArray([1000], new Array(1000).fill(i)) }));
    const path = fresh("lazy");
    await writeSafetensors(path, entries);

    const probe = await open(path, "r");
    const proto = Object.getPrototypeOf(probe) as { read: (...args: unknown[]) => Promise<unknown> };
    await probe.close();
    const spy = vi.spyOn(proto, "read");
    try {
      const file = await SafetensorsFile.open(path);
      const headerReads = spy.mock.calls.map((c) => [c[2], c[3]]);
      expect(headerReads).toEqual([[8, 0], [file.dataStart - 8, 8]]);
      spy.mockClear();

      const lazy = file.lazy("b");
      expect(lazy.dtype).toBe("F32");
      expect(lazy.shape).toEqual([1000]);
      expect(spy).not.toHaveBeenCalled();
      const t = await lazy.read();
      expect(t.f32[999]).toBe(1);
      expect(spy.mock.calls.map((c) => [c[2], c[3]])).toEqual([[4000, file.dataStart + 4000]]);
      await file.close();
      await expect(file.readTensor("a")).rejects.toThrow(`${path}: cannot read tensor "a": file is closed`);
    } finally {
      spy.mockRestore();
    }
  });

  it("names an unknown tensor", async () => {
    const { file, path } = await roundTrip([{ name: "a", tensor: Tensor.fromArray([1], [1]) }]);
    expect(() => file.lazy("nope")).toThrow(`${path}: no tensor named "nope"`);
    await expect(file.readRaw("nope")).rejects.toThrow(SafetensorsError);
    await file.close();
  });
});

describe("streaming writer", () => {
  it("reads each lazy tensor once, in order, after the header is computed", async () => {
    const log: string[] = [];
    const lazy = (name: string, v: number): LazyTensor => ({
      dtype: "F32", shape: [2],
      read: async () => { log.push(name); return Tensor.fromArray([2], [v, v]); },
    });
    const { file } = await roundTrip([{ name: "p", tensor: lazy("p", 1) }, { name: "q", tensor: lazy("q", 2) }]);
    expect(log).toEqual(["p", "q"]);
    expect(Array.from((await file.readTensor("q")).f32)).toEqual([2, 2]);
    await file.close();
  });

  it("removes the partial file when a tensor fails to read or does not match its declaration", async () => {
    const path = fresh("fail");
    const bad: LazyTensor = { dtype: "F32", shape: [2], read: async () => { throw new Error("boom"); } };
    await expect(writeSafetensors(path, [{ name: "ok", tensor: Tensor.fromArray([1], [1]) }, { name: "bad", tensor: bad }])).rejects.toThrow("boom");
    await expect(stat(path)).rejects.toThrow(/ENOENT/);

    const liar: LazyTensor = { dtype: "F32", shape: [3], read: async () => Tensor.fromArray([2], [1, 2]) };
    await expect(writeSafetensors(path, [{ name: "liar", tensor: liar }]))
      .rejects.toThrow(`${path}: tensor "liar" was declared F32 [3] but read as F32 [2]`);
    await expect(stat(path)).rejects.toThrow(/ENOENT/);
  });

  it("rejects bad entries before writing anything", async () => {
    const path = fresh("bad");
    const t = Tensor.fromArray([1], [1]);
    await expect(writeSafetensors(path, [{ name: "a", tensor: t }, { name: "a", tensor: t }])).rejects.toThrow(`${path}: duplicate tensor name "a"`);
    await expect(writeSafetensors(path, [{ name: "__metadata__", tensor: t }])).rejects.toThrow(/reserved/);
    await expect(writeSafetensors(path, [{ name: "x", tensor: t }], { k: 1 as unknown as string })).rejects.toThrow(/__metadata__ value of "k" is not a string/);
    await expect(stat(path)).rejects.toThrow(/ENOENT/);
  });

  it("computes the header from shapes alone", () => {
    const { header, dataLength } = encodeSafetensorsHeader("x", [{ name: "big", tensor: { dtype: "BF16", shape: [1024, 1024, 1024], read: async () => { throw new Error("not read"); } } }]);
    expect(dataLength).toBe(2 * 1024 ** 3);
    expect(header.length % 8).toBe(0);
    expect(new TextDecoder().decode(header.subarray(8)).trimEnd()).toBe(`{"big":{"dtype":"BF16","shape":[1024,1024,1024],"data_offsets":[0,${2 * 1024 ** 3}]}}`);
  });
});

describe("validation (each rule with a hand-made malformed file)", () => {
  it("a directory where the file should be", async () => {
    const path = fresh("adir");
    await mkdir(path);
    expect(await openError(path)).toBe("not a regular file");
  });

  it("file shorter than 8 bytes", async () => {
    const path = fresh("short");
    await writeFile(path, Uint8Array.of(1, 2, 3));
    expect(await openError(path)).toBe("file is 3 bytes, too short for the 8-byte header length");
  });

  it("header length over 100 MB", async () => {
    expect(await openError(await rawFile("{}", 0, BigInt(MAX_HEADER_SIZE + 1)))).toBe("header too large: 100000001 bytes (limit 100000000)");
    expect(await openError(await rawFile("{}", 0, 2n ** 64n - 1n))).toMatch(/^header too large: 18446744073709551615 bytes/);
  });

  it("header length past the end of the file", async () => {
    expect(await openError(await rawFile("{}", 0, 1000n))).toBe("header length 1000 runs past the end of the file (10 bytes)");
  });

  it("header not valid UTF-8", async () => {
    expect(await openError(await rawFile(Uint8Array.of(0x7b, 0x22, 0xff, 0x22, 0x7d)))).toBe("header is not valid UTF-8");
  });

  it("header not valid JSON", async () => {
    expect(await openError(await rawFile('{"a":'))).toMatch(/^header is not valid JSON: /);
    expect(await openError(await rawFile("{} x"))).toMatch(/^header is not valid JSON: /);
  });

  it("header not a JSON object", async () => {
    expect(await openError(await rawFile("[1, 2]"))).toBe(`header does not start with '{' (starts with "[1, 2]")`);
    expect(await openError(await rawFile(" {}"))).toMatch(/^header does not start with '\{'/);
  });

  it("entry not an object or missing a field", async () => {
    expect(await openError(await rawFile('{"a":5}'))).toBe('tensor "a": header entry is not an object (got 5)');
    expect(await openError(await rawFile('{"a":{"dtype":"F32","shape":[1]}}'))).toBe('tensor "a": missing field "data_offsets"');
    expect(await openError(await rawFile('{"a":{"shape":[1],"data_offsets":[0,4]}}', 4))).toBe('tensor "a": missing field "dtype"');
  });

  it("unknown dtype", async () => {
    expect(await openError(await rawFile(`{"a":${entry("F8_E4M3", [1], [0, 1])}}`, 1))).toBe('tensor "a": unknown dtype "F8_E4M3"');
    expect(await openError(await rawFile(`{"a":${entry("float32", [1], [0, 4])}}`, 4))).toBe('tensor "a": unknown dtype "float32"');
  });

  it("shape not an array of non-negative integers", async () => {
    for (const shape of [[-1], [1.5], "2", [1, null]]) {
      expect(await openError(await rawFile(`{"a":${entry("U8", shape, [0, 1])}}`, 1)))
        .toBe(`tensor "a": shape must be an array of non-negative integers (got ${JSON.stringify(shape)})`);
    }
  });

  it("data_offsets not [begin, end] with begin <= end", async () => {
    for (const offsets of [[4, 0], [0], [0, "4"], [0, 4, 8], [-4, 0], [0, 2 ** 60]]) {
      expect(await openError(await rawFile(`{"a":${entry("F32", [1], offsets)}}`, 4)))
        .toBe(`tensor "a": data_offsets must be [begin, end] non-negative integers with begin <= end (got ${JSON.stringify(offsets)})`);
    }
  });

  it("duplicate tensor name (JSON.parse would keep the last silently)", async () => {
    const e = entry("F32", [1], [0, 4]);
    expect(await openError(await rawFile(`{"a":${e}, "a" : ${e}}`, 4))).toBe('duplicate tensor name "a" in header');
    expect(await openError(await rawFile(`{"a":${e},"\\u0061":${e}}`, 4))).toBe('duplicate tensor name "a" in header');
    expect(await openError(await rawFile(`{"a":{"dtype":"F32","dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, 4)))
      .toBe('duplicate key "dtype" in header entry "a"');
    expect(await openError(await rawFile(`{"__metadata__":{"k":"1","k":"2"},"a":${e}}`, 4))).toBe('duplicate key "k" in __metadata__');
    expect(findDuplicateKey('{"a":[{"x":1},{"x":2}],"b":"a\\"b","c":{"a":1}}')).toBeNull();
  });

  it("byte length not matching shape × dtype size", async () => {
    expect(await openError(await rawFile(`{"a":${entry("F32", [2, 3], [0, 20])}}`, 20)))
      .toBe('tensor "a": data_offsets [0, 20] span 20 bytes but shape [2,3] of F32 needs 24');
    expect(await openError(await rawFile(`{"a":${entry("F64", [2 ** 30, 2 ** 30, 2 ** 10], [0, 8])}}`, 8)))
      .toMatch(/shape \[1073741824,1073741824,1024\] × F64 size overflows/);
  });

  it("overlapping offsets", async () => {
    const header = `{"a":${entry("F32", [2], [0, 8])},"b":${entry("F32", [1], [4, 8])}}`;
    expect(await openError(await rawFile(header, 8))).toBe('tensor "b": data_offsets [4, 8] overlap tensor "a" (which ends at 8)');
  });

  it("offsets leaving a hole (also at the start of the buffer)", async () => {
    const header = `{"a":${entry("F32", [1], [0, 4])},"b":${entry("F32", [1], [8, 12])}}`;
    expect(await openError(await rawFile(header, 12))).toBe('tensor "b": data_offsets [8, 12] leave a hole of 4 bytes after tensor "a" (expected begin 4)');
    expect(await openError(await rawFile(`{"a":${entry("F32", [1], [4, 8])}}`, 8))).toBe('tensor "a": data_offsets [4, 8] leave a hole of 4 bytes after the header (expected begin 0)');
  });

  it("file size not matching the buffer", async () => {
    const header = `{"a":${entry("F32", [2], [0, 8])}}`;
    expect(await openError(await rawFile(header, 12)))
      .toBe("file size mismatch: the header describes 8 bytes of tensor data but the file holds 12 after the header (bytes not covered by any tensor)");
    expect(await openError(await rawFile(header, 6)))
      .toBe("file size mismatch: the header describes 8 bytes of tensor data but the file holds 6 after the header (file truncated)");
    expect(await openError(await rawFile("{}", 1))).toMatch(/^file size mismatch: the header describes 0 bytes/);
  });

  it("__metadata__ not an object of string → string", async () => {
    expect(await openError(await rawFile('{"__metadata__":{"step":5}}'))).toBe('__metadata__ value of "step" is not a string (got 5)');
    expect(await openError(await rawFile('{"__metadata__":["pt"]}'))).toBe('__metadata__ is not an object of string → string (got ["pt"])');
    expect(await openError(await rawFile('{"__metadata__":{"a":null}}'))).toBe('__metadata__ value of "a" is not a string (got null)');
  });

  it("missing file", async () => {
    expect(await openError(join(dir, "does-not-exist.safetensors"))).toMatch(/^cannot open: ENOENT/);
  });
});

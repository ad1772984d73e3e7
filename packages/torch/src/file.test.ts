import { copyFile, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type DType, type LazyTensor, Tensor, decodeTensor } from "@staged/core";
import { afterAll, beforeAll, describe, expect, test } from "vitest";
import { RefusedGlobalError, TorchFormatError } from "./errors.js";
import { TorchFile, isTorchFile, writeTorchFile } from "./file.js";
import { PersistentId, pickle } from "./pickle.js";
import { TorchTensor } from "./tensor.js";
import { f32Bytes, writeRawArchive } from "./test-archive.js";
import { PyDict, PyGlobal, PyObject, PyTuple, type PyValue, pyEqual } from "./values.js";

/** The Hugging Face Trainer checkpoints of the repository (fixtures/hf-trainer/README.md). */
const FIX = new URL("../../../fixtures/hf-trainer/", import.meta.url).pathname;
const FACTS = JSON.parse(await readFile(join(FIX, "facts.json"), "utf8")) as Record<
  string,
  {
    named_parameters: [string, number[]][];
    groups: string[][];
    optimizer_keys: { groups: Record<string, unknown>[] };
    scheduler: Record<string, unknown>;
  }
>;

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-torch-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** A JSON value of facts.json as the pickle holds it: ints as bigint, lists as lists, betas as a tuple. */
function fromFacts(v: unknown, key = ""): PyValue {
  if (v === null || typeof v === "boolean" || typeof v === "string") return v;
  if (typeof v === "number")
    return Number.isInteger(v) && !["lr", "initial_lr", "eps", "weight_decay"].includes(key) && key !== "float" ? BigInt(v) : v;
  if (Array.isArray(v)) {
    const items = v.map((x) => fromFacts(x, key === "base_lrs" || key === "_last_lr" || key === "betas" ? "float" : ""));
    return key === "betas" ? new PyTuple(items) : items;
  }
  return new PyDict(
    "dict",
    Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, fromFacts(x, k)]),
  );
}

const sameEntries = (a: PyDict, b: PyDict): boolean => {
  // facts.json lists the group keys sorted by the JSON writer's order, the pickle in torch's: compare as sets of pairs.
  if (a.size !== b.size) return false;
  return [...a.map].every(([k, v]) => b.has(k) && pyEqual(v, b.get(k)));
};

async function bytesOf(t: LazyTensor): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of t.streamBytes!()) parts.push(p.slice());
  return Buffer.concat(parts);
}

describe.each([
  ["gpt2", "gpt2/checkpoint-3", 3],
  ["llama", "llama/checkpoint-6", 6],
])("%s Trainer checkpoint", (model, folder, step) => {
  const facts = FACTS[model]!;
  const optimizerPath = join(FIX, folder, "optimizer.pt");

  test("optimizer.pt: state per parameter index, in the order of the groups' names, shapes of named_parameters()", async () => {
    const f = await TorchFile.open(optimizerPath);
    try {
      expect(f.archiveName).toBe("optimizer");
      expect(f.records).toMatchObject({ byteorder: "little", version: "3", formatVersion: "1", storageAlignment: "64" });
      expect(f.records.serializationId).toMatch(/^\d{40}$/);
      const names = facts.groups.flat();
      const shapeOf = new Map(facts.named_parameters);
      expect(names.length).toBe(facts.named_parameters.length);
      expect(f.tensors.length).toBe(3 * names.length);
      const sd = f.value as PyDict;
      expect([...sd.keys()]).toEqual(["state", "param_groups"]);
      const state = sd.get("state") as PyDict;
      expect([...state.keys()]).toEqual(names.map((_, i) => BigInt(i)));
      for (const [i, name] of names.entries()) {
        const s = state.get(BigInt(i)) as PyDict;
        expect([...s.keys()]).toEqual(["step", "exp_avg", "exp_avg_sq"]);
        const st = s.get("step") as TorchTensor;
        expect(st).toBeInstanceOf(TorchTensor);
        expect([st.dtype, st.shape, st.storage.location]).toEqual(["F32", [], "cpu"]);
        expect((await st.read()).f32[0]).toBe(step);
        for (const k of ["exp_avg", "exp_avg_sq"]) {
          const t = s.get(k) as TorchTensor;
          expect(t.dtype).toBe("F32");
          expect(t.shape).toEqual(shapeOf.get(name));
          expect(t.contiguous).toBe(true);
        }
        const sq = (await (s.get("exp_avg_sq") as TorchTensor).read()).f32;
        expect(sq.every((x) => x >= 0 && Number.isFinite(x))).toBe(true);
        expect(sq.some((x) => x > 0)).toBe(true);
      }
      const groups = sd.get("param_groups") as PyDict[];
      expect(groups.map((g) => (g.get("params") as bigint[]).map(Number))).toEqual([
        facts.groups[0]!.map((_, i) => i),
        facts.groups[1]!.map((_, i) => facts.groups[0]!.length + i),
      ]);
      expect(groups.map((g) => g.get("weight_decay"))).toEqual([0.01, 0]);
      expect(pyEqual(groups[0]!.get("betas"), new PyTuple([0.9, 0.999]))).toBe(true);
      if (step === 3) {
        // facts.json records checkpoint-3's groups.
        facts.optimizer_keys.groups.forEach((g, i) => expect(sameEntries(groups[i]!, fromFacts(g) as PyDict)).toBe(true));
      }
    } finally {
      await f.close();
    }
  });

  test("scheduler.pt: LambdaLR's state", async () => {
    const f = await TorchFile.open(join(FIX, folder, "scheduler.pt"));
    await f.close();
    const v = f.value as PyDict;
    expect(v.get("last_epoch")).toBe(BigInt(step));
    expect(v.get("_step_count")).toBe(BigInt(step + 1));
    expect(f.tensors.length).toBe(0);
    if (step === 3) expect(sameEntries(v, fromFacts(facts.scheduler) as PyDict)).toBe(true);
  });

  test.each(["optimizer.pt", "scheduler.pt"])("%s written back is the same file, byte for byte", async (name) => {
    const src = join(FIX, folder, name);
    const out = join(dir, `${folder.replace("/", "-")}-${name}`);
    const f = await TorchFile.open(src);
    try {
      const r = await writeTorchFile(out, f.value, { archiveName: f.archiveName, serializationId: f.records.serializationId });
      expect(r.storages).toBe(f.storages.size);
      expect(Buffer.compare(await readFile(out), await readFile(src))).toBe(0);
      // Read again: the same tree and the same tensor bytes.
      const g = await TorchFile.open(out);
      try {
        expect(pyEqual(g.value, f.value)).toBe(true);
        for (const [i, t] of g.tensors.entries()) expect(Buffer.compare(await t.readBytes(), await f.tensors[i]!.readBytes())).toBe(0);
      } finally {
        await g.close();
      }
    } finally {
      await f.close();
    }
  });
});

describe("files with globals outside the allow-list are refused, naming the global", () => {
  test.each([
    ["rng_state.pth", "numpy._core.multiarray._reconstruct"],
    ["training_args.bin", "transformers.training_args.TrainingArguments"],
  ])("%s", async (name, global) => {
    const path = join(FIX, "gpt2/checkpoint-3", name);
    const e = await TorchFile.open(path).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(RefusedGlobalError);
    expect((e as RefusedGlobalError).global).toBe(global);
    expect((e as Error).message).toBe(`${path}: refused global ${global} (torch.load(weights_only=True) refuses it too)`);
  });

  test("an os.system payload in a torch.save archive", async () => {
    const evil = join(dir, "evil.pt");
    const pkl = new Uint8Array([0x80, 2, ...Buffer.from("cos\nsystem\nX\u0004\u0000\u0000\u0000true\u0085R.", "latin1")]);
    await writeRawArchive(evil, "evil", [{ name: "data.pkl", bytes: pkl }]);
    await expect(TorchFile.open(evil)).rejects.toThrow(`${evil}: refused global os.system (torch.load(weights_only=True) refuses it too)`);
  });
});

describe("writing tensors", () => {
  const DTYPES: [DType, ArrayLike<number> | bigint[]][] = [
    ["F64", [1.5, -2, 1e300]],
    ["F32", [0.1, -0, 3]],
    ["F16", [0.5, 65504, -1]],
    ["BF16", [1, 2.5, -(2 ** 100)]],
    ["I64", [1n, -(2n ** 62n), 7n]],
    ["I32", [1, -5, 2 ** 31 - 1]],
    ["I16", [1, -5, 300]],
    ["I8", [1, -5, 127]],
    ["U8", [0, 255, 7]],
    ["BOOL", [1, 0, 1]],
  ];
  test("every dtype torch.save writes with _rebuild_tensor_v2, from core tensors; read back equal", async () => {
    const value: Record<string, Tensor> = {};
    for (const [dtype, values] of DTYPES) {
      const t = Tensor.zeros(dtype, [3]);
      (t.data as unknown as { set(v: ArrayLike<number> | bigint[]): void }).set(values);
      value[dtype] = t;
    }
    const out = join(dir, "dtypes.pt");
    await writeTorchFile(out, { ...value, scalar: Tensor.fromArray([], [6]), empty: Tensor.zeros("F32", [0, 4]) });
    const f = await TorchFile.open(out);
    try {
      expect(f.archiveName).toBe("dtypes");
      const d = f.value as PyDict;
      for (const [dtype] of DTYPES) {
        const t = d.get(dtype) as TorchTensor;
        expect([t.dtype, t.shape, t.stride]).toEqual([dtype, [3], [1]]);
        expect(Array.from((await t.read()).data as ArrayLike<number>)).toEqual(Array.from(value[dtype]!.data as ArrayLike<number>));
      }
      expect((await (d.get("scalar") as TorchTensor).read()).f32[0]).toBe(6);
      expect((d.get("empty") as TorchTensor).shape).toEqual([0, 4]);
      expect([...f.storages.values()].map((s) => s.torchDtype)).toEqual([
        "float64",
        "float32",
        "float16",
        "bfloat16",
        "int64",
        "int32",
        "int16",
        "int8",
        "uint8",
        "bool",
        "float32",
        "float32",
      ]);
    } finally {
      await f.close();
    }
  });

  test("LazyTensors stream their bytes; one object twice is one tensor (a memo reference)", async () => {
    const n = 2_500_000; // 10 MB: three pieces
    const data = new Float32Array(n).map((_, i) => i % 1000);
    let streamed = 0;
    const lazy: LazyTensor = {
      dtype: "F32",
      shape: [n],
      read: async () => new Tensor("F32", [n], data),
      async *streamBytes(buffer) {
        const bytes = new Uint8Array(data.buffer);
        for (let at = 0; at < bytes.length; at += 1 << 20) {
          const piece = bytes.subarray(at, Math.min(bytes.length, at + (1 << 20)));
          const b = buffer ? buffer(piece.length) : new Uint8Array(piece.length);
          b.set(piece);
          streamed += piece.length;
          yield b;
        }
      },
    };
    const out = join(dir, "lazy.pt");
    const r = await writeTorchFile(out, [lazy, lazy]);
    expect(r.storages).toBe(1);
    expect(streamed).toBe(4 * n);
    const f = await TorchFile.open(out);
    try {
      const [a, b] = f.value as TorchTensor[];
      expect(a).toBe(b);
      const pieces: number[] = [];
      for await (const p of a!.streamBytes()) pieces.push(p.length);
      expect(pieces).toEqual([4 << 20, 4 << 20, 4 * n - (8 << 20)]);
      expect(Buffer.compare(await bytesOf(a!), Buffer.from(data.buffer))).toBe(0);
    } finally {
      await f.close();
    }
  });

  test("ZIP64 fields on every entry read back the same", async () => {
    const out = join(dir, "zip64.pt");
    await writeTorchFile(out, { w: Tensor.fromArray([2], [1, 2]) }, { forceZip64: true, location: "cuda:0" });
    const f = await TorchFile.open(out);
    expect([...f.storages.values()].map((s) => s.location)).toEqual(["cuda:0"]);
    expect(Array.from((await ((f.value as PyDict).get("w") as TorchTensor).read()).f32)).toEqual([1, 2]);
    await f.close();
  });

  test("refused: a dtype torch.save writes only with _rebuild_tensor_v3, bytes that do not match, naming where", async () => {
    const out = join(dir, "bad.pt");
    await writeFile(out, "old");
    await expect(writeTorchFile(out, { a: [Tensor.zeros("U16", [2])] })).rejects.toThrow(`${out}: value.a[0]: a U16 tensor`);
    const short: LazyTensor = { dtype: "F32", shape: [4], read: async () => Tensor.zeros("F32", [4]), readBytes: async () => new Uint8Array(12) };
    const e = await writeTorchFile(out, { state: { x: short } }).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TorchFormatError);
    expect((e as TorchFormatError).code).toBe("bad-value");
    expect((e as Error).message).toBe(`${out}: value.state.x: 12 bytes given, 16 declared`);
    // Nothing replaced, nothing left behind.
    expect(await readFile(out, "utf8")).toBe("old");
    expect((await readdir(dir)).filter((n) => n.includes(".tmp-"))).toEqual([]);
  });
});

describe("views, sharing and damage", () => {
  // One storage of 12 floats, viewed as a [2, 3] block at offset 2 and as its transpose (non-contiguous).
  const storageId = (key: string, numel: number): PyValue =>
    new PyTuple(["storage", new PyGlobal("torch", "FloatStorage"), key, "cpu", BigInt(numel)]);
  async function viewsArchive(path: string, extra: PyValue[] = []): Promise<void> {
    const rebuild = new PyGlobal("torch._utils", "_rebuild_tensor_v2");
    const view = (offset: number, shape: number[], stride: number[]): PyObject =>
      new PyObject(
        rebuild,
        new PyTuple([
          new PersistentId(storageId("0", 12)) as never,
          BigInt(offset),
          new PyTuple(shape.map(BigInt)),
          new PyTuple(stride.map(BigInt)),
          false,
          new PyDict("OrderedDict"),
        ]),
      );
    const pkl = pickle([view(2, [2, 3], [3, 1]), view(0, [3, 2], [1, 3]), ...extra], path, {});
    await writeRawArchive(path, "views", [
      { name: "data.pkl", bytes: pkl },
      { name: "data/0", bytes: f32Bytes(Array.from({ length: 12 }, (_, i) => i)) },
    ]);
  }

  test("offsets and strides are kept; a non-contiguous view says so and reads nothing; written back, one storage", async () => {
    const path = join(dir, "views.pt");
    await viewsArchive(path);
    const f = await TorchFile.open(path);
    const [a, b] = f.value as TorchTensor[];
    expect(a!.storage).toBe(b!.storage);
    expect(Array.from((await a!.read()).f32)).toEqual([2, 3, 4, 5, 6, 7]);
    expect(b!.contiguous).toBe(false);
    await expect(b!.readBytes()).rejects.toThrow(
      `${path}: tensor of shape [3, 2] in views/data/0 is not contiguous (strides [1, 3]); its bytes are not read`,
    );
    const out = join(dir, "views-copy.pt");
    expect((await writeTorchFile(out, f.value)).storages).toBe(1);
    await f.close();
    const g = await TorchFile.open(out);
    const [c, d] = g.value as TorchTensor[];
    expect([c!.storageOffset, c!.stride, d!.stride, c!.storage === d!.storage]).toEqual([2, [3, 1], [1, 3], true]);
    expect(Array.from((await c!.read()).f32)).toEqual([2, 3, 4, 5, 6, 7]);
    await g.close();
  });

  test("a view past its storage is malformed", async () => {
    const path = join(dir, "past.pt");
    const t = new PyObject(
      new PyGlobal("torch._utils", "_rebuild_tensor_v2"),
      new PyTuple([new PersistentId(storageId("0", 4)) as never, 1n, new PyTuple([4n]), new PyTuple([1n]), false, new PyDict("OrderedDict")]),
    );
    await writeRawArchive(path, "past", [
      { name: "data.pkl", bytes: pickle(t, path) },
      { name: "data/0", bytes: f32Bytes([1, 2, 3, 4]) },
    ]);
    await expect(TorchFile.open(path)).rejects.toThrow("it views elements up to 4 of F32, its storage holds 4");
  });

  test("a damaged storage fails its CRC-32 when read or copied, and the copy is not made", async () => {
    const src = join(FIX, "gpt2/checkpoint-3", "optimizer.pt");
    const path = join(dir, "damaged.pt");
    await copyFile(src, path);
    const f0 = await TorchFile.open(path);
    const victim = f0.storages.get("1")!;
    await f0.close();
    const bytes = await readFile(path);
    bytes[victim.source.dataOffset + 100]! ^= 0x40;
    await writeFile(path, bytes);
    const f = await TorchFile.open(path);
    const t = f.tensors.find((x) => x.storage.key === "1")!;
    const e = await t.readBytes().catch((x: unknown) => x);
    expect((e as TorchFormatError).code).toBe("crc-mismatch");
    expect((e as Error).message).toBe(`${path}: optimizer/data/1 does not match its CRC-32 (the file is damaged)`);
    const out = join(dir, "damaged-copy.pt");
    await expect(writeTorchFile(out, f.value)).rejects.toThrow("does not match its CRC-32");
    await expect(readFile(out)).rejects.toThrow();
    await f.close();
  });

  test("written over the file it is read from: the new file replaces it whole", async () => {
    const path = join(dir, "in-place.pt");
    await copyFile(join(FIX, "gpt2/checkpoint-3", "optimizer.pt"), path);
    const f = await TorchFile.open(path);
    const groups = (f.value as PyDict).get("param_groups") as PyDict[];
    groups[1]!.set("lr", 0.5);
    await writeTorchFile(path, f.value);
    await f.close();
    const g = await TorchFile.open(path);
    expect(((g.value as PyDict).get("param_groups") as PyDict[])[1]!.get("lr")).toBe(0.5);
    const src = await TorchFile.open(join(FIX, "gpt2/checkpoint-3", "optimizer.pt"));
    for (const [i, t] of g.tensors.entries()) expect(Buffer.compare(await t.readBytes(), await src.tensors[i]!.readBytes())).toBe(0);
    await g.close();
    await src.close();
    expect(await isTorchFile(path)).toBe(true);
    expect(await isTorchFile(join(FIX, "facts.json"))).toBe(false);
    expect(await isTorchFile(dir)).toBe(false);
  });

  test("a closed file reads nothing", async () => {
    const f = await TorchFile.open(join(FIX, "gpt2/checkpoint-3", "optimizer.pt"));
    await f.close();
    await expect(f.tensors[1]!.readBytes()).rejects.toThrow("cannot read optimizer/data/1: the file is closed");
  });
});

describe("broken archives are typed errors naming the file", () => {
  const broken = async (name: string, bytes: Uint8Array | string): Promise<TorchFormatError> => {
    const path = join(dir, name);
    await writeFile(path, bytes);
    const e = await TorchFile.open(path).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(TorchFormatError);
    expect((e as Error).message.startsWith(`${path}: `)).toBe(true);
    expect((e as Error).message).not.toContain("\n");
    return e as TorchFormatError;
  };

  test("not a zip, cut short, empty", async () => {
    expect((await broken("text.pt", "hello, this is not a zip file at all")).code).toBe("zip");
    const whole = await readFile(join(FIX, "gpt2/checkpoint-3", "scheduler.pt"));
    expect((await broken("cut.pt", whole.subarray(0, 900))).message).toContain("no end-of-central-directory record");
    expect((await broken("short.pt", "PK")).code).toBe("zip");
    const e = await TorchFile.open(join(dir, "missing.pt")).catch((x: unknown) => x);
    expect((e as TorchFormatError).code).toBe("io");
    expect((e as Error).message).toContain("no such file");
  });

  test("a central directory pointing nowhere", async () => {
    const whole = new Uint8Array(await readFile(join(FIX, "gpt2/checkpoint-3", "scheduler.pt")));
    // The ZIP64 end record's central-directory offset (its last 8 bytes) made huge.
    const z64 = Buffer.from(whole).lastIndexOf(Buffer.from([0x50, 0x4b, 0x06, 0x06]));
    new DataView(whole.buffer).setBigUint64(z64 + 48, 2n ** 40n, true);
    expect((await broken("far.pt", whole)).message).toContain("runs past its end record");
  });

  test("no data.pkl, a missing storage, a storage of the wrong size", async () => {
    const p1 = join(dir, "nopkl.pt");
    await writeRawArchive(p1, "a", [{ name: "version", bytes: new Uint8Array([0x33]) }]);
    await expect(TorchFile.open(p1)).rejects.toThrow(`${p1}: no a/data.pkl in the archive`);
    const pid = (numel: bigint) => new PyTuple(["storage", new PyGlobal("torch", "FloatStorage"), "0", "cpu", numel]);
    const p2 = join(dir, "nostorage.pt");
    const pkl = (numel: bigint): Uint8Array => pickle([new PersistentId(pid(numel)) as never], p2);
    await writeRawArchive(p2, "a", [{ name: "data.pkl", bytes: pkl(2n) }]);
    await expect(TorchFile.open(p2)).rejects.toThrow("no a/data/0 in the archive (storage 0)");
    const p3 = join(dir, "wrongsize.pt");
    await writeRawArchive(p3, "a", [
      { name: "data.pkl", bytes: pkl(3n) },
      { name: "data/0", bytes: f32Bytes([1, 2]) },
    ]);
    await expect(TorchFile.open(p3)).rejects.toThrow("a/data/0 holds 8 bytes, its 3 float32 values take 12");
    const p4 = join(dir, "complex.pt");
    const cpid = new PyTuple(["storage", new PyGlobal("torch", "ComplexFloatStorage"), "0", "cpu", 1n]);
    await writeRawArchive(p4, "a", [
      { name: "data.pkl", bytes: pickle([new PersistentId(cpid) as never], p4) },
      { name: "data/0", bytes: f32Bytes([1, 2]) },
    ]);
    const e = await TorchFile.open(p4).catch((x: unknown) => x);
    expect((e as TorchFormatError).code).toBe("unsupported");
    expect((e as Error).message).toContain("storage 0 holds complex64");
  });

  test("_rebuild_tensor_v3 with a dtype global reads (torch 2.x's uint16 and kin)", async () => {
    const p = join(dir, "v3.pt");
    const pid = new PyTuple(["storage", new PyGlobal("torch.storage", "UntypedStorage"), "0", "cpu", 4n]);
    const t = new PyObject(
      new PyGlobal("torch._utils", "_rebuild_tensor_v3"),
      new PyTuple([
        new PersistentId(pid) as never,
        0n,
        new PyTuple([2n]),
        new PyTuple([1n]),
        false,
        new PyDict("OrderedDict"),
        new PyGlobal("torch", "uint16"),
      ]),
    );
    await writeRawArchive(p, "a", [
      { name: "data.pkl", bytes: pickle(t, p) },
      { name: "data/0", bytes: new Uint8Array([1, 0, 0xff, 0xff]) },
    ]);
    const f = await TorchFile.open(p);
    const v = f.value as TorchTensor;
    expect(v.dtype).toBe("U16");
    expect(Array.from((await v.read()).data as Uint16Array)).toEqual([1, 65535]);
    await f.close();
    expect(decodeTensor("U16", [2], new Uint8Array([1, 0, 0xff, 0xff])).data).toEqual(new Uint16Array([1, 65535]));
  });
});

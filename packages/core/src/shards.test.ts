import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { SafetensorsError, type SafetensorsErrorCode } from "./safetensors/errors.js";
import { SafetensorsFile } from "./safetensors/reader.js";
import { writeSafetensors, type TensorEntry } from "./safetensors/writer.js";
import { closeCheckpoint, indexJson, openCheckpoint, planShards, shardName, writeCheckpoint } from "./shards.js";
import { Tensor } from "./tensor.js";

let root = "";
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-shards-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

let counter = 0;
async function freshDir(): Promise<string> {
  const d = join(root, `d${counter++}`);
  await mkdir(d);
  return d;
}

/** 5 F32 tensors of 40, 40, 24, 16, 40 bytes (160 in all). */
function sample(): TensorEntry[] {
  const t = (n: number, v: number): Tensor =>
    Tensor.fromArray(
      [n],
      Array.from({ length: n }, (_, i) => v + i),
    );
  return [
    { name: "wte.weight", tensor: t(10, 100) },
    { name: "h.0.attn.weight", tensor: t(10, 200) },
    { name: "h.0.ln.bias", tensor: t(6, 300) },
    { name: "h.1.ln.bias", tensor: t(4, 400) },
    { name: "ln_f.weight", tensor: t(10, 500) },
  ];
}

describe("HF shard planning", () => {
  it("greedy in entry order; an oversize tensor gets its own shard ahead of the one being filled", () => {
    expect(planShards([40, 40, 24, 16, 40], 100)).toEqual([
      [0, 1],
      [2, 3, 4],
    ]);
    expect(planShards([40, 40, 24, 16, 40], 80)).toEqual([
      [0, 1],
      [2, 3, 4],
    ]);
    expect(planShards([40, 40, 24, 16, 40], 64)).toEqual([[0], [1, 2], [3, 4]]);
    expect(planShards([10, 500, 10, 10], 25)).toEqual([[1], [0, 2], [3]]);
    expect(planShards([10, 10], 100)).toEqual([[0, 1]]);
    expect(planShards([], 100)).toEqual([]);
  });

  it("names shards with 5 digits", () => {
    expect(shardName("model", 1, 3)).toBe("model-00001-of-00003.safetensors");
    expect(shardName("optimizer", 12, 123456)).toBe("optimizer-00012-of-123456.safetensors");
  });

  it("writes the index as json.dumps(indent=2, sort_keys=True) does", () => {
    expect(
      indexJson(
        12,
        new Map([
          ["b", "f2"],
          ["a.é", "f1"],
          ["10", "f1"],
          ["9", "f2"],
        ]),
      ),
    ).toBe(
      '{\n  "metadata": {\n    "total_size": 12\n  },\n  "weight_map": {\n' +
        '    "10": "f1",\n    "9": "f2",\n    "a.\\u00e9": "f1",\n    "b": "f2"\n  }\n}\n',
    );
  });
});

describe("sharded write and read", () => {
  it("round trips through 3 shards with HF's names, index layout and total_size", async () => {
    const dir = await freshDir();
    const res = await writeCheckpoint(dir, "model", sample(), { maxShardBytes: 64, metadata: { format: "pt" } });
    const files = ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"];
    expect(res.files).toEqual(files);
    expect(res.totalSize).toBe(160);
    expect((await readdir(dir)).sort()).toEqual([...files, "model.safetensors.index.json"].sort());

    const index = await readFile(join(dir, "model.safetensors.index.json"), "utf8");
    expect(index).toBe(`{
  "metadata": {
    "total_size": 160
  },
  "weight_map": {
    "h.0.attn.weight": "model-00002-of-00003.safetensors",
    "h.0.ln.bias": "model-00002-of-00003.safetensors",
    "h.1.ln.bias": "model-00003-of-00003.safetensors",
    "ln_f.weight": "model-00003-of-00003.safetensors",
    "wte.weight": "model-00001-of-00003.safetensors"
  }
}
`);
    let written = 0;
    for (const f of files) {
      const s = await SafetensorsFile.open(join(dir, f));
      expect(s.metadata).toEqual({ format: "pt" });
      written += s.size;
      await s.close();
    }
    expect(res.totalBytes).toBe(written);

    const ck = await openCheckpoint(dir, "model");
    expect(ck).not.toBeNull();
    expect(ck!.files).toEqual(files);
    expect(ck!.index).toBe(join(dir, "model.safetensors.index.json"));
    expect(ck!.metadata).toEqual({ format: "pt" });
    expect([...ck!.tensors.keys()]).toEqual(sample().map((e) => e.name));
    expect(ck!.tensors.get("h.1.ln.bias")!.file).toBe(files[2]);
    for (const { name, tensor } of sample()) {
      const t = ck!.tensors.get(name)!;
      expect(t.dtype).toBe("F32");
      expect(t.shape).toEqual(tensor.shape);
      expect(Array.from((await t.lazy.read()).f32)).toEqual(Array.from((tensor as Tensor).f32));
    }
    await closeCheckpoint(ck!);
    expect(ck!.shards.every((s) => s.closed)).toBe(true);
  });

  it("writes a single file when everything fits, and replaces an older layout", async () => {
    const dir = await freshDir();
    await writeCheckpoint(dir, "model", sample(), { maxShardBytes: 64 });
    const res = await writeCheckpoint(dir, "model", sample());
    expect(res.files).toEqual(["model.safetensors"]);
    expect(await readdir(dir)).toEqual(["model.safetensors"]);
    const ck = (await openCheckpoint(dir, "model"))!;
    expect(ck.files).toEqual(["model.safetensors"]);
    expect(ck.index).toBeNull();
    expect(ck.tensors.size).toBe(5);
    await closeCheckpoint(ck);

    await writeCheckpoint(dir, "model", sample(), { maxShardBytes: 100 });
    expect((await readdir(dir)).sort()).toEqual([
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
    ]);
    await writeFile(join(dir, "other.safetensors"), "untouched");
    await writeCheckpoint(dir, "optimizer", sample().slice(0, 1));
    expect((await readdir(dir)).sort()).toEqual([
      "model-00001-of-00002.safetensors",
      "model-00002-of-00002.safetensors",
      "model.safetensors.index.json",
      "optimizer.safetensors",
      "other.safetensors",
    ]);
  });

  it("returns null when neither the index nor the single file exists", async () => {
    const dir = await freshDir();
    expect(await openCheckpoint(dir, "model")).toBeNull();
    expect(await openCheckpoint(join(dir, "missing"), "model")).toBeNull();
  });

  it("rejects duplicate names across shards before writing", async () => {
    const dir = await freshDir();
    const e = sample();
    await expect(writeCheckpoint(dir, "model", [...e, e[0]!], { maxShardBytes: 64 })).rejects.toThrow(/duplicate tensor name "wte.weight"/);
    await expect(writeCheckpoint(dir, "model", [...e, e[0]!], { maxShardBytes: 64 })).rejects.toMatchObject({ code: "DuplicateKey" });
    expect(await readdir(dir)).toEqual([]);
  });
});

describe("index validation", () => {
  async function sharded(): Promise<{ dir: string; index: string; json: { metadata: { total_size: number }; weight_map: Record<string, string> } }> {
    const dir = await freshDir();
    await writeCheckpoint(dir, "model", sample(), { maxShardBytes: 64 });
    const index = join(dir, "model.safetensors.index.json");
    return { dir, index, json: JSON.parse(await readFile(index, "utf8")) };
  }

  /** Open a checkpoint that must be refused with `code`: the error's message. */
  async function openError(dir: string, code: SafetensorsErrorCode = "InvalidIndex"): Promise<string> {
    try {
      const ck = await openCheckpoint(dir, "model");
      if (ck) await closeCheckpoint(ck);
    } catch (e) {
      expect(e).toBeInstanceOf(SafetensorsError);
      expect((e as SafetensorsError).code, (e as Error).message).toBe(code);
      return (e as Error).message;
    }
    throw new Error("opened without error");
  }

  it("malformed index JSON", async () => {
    const { dir, index } = await sharded();
    await writeFile(index, '{"weight_map": {');
    expect(await openError(dir)).toMatch(new RegExp(`^${index}: index is not valid JSON: `));
    await writeFile(index, "[]");
    expect(await openError(dir)).toBe(`${index}: index is not a JSON object`);
    await writeFile(index, '{"metadata": {}}');
    expect(await openError(dir)).toBe(`${index}: "weight_map" must be an object of tensor name → shard file (got undefined)`);
    await writeFile(index, '{"weight_map": {"a": 3}}');
    expect(await openError(dir)).toBe(`${index}: weight_map["a"] is not a file name (got 3)`);
    await writeFile(index, '{"weight_map": {"a": "../x.safetensors"}}');
    expect(await openError(dir)).toBe(`${index}: weight_map["a"] = "../x.safetensors" points outside the checkpoint directory`);
    await writeFile(index, '{"weight_map": {"a": "f", "a": "g"}}');
    expect(await openError(dir, "DuplicateKey")).toBe(`${index}: duplicate key "a" in "weight_map"`);
    await writeFile(index, '{"metadata": {"total_size": "160"}, "weight_map": {"a": "f"}}');
    expect(await openError(dir)).toBe(`${index}: "metadata.total_size" is not a non-negative integer (got "160")`);
  });

  it("missing shard file", async () => {
    const { dir, index } = await sharded();
    await rm(join(dir, "model-00002-of-00003.safetensors"));
    expect(await openError(dir)).toBe(`${index}: shard "model-00002-of-00003.safetensors" listed in weight_map does not exist`);
  });

  it("tensor listed but missing from its shard", async () => {
    const { dir, index, json } = await sharded();
    json.weight_map["extra.weight"] = "model-00001-of-00003.safetensors";
    await writeFile(index, JSON.stringify(json));
    expect(await openError(dir)).toBe(
      `${index}: tensor "extra.weight" is mapped to "model-00001-of-00003.safetensors" but that shard does not contain it`,
    );
  });

  it("tensor mapped to the wrong shard, not listed, or in two shards", async () => {
    const { dir, index, json } = await sharded();
    const original = JSON.stringify(json);
    json.weight_map["h.0.attn.weight"] = "model-00003-of-00003.safetensors";
    await writeFile(index, JSON.stringify(json));
    expect(await openError(dir)).toBe(
      `${index}: tensor "h.0.attn.weight" is mapped to "model-00003-of-00003.safetensors" but is in shard "model-00002-of-00003.safetensors"`,
    );

    const unlisted = JSON.parse(original);
    delete unlisted.weight_map["ln_f.weight"];
    unlisted.metadata.total_size = 120;
    await writeFile(index, JSON.stringify(unlisted));
    expect(await openError(dir)).toBe(`${index}: tensor "ln_f.weight" in shard "model-00003-of-00003.safetensors" is not listed in weight_map`);

    await writeFile(index, original);
    await writeSafetensors(join(dir, "model-00003-of-00003.safetensors"), [
      { name: "h.1.ln.bias", tensor: Tensor.fromArray([4], [0, 0, 0, 0]) },
      { name: "ln_f.weight", tensor: Tensor.fromArray([10], new Array(10).fill(0)) },
      { name: "wte.weight", tensor: Tensor.fromArray([10], new Array(10).fill(0)) },
    ]);
    expect(await openError(dir, "DuplicateKey")).toBe(
      `${index}: tensor "wte.weight" is in two shards: "model-00001-of-00003.safetensors" and "model-00003-of-00003.safetensors"`,
    );
  });

  it("total_size not matching the tensors", async () => {
    const { dir, index, json } = await sharded();
    json.metadata.total_size = 161;
    await writeFile(index, JSON.stringify(json));
    expect(await openError(dir)).toBe(`${index}: metadata.total_size is 161 but the shards hold 160 bytes of tensors`);
    delete (json as { metadata?: unknown }).metadata;
    await writeFile(index, JSON.stringify(json));
    const ck = (await openCheckpoint(dir, "model"))!;
    expect(ck.tensors.size).toBe(5);
    await closeCheckpoint(ck);
  });

  it("a malformed shard is reported with the shard's path", async () => {
    const { dir } = await sharded();
    const shard = join(dir, "model-00003-of-00003.safetensors");
    await writeFile(shard, Uint8Array.of(1, 2));
    expect(await openError(dir, "HeaderTooSmall")).toBe(`${shard}: file is 2 bytes, too short for the 8-byte header length`);
  });
});

// Writes the files scripts/check-with-torch.py loads with real torch (not part of the test suite: it needs torch).
// Usage: pnpm run build && node scripts/write-check-files.mjs <out-dir>
import { mkdir, open, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Tensor } from "@staged/core";
import { PyDict, PyGlobal, PyObject, PyTuple, PersistentId, TorchFile, pickle, writeTorchFile } from "../dist/index.js";
import { ZipWriter } from "../dist/zip.js";

const out = process.argv[2];
if (!out) {
  console.error("usage: node scripts/write-check-files.mjs <out-dir>");
  process.exit(2);
}
await mkdir(out, { recursive: true });
const fixtures = new URL("../../../fixtures/hf-trainer/", import.meta.url).pathname;
const manifest = [];

// 1-2. The Trainer fixtures read and written back (as they are, and with ZIP64 fields on every entry).
for (const [folder, name] of [
  ["gpt2/checkpoint-3", "optimizer.pt"],
  ["gpt2/checkpoint-3", "scheduler.pt"],
  ["llama/checkpoint-6", "optimizer.pt"],
]) {
  const src = join(fixtures, folder, name);
  const f = await TorchFile.open(src);
  for (const zip64 of [false, true]) {
    const file = `${folder.replace("/", "-")}-${zip64 ? "zip64-" : ""}${name}`;
    await writeTorchFile(join(out, file), f.value, { archiveName: f.archiveName, serializationId: f.records.serializationId, forceZip64: zip64 });
    manifest.push({ file, same_as: src, floats: true });
  }
  await f.close();
}

// 3. Tensors of every dtype the writer writes, in containers without floats (loadable by torch 1.13's weights_only).
const dtypes = {
  F64: [1.5, -2, 1e300],
  F32: [0.1, -0, 3],
  F16: [0.5, 65504, -1],
  BF16: [1, 2.5, -(2 ** 100)],
  I64: [1n, -(2n ** 62n), 7n],
  I32: [1, -5, 2 ** 31 - 1],
  I16: [1, -5, 300],
  I8: [1, -5, 127],
  U8: [0, 255, 7],
  BOOL: [1, 0, 1],
};
const tensors = {};
const expect = {};
for (const [dtype, values] of Object.entries(dtypes)) {
  const t = Tensor.zeros(dtype, [3]);
  t.data.set(values);
  tensors[dtype] = t;
  expect[dtype] = { dtype, shape: [3], values: values.map((v) => (typeof v === "bigint" ? v.toString() : dtype === "BOOL" ? Boolean(v) : v)) };
}
const matrix = Tensor.fromArray([2, 3], [1, 2, 3, 4, 5, 6]);
await writeTorchFile(join(out, "tensors.pt"), {
  ...tensors,
  scalar: Tensor.fromArray([], [6]),
  empty: Tensor.zeros("F32", [0, 4]),
  matrix,
  meta: [1n, -(2n ** 70n), "text", true, null, new PyTuple([1n, "a"])],
});
manifest.push({
  file: "tensors.pt",
  floats: false,
  tensors: {
    ...expect,
    scalar: { dtype: "F32", shape: [], values: [6] },
    empty: { dtype: "F32", shape: [0, 4], values: [] },
    matrix: { dtype: "F32", shape: [2, 3], values: [1, 2, 3, 4, 5, 6] },
  },
  meta: [1, "-1180591620717411303424", "text", true, null, [1, "a"]],
});

// 4. A float among the values: torch 1.13's weights_only unpickler has no BINFLOAT (torch 2.x's has).
await writeTorchFile(join(out, "floats.pt"), { lr: 0.003, betas: new PyTuple([0.9, 0.999]), w: Tensor.fromArray([2], [1, 2]) });
manifest.push({
  file: "floats.pt",
  floats: true,
  tensors: { w: { dtype: "F32", shape: [2], values: [1, 2] } },
  values: { lr: 0.003, betas: [0.9, 0.999] },
});

// 5. Bytes (protocol 2 writes them as _codecs.encode, allowed from torch 2.x's list on) and an OrderedDict.
await writeTorchFile(join(out, "bytes.pt"), { b: new Uint8Array([0, 255, 128]), od: new PyDict("OrderedDict", [["k", 1n]]) });
manifest.push({ file: "bytes.pt", floats: false, values: { b: [0, 255, 128] } });

// 6. Two views of one storage: a [2, 3] block at offset 2 and a transposed (non-contiguous) [3, 2] view; written back.
const views = join(out, "views-src.pt");
const rebuild = new PyGlobal("torch._utils", "_rebuild_tensor_v2");
const sid = new PyTuple(["storage", new PyGlobal("torch", "FloatStorage"), "0", "cpu", 12n]);
const view = (offset, shape, stride) =>
  new PyObject(
    rebuild,
    new PyTuple([
      new PersistentId(sid),
      BigInt(offset),
      new PyTuple(shape.map(BigInt)),
      new PyTuple(stride.map(BigInt)),
      false,
      new PyDict("OrderedDict"),
    ]),
  );
await rawArchive(views, "views", [
  ["data.pkl", pickle({ a: view(2, [2, 3], [3, 1]), b: view(0, [3, 2], [1, 3]) }, views)],
  ["data/0", new Uint8Array(new Float32Array(Array.from({ length: 12 }, (_, i) => i)).buffer)],
]);
const vf = await TorchFile.open(views);
await writeTorchFile(join(out, "views.pt"), vf.value);
await vf.close();
manifest.push({ file: "views.pt", floats: false, views: true });

// 7. A dangerous global: os.system("true") in a torch.save archive. Loaded with weights_only=True only.
const evil = join(out, "evil.pt");
await rawArchive(evil, "evil", [
  ["data.pkl", new Uint8Array([0x80, 2, ...Buffer.from("cos\nsystem\nX\u0004\u0000\u0000\u0000true\u0085R.", "latin1")])],
  ["byteorder", Buffer.from("little")],
  ["version", Buffer.from("3\n")],
]);
manifest.push({ file: "evil.pt", evil: true });

await writeFile(join(out, "manifest.json"), JSON.stringify(manifest, null, 1));
console.log(`wrote ${manifest.length} files to ${out}`);

async function rawArchive(path, archive, records) {
  const fh = await open(path, "w");
  const zip = new ZipWriter(fh, path);
  for (const [name, bytes] of records) await zip.add(`${archive}/${name}`, bytes.length, [bytes]);
  await zip.finish();
  await fh.close();
}

import { mkdtemp, readFile, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeF16 } from "@staged/core";
import { GraphBuilder } from "./builder.js";
import { decodeOnnxModel, EXTERNAL_MIN_BYTES, IR_VERSION, ONNX_TYPE, OPSET, writeOnnxModel } from "./onnx.js";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-onnx-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Model {
  irVersion: number;
  producerName: string;
  producerVersion?: string;
  opsetImport: { domain?: string; version: number }[];
  metadataProps?: { key: string; value: string }[];
  graph: {
    input: { name: string; type: { tensorType: { elemType: number; shape: { dim: { dimValue?: number; dimParam?: string }[] } } } }[];
    initializer: { name: string; dataType: number; dataLocation?: number; rawData?: Uint8Array }[];
  };
}

/** y = x·W + 0.5 for x [batch, 4] float16: W (4 × 512, float16, 4 KiB) is read only when the model is written. */
function model() {
  const b = new GraphBuilder();
  const x = b.input("x", "float16", ["batch", 4]);
  const w = Float32Array.from({ length: 4 * 512 }, (_, i) => (i % 5) - 2);
  let reads = 0;
  const W = b.weight("W", "float16", [4, 512], async () => {
    reads++;
    const bytes = new Uint8Array(w.length * 2);
    encodeF16(w, bytes);
    return bytes;
  });
  b.output(b.add(b.gemm(x, W), 0.5), "y");
  return { b, w, reads: () => reads };
}

describe("the ONNX writer", () => {
  it("serialize() needs every value in memory: a weight read at write time is refused", () => {
    expect(() => model().b.serialize()).toThrow("ONNX graph: W is read when the model is written: write it with writeOnnxModel");
  });

  it("writes inline or as external data, the weights read once each, symbolic axes as dim_param; both files run alike", async () => {
    const outputs: Float32Array[] = [];
    for (const external of [false, true]) {
      const { b, w, reads } = model();
      const path = join(root, external ? "external.onnx" : "inline.onnx");
      const progress: number[] = [];
      const r = await writeOnnxModel(path, b, {
        producer: { name: "test", version: "1" },
        metadata: { a: "b" },
        ...(external ? { externalData: { path: `${path}_data`, location: "external.onnx_data" } } : {}),
        onTensor: (done, total, bytes, totalBytes) => {
          progress.push(done);
          expect(bytes).toBeLessThanOrEqual(totalBytes);
          expect(done).toBeLessThanOrEqual(total);
        },
      });
      expect(reads()).toBe(1);
      expect(progress.at(-1)).toBe(b.live().initializers.length);
      const m = decodeOnnxModel(await readFile(path)) as unknown as Model;
      expect([m.irVersion, m.producerName, m.producerVersion]).toEqual([IR_VERSION, "test", "1"]);
      expect(m.opsetImport).toEqual([{ domain: "", version: OPSET }]);
      expect(m.metadataProps).toEqual([{ key: "a", value: "b" }]);
      expect(m.graph.input[0]!.type.tensorType).toEqual({ elemType: ONNX_TYPE.float16, shape: { dim: [{ dimParam: "batch" }, { dimValue: 4 }] } });
      const W = m.graph.initializer.find((t) => t.name === "W")!;
      expect(W.dataType).toBe(ONNX_TYPE.float16);
      expect(W.dataLocation === 1).toBe(external);
      if (external) {
        expect(4 * 512 * 2).toBeGreaterThanOrEqual(EXTERNAL_MIN_BYTES);
        expect((await stat(`${path}_data`)).size).toBe(4 * 512 * 2);
        expect(r.bytes).toBe((await stat(path)).size + 4 * 512 * 2);
      } else {
        expect(r.bytes).toBe((await stat(path)).size);
      }
      const session = await ort.InferenceSession.create(path);
      const x = new Uint16Array(3 * 4);
      const one = new Uint8Array(2);
      encodeF16(Float32Array.of(1), one);
      x.fill(one[0]! | (one[1]! << 8));
      const y = (await session.run({ x: new ort.Tensor("float16", x, [3, 4]) })).y!;
      expect(y.dims).toEqual([3, 512]);
      // Each column: the sum of W's column (4 rows) + 0.5.
      const col = (j: number) => w[j]! + w[512 + j]! + w[1024 + j]! + w[1536 + j]! + 0.5;
      const values = Float32Array.from(y.data as Uint16Array, (h) => {
        const s = h & 0x8000 ? -1 : 1,
          e = (h >> 10) & 0x1f,
          f = h & 0x3ff;
        return s * (e === 0 ? (f / 1024) * 2 ** -14 : (1 + f / 1024) * 2 ** (e - 15));
      });
      for (let j = 0; j < 512; j++) expect(values[j]).toBe(col(j));
      outputs.push(values);
      await session.release();
    }
    expect(outputs[1]).toEqual(outputs[0]);
  });
});

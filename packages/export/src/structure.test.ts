import { readFile, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import ort from "onnxruntime-node";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { exportModel } from "./export.js";
import { decodeOnnxModel, ELEM_TYPE, EXPORT_IR_VERSION, EXPORT_OPSET } from "./index.js";
import { runExport, testState, VARIANTS, worstExcess } from "./testing/reference.js";

/**
 * The exported files as ONNX (through the onnx protobuf definitions): standard operators only, the opset, the
 * inputs and outputs transformers.js reads (names, types, symbolic batch and sequence axes), every value defined
 * before it is used. The full ONNX checker runs in examples/scripts/onnx_check.py.
 */
const STANDARD_OPS = new Set([
  "Add",
  "And",
  "Cast",
  "Concat",
  "Div",
  "Gather",
  "Gemm",
  "LayerNormalization",
  "Less",
  "LessOrEqual",
  "MatMul",
  "Mul",
  "Pow",
  "Range",
  "ReduceMean",
  "Reshape",
  "Shape",
  "Sigmoid",
  "Softmax",
  "Split",
  "Sqrt",
  "Squeeze",
  "Sub",
  "Tanh",
  "Transpose",
  "Unsqueeze",
  "Where",
]);

interface Dim {
  dimValue?: number;
  dimParam?: string;
}
interface ValueInfo {
  name: string;
  type: { tensorType: { elemType: number; shape: { dim: Dim[] } } };
}
interface Model {
  irVersion: number;
  opsetImport: { domain?: string; version: number }[];
  graph: {
    node: { opType: string; domain?: string; input?: string[]; output: string[] }[];
    input: ValueInfo[];
    output: ValueInfo[];
    initializer: {
      name: string;
      dataType: number;
      dims?: number[];
      rawData?: Uint8Array;
      dataLocation?: number;
      externalData?: { key: string; value: string }[];
    }[];
  };
}
const dimsOf = (v: ValueInfo) => v.type.tensorType.shape.dim.map((d) => d.dimParam ?? d.dimValue);

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-export-structure-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe.each(VARIANTS)("the ONNX of $name", ({ name, architecture, config }) => {
  let model: Model, fp16: Model, layers: number, kv: number, hd: number;
  beforeAll(async () => {
    const state = await testState(architecture, config, 1);
    const dir = join(root, name.replace(/\W+/g, "-"));
    await exportModel(state, dir, { dtype: "fp16" });
    model = decodeOnnxModel(await readFile(join(dir, "onnx", "model.onnx"))) as unknown as Model;
    fp16 = decodeOnnxModel(await readFile(join(dir, "onnx", "model_fp16.onnx"))) as unknown as Model;
    layers = state.shape.layers;
    kv = state.shape.kvHeads ?? state.shape.heads;
    hd = state.shape.headDim;
  });

  it("IR 8, the standard domain at opset 17 only, standard operators only", () => {
    for (const m of [model, fp16]) {
      expect(m.irVersion).toBe(EXPORT_IR_VERSION);
      expect(m.opsetImport).toEqual([{ domain: "", version: EXPORT_OPSET }]);
      for (const n of m.graph.node) {
        expect(n.domain ?? "", n.opType).toBe("");
        expect(STANDARD_OPS.has(n.opType), n.opType).toBe(true);
      }
    }
  });

  it("the inputs and outputs transformers.js feeds and reads, with symbolic batch and sequence axes", () => {
    for (const [m, type] of [
      [model, ELEM_TYPE.float32],
      [fp16, ELEM_TYPE.float16],
    ] as const) {
      const inputs = m.graph.input,
        outputs = m.graph.output;
      expect(inputs.map((v) => v.name)).toEqual([
        "input_ids",
        "attention_mask",
        "position_ids",
        ...Array.from({ length: layers }, (_, l) => [`past_key_values.${l}.key`, `past_key_values.${l}.value`]).flat(),
      ]);
      expect(new Set(outputs.map((v) => v.name))).toEqual(
        new Set(["logits", ...Array.from({ length: layers }, (_, l) => [`present.${l}.key`, `present.${l}.value`]).flat()]),
      );
      expect(outputs).toHaveLength(1 + 2 * layers);
      for (const v of inputs.slice(0, 3)) expect(v.type.tensorType.elemType, v.name).toBe(ELEM_TYPE.int64);
      expect(dimsOf(inputs[0]!)).toEqual(["batch_size", "sequence_length"]);
      expect(dimsOf(inputs[1]!)).toEqual(["batch_size", "total_sequence_length"]);
      expect(dimsOf(inputs[2]!)).toEqual(["batch_size", "sequence_length"]);
      for (const v of inputs.slice(3)) {
        expect(v.type.tensorType.elemType, v.name).toBe(type);
        expect(dimsOf(v), v.name).toEqual(["batch_size", kv, "past_sequence_length", hd]);
      }
      const logits = outputs.find((o) => o.name === "logits")!;
      expect(logits.type.tensorType.elemType).toBe(ELEM_TYPE.float32);
      expect(dimsOf(logits)).toEqual(["batch_size", "sequence_length", 256]);
      for (const v of outputs.filter((o) => o.name !== "logits")) {
        expect(v.type.tensorType.elemType, v.name).toBe(type);
        expect(dimsOf(v), v.name).toEqual(["batch_size", kv, "total_sequence_length", hd]);
      }
    }
  });

  it("every value is defined once, before it is used; weights are initializers with their data inside", () => {
    for (const m of [model, fp16]) {
      const defined = new Set<string>([...m.graph.input.map((v) => v.name), ...m.graph.initializer.map((t) => t.name)]);
      expect(defined.size).toBe(m.graph.input.length + m.graph.initializer.length);
      for (const n of m.graph.node) {
        for (const i of n.input ?? []) if (i !== "") expect(defined.has(i), `${n.opType} reads ${i}`).toBe(true);
        for (const o of n.output) {
          expect(defined.has(o), `${o} defined twice`).toBe(false);
          defined.add(o);
        }
      }
      for (const o of m.graph.output) expect(defined.has(o.name)).toBe(true);
      const used = new Set(m.graph.node.flatMap((n) => n.input ?? []));
      for (const t of m.graph.initializer) {
        expect(used.has(t.name), `unused initializer ${t.name}`).toBe(true);
        expect(t.dataLocation ?? 0).toBe(0);
        const count = (t.dims ?? []).reduce((a, b) => a * b, 1) * { 1: 4, 10: 2, 7: 8, 9: 1 }[t.dataType as 1]!;
        expect(t.rawData?.length ?? 0, t.name).toBe(count);
      }
    }
    // The weights of the fp16 model are float16, but for the norms' (float32: norms run in float32).
    for (const t of fp16.graph.initializer.filter((x) => (x.dims ?? []).length === 2)) expect(t.dataType, t.name).toBe(ELEM_TYPE.float16);
  });
});

describe("weights as ONNX external data (models over 2 GB; forced here for a small one)", () => {
  it("onnx/model.onnx_data holds the weights, config.json tells transformers.js, and the logits are those of the inline model", async () => {
    const state = await testState("llama", VARIANTS[2]!.config, 5, 2);
    const inline = join(root, "inline"),
      external = join(root, "external");
    await exportModel(state, inline);
    const r = await exportModel(state, external, { externalData: true });
    expect(r.files).toContain("onnx/model.onnx_data");
    expect(r.manifest.externalData).toEqual({ "onnx/model.onnx": "onnx/model.onnx_data" });
    const config = JSON.parse(await readFile(join(external, "config.json"), "utf8")) as Record<string, unknown>;
    expect(config["transformers.js_config"]).toEqual({ use_external_data_format: { "model.onnx": 1 } });
    expect(JSON.parse(await readFile(join(inline, "config.json"), "utf8"))["transformers.js_config"]).toBeUndefined();
    const m = decodeOnnxModel(await readFile(join(external, "onnx", "model.onnx"))) as unknown as Model;
    let end = 0;
    // Tensors of 1 KiB and more (the weights): the small constants (shapes, axes) stay inside, where shape inference reads them.
    for (const t of m.graph.initializer) expect(t.dataLocation === 1, t.name).toBe((t.dims ?? []).reduce((a, b) => a * b, 4) >= 1024);
    const outside = m.graph.initializer.filter((t) => t.dataLocation === 1);
    expect(outside.map((t) => t.name)).toContain("model.embed_tokens.weight");
    for (const t of outside) {
      expect(t.rawData?.length ?? 0).toBe(0);
      const kv = Object.fromEntries((t.externalData ?? []).map((e) => [e.key, e.value]));
      expect(kv.location).toBe("model.onnx_data");
      end = Math.max(end, Number(kv.offset) + Number(kv.length));
    }
    expect((await stat(join(external, "onnx", "model.onnx_data"))).size).toBe(end);
    expect((await stat(join(external, "onnx", "model.onnx"))).size).toBeLessThan(64 * 1024);

    const ids = [[1, 2, 3, 4, 5]],
      mask = [[1, 1, 1, 1, 1]],
      pos = [[0, 1, 2, 3, 4]];
    const outputs = [];
    for (const dir of [inline, external]) {
      const session = await ort.InferenceSession.create(join(dir, "onnx", "model.onnx"), { intraOpNumThreads: 1 });
      outputs.push((await runExport(session, 2, 2, 4, ids, mask, pos)).logits);
      await session.release();
    }
    expect(worstExcess(outputs[1]!, outputs[0]!, 0, 0)).toBeLessThanOrEqual(0);
  });
});

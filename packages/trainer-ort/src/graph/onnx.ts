/**
 * The one ONNX writer of the project: a GraphBuilder's graph (training, evaluation, the export's inference graph) as
 * a ModelProto, in memory (`serializeModel`, for onnxruntime sessions) or streamed to a file one tensor at a time
 * (`writeOnnxModel`): into the model file, or (models over 2 GB, beyond protobuf's limit) into an external data
 * file beside it. Both write the same nodes, inputs and outputs (symbolic dimensions as dim_param), at OPSET.
 */
import { open } from "node:fs/promises";
import { concatBytes } from "@staged/core";
import onnxProto from "onnx-proto";
import type { Attr, DType, GraphBuilder, Initializer, Value } from "./builder.js";

const { onnx } = onnxProto;

/** ONNX TensorProto.DataType codes of the element types. */
export const ONNX_TYPE: Readonly<Record<DType, number>> = { float32: 1, int32: 6, int64: 7, bool: 9, float16: 10, float64: 11 };

/** The one opset of every graph the project writes (training, evaluation, export): each operator used exists in it in the form used. */
export const OPSET = 17;
/** IR version 8 (ONNX 1.10 to 1.12 write it): read by every current runtime and checker. */
export const IR_VERSION = 8;

/** Model-level fields of a written model. */
export interface ModelOptions {
  producer?: { name: string; version: string };
  /** Model metadata (ModelProto.metadata_props). */
  metadata?: Record<string, string>;
}

const attrProto = (name: string, a: Attr) => {
  const T = onnx.AttributeProto.AttributeType;
  if (typeof a === "number") return { name, type: T.INT, i: a };
  if (typeof a === "string") return { name, type: T.STRING, s: new TextEncoder().encode(a) };
  if (Array.isArray(a)) return { name, type: T.INTS, ints: a };
  if ("float" in a) return { name, type: T.FLOAT, f: a.float };
  return { name, type: T.FLOATS, floats: a.floats };
};

/** The graph but its initializers, and the model's fields; `nodes`/`initializers` are the live ones. */
function parts(b: GraphBuilder, options: ModelOptions) {
  const { nodes, initializers } = b.live();
  const vinfo = (v: Value) => ({
    name: v.name,
    type: {
      tensorType: { elemType: ONNX_TYPE[v.dtype], shape: { dim: v.dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) } },
    },
  });
  const graph = {
    name: "staged",
    input: b.inputs.map(vinfo),
    output: b.outputs.map(vinfo),
    node: nodes.map((n) => ({
      name: n.name,
      opType: n.op,
      domain: n.domain ?? "",
      input: n.inputs.map((v) => (v ? v.name : "")),
      output: n.outputs.map((v) => v.name),
      attribute: Object.entries(n.attrs).map(([k, a]) => attrProto(k, a)),
    })),
  };
  const model = {
    irVersion: IR_VERSION,
    producerName: options.producer?.name ?? "@staged/trainer-ort",
    ...(options.producer ? { producerVersion: options.producer.version } : {}),
    opsetImport: [
      { domain: "", version: OPSET },
      ...[...new Set(nodes.map((n) => n.domain).filter((d): d is string => !!d))].map((domain) => ({ domain, version: 1 })),
    ],
    ...(options.metadata ? { metadataProps: Object.entries(options.metadata).map(([key, value]) => ({ key, value })) } : {}),
  };
  return { graph, model, initializers };
}

const tensorHead = (t: Initializer) => ({ name: t.value.name, dims: [...t.value.shape], dataType: ONNX_TYPE[t.value.dtype] });

/** The model as bytes, every initializer inline (their values must be in memory: GraphBuilder.weight's are not). */
export function serializeModel(b: GraphBuilder, options: ModelOptions = {}): Uint8Array {
  const { graph, model, initializers } = parts(b, options);
  const initializer = initializers.map((t) => {
    if (!t.data) throw new Error(`ONNX graph: ${t.value.name} is read when the model is written: write it with writeOnnxModel`);
    return { ...tensorHead(t), rawData: new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) };
  });
  return onnx.ModelProto.encode(onnx.ModelProto.create({ ...model, graph: { ...graph, initializer } })).finish();
}

/** Protobuf varint of a non-negative integer (up to 2⁵³). */
function varint(n: number): Uint8Array {
  const out: number[] = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return Uint8Array.from(out);
}
/** The key of a length-delimited field. */
const lenKey = (field: number): Uint8Array => varint((field << 3) | 2);

// Field numbers of onnx.proto.
const MODEL_GRAPH = 7,
  GRAPH_INITIALIZER = 5,
  TENSOR_RAW_DATA = 9;

export interface WriteOptions extends ModelOptions {
  /**
   * Write the weights to this file beside the model (ONNX external data, `location` relative to the model's
   * directory) instead of into it. Needed above 2 GB, protobuf's limit for one message.
   */
  externalData?: { path: string; location: string };
  /** Called after each tensor is written, with the bytes written so far. */
  onTensor?: (done: number, total: number, bytes: number, totalBytes: number) => void;
}

/** With external data, smaller tensors (shapes, axes, scalars) stay in the model, where shape inference reads them. */
export const EXTERNAL_MIN_BYTES = 1024;
/** Tensors of at least this many bytes start at a multiple of 64 KiB in external data (memory-mappable). */
const ALIGN_LARGE = 1 << 20;

/**
 * Write the model to `path`, streaming: the ModelProto is written field by field (protobuf lets a message's
 * fields come in any order and repeated fields in pieces), so only one tensor is in memory at a time.
 */
export async function writeOnnxModel(path: string, b: GraphBuilder, options: WriteOptions = {}): Promise<{ bytes: number }> {
  const { graph, model, initializers } = parts(b, options);
  const head = onnx.ModelProto.encode(onnx.ModelProto.create(model)).finish();
  const body = onnx.GraphProto.encode(onnx.GraphProto.create(graph)).finish();

  // Each initializer: its key and length, the TensorProto's fields but its data, and (inline) the data field's key and length.
  const ext = options.externalData;
  let offset = 0;
  const pieces = initializers.map((t) => {
    let meta: Uint8Array,
      dataHead: Uint8Array | null = null,
      at = 0;
    if (ext && t.byteLength >= EXTERNAL_MIN_BYTES) {
      at = t.byteLength >= ALIGN_LARGE ? Math.ceil(offset / 65536) * 65536 : Math.ceil(offset / 64) * 64;
      offset = at + t.byteLength;
      meta = onnx.TensorProto.encode(
        onnx.TensorProto.create({
          ...tensorHead(t),
          dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
          externalData: [
            { key: "location", value: ext.location },
            { key: "offset", value: String(at) },
            { key: "length", value: String(t.byteLength) },
          ],
        }),
      ).finish();
    } else {
      meta = onnx.TensorProto.encode(onnx.TensorProto.create(tensorHead(t))).finish();
      dataHead = concatBytes([lenKey(TENSOR_RAW_DATA), varint(t.byteLength)]);
    }
    const tensorLength = meta.length + (dataHead ? dataHead.length + t.byteLength : 0);
    return {
      t,
      head: concatBytes([lenKey(GRAPH_INITIALIZER), varint(tensorLength), meta, ...(dataHead ? [dataHead] : [])]),
      at,
      inline: dataHead !== null,
    };
  });
  const graphLength = body.length + pieces.reduce((s, p) => s + p.head.length + (p.inline ? p.t.byteLength : 0), 0);
  if (!ext && head.length + graphLength + 16 > 2 ** 31 - 1) {
    throw new Error(`${path}: ${graphLength} bytes exceed protobuf's 2 GB limit; write the weights as external data`);
  }

  const totalBytes = initializers.reduce((s, t) => s + t.byteLength, 0);
  const file = await open(path, "w");
  const data = ext ? await open(ext.path, "w") : null;
  try {
    let pos = 0;
    const write = async (bytes: Uint8Array) => {
      await file.write(bytes, 0, bytes.length, pos);
      pos += bytes.length;
    };
    await write(head);
    await write(concatBytes([lenKey(MODEL_GRAPH), varint(graphLength)]));
    await write(body);
    let written = 0;
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i]!;
      await write(p.head);
      const bytes = await p.t.read();
      if (bytes.byteLength !== p.t.byteLength)
        throw new Error(`ONNX graph: tensor ${p.t.value.name} gave ${bytes.byteLength} bytes, expected ${p.t.byteLength}`);
      if (p.inline) await write(bytes);
      else await data!.write(bytes, 0, bytes.byteLength, p.at);
      written += bytes.byteLength;
      options.onTensor?.(i + 1, pieces.length, written, totalBytes);
    }
    await file.sync();
    if (data) await data.sync();
    return { bytes: pos + (data ? offset : 0) };
  } finally {
    await file.close();
    await data?.close();
  }
}

/** A decoded model, for inspection (tests, tools): the proto as onnx-proto's plain object. */
export function decodeOnnxModel(bytes: Uint8Array): Record<string, unknown> {
  return onnx.ModelProto.toObject(onnx.ModelProto.decode(bytes), { longs: Number, defaults: false }) as Record<string, unknown>;
}

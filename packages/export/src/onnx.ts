/**
 * A small ONNX emitter for inference graphs with symbolic (dynamic) dimensions, standard operators only, and
 * a writer that streams the weights one tensor at a time: into the model file, or (models over 2 GB, beyond
 * protobuf's limit) into an external data file beside it.
 */
import { open } from "node:fs/promises";
import onnxProto from "onnx-proto";

const { onnx } = onnxProto;

/** Element types of the export (ONNX TensorProto.DataType codes). */
export type ElemType = "float32" | "float16" | "int64" | "bool";
export const ELEM_TYPE: Readonly<Record<ElemType, number>> = { float32: 1, float16: 10, int64: 7, bool: 9 };
const ELEM_BYTES: Readonly<Record<ElemType, number>> = { float32: 4, float16: 2, int64: 8, bool: 1 };

/** The default opset: every operator of the export exists in it with the form used here. */
export const EXPORT_OPSET = 17;
/** IR version 8 (ONNX 1.10 to 1.12 write it): read by every current runtime and checker. */
export const EXPORT_IR_VERSION = 8;

/** A dimension: a size, or the name of a dynamic axis. */
export type Dim = number | string;

export type Attr = { i: number } | { ints: number[] } | { f: number } | { s: string };

export interface OnnxNode { op: string; name: string; inputs: string[]; outputs: string[]; attrs: Record<string, Attr> }

export interface ValueInfo { name: string; type: ElemType; dims: Dim[] }

/** A tensor stored in the model: its bytes are asked for only when the file is written. */
export interface Initializer {
  name: string;
  type: ElemType;
  dims: number[];
  /** Byte length of the data (type size × element count). */
  byteLength: number;
  /** The little-endian bytes. */
  read(): Promise<Uint8Array>;
}

const count = (dims: readonly number[]): number => dims.reduce((a, b) => a * b, 1);

const bytesOf = (data: Float32Array | BigInt64Array | Uint8Array | Uint16Array): Uint8Array =>
  new Uint8Array(data.buffer, data.byteOffset, data.byteLength);

/** An inference graph under construction: values are named by strings, nodes kept in topological order. */
export class OnnxGraph {
  readonly nodes: OnnxNode[] = [];
  readonly inputs: ValueInfo[] = [];
  readonly outputs: ValueInfo[] = [];
  readonly initializers: Initializer[] = [];
  #names = new Set<string>();
  #next = 0;

  #fresh(hint: string): string {
    let name = `${hint}_${this.#next++}`;
    while (this.#names.has(name)) name = `${hint}_${this.#next++}`;
    this.#names.add(name);
    return name;
  }

  #claim(name: string): string {
    if (this.#names.has(name)) throw new Error(`ONNX graph: the name ${name} is used twice`);
    this.#names.add(name);
    return name;
  }

  input(name: string, type: ElemType, dims: Dim[]): string {
    this.inputs.push({ name: this.#claim(name), type, dims });
    return name;
  }

  /** Declare a value computed by a node (named `name` with `node(..., [name])`) as a graph output. */
  output(name: string, type: ElemType, dims: Dim[]): void {
    if (!this.#names.has(name)) throw new Error(`ONNX graph: output ${name} is not a value of the graph`);
    this.outputs.push({ name, type, dims });
  }

  /** A node; its outputs get fresh names, or the names given. Returns the output names. */
  node(op: string, inputs: string[], attrs: Record<string, Attr> = {}, outputs: number | string[] = 1): string[] {
    for (const i of inputs) if (i !== "" && !this.#names.has(i)) throw new Error(`ONNX graph: ${op} reads ${i}, which is not defined`);
    const names = typeof outputs === "number"
      ? Array.from({ length: outputs }, () => this.#fresh(op.toLowerCase()))
      : outputs.map((n) => this.#claim(n));
    this.nodes.push({ op, name: `${op}_${this.nodes.length}`, inputs, outputs: names, attrs });
    return names;
  }

  /** A one-output node. */
  op(op: string, inputs: string[], attrs: Record<string, Attr> = {}, name?: string): string {
    return this.node(op, inputs, attrs, name === undefined ? 1 : [name])[0]!;
  }

  /** A stored tensor whose bytes are read when the model is written. */
  weight(name: string, type: ElemType, dims: number[], read: () => Promise<Uint8Array>): string {
    this.initializers.push({ name: this.#claim(name), type, dims, byteLength: count(dims) * ELEM_BYTES[type], read });
    return name;
  }

  /** A small constant tensor (scalars when `dims` is []). */
  constant(type: ElemType, dims: number[], values: readonly number[] | Float32Array, hint = "const"): string {
    if (values.length !== count(dims)) throw new Error(`ONNX graph: constant of shape [${dims}] given ${values.length} values`);
    let bytes: Uint8Array;
    if (type === "int64") bytes = bytesOf(BigInt64Array.from(values as readonly number[], (v) => BigInt(v)));
    else if (type === "float32") bytes = bytesOf(Float32Array.from(values));
    else if (type === "bool") bytes = Uint8Array.from(values, (v) => (v ? 1 : 0));
    else throw new Error(`ONNX graph: constants of type ${type} are made with weight()`);
    const name = this.#fresh(hint);
    this.initializers.push({ name, type, dims, byteLength: bytes.byteLength, read: async () => bytes });
    return name;
  }

  i64(values: readonly number[], hint = "shape"): string { return this.constant("int64", [values.length], values, hint); }
  scalarI64(value: number): string { return this.constant("int64", [], [value], "int"); }

  /** Total bytes of the stored tensors. */
  get weightBytes(): number { return this.initializers.reduce((s, t) => s + t.byteLength, 0); }
}

const T = onnx.AttributeProto.AttributeType;
const attrProto = (name: string, a: Attr) => {
  if ("i" in a) return { name, type: T.INT, i: a.i };
  if ("ints" in a) return { name, type: T.INTS, ints: a.ints };
  if ("f" in a) return { name, type: T.FLOAT, f: a.f };
  return { name, type: T.STRING, s: new TextEncoder().encode(a.s) };
};
const valueInfo = (v: ValueInfo) => ({
  name: v.name,
  type: { tensorType: { elemType: ELEM_TYPE[v.type], shape: { dim: v.dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) } } },
});

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
const MODEL_GRAPH = 7, GRAPH_INITIALIZER = 5, TENSOR_RAW_DATA = 9;

export interface WriteOptions {
  producer?: { name: string; version: string };
  /** Model metadata (ModelProto.metadata_props). */
  metadata?: Record<string, string>;
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
export async function writeOnnxModel(path: string, graph: OnnxGraph, options: WriteOptions = {}): Promise<{ bytes: number }> {
  const head = onnx.ModelProto.encode(onnx.ModelProto.create({
    irVersion: EXPORT_IR_VERSION,
    producerName: options.producer?.name ?? "@staged/export",
    producerVersion: options.producer?.version ?? "",
    opsetImport: [{ domain: "", version: EXPORT_OPSET }],
    metadataProps: Object.entries(options.metadata ?? {}).map(([key, value]) => ({ key, value })),
  })).finish();
  const body = onnx.GraphProto.encode(onnx.GraphProto.create({
    name: "staged",
    node: graph.nodes.map((n) => ({
      name: n.name, opType: n.op, domain: "", input: n.inputs, output: n.outputs,
      attribute: Object.entries(n.attrs).map(([k, a]) => attrProto(k, a)),
    })),
    input: graph.inputs.map(valueInfo),
    output: graph.outputs.map(valueInfo),
  })).finish();

  // Each initializer: its key and length, the TensorProto's fields but its data, and (inline) the data field's key and length.
  const ext = options.externalData;
  let offset = 0;
  const pieces = graph.initializers.map((t) => {
    let meta: Uint8Array, dataHead: Uint8Array | null = null, at = 0;
    if (ext && t.byteLength >= EXTERNAL_MIN_BYTES) {
      at = t.byteLength >= ALIGN_LARGE ? Math.ceil(offset / 65536) * 65536 : Math.ceil(offset / 64) * 64;
      offset = at + t.byteLength;
      meta = onnx.TensorProto.encode(onnx.TensorProto.create({
        name: t.name, dims: t.dims, dataType: ELEM_TYPE[t.type], dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
        externalData: [{ key: "location", value: ext.location }, { key: "offset", value: String(at) }, { key: "length", value: String(t.byteLength) }],
      })).finish();
    } else {
      meta = onnx.TensorProto.encode(onnx.TensorProto.create({ name: t.name, dims: t.dims, dataType: ELEM_TYPE[t.type] })).finish();
      dataHead = concatBytes([lenKey(TENSOR_RAW_DATA), varint(t.byteLength)]);
    }
    const tensorLength = meta.length + (dataHead ? dataHead.length + t.byteLength : 0);
    return { t, head: concatBytes([lenKey(GRAPH_INITIALIZER), varint(tensorLength), meta, ...(dataHead ? [dataHead] : [])]), at, inline: dataHead !== null };
  });
  const graphLength = body.length + pieces.reduce((s, p) => s + p.head.length + (p.inline ? p.t.byteLength : 0), 0);
  if (!ext && head.length + graphLength + 16 > 2 ** 31 - 1) {
    throw new Error(`${path}: ${graphLength} bytes exceed protobuf's 2 GB limit; write the weights as external data`);
  }

  const totalBytes = graph.weightBytes;
  const file = await open(path, "w");
  const data = ext ? await open(ext.path, "w") : null;
  try {
    let pos = 0;
    const write = async (b: Uint8Array) => { await file.write(b, 0, b.length, pos); pos += b.length; };
    await write(head);
    await write(concatBytes([lenKey(MODEL_GRAPH), varint(graphLength)]));
    await write(body);
    let written = 0;
    for (let i = 0; i < pieces.length; i++) {
      const p = pieces[i]!;
      await write(p.head);
      const bytes = await p.t.read();
      if (bytes.byteLength !== p.t.byteLength) throw new Error(`ONNX graph: tensor ${p.t.name} gave ${bytes.byteLength} bytes, expected ${p.t.byteLength}`);
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

function concatBytes(parts: readonly Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) { out.set(p, at); at += p.length; }
  return out;
}

/** A decoded model, for inspection (tests, tools): the proto as onnx-proto's plain object. */
export function decodeOnnxModel(bytes: Uint8Array): Record<string, unknown> {
  return onnx.ModelProto.toObject(onnx.ModelProto.decode(bytes), { longs: Number, defaults: false }) as Record<string, unknown>;
}

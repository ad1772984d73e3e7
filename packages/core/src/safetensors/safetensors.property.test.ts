/**
 * Property-based differential test of the safetensors reader, and a round trip of the writer.
 *
 * The reference (Rust, and Python's bindings over it) cannot be installed here, so the oracle below
 * restates its reading rules on its own: https://github.com/huggingface/safetensors,
 * safetensors/src/tensor.rs (`SafeTensors::read_metadata`, `HashMetadata`, `TensorInfo`, `Dtype`,
 * `Metadata::new`, `Metadata::validate`), whose header goes through serde_json
 * (https://github.com/serde-rs/json, src/de.rs and src/read.rs) into serde's derived types. It shares
 * no code with the reader (./json.ts, ./header.ts): a recursive-descent JSON reader over regular expressions, and BigInt
 * for every usize. Where our reader is deliberately stricter (documented at the top of
 * ./header.ts) the oracle says so, and then expects a refusal; each refusal carries the reference's error kind,
 * which our SafetensorsError.code must match (./errors.ts).
 *
 * Headers are generated from random tensors and metadata, then mutated: numbers written as floats,
 * exponents, negatives or huge; other dtype spellings; serde's other forms; shifted offsets; deep
 * nesting; bad and lone-surrogate escapes; duplicate names and fields; metadata variants; whitespace,
 * BOM and padding; cut or edited text; invalid UTF-8; wrong lengths.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DTYPE_SIZES, type DType } from "../dtype.js";
import { encodeTensor } from "./codec.js";
import { SafetensorsError, type SafetensorsErrorCode } from "./errors.js";
import { SafetensorsFile } from "./reader.js";
import { referenceOrder, writeSafetensors } from "./writer.js";
import { Tensor } from "../tensor.js";

let dir = "";
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-st-prop-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
let counter = 0;

// =============================================================================================
// The oracle

/** serde's buffered view of a JSON value (its `Content`): objects keep every member, numbers their text. */
type Content =
  | { t: "null" }
  | { t: "bool" }
  | { t: "str"; s: string }
  | { t: "num"; raw: string }
  | { t: "arr"; items: Content[] }
  | { t: "obj"; members: [string, Content][] };

const U64_MAX = 2n ** 64n - 1n;

/** tensor.rs `enum Dtype` with `Dtype::bitsize`. */
const REFERENCE_BITS: Record<string, bigint> = {
  BOOL: 8n,
  F4: 4n,
  F6_E2M3: 6n,
  F6_E3M2: 6n,
  U8: 8n,
  I8: 8n,
  F8_E5M2: 8n,
  F8_E4M3: 8n,
  F8_E8M0: 8n,
  F8_E4M3FNUZ: 8n,
  F8_E5M2FNUZ: 8n,
  I16: 16n,
  U16: 16n,
  F16: 16n,
  BF16: 16n,
  I32: 32n,
  U32: 32n,
  F32: 32n,
  C64: 64n,
  F64: 64n,
  I64: 64n,
  U64: 64n,
};

/** A refusal: why, and the reference's error kind (serde's errors all surface as InvalidHeaderDeserialization). */
class Refused extends Error {
  constructor(
    why: string,
    readonly code: SafetensorsErrorCode,
  ) {
    super(why);
  }
}
const refuse = (why: string, code: SafetensorsErrorCode = "InvalidHeaderDeserialization"): never => {
  throw new Refused(why, code);
};

/** `serde_json::from_str`: one value, JSON whitespace around it, recursion limit 128. */
function readContent(text: string): Content {
  const WS = /[ \t\n\r]*/y;
  const NUMBER = /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/y;
  // eslint-disable-next-line no-control-regex -- raw control characters are what a JSON string may not hold
  const STRING = /"((?:[^"\\\u0000-\u001f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*)"/y;
  let i = 0;
  const ws = (): void => {
    WS.lastIndex = i;
    WS.exec(text);
    i = WS.lastIndex;
  };
  const string = (): string => {
    STRING.lastIndex = i;
    const m = STRING.exec(text) ?? refuse("invalid string");
    i = STRING.lastIndex;
    // read.rs parse_escape: a \uD800-\uDBFF escape must be followed at once by a \uDC00-\uDFFF one;
    // any other \uDC00-\uDFFF escape is an error.
    const tokens = m[1]!.match(/\\u[0-9a-fA-F]{4}|\\.|[^\\]/gs) ?? [];
    for (let k = 0; k < tokens.length; k++) {
      const u = tokens[k]!.startsWith("\\u") ? parseInt(tokens[k]!.slice(2), 16) : -1;
      if (u >= 0xdc00 && u <= 0xdfff) refuse("lone trailing surrogate");
      if (u >= 0xd800 && u <= 0xdbff) {
        const next = tokens[k + 1]?.startsWith("\\u") ? parseInt(tokens[k + 1]!.slice(2), 16) : -1;
        if (next < 0xdc00 || next > 0xdfff) refuse("lone leading surrogate");
        k++;
      }
    }
    return JSON.parse(m[0]) as string;
  };
  const value = (depth: number): Content => {
    const c = text[i];
    if (c === "{" || c === "[") {
      if (depth + 1 >= 128) refuse("recursion limit exceeded");
      i++;
      ws();
      if (c === "[") {
        const items: Content[] = [];
        if (text[i] === "]") {
          i++;
          return { t: "arr", items };
        }
        for (;;) {
          items.push(value(depth + 1));
          ws();
          if (text[i] === ",") {
            i++;
            ws();
            continue;
          }
          if (text[i] === "]") {
            i++;
            return { t: "arr", items };
          }
          refuse("expected , or ]");
        }
      }
      const members: [string, Content][] = [];
      if (text[i] === "}") {
        i++;
        return { t: "obj", members };
      }
      for (;;) {
        if (text[i] !== '"') refuse("key must be a string");
        const key = string();
        ws();
        if (text[i] !== ":") refuse("expected :");
        i++;
        ws();
        members.push([key, value(depth + 1)]);
        ws();
        if (text[i] === ",") {
          i++;
          ws();
          continue;
        }
        if (text[i] === "}") {
          i++;
          return { t: "obj", members };
        }
        refuse("expected , or }");
      }
    }
    if (c === '"') return { t: "str", s: string() };
    NUMBER.lastIndex = i;
    const num = NUMBER.exec(text);
    if (num) {
      i = NUMBER.lastIndex;
      if (!Number.isFinite(Number(num[0]))) refuse("number out of range"); // f64 overflow
      return { t: "num", raw: num[0] };
    }
    for (const [word, content] of [
      ["true", { t: "bool" }],
      ["false", { t: "bool" }],
      ["null", { t: "null" }],
    ] as const) {
      if (text.startsWith(word, i)) {
        i += word.length;
        return content;
      }
    }
    return refuse("expected value");
  };
  ws();
  const v = value(0);
  ws();
  if (i !== text.length) refuse("trailing characters");
  return v;
}

interface OracleTensor {
  dtype: string;
  shape: bigint[];
  begin: bigint;
  end: bigint;
}

/** A usize from serde_json: only a literal without sign, fraction or exponent (u64), up to 2^64 − 1. */
function usize(c: Content): bigint {
  if (c.t !== "num" || !/^(?:0|[1-9][0-9]*)$/.test(c.raw)) refuse("expected usize");
  const v = BigInt((c as { raw: string }).raw);
  return v > U64_MAX ? refuse("expected usize") : v;
}

/**
 * `#[derive(Deserialize)] struct TensorInfo { dtype: Dtype, shape: Vec<usize>, data_offsets: (usize, usize) }`
 * from serde's Content: a map with each field exactly once (other members ignored), or a sequence of
 * exactly those three. `Dtype` is a unit variant: its name as a string, or `{"NAME": null}`.
 */
function tensorInfo(v: Content): OracleTensor {
  const fields = new Map<string, Content>();
  if (v.t === "obj") {
    for (const [k, x] of v.members) {
      if (k !== "dtype" && k !== "shape" && k !== "data_offsets") continue;
      if (fields.has(k)) refuse(`duplicate field ${k}`);
      fields.set(k, x);
    }
  } else if (v.t === "arr" && v.items.length === 3) {
    ["dtype", "shape", "data_offsets"].forEach((k, j) => fields.set(k, v.items[j]!));
  } else {
    refuse("invalid type for TensorInfo");
  }
  const dtype = fields.get("dtype") ?? refuse("missing field dtype");
  const shape = fields.get("shape") ?? refuse("missing field shape");
  const offsets = fields.get("data_offsets") ?? refuse("missing field data_offsets");
  let name: string | null = null;
  if (dtype.t === "str") name = dtype.s;
  else if (dtype.t === "obj" && dtype.members.length === 1 && dtype.members[0]![1].t === "null") name = dtype.members[0]![0];
  if (name === null || !Object.hasOwn(REFERENCE_BITS, name)) refuse("unknown variant");
  if (shape.t !== "arr") refuse("shape: expected a sequence");
  if (offsets.t !== "arr" || offsets.items.length !== 2) refuse("data_offsets: expected a tuple of size 2");
  const [b, e] = (offsets as { items: Content[] }).items;
  return { dtype: name!, shape: (shape as { items: Content[] }).items.map(usize), begin: usize(b!), end: usize(e!) };
}

type Verdict =
  | { accept: false; why: string; code: SafetensorsErrorCode }
  | { accept: true; tensors: Map<string, OracleTensor>; metadata: Map<string, string> | null; stricter: string[] };

/** `SafeTensors::read_metadata` on a whole file, plus the rules where our reader is stricter. */
function oracle(file: Uint8Array): Verdict {
  try {
    if (file.length < 8) refuse("HeaderTooSmall", "HeaderTooSmall");
    const n = new DataView(file.buffer, file.byteOffset, 8).getBigUint64(0, true);
    if (n > 100_000_000n) refuse("HeaderTooLarge", "HeaderTooLarge");
    if (8n + n > BigInt(file.length)) refuse("InvalidHeaderLength", "InvalidHeaderLength");
    let text = "";
    try {
      text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(file.subarray(8, 8 + Number(n)));
    } catch {
      refuse("InvalidHeader (UTF-8)", "InvalidHeader");
    }
    const root = readContent(text);
    // HashMetadata { #[serde(rename = "__metadata__")] metadata: Option<HashMap<String, String>>,
    //                #[serde(flatten)] tensors: HashMap<String, TensorInfo> }
    if (root.t !== "obj") refuse("invalid type for HashMetadata");
    const stricter: string[] = [];
    let metadata: Map<string, string> | null = null;
    let sawMetadata = false;
    const tensors = new Map<string, OracleTensor>();
    for (const [key, value] of (root as { members: [string, Content][] }).members) {
      if (key === "__metadata__") {
        if (sawMetadata) refuse("duplicate field `__metadata__`");
        sawMetadata = true;
        if (value.t === "null") {
          metadata = null;
          continue;
        }
        if (value.t !== "obj") refuse("__metadata__: expected a map");
        metadata = new Map();
        for (const [k, v] of (value as { members: [string, Content][] }).members) {
          if (v.t !== "str") refuse("__metadata__ value: expected a string");
          if (metadata.has(k)) stricter.push("duplicate __metadata__ key (the reference keeps the last)");
          metadata.set(k, (v as { s: string }).s);
        }
        continue;
      }
      const info = tensorInfo(value);
      if (tensors.has(key)) stricter.push("duplicate tensor name (the reference keeps the last)");
      tensors.set(key, info); // HashMap::insert: the last wins
    }
    // Metadata::new: no NUL in a tensor name, a metadata key or value.
    for (const name of tensors.keys()) if (name.includes("\0")) refuse("InvalidTensorName", "InvalidTensorName");
    for (const [k, v] of metadata ?? []) if (k.includes("\0") || v.includes("\0")) refuse("InvalidMetadata", "InvalidMetadata");
    // Metadata::validate, on the tensors sorted by (begin, end).
    const cmp = (a: bigint, b: bigint): number => (a < b ? -1 : a > b ? 1 : 0);
    const sorted = [...tensors.values()].sort((a, b) => cmp(a.begin, b.begin) || cmp(a.end, b.end));
    let start = 0n;
    for (const t of sorted) {
      if (t.begin !== start || t.end < t.begin) refuse("InvalidOffset", "InvalidOffset");
      start = t.end;
      let count = 1n;
      for (const d of t.shape) {
        count *= d;
        if (count > U64_MAX) refuse("ValidationOverflow", "ValidationOverflow");
      }
      const bits = count * REFERENCE_BITS[t.dtype]!;
      if (bits > U64_MAX) refuse("ValidationOverflow", "ValidationOverflow");
      if (bits % 8n !== 0n) refuse("MisalignedSlice", "MisalignedSlice");
      if (t.end - t.begin !== bits / 8n) refuse("TensorInvalidInfo", "TensorInvalidInfo");
    }
    if (start + 8n + n !== BigInt(file.length)) refuse("MetadataIncompleteBuffer", "MetadataIncompleteBuffer");
    const safe = BigInt(Number.MAX_SAFE_INTEGER);
    for (const t of tensors.values()) {
      if ([...t.shape, t.begin, t.end].some((v) => v > safe)) stricter.push("an integer above 2^53 − 1");
    }
    return { accept: true, tensors, metadata, stricter };
  } catch (e) {
    if (e instanceof Refused) return { accept: false, why: e.message, code: e.code };
    throw e;
  }
}

// =============================================================================================
// Generated headers

/** A JSON text under construction: literals as written (strings with their quotes), containers. */
type Node = { t: "lit"; text: string } | { t: "arr"; items: Node[] } | { t: "obj"; members: [Node, Node][] };

const lit = (text: string): Node => ({ t: "lit", text });
const isKey = (k: Node, name: string): boolean => k.t === "lit" && k.text === `"${name}"`;
const num = (v: number | string): Node => lit(String(v));

/** Small deterministic generator for rendering choices (whitespace, escapes). */
function rng(seed: number): (n: number) => number {
  let s = seed >>> 0;
  return (n) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) % n;
  };
}

/** A JSON string literal for `s`, escaping some characters as \uXXXX (astral ones as a surrogate pair). */
function stringLit(s: string, r: (n: number) => number): string {
  let out = '"';
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    const escapeIt = cp < 0x20 || ch === '"' || ch === "\\" || (cp >= 0xd800 && cp <= 0xdfff) || r(6) === 0;
    if (!escapeIt) out += ch;
    else if (ch === '"' || ch === "\\") out += `\\${ch}`;
    else if (ch === "/" && r(2) === 0) out += "\\/";
    else if (ch === "\n" && r(2) === 0) out += "\\n";
    else {
      for (let k = 0; k < ch.length; k++) out += `\\u${ch.charCodeAt(k).toString(16).padStart(4, "0")}`;
    }
  }
  return `${out}"`;
}

function render(node: Node, r: (n: number) => number): string {
  const ws = (): string => ["", "", "", " ", "\n", "\t", "\r\n  "][r(7)]!;
  if (node.t === "lit") return node.text;
  if (node.t === "arr") return `[${ws()}${node.items.map((x) => render(x, r)).join(`${ws()},${ws()}`)}${ws()}]`;
  return `{${ws()}${node.members.map(([k, v]) => `${render(k, r)}${ws()}:${ws()}${render(v, r)}`).join(`${ws()},${ws()}`)}${ws()}}`;
}

const DTYPE_NAMES = Object.keys(REFERENCE_BITS);

const tensorArb = fc.record({
  name: fc.oneof(
    fc.constantFrom("a", "b", "w", "model.layers.0.mlp.weight", "ünï", "😀", 'a"b\\c', "__proto__", "", "\u2028", "x/y", "\uffff"),
    fc.string({ maxLength: 5 }),
    fc.string({ unit: "binary", maxLength: 3 }),
  ),
  dtype: fc.constantFrom(...DTYPE_NAMES),
  shape: fc.array(fc.integer({ min: 0, max: 5 }), { maxLength: 3 }),
  extra: fc.option(fc.jsonValue({ maxDepth: 2 }), { freq: 4 }),
  alignSubByte: fc.boolean(),
});

const metadataArb = fc.oneof(
  fc.constant<"absent">("absent"),
  fc.constant(null),
  fc.dictionary(fc.string({ maxLength: 4 }), fc.string({ maxLength: 6 }), { maxKeys: 3 }),
);

const MUTATIONS = [
  "number",
  "dtype",
  "entryForm",
  "dupTensor",
  "dupField",
  "dropField",
  "deep",
  "metadata",
  "string",
  "offsets",
  "shape",
  "text",
  "bytes",
  "lengths",
] as const;
type Mutation = { kind: (typeof MUTATIONS)[number]; a: number; b: number };
const mutationArb: fc.Arbitrary<Mutation> = fc.record({ kind: fc.constantFrom(...MUTATIONS), a: fc.nat(), b: fc.nat() });

const caseArb = fc.record({
  tensors: fc.uniqueArray(tensorArb, { selector: (t) => t.name, maxLength: 6 }),
  layout: fc.array(fc.nat(), { minLength: 6, maxLength: 6 }),
  metadata: metadataArb,
  mutations: fc.oneof(
    { weight: 1, arbitrary: fc.constant([] as Mutation[]) },
    { weight: 3, arbitrary: fc.array(mutationArb, { minLength: 1, maxLength: 2 }) },
  ),
  seed: fc.integer(),
});
type Case = typeof caseArb extends fc.Arbitrary<infer T> ? T : never;

/** JSON text of any JSON value, numbers as JavaScript writes them. */
const jsonNode = (v: unknown, r: (n: number) => number): Node => {
  if (Array.isArray(v)) return { t: "arr", items: v.map((x) => jsonNode(x, r)) };
  if (v !== null && typeof v === "object") return { t: "obj", members: Object.entries(v).map(([k, x]) => [lit(stringLit(k, r)), jsonNode(x, r)]) };
  return lit(typeof v === "string" ? stringLit(v, r) : JSON.stringify(v));
};

/** The file bytes for one generated case. */
function build(c: Case): Uint8Array {
  const r = rng(c.seed);
  const pick = <T>(xs: readonly T[], k: number): T | undefined => (xs.length ? xs[k % xs.length] : undefined);
  // Tensors laid out in a random order; most sub-byte shapes made whole bytes.
  const specs = c.tensors.map((t) => {
    const shape = [...t.shape];
    const count = shape.reduce((a, d) => a * d, 1);
    if ((count * Number(REFERENCE_BITS[t.dtype])) % 8 !== 0 && t.alignSubByte) shape.push(4);
    return { ...t, shape, bytes: Math.floor((shape.reduce((a, d) => a * d, 1) * Number(REFERENCE_BITS[t.dtype])) / 8) };
  });
  const order = specs.map((_, i) => i).sort((x, y) => c.layout[x]! - c.layout[y]! || x - y);
  const begin = new Map<number, number>();
  let at = 0;
  for (const i of order) {
    begin.set(i, at);
    at += specs[i]!.bytes;
  }
  const dataLength = at;

  const entries: { obj: Node & { t: "obj" }; spec: (typeof specs)[number] }[] = [];
  const top: [Node, Node][] = specs.map((s, i) => {
    const members: [Node, Node][] = [
      [lit('"dtype"'), lit(stringLit(s.dtype, r))],
      [lit('"shape"'), { t: "arr", items: s.shape.map(num) }],
      [lit('"data_offsets"'), { t: "arr", items: [num(begin.get(i)!), num(begin.get(i)! + s.bytes)] }],
    ];
    if (s.extra !== null) members.splice(r(4), 0, [lit(stringLit("extra", r)), jsonNode(s.extra, r)]);
    const obj = { t: "obj" as const, members };
    entries.push({ obj, spec: s });
    return [lit(stringLit(s.name, r)), obj];
  });
  if (c.metadata !== "absent") {
    const value = c.metadata === null ? lit("null") : jsonNode(c.metadata, r);
    top.splice(r(top.length + 1), 0, [lit('"__metadata__"'), value]);
  }
  const root: Node = { t: "obj", members: top };
  let fileN: bigint | null = null;
  let dataDelta = 0;
  const textEdits: ((s: string) => string)[] = [];
  const byteEdits: ((b: Uint8Array) => Uint8Array)[] = [];

  for (const { kind, a, b } of c.mutations) {
    const entry = pick(entries, a);
    const field = (name: string): [Node, Node] | undefined => entry?.obj.members.find(([k]) => isKey(k, name));
    switch (kind) {
      case "number": {
        const nums: Node[] = [];
        for (const e of entries)
          for (const f of ["shape", "data_offsets"]) {
            const v = e.obj.members.find(([k]) => isKey(k, f))?.[1];
            if (v?.t === "arr") nums.push(...v.items.filter((x) => x.t === "lit"));
          }
        const n = pick(nums, a);
        if (n?.t === "lit") {
          const v = n.text;
          n.text = pick(
            [
              `${v}.0`,
              `${v}e0`,
              `${v}E0`,
              `${v}0e-1`,
              `-${v}`,
              "-0",
              "18446744073709551616",
              "18446744073709551615",
              "9007199254740993",
              "9007199254740991",
              "1e400",
              `0${v}`,
              `${v}.`,
              `+${v}`,
              `${v}e+0`,
              `0.${v}e1`,
            ],
            b,
          )!;
        }
        break;
      }
      case "dtype": {
        const f = field("dtype");
        if (f && entry) {
          const d = entry.spec.dtype;
          f[1] = pick<Node>(
            [
              { t: "obj", members: [[lit(`"${d}"`), lit("null")]] },
              { t: "obj", members: [[lit(`"${d}"`), { t: "obj", members: [] }]] },
              lit(`"${d.toLowerCase()}"`),
              lit('"F33"'),
              lit("7"),
              { t: "arr", items: [lit(`"${d}"`)] },
              {
                t: "obj",
                members: [
                  [lit(`"${d}"`), lit("null")],
                  [lit('"U8"'), lit("null")],
                ],
              },
              lit(`"${pick(DTYPE_NAMES, b)}"`),
            ],
            b,
          )!;
        }
        break;
      }
      case "entryForm": {
        if (entry) {
          const [d, s, o] = ["dtype", "shape", "data_offsets"].map((k) => field(k)?.[1] ?? lit("null"));
          const items = pick(
            [
              [d!, s!, o!],
              [d!, s!],
              [d!, s!, o!, lit("0")],
              [s!, d!, o!],
            ],
            b,
          )!;
          const slot = top.find(([, v]) => v === entry.obj);
          if (slot) slot[1] = { t: "arr", items };
        }
        break;
      }
      case "dupTensor": {
        // The same entry again, or with another dtype, or with a second dtype field.
        const slot = pick(
          top.filter(([k]) => !isKey(k, "__metadata__")),
          a,
        );
        if (slot && slot[1].t === "obj") {
          const members = slot[1].members.map(([k, v]): [Node, Node] => [k, b % 3 === 2 && isKey(k, "dtype") ? lit('"I8"') : v]);
          if (b % 3 === 1) members.unshift([lit('"dtype"'), lit('"U8"')]);
          top.splice(b % (top.length + 1), 0, [slot[0], { t: "obj", members }]);
        }
        break;
      }
      case "dupField": {
        if (entry) {
          const m = pick(entry.obj.members, b);
          if (m)
            entry.obj.members.splice(b % (entry.obj.members.length + 1), 0, b % 2 ? [m[0], m[1]] : [lit('"x"'), lit("1")], [lit('"x"'), lit("[]")]);
        }
        break;
      }
      case "dropField":
        if (entry) entry.obj.members.splice(b % Math.max(entry.obj.members.length, 1), 1);
        break;
      case "deep": {
        // The outer object and the entry are two levels: 125 more arrays reach 127, one more is too deep.
        const depth = 120 + (b % 10);
        let deep: Node = { t: "arr", items: [] };
        for (let k = 1; k < depth; k++) deep = { t: "arr", items: [deep] };
        if (entry) entry.obj.members.push([lit('"deep"'), deep]);
        else top.push([lit('"deep"'), deep]);
        break;
      }
      case "metadata": {
        const variants: Node[] = [
          lit("null"),
          { t: "obj", members: [] },
          {
            t: "obj",
            members: [
              [lit('"k"'), lit('"v"')],
              [lit('"k"'), lit('"w"')],
            ],
          },
          { t: "obj", members: [[lit('"k"'), lit("1")]] },
          { t: "arr", items: [] },
          lit('"pt"'),
          { t: "obj", members: [[lit('"k"'), lit('"v\\u0000"')]] },
          { t: "obj", members: [[lit('"\\u0000"'), lit('"v"')]] },
        ];
        const key = pick([lit('"__metadata__"'), lit('"\\u005f_metadata__"'), lit('"__METADATA__"')], a)!;
        const existing = top.findIndex(([k]) => isKey(k, "__metadata__"));
        if (existing >= 0 && b % 3 === 0) top[existing]![1] = pick(variants, b)!;
        else top.splice(a % (top.length + 1), 0, [key, pick(variants, b)!]);
        break;
      }
      case "string": {
        const strings: Node[] = [];
        for (const [k, v] of top) {
          strings.push(k);
          if (v.t === "obj") for (const [, x] of v.members) if (x.t === "lit" && x.text.startsWith('"')) strings.push(x);
        }
        const s = pick(strings, a);
        if (s?.t === "lit") {
          const insert = pick(
            [
              "\\ud800",
              "\\udc00",
              "\\ud800\\u0041",
              "\\ud83d\\ude00",
              "\u0001",
              "\\x",
              "\\u00",
              "\\u0000",
              "\\uDBFF\\uDFFF",
              "\\ud800\\n",
              "é",
              "\\\\",
            ],
            b,
          )!;
          const at2 = 1 + (b % Math.max(s.text.length - 1, 1));
          s.text = s.text.slice(0, at2) + insert + s.text.slice(at2);
        }
        break;
      }
      case "offsets": {
        const o = field("data_offsets")?.[1];
        if (o?.t === "arr" && o.items.length === 2) {
          const k = b % 2;
          const cur = Number((o.items[k] as { text: string }).text);
          o.items[k] = num(Math.max(0, cur + pick([1, -1, 2, -4, 8], a)!));
        }
        break;
      }
      case "shape": {
        const s = field("shape")?.[1];
        if (s?.t === "arr") {
          if (b % 3 === 0) s.items.push(num(1 + (a % 3)));
          else if (b % 3 === 1) s.items.splice(0, 1);
          else s.items = [num(4294967296), num(4294967296), num(0)];
        }
        break;
      }
      case "text":
        textEdits.push(
          pick<(s: string) => string>(
            [
              (s) => s.slice(0, a % (s.length + 1)),
              (s) => {
                const p = a % (s.length + 1);
                return s.slice(0, p) + pick(["{", "}", "[", "]", ",", ":", '"', "\\", "0", "-", ".", "e", " ", "x"], b)! + s.slice(p);
              },
              (s) => {
                const p = a % Math.max(s.length, 1);
                return s.slice(0, p) + s.slice(p + 1);
              },
              (s) => pick([" ", "\t\r\n", "\ufeff", "\u00a0", "\n"], b) + s,
              (s) => s + pick([" ", "   \t", "\r\n", "\0", "\0\0\0", "x", "{}"], b),
            ],
            a + b,
          )!,
        );
        break;
      case "bytes":
        byteEdits.push((h) => {
          const p = a % (h.length + 1);
          const ins = pick([[0xff], [0xc0, 0xaf], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf4, 0x90, 0x80, 0x80], [0xc3, 0xa9], [0x80]], b)!;
          return Uint8Array.from([...h.subarray(0, p), ...ins, ...h.subarray(p)]);
        });
        break;
      case "lengths":
        if (b % 3 === 0) dataDelta = pick([1, -1, 7], a)!;
        else fileN = BigInt(pick([-1, 1, 100_000_001, 2 ** 40], a)!);
        break;
    }
  }

  let text = render(root, r);
  for (const edit of textEdits) text = edit(text);
  let header: Uint8Array = new TextEncoder().encode(text);
  for (const edit of byteEdits) header = edit(header);
  const n = fileN === null ? BigInt(header.length) : fileN < 0n || fileN === 1n ? BigInt(header.length) + fileN : fileN;
  const data = Math.max(0, dataLength + dataDelta);
  const out = new Uint8Array(8 + header.length + data);
  new DataView(out.buffer).setBigUint64(0, n < 0n ? 0n : n, true);
  out.set(header, 8);
  for (let k = 0; k < data; k++) out[8 + header.length + k] = k & 0xff;
  return out;
}

type Ours = { ok: true; file: SafetensorsFile } | { ok: false; message: string; code: SafetensorsErrorCode };

async function ours(bytes: Uint8Array): Promise<{ path: string; result: Ours }> {
  const path = join(dir, `p${counter++}.safetensors`);
  await writeFile(path, bytes);
  try {
    return { path, result: { ok: true, file: await SafetensorsFile.open(path) } };
  } catch (e) {
    if (!(e instanceof SafetensorsError)) throw e;
    return { path, result: { ok: false, message: e.message, code: e.code } };
  }
}

const preview = (bytes: Uint8Array): string => {
  const n = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  return JSON.stringify(new TextDecoder().decode(bytes.subarray(8, 8 + Math.min(n, 600))));
};

/** The codes of the rules where our reader is stricter than the reference (see ./header.ts). */
const STRICTER_CODES: readonly SafetensorsErrorCode[] = ["DuplicateKey", "IntegerTooLarge"];

describe("differential: our reader against a restatement of the reference's rules", () => {
  it("accepts exactly what the oracle accepts (minus the documented stricter rules), with the same tensors and metadata", async () => {
    const tally = { accepted: 0, refused: 0, stricter: 0 };
    await fc.assert(
      fc.asyncProperty(caseArb, async (c) => {
        const bytes = build(c);
        const verdict = oracle(bytes);
        const { path, result } = await ours(bytes);
        const expected = verdict.accept && verdict.stricter.length === 0;
        const context = `header ${preview(bytes)}\noracle: ${verdict.accept ? `accept${verdict.stricter.length ? ` (but stricter here: ${verdict.stricter.join("; ")})` : ""}` : `refuse (${verdict.why}: ${verdict.code})`}\nours: ${result.ok ? "accept" : `${result.message} (${result.code})`}`;
        expect(result.ok, context).toBe(expected);
        if (!result.ok) {
          expect(result.message.startsWith(`${path}: `), context).toBe(true);
          expect(result.message, context).not.toContain("\n");
          if (verdict.accept) {
            // Refused only by a rule stricter than the reference's: the code says which.
            expect(STRICTER_CODES, context).toContain(result.code);
            tally.stricter++;
          } else {
            // The reference's error kind, unless one of our stricter rules saw the header first.
            if (!STRICTER_CODES.includes(result.code)) expect(result.code, context).toBe(verdict.code);
            tally.refused++;
          }
          return;
        }
        tally.accepted++;
        const { file } = result;
        try {
          if (!verdict.accept) return;
          const theirs = [...verdict.tensors].map(
            ([name, t]) => [name, { dtype: t.dtype, shape: t.shape.map(Number), dataOffsets: [Number(t.begin), Number(t.end)] }] as const,
          );
          expect(new Map(file.header), context).toEqual(new Map(theirs));
          const offsets = [...file.header.values()].map((t) => t.dataOffsets);
          expect(offsets, context).toEqual([...offsets].sort((x, y) => x[0] - y[0] || x[1] - y[1]));
          expect(file.metadata === null ? null : new Map(Object.entries(file.metadata)), context).toEqual(verdict.metadata);
        } finally {
          await file.close();
        }
      }),
      { numRuns: 600 },
    );
    // Both sides of the property were exercised.
    expect(tally.accepted).toBeGreaterThan(100);
    expect(tally.refused).toBeGreaterThan(100);
  }, 60_000);
});

// =============================================================================================
// Writer round trip

const dtypeArb = fc.constantFrom(...(Object.keys(DTYPE_SIZES) as DType[]));

describe("round trip: random tensors of mixed dtypes through our writer", () => {
  it("reads back the same bytes, every tensor aligned to its dtype size, in the reference writer's order", async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(
          fc.record({
            name: fc.string({ unit: "binary", maxLength: 6 }).filter((s) => !s.includes("\0") && s !== "__metadata__"),
            dtype: dtypeArb,
            shape: fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 }),
            seed: fc.integer(),
          }),
          { selector: (t) => t.name, maxLength: 8 },
        ),
        fc.option(
          fc.dictionary(
            fc.string({ maxLength: 5 }).filter((s) => !s.includes("\0")),
            fc.string({ maxLength: 5 }).filter((s) => !s.includes("\0")),
            { maxKeys: 2 },
          ),
          { nil: undefined },
        ),
        async (specs, metadata) => {
          const entries = specs.map(({ name, dtype, shape, seed }) => {
            const t = Tensor.zeros(dtype, shape);
            const r = rng(seed);
            if (dtype === "F16" || dtype === "BF16")
              t.data.forEach((_, k) => {
                (t.data as Float32Array)[k] = (r(2001) - 1000) / 8;
              });
            else
              new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength).forEach((_, k, a) => {
                a[k] = r(256);
              });
            return { name, tensor: t };
          });
          const path = join(dir, `rt${counter++}.safetensors`);
          const written = await writeSafetensors(path, entries, metadata);
          const raw = new Uint8Array(await readFile(path));
          expect(raw.length).toBe(written);
          expect(oracle(raw)).toMatchObject({ accept: true, stricter: [] });
          const file = await SafetensorsFile.open(path);
          try {
            expect(file.dataStart % 8).toBe(0);
            expect([...file.tensors.keys()]).toEqual(referenceOrder(entries).map((e) => e.name));
            expect(file.metadata ?? undefined).toEqual(metadata);
            for (const { name, tensor } of entries) {
              const info = file.tensors.get(name)!;
              expect(info.dtype).toBe(tensor.dtype);
              expect(info.shape).toEqual(tensor.shape);
              expect((file.dataStart + info.dataOffsets[0]) % DTYPE_SIZES[tensor.dtype]).toBe(0);
              expect(Array.from(await file.readRaw(name))).toEqual(Array.from(encodeTensor(tensor)));
            }
          } finally {
            await file.close();
          }
        },
      ),
      { numRuns: 150 },
    );
  }, 60_000);
});

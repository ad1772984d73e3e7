import { readFileSync } from "node:fs";
import { describe, expect, test } from "vitest";
import { RefusedGlobalError, TorchFormatError } from "./errors.js";
import { isAllowedGlobal, WEIGHTS_ONLY_GLOBALS } from "./allowlist.js";
import { decodeLong, unpickle } from "./unpickle.js";
import { PyDict, PyGlobal, PyObject, PySet, PyTuple, type PyValue, pyEqual } from "./values.js";

/** Pickles CPython 3.11 wrote (test-fixtures/make_pickles.py). */
const PY = JSON.parse(readFileSync(new URL("../test-fixtures/python-pickles.json", import.meta.url), "utf8")) as { cases: Record<string, string> };
const hex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));
const bytes = (...parts: (number | string)[]): Uint8Array =>
  new Uint8Array(parts.flatMap((p) => (typeof p === "number" ? [p] : [...Buffer.from(p, "latin1")])));
const load = (b: Uint8Array): PyValue => unpickle(b, "x.pt");

/** The error `f` throws (failing if it does not). */
const thrown = (f: () => unknown): TorchFormatError => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(TorchFormatError);
    return e as TorchFormatError;
  }
  throw new Error("did not throw");
};

describe("values Python wrote", () => {
  const small = (): PyDict => load(hex(PY.cases["small-p2"]!)) as PyDict;

  test("protocol 2: every type in its form", () => {
    const d = small();
    expect(d).toBeInstanceOf(PyDict);
    expect(d.kind).toBe("dict");
    expect(d.get("a")).toBe(1n);
    expect(d.get("b")).toEqual([
      1.5,
      -2n,
      2n ** 40n,
      -(2n ** 70n),
      true,
      null,
      0,
      -0,
      255n,
      256n,
      65535n,
      65536n,
      -1n,
      2n ** 31n - 1n,
      2n ** 31n,
      -(2n ** 31n),
      -(2n ** 31n) - 1n,
      2n ** 63n,
    ]);
    expect(Object.is((d.get("b") as PyValue[])[7], -0)).toBe(true);
    expect((d.get("t1") as PyTuple).items).toEqual([1n]);
    expect((d.get("t4") as PyTuple).items).toEqual([1n, 2n, 3n, 4n]);
    expect((d.get("e") as PyTuple).length).toBe(0);
    expect(d.get("s")).toBe("h\u00e9llo \u20ac \u{1f600}");
    expect(d.get("by")).toEqual(new Uint8Array([0, 255, 128]));
    const od = d.get("od") as PyDict;
    expect(od.kind).toBe("OrderedDict");
    expect([...od.keys()]).toEqual(["x", "y"]);
    expect((d.get("od0") as PyDict).size).toBe(0);
    expect((d.get("set") as PySet).items).toEqual([7n]);
    const cnt = d.get("cnt") as PyDict;
    expect(cnt.kind).toBe("Counter");
    expect(cnt.get("a")).toBe(2n);
    expect(d.get("x")).toBe(d.get("y")); // one list, referred to twice
    expect((d.get("ints") as PyDict).get(1n)).toBe("one");
    const [tk] = [...(d.get("tk") as PyDict).keys()];
    expect((tk as PyTuple).items).toEqual([1n, "a"]);
  });

  test.each(["small-p3", "small-p4", "small-p5"])("%s reads as the protocol-2 pickle of the same value", (name) => {
    expect(pyEqual(load(hex(PY.cases[name]!)), small())).toBe(true);
  });

  test("a recursive list is itself", () => {
    const l = load(hex(PY.cases["recursive-list-p2"]!)) as PyValue[];
    expect(l[0]).toBe(l);
  });
});

describe("opcodes", () => {
  test("protocol 4 forms: FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL, EMPTY_SET/ADDITEMS, FROZENSET, LONG4", () => {
    const v = load(
      bytes(
        0x80,
        4,
        0x95,
        30,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        0x5d,
        0x94,
        0x28,
        0x8c,
        2,
        "hi",
        0x94,
        0x8c,
        11,
        "collections",
        0x8c,
        11,
        "OrderedDict",
        0x93,
        0x29,
        0x52,
        0x8f,
        0x28,
        0x4b,
        1,
        0x90,
        0x28,
        0x4b,
        2,
        0x91,
        0x8b,
        2,
        0,
        0,
        0,
        0x00,
        0x80,
        0x68,
        1,
        0x65,
        0x2e,
      ),
    ) as PyValue[];
    expect(v[0]).toBe("hi");
    expect((v[1] as PyDict).kind).toBe("OrderedDict");
    expect((v[2] as PySet).items).toEqual([1n]);
    expect((v[3] as PySet).frozen).toBe(true);
    expect(v[4]).toBe(-32768n);
    expect(v[5]).toBe("hi");
  });

  test("POP, POP_MARK, DUP, BINBYTES, BINSTRING, BINUNICODE8", () => {
    const v = load(
      bytes(
        0x80,
        3,
        0x5d,
        0x28,
        0x4b,
        1,
        0x30,
        0x28,
        0x4b,
        9,
        0x4b,
        9,
        0x31,
        0x43,
        2,
        "ab",
        0x32,
        0x42,
        1,
        0,
        0,
        0,
        "c",
        0x54,
        1,
        0,
        0,
        0,
        "d",
        0x8d,
        1,
        0,
        0,
        0,
        0,
        0,
        0,
        0,
        "e",
        0x65,
        0x2e,
      ),
    ) as PyValue[];
    expect(v.length).toBe(5);
    expect(v[0]).toEqual(new Uint8Array([97, 98]));
    expect(v[1]).toBe(v[0]);
    expect(v.slice(2)).toEqual([new Uint8Array([99]), "d", "e"]);
  });

  test("allowed calls stay inert records, other globals as names", () => {
    const v = load(bytes(0x80, 2, "ctorch\nSize\n", 0x4b, 2, 0x4b, 3, 0x86, 0x85, 0x52, 0x2e)) as PyObject;
    expect(v).toBeInstanceOf(PyObject);
    expect(v.callee.dotted).toBe("torch.Size");
    expect(pyEqual(v.args, new PyTuple([new PyTuple([2n, 3n])]))).toBe(true);
    const g = load(bytes(0x80, 2, "ctorch\nbfloat16\n", 0x2e));
    expect(g).toBeInstanceOf(PyGlobal);
    // Python 2 names are renamed as torch renames them: __builtin__.set is builtins.set.
    const s = load(bytes(0x80, 2, "c__builtin__\nset\n", 0x5d, 0x4b, 5, 0x61, 0x85, 0x52, 0x2e)) as PySet;
    expect(s.items).toEqual([5n]);
  });

  test("a BUILD on an OrderedDict keeps its state", () => {
    const v = load(bytes(0x80, 2, "ccollections\nOrderedDict\n", 0x29, 0x52, 0x7d, 0x58, 1, 0, 0, 0, "k", 0x4b, 1, 0x73, 0x62, 0x2e)) as PyDict;
    expect((v.state as PyDict).get("k")).toBe(1n);
  });

  test("decodeLong is two's complement little-endian", () => {
    expect(decodeLong(new Uint8Array([]))).toBe(0n);
    expect(decodeLong(new Uint8Array([0xff]))).toBe(-1n);
    expect(decodeLong(new Uint8Array([0x00, 0x80]))).toBe(-32768n);
    expect(decodeLong(new Uint8Array([0xff, 0x00]))).toBe(255n);
  });
});

describe("refused globals", () => {
  const refused = (module: string, name: string, via: "GLOBAL" | "STACK_GLOBAL" = "GLOBAL"): RefusedGlobalError => {
    const body = via === "GLOBAL" ? bytes(0x63, `${module}\n${name}\n`) : bytes(0x8c, module.length, module, 0x8c, name.length, name, 0x93);
    const e = thrown(() => unpickle(bytes(0x80, 2, ...body, 0x58, 4, 0, 0, 0, "true", 0x85, 0x52, 0x2e), "evil.pt"));
    expect(e).toBeInstanceOf(RefusedGlobalError);
    expect(e.code).toBe("refused-global");
    return e as RefusedGlobalError;
  };

  test.each([
    ["os", "system"],
    ["posix", "system"],
    ["nt", "system"],
    ["builtins", "eval"],
    ["builtins", "exec"],
    ["subprocess", "Popen"],
    ["numpy.core.multiarray", "_reconstruct"],
    ["numpy._core.multiarray", "_reconstruct"],
    ["numpy", "ndarray"],
    ["transformers.training_args", "TrainingArguments"],
    ["torch", "load"],
    ["torch._utils", "_rebuild_tensor_v9"],
    ["builtins", "getattr"],
    ["collections", "defaultdict"],
    ["torch.storage", "_load_from_bytes"],
  ])("%s.%s", (module, name) => {
    const e = refused(module, name);
    expect(e.global).toBe(`${module}.${name}`);
    expect(e.message).toBe(`evil.pt: refused global ${module}.${name} (torch.load(weights_only=True) refuses it too)`);
  });

  test("by STACK_GLOBAL too, and by their Python 2 names", () => {
    expect(refused("os", "system", "STACK_GLOBAL").global).toBe("os.system");
    expect(refused("__builtin__", "eval").global).toBe("builtins.eval");
    expect(refused("__builtin__", "intern").global).toBe("sys.intern");
  });

  test("a refused global stops the read before anything after it", () => {
    // The REDUCE after the global is never reached: the refusal is the first thing that happens.
    const e = thrown(() => unpickle(bytes(0x80, 2, "cos\nsystem\n", 0xff, 0xff), "evil.pt"));
    expect(e.code).toBe("refused-global");
  });

  test("the allow-list holds what torch's does", () => {
    for (const g of [
      "collections.OrderedDict",
      "torch._utils._rebuild_tensor_v2",
      "torch.FloatStorage",
      "torch.BFloat16Storage",
      "torch.cuda.HalfStorage",
      "torch.storage.UntypedStorage",
      "torch.float32",
      "torch.bfloat16",
      "torch.uint4",
      "torch.Size",
      "_codecs.encode",
      "builtins.set",
      "torch.nn.parameter.Parameter",
      "torch.FloatTensor",
      "torch.cuda.sparse.HalfTensor",
    ]) {
      expect(WEIGHTS_ONLY_GLOBALS.has(g), g).toBe(true);
    }
    for (const g of ["torch.sparse.BoolTensor", "builtins.frozenset", "builtins.bytes", "torch.cuda.QInt8Storage", "__proto__.x"]) {
      expect(WEIGHTS_ONLY_GLOBALS.has(g), g).toBe(false);
    }
    expect(isAllowedGlobal("__builtin__", "set")).toBe(true);
    expect(isAllowedGlobal("__proto__", "set")).toBe(false);
  });
});

describe("malformed pickles are typed errors naming the file and the byte", () => {
  test.each([
    ["stack empty", bytes(0x80, 2, 0x61, 0x2e), "malformed", "x.pt: data.pkl byte 2: APPEND: stack empty"],
    ["SETITEMS on a list", bytes(0x80, 2, 0x5d, 0x28, 0x4b, 1, 0x4b, 2, 0x75, 0x2e), "malformed", "SETITEMS: sets items on a list"],
    ["APPEND to a dict", bytes(0x80, 2, 0x7d, 0x4b, 1, 0x61, 0x2e), "malformed", "APPEND: appends to a dict"],
    ["REDUCE of a str", bytes(0x80, 2, 0x58, 1, 0, 0, 0, "f", 0x29, 0x52, 0x2e), "malformed", "REDUCE: calls a str"],
    ["REDUCE with a list of args", bytes(0x80, 2, "ctorch\nSize\n", 0x5d, 0x52, 0x2e), "malformed", "with a list of arguments"],
    ["NEWOBJ of an int", bytes(0x80, 2, 0x4b, 1, 0x29, 0x81, 0x2e), "malformed", "NEWOBJ: instantiates a int"],
    ["BUILD on a dict", bytes(0x80, 2, 0x7d, 0x7d, 0x62, 0x2e), "malformed", "BUILD: builds a dict"],
    ["POP_MARK without MARK", bytes(0x80, 2, 0x31, 0x2e), "malformed", "no MARK to pop to"],
    ["memo never stored", bytes(0x80, 2, 0x68, 7, 0x2e), "malformed", "memo entry 7 was never stored"],
    ["unhashable key", bytes(0x80, 2, 0x7d, 0x5d, 0x4b, 1, 0x73, 0x2e), "malformed", "unhashable list as a dict key"],
    ["odd SETITEMS", bytes(0x80, 2, 0x7d, 0x28, 0x4b, 1, 0x75, 0x2e), "malformed", "an odd number of items"],
    ["persistent id without storages", bytes(0x80, 2, 0x4b, 1, 0x51, 0x2e), "malformed", "a persistent id where none is expected"],
    ["not UTF-8", bytes(0x80, 2, 0x58, 1, 0, 0, 0, 0xff, 0x2e), "malformed", "1 bytes that are not UTF-8"],
    ["negative LONG4", bytes(0x80, 2, 0x8b, 0xff, 0xff, 0xff, 0xff, 0x2e), "malformed", "negative length"],
    ["truncated string", bytes(0x80, 2, 0x58, 9, 0, 0, 0, "abc"), "truncated", "BINUNICODE needs 9 more bytes"],
    ["truncated float", bytes(0x80, 2, 0x47, 1, 2), "truncated", "BINFLOAT needs 8 more bytes"],
    ["no STOP", bytes(0x80, 2, 0x4e), "truncated", "ends without STOP"],
    ["a GLOBAL without its newline", bytes(0x80, 2, 0x63, "torch\nSize"), "truncated", "ends inside a line"],
    ["a frame past the end", bytes(0x80, 4, 0x95, 99, 0, 0, 0, 0, 0, 0, 0, 0x4e, 0x2e), "truncated", "FRAME announces 99 bytes"],
    ["protocol 6", bytes(0x80, 6, 0x4e, 0x2e), "unsupported-opcode", "pickle protocol 6"],
    ["text INT (protocol 0)", bytes(0x49, "1\n", 0x2e), "unsupported-opcode", "opcode INT is not read"],
    ["EXT1", bytes(0x80, 2, 0x82, 1, 0x2e), "unsupported-opcode", "opcode EXT1"],
    ["NEXT_BUFFER", bytes(0x80, 5, 0x97, 0x2e), "unsupported-opcode", "opcode NEXT_BUFFER"],
    ["a byte no opcode has", bytes(0x80, 2, 0xff, 0x2e), "unsupported-opcode", "opcode 0xff (not a pickle opcode)"],
  ])("%s", (_name, data, code, message) => {
    const e = thrown(() => load(data));
    expect(e.code).toBe(code);
    expect(e.message).toContain(message);
    expect(e.message.startsWith("x.pt: data.pkl byte ")).toBe(true);
    expect(e.message).not.toContain("\n");
  });
});

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import fc from "fast-check";
import { describe, expect, test } from "vitest";
import { TorchFormatError } from "./errors.js";
import { WEIGHTS_ONLY_GLOBALS } from "./allowlist.js";
import { MAX_PICKLE_DEPTH, encodeLong, encodeUtf8, pickle } from "./pickle.js";
import { decodeLong, decodeUtf8, unpickle } from "./unpickle.js";
import { PyDict, PyGlobal, PyObject, PySet, PyTuple, type PyValue, isHashable, pyEqual, pyRepr } from "./values.js";

const PY = JSON.parse(readFileSync(new URL("../test-fixtures/python-pickles.json", import.meta.url), "utf8")) as {
  cases: Record<string, string>;
  big: Record<string, { sha256: string; length: number }>;
};
const hex = (h: string): Uint8Array => new Uint8Array(Buffer.from(h, "hex"));
const sha = (b: Uint8Array): string => createHash("sha256").update(b).digest("hex");

describe("the bytes CPython's pickler writes", () => {
  test.each(["small-p2", "recursive-list-p2"])("%s: read and pickled again, byte for byte", (name) => {
    const py = hex(PY.cases[name]!);
    expect(Buffer.from(pickle(unpickle(py, "x.pt"), "x.pt")).toString("hex")).toBe(PY.cases[name]);
  });

  test.each(["small-p3", "small-p4", "small-p5"])("%s pickles as protocol 2 to Python's protocol-2 bytes", (name) => {
    expect(Buffer.from(pickle(unpickle(hex(PY.cases[name]!), "x.pt"), "x.pt")).toString("hex")).toBe(PY.cases["small-p2"]);
  });

  // Batches of 1000 as CPython's C pickler writes them: a list of 1001 is MARK·1000·APPENDS MARK·1·APPENDS, a dict of 1001
  // the same with SETITEMS, an OrderedDict's last single item a SETITEM, and a dict of 2000 ends with an empty MARK SETITEMS.
  const range = (n: number): bigint[] => Array.from({ length: n }, (_, i) => BigInt(i));
  const cases: Record<string, () => PyValue> = {
    list1001: () => range(1001),
    list1000: () => range(1000),
    dict2000: () =>
      new PyDict(
        "dict",
        range(2000).map((i) => [String(i), i]),
      ),
    dict1001: () =>
      new PyDict(
        "dict",
        range(1001).map((i) => [String(i), i]),
      ),
    od1001: () =>
      new PyDict(
        "OrderedDict",
        range(1001).map((i) => [String(i), i]),
      ),
  };
  test.each(Object.keys(cases))("%s", (name) => {
    const b = pickle(cases[name]!(), "x.pt");
    expect({ length: b.length, sha256: sha(b) }).toEqual(PY.big[name]);
    expect(pyEqual(unpickle(b, "x.pt"), cases[name]!())).toBe(true);
  });
});

describe("round trips", () => {
  const leaf: fc.Arbitrary<PyValue> = fc.oneof(
    fc.constant(null),
    fc.boolean(),
    fc.bigInt({ min: -(2n ** 200n), max: 2n ** 200n }),
    fc.integer({ min: -70000, max: 70000 }).map(BigInt),
    fc.double(),
    fc.string({ unit: "binary", maxLength: 12 }),
    fc.uint8Array({ maxLength: 12 }),
    fc
      .constantFrom(...[...WEIGHTS_ONLY_GLOBALS].slice(0, 40))
      .map((g) => new PyGlobal(g.slice(0, g.lastIndexOf(".")), g.slice(g.lastIndexOf(".") + 1))),
  );
  const key: fc.Arbitrary<PyValue> = fc.oneof(
    fc.string({ maxLength: 6 }),
    fc.bigInt({ min: -5n, max: 300n }),
    fc.double(),
    fc.boolean(),
    fc.constant(null),
    fc.array(fc.oneof(fc.string({ maxLength: 3 }), fc.bigInt({ min: 0n, max: 9n })), { maxLength: 3 }).map((a) => new PyTuple(a)),
  );
  const { value } = fc.letrec<{ value: PyValue }>((tie) => ({
    value: fc.oneof(
      { depthSize: "small", maxDepth: 5 },
      leaf,
      fc.array(tie("value"), { maxLength: 5 }),
      fc.array(tie("value"), { maxLength: 5 }).map((a) => new PyTuple(a)),
      fc
        .tuple(
          fc.constantFrom("dict", "OrderedDict", "Counter") as fc.Arbitrary<"dict" | "OrderedDict" | "Counter">,
          fc.array(fc.tuple(key, tie("value")), { maxLength: 5 }),
        )
        .map(([kind, e]) => new PyDict(kind, e as [string, PyValue][])),
      fc.array(key, { maxLength: 4 }).map((a) => new PySet(a)),
      fc.array(tie("value"), { maxLength: 3 }).map((a) => new PyObject(new PyGlobal("torch", "Size"), new PyTuple(a))),
    ),
  }));

  test("unpickle(pickle(v)) equals v, and pickling it again gives the same bytes", () => {
    fc.assert(
      fc.property(value, (v) => {
        const b = pickle(v, "x.pt");
        const back = unpickle(b, "x.pt");
        expect(pyEqual(back, v)).toBe(true);
        expect(sha(pickle(back, "x.pt"))).toBe(sha(b));
      }),
      { numRuns: 300 },
    );
  });

  test("ints: encodeLong and decodeLong are inverse, and the shortest form", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: -(2n ** 300n), max: 2n ** 300n }), (x) => {
        const b = encodeLong(x);
        expect(decodeLong(b)).toBe(x);
        if (b.length > 1) expect(decodeLong(b.subarray(0, b.length - 1))).not.toBe(x);
      }),
      { numRuns: 300 },
    );
  });

  test("strings with lone surrogates go through as Python's surrogatepass does", () => {
    for (const s of ["\ud800", "a\udfffb", "\ud83d\ude00", "\udc00\ud800"]) expect(decodeUtf8(encodeUtf8(s))).toBe(s);
    expect(Buffer.from(encodeUtf8("\ud800")).toString("hex")).toBe("eda080");
    expect(decodeUtf8(new Uint8Array([0xc0, 0x80]))).toBeNull(); // overlong
  });

  test("shared objects stay shared and cycles survive", () => {
    const shared = [1n];
    const cyc: PyValue[] = [];
    cyc.push(cyc);
    const back = unpickle(pickle(PyDict.from({ a: shared, b: shared, c: cyc }), "x.pt"), "x.pt") as PyDict;
    expect(back.get("a")).toBe(back.get("b"));
    const c = back.get("c") as PyValue[];
    expect(c[0]).toBe(c);
  });

  test("plain objects are dicts with string keys", () => {
    const back = unpickle(pickle({ lr: 0.1, params: [0n, 1n], nested: { x: null } }, "x.pt"), "x.pt");
    expect(pyRepr(back)).toBe("{'lr': 0.1, 'params': [0, 1], 'nested': {'x': None}}");
  });
});

describe("values with no pickle form", () => {
  const bad = (v: unknown): TorchFormatError => {
    try {
      pickle(v, "out.pt");
    } catch (e) {
      expect(e).toBeInstanceOf(TorchFormatError);
      expect((e as TorchFormatError).code).toBe("bad-value");
      return e as TorchFormatError;
    }
    throw new Error("did not throw");
  };
  test("say where they are", () => {
    expect(bad({ a: [1n, undefined] }).message).toBe("out.pt: value.a[1]: a JavaScript undefined has no Python form");
    expect(bad({ f: () => 1 }).message).toContain("value.f: a JavaScript function");
    expect(bad(new Map()).message).toContain("a Map has no Python form here");
    expect(bad(new PySet([], true)).message).toContain("frozenset");
  });
  test("a tree deeper than Python's recursion limit is refused, not a stack overflow", () => {
    let deep: PyValue = [];
    for (let i = 0; i < MAX_PICKLE_DEPTH + 10; i++) deep = [deep];
    expect(bad(deep).message).toContain(`nested deeper than ${MAX_PICKLE_DEPTH} levels`);
  });
});

describe("fuzz: any bytes read as a value or a TorchFormatError, never another exception", () => {
  const hooks = { persistentLoad: (pid: PyValue) => pid, reduce: () => undefined };
  const check = (b: Uint8Array): void => {
    try {
      unpickle(b, "fuzz.pt", hooks);
    } catch (e) {
      if (!(e instanceof TorchFormatError)) throw e;
      expect(e.message.startsWith("fuzz.pt: ")).toBe(true);
      expect(e.message).not.toContain("\n");
    }
  };
  test("random bytes", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), (b) => check(new Uint8Array([0x80, 2, ...b]))),
      { numRuns: 2000 },
    );
  });
  test("valid pickles with bytes changed, cut or inserted", () => {
    const seeds = [hex(PY.cases["small-p2"]!), hex(PY.cases["small-p4"]!), pickle({ a: [1n, 2.5, "x"], b: new PyTuple([null]) }, "x.pt")];
    fc.assert(
      fc.property(
        fc.constantFrom(...seeds),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom("set", "cut", "insert")), { minLength: 1, maxLength: 4 }),
        (seed, edits) => {
          let b = Array.from(seed);
          for (const [at, byte, how] of edits) {
            const i = at % (b.length + 1);
            if (how === "set" && i < b.length) b[i] = byte;
            else if (how === "cut") b = b.slice(0, i);
            else b.splice(i, 0, byte);
          }
          check(new Uint8Array(b));
        },
      ),
      { numRuns: 2000 },
    );
  });
  test("a 100,000-deep list reads without recursion", () => {
    const n = 100_000;
    const b = new Uint8Array(2 + n + (n - 1) + 1);
    b.set([0x80, 2]);
    b.fill(0x5d, 2, 2 + n);
    b.fill(0x61, 2 + n, 2 + n + n - 1);
    b[b.length - 1] = 0x2e;
    const v = unpickle(b, "deep.pt");
    expect(pyRepr(v, 30)).toMatch(/^\[{20}/);
    expect(() => pickle(v, "deep.pt")).toThrow(TorchFormatError);
  });
  test("hashability is known without walking nested tuples", () => {
    let t = new PyTuple([1n]);
    for (let i = 0; i < 100_000; i++) t = new PyTuple([t]);
    expect(isHashable(t)).toBe(true);
    expect(isHashable(new PyTuple([[]]))).toBe(false);
  });
});

/**
 * Python values as this package reads them from a pickle and writes them to one. Each Python type has one form, so
 * that a tree read and written back pickles to the same bytes:
 *
 * | Python                         | here                                                        |
 * | ------------------------------ | ----------------------------------------------------------- |
 * | None, bool, str                | null, boolean, string                                       |
 * | int                            | bigint (`3n`): never a number, so an int stays an int       |
 * | float                          | number (`0.0` stays a float)                                |
 * | bytes                          | Uint8Array                                                  |
 * | list                           | Array                                                       |
 * | tuple                          | PyTuple                                                     |
 * | dict, OrderedDict, Counter     | PyDict (`kind` says which; keys in insertion order)          |
 * | set                            | PySet                                                       |
 * | torch.Tensor                   | TorchTensor (read) — the writer also takes core's Tensor and LazyTensor |
 * | any other allowed global       | PyGlobal (the global itself) or PyObject (a call of it, kept inert) |
 *
 * Writing also accepts a plain JavaScript object as a dict with string keys (`{ state, param_groups }`).
 * Identity is kept: an object the pickle refers to twice (its memo) is one JavaScript object, and writing it twice
 * writes a memo reference, as Python's pickler does.
 */
import type { TorchStorage, TorchTensor } from "./tensor.js";

/** A Python tuple: an immutable sequence. */
export class PyTuple {
  readonly items: readonly PyValue[];
  /** Whether every item is hashable (so the tuple can be a dict key); computed once, without recursion. */
  readonly hashable: boolean;
  constructor(items: readonly PyValue[]) {
    this.items = items;
    this.hashable = items.every(isHashable);
  }
  get length(): number {
    return this.items.length;
  }
  at(i: number): PyValue | undefined {
    return this.items[i];
  }
  [Symbol.iterator](): Iterator<PyValue> {
    return this.items[Symbol.iterator]();
  }
}

/** A shorthand for `new PyTuple([...])`. */
export const tuple = (...items: PyValue[]): PyTuple => new PyTuple(items);

/**
 * A key a Python dict can hold (hashable): str, int, float, bool, None, bytes, a tuple of hashables, a global, a
 * frozenset. Map semantics apply: str/int/float/bool/None keys are equal by value; the others by identity (a lookup
 * needs the key object the dict holds; they come back in `keys()`). Python's `1 == 1.0 == True` is not applied: the
 * int 1n, the float 1 and true are three keys (no pickle Python writes holds two of them in one dict).
 */
export type PyKey = string | bigint | number | boolean | null | Uint8Array | PyTuple | PyGlobal | PySet;

/** Which Python mapping a PyDict is. */
export type PyDictKind = "dict" | "OrderedDict" | "Counter";

/** A Python dict, collections.OrderedDict or collections.Counter: entries in insertion order. */
export class PyDict {
  readonly map: Map<PyKey, PyValue>;
  /** Attributes a pickle set on an OrderedDict or Counter (its BUILD state); absent almost always. */
  state?: PyValue;

  constructor(
    readonly kind: PyDictKind = "dict",
    entries?: Iterable<readonly [PyKey, PyValue]>,
  ) {
    this.map = new Map(entries as Iterable<[PyKey, PyValue]> | undefined);
  }

  /** A dict of a plain object's own enumerable string keys, in their order. */
  static from(record: Readonly<Record<string, PyValue>>, kind: PyDictKind = "dict"): PyDict {
    return new PyDict(kind, Object.entries(record));
  }

  get size(): number {
    return this.map.size;
  }
  get(key: PyKey): PyValue | undefined {
    return this.map.get(key);
  }
  has(key: PyKey): boolean {
    return this.map.has(key);
  }
  set(key: PyKey, value: PyValue): this {
    this.map.set(key, value);
    return this;
  }
  delete(key: PyKey): boolean {
    return this.map.delete(key);
  }
  keys(): IterableIterator<PyKey> {
    return this.map.keys();
  }
  values(): IterableIterator<PyValue> {
    return this.map.values();
  }
  entries(): IterableIterator<[PyKey, PyValue]> {
    return this.map.entries();
  }
  [Symbol.iterator](): IterableIterator<[PyKey, PyValue]> {
    return this.map.entries();
  }
}

/** A Python set (or frozenset): its items in pickle order. */
export class PySet {
  constructor(
    readonly items: PyValue[] = [],
    readonly frozen = false,
  ) {}
}

/**
 * An allowed global as a value: a dtype (`torch.float32`), a class (`torch.Size`), a function. Only names
 * torch.load(weights_only=True) accepts are ever made (see allowlist.ts); nothing is imported.
 */
export class PyGlobal {
  /** The name as torch looks it up ("torch._utils._rebuild_tensor_v2"), Python 2 names renamed. */
  readonly dotted: string;
  constructor(
    readonly module: string,
    readonly name: string,
  ) {
    this.dotted = `${module}.${name}`;
  }
}

/**
 * A call of an allowed global that this package does not interpret (torch.Size((2, 3)), a Parameter, a set of
 * bytearray...): kept as the pickle described it, never executed, and written back the same way.
 */
export class PyObject {
  /** BUILD state, if the pickle gave one. */
  state?: PyValue;
  constructor(
    readonly callee: PyGlobal,
    readonly args: PyTuple,
    /** REDUCE: `callee(*args)`; NEWOBJ: `callee.__new__(callee, *args)`. */
    readonly how: "reduce" | "newobj" = "reduce",
  ) {}
}

/** Every value a pickle read by this package can hold. */
export type PyValue =
  null | boolean | bigint | number | string | Uint8Array | PyValue[] | PyTuple | PyDict | PySet | PyGlobal | PyObject | TorchTensor | TorchStorage;

/** The kind of a value, in Python's words ("int", "float", "dict", "torch.Tensor", ...), for messages. */
export function pyTypeName(v: unknown): string {
  if (v === null) return "None";
  switch (typeof v) {
    case "boolean":
      return "bool";
    case "bigint":
      return "int";
    case "number":
      return "float";
    case "string":
      return "str";
    case "undefined":
      return "undefined";
    case "function":
      return "function";
    case "symbol":
      return "symbol";
    default:
      break;
  }
  if (Array.isArray(v)) return "list";
  if (v instanceof Uint8Array) return "bytes";
  if (v instanceof PyTuple) return "tuple";
  if (v instanceof PyDict) return v.kind === "dict" ? "dict" : `collections.${v.kind}`;
  if (v instanceof PySet) return v.frozen ? "frozenset" : "set";
  if (v instanceof PyGlobal) return v.dotted;
  if (v instanceof PyObject) return `${v.callee.dotted}(...)`;
  const name = (v as { constructor?: { name?: string } }).constructor?.name;
  if (name === "TorchTensor") return "torch.Tensor";
  if (name === "TorchStorage") return "torch.storage";
  return name ?? "object";
}

/** Whether `v` can be a dict key (hashable in Python). */
export function isHashable(v: unknown): v is PyKey {
  if (v === null || typeof v === "string" || typeof v === "bigint" || typeof v === "number" || typeof v === "boolean") return true;
  if (v instanceof Uint8Array || v instanceof PyGlobal) return true;
  if (v instanceof PyTuple) return v.hashable;
  if (v instanceof PySet) return v.frozen;
  return false;
}

const MAX_REPR = 200;

/** A short Python-like rendering of a value, for messages: `{'lr': 0.003, 'params': [0, 1, ...]}`. */
export function pyRepr(v: unknown, budget = MAX_REPR): string {
  const out: string[] = [];
  let used = 0;
  const emit = (s: string): boolean => {
    if (used >= budget) return false;
    out.push(s);
    used += s.length;
    return used < budget;
  };
  const walk = (x: unknown, depth: number): boolean => {
    if (depth > 20) return emit("...");
    if (x === null) return emit("None");
    if (typeof x === "boolean") return emit(x ? "True" : "False");
    if (typeof x === "bigint") return emit(x.toString());
    if (typeof x === "number") return emit(Number.isInteger(x) && Math.abs(x) < 1e16 ? x.toFixed(1) : String(x));
    if (typeof x === "string") return emit(JSON.stringify(x).replace(/^"|"$/g, "'"));
    if (x instanceof Uint8Array) return emit(`b<${x.length} bytes>`);
    const seq = (open: string, items: Iterable<unknown>, close: string): boolean => {
      if (!emit(open)) return false;
      let first = true;
      for (const item of items) {
        if (!first && !emit(", ")) return false;
        first = false;
        if (!walk(item, depth + 1)) return false;
      }
      return emit(close);
    };
    if (Array.isArray(x)) return seq("[", x, "]");
    if (x instanceof PyTuple) return seq("(", x.items, x.length === 1 ? ",)" : ")");
    if (x instanceof PySet) return seq(x.frozen ? "frozenset({" : "{", x.items, x.frozen ? "})" : "}");
    if (x instanceof PyDict) {
      if (!emit(x.kind === "dict" ? "{" : `${x.kind}({`)) return false;
      let first = true;
      for (const [k, val] of x.map) {
        if (!first && !emit(", ")) return false;
        first = false;
        if (!walk(k, depth + 1) || !emit(": ") || !walk(val, depth + 1)) return false;
      }
      return emit(x.kind === "dict" ? "}" : "})");
    }
    if (x instanceof PyGlobal) return emit(x.dotted);
    if (x instanceof PyObject) return emit(`${x.callee.dotted}`) && seq("(", x.args.items, ")");
    const t = x as Partial<TorchTensor>;
    if (typeof t.torchDtype === "string" && Array.isArray(t.shape)) return emit(`tensor(${t.torchDtype}, [${t.shape.join(", ")}])`);
    return emit(pyTypeName(x));
  };
  walk(v, 0);
  const s = out.join("");
  return used >= budget ? `${s.slice(0, budget - 3)}...` : s;
}

/**
 * Whether two values are equal as Python data: same types (an int is never equal to a float, a list never to a
 * tuple, a dict never to an OrderedDict), same items in the same order (dicts: same keys in the same order, keys
 * compared as a Map compares them), floats by value with -0 ≠ 0 and NaN = NaN, bytes by content, globals by name,
 * tensors by dtype, shape, strides, offset, requires_grad and storage (dtype, size, location). Cycles are followed
 * once. Tensor bytes are not compared (they are in the files): compare them with readBytes.
 */
export function pyEqual(a: unknown, b: unknown): boolean {
  const seen = new Map<object, object>();
  const eq = (x: unknown, y: unknown, depth: number): boolean => {
    if (depth > 10_000) throw new RangeError("pyEqual: nested deeper than 10000 levels");
    if (typeof x !== typeof y) return false;
    if (typeof x === "number") return Object.is(x, y);
    if (x === null || typeof x !== "object") return x === y;
    if (y === null || typeof y !== "object") return false;
    if (Object.getPrototypeOf(x) !== Object.getPrototypeOf(y)) return false;
    if (seen.get(x) === y) return true;
    seen.set(x, y);
    const all = (xs: readonly unknown[], ys: readonly unknown[]): boolean => xs.length === ys.length && xs.every((v, i) => eq(v, ys[i], depth + 1));
    if (x instanceof Uint8Array) return x.length === (y as Uint8Array).length && x.every((v, i) => v === (y as Uint8Array)[i]);
    if (Array.isArray(x)) return all(x, y as unknown[]);
    if (x instanceof PyTuple) return all(x.items, (y as PyTuple).items);
    if (x instanceof PySet) return x.frozen === (y as PySet).frozen && all(x.items, (y as PySet).items);
    if (x instanceof PyGlobal) return x.dotted === (y as PyGlobal).dotted;
    if (x instanceof PyObject) {
      const o = y as PyObject;
      return x.how === o.how && x.callee.dotted === o.callee.dotted && eq(x.args, o.args, depth + 1) && eq(x.state, o.state, depth + 1);
    }
    if (x instanceof PyDict) {
      const d = y as PyDict;
      if (x.kind !== d.kind || x.size !== d.size || !eq(x.state, d.state, depth + 1)) return false;
      const xe = [...x.map],
        ye = [...d.map];
      return xe.every(([k, v], i) => eq(k, ye[i]![0], depth + 1) && eq(v, ye[i]![1], depth + 1));
    }
    const t = x as Partial<TorchTensor>,
      u = y as Partial<TorchTensor>;
    if (t.storage && u.storage) {
      return (
        t.dtype === u.dtype &&
        all(t.shape ?? [], u.shape ?? []) &&
        all(t.stride ?? [], u.stride ?? []) &&
        t.storageOffset === u.storageOffset &&
        t.requiresGrad === u.requiresGrad &&
        t.storage.torchDtype === u.storage.torchDtype &&
        t.storage.byteLength === u.storage.byteLength &&
        t.storage.location === u.storage.location
      );
    }
    const s = x as Partial<TorchStorage>,
      r = y as Partial<TorchStorage>;
    if (s.source && r.source) return s.torchDtype === r.torchDtype && s.byteLength === r.byteLength && s.location === r.location;
    return false;
  };
  return eq(a, b, 0);
}

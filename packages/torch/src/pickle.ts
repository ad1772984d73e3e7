/**
 * A protocol-2 pickler for the values of values.ts, writing what CPython's C pickler (Modules/_pickle.c, the one
 * torch.save uses) writes for the same Python objects — the same opcodes, the same memo (BINPUT after every string,
 * tuple, list, dict, global and reduced object; BINGET when one comes again), the same batches of 1000 — so a tree
 * read from a torch.save file pickles back to the same bytes. Strings are memoized by value (Python by identity:
 * equal strings in one torch pickle are one interned object, in practice). Every opcode written is one
 * torch.load(weights_only=True) reads (see the README for torch 1.13, which lacks BINFLOAT). Two deviations from
 * CPython, both so that the result stays loadable with weights_only=True: empty bytes are written as
 * `_codecs.encode('', 'latin1')` (CPython writes `bytes()`, a global torch refuses), and a frozenset is refused (its
 * global, builtins.frozenset, is not allowed).
 */
import { TorchFormatError } from "./errors.js";
import { PyDict, PyGlobal, PyObject, PySet, PyTuple, type PyValue, pyRepr, pyTypeName } from "./values.js";

/** A persistent id in a reduction's arguments: pickled as `pid` followed by BINPERSID (a storage reference). */
export class PersistentId {
  constructor(readonly pid: PyValue) {}
}

/** How to pickle an object that is not a Python value here: as `callee(*args)` (args may hold PersistentIds). */
export interface Reduction {
  callee: PyGlobal;
  /** The arguments: values, PersistentIds, or more objects the hook knows. */
  args: readonly unknown[];
}

export interface PickleHooks {
  /** The reduction of a value the pickler does not know (a tensor), or undefined when it has none. */
  reduce?(v: object, where: string): Reduction | undefined;
}

/** Python's `sys.getrecursionlimit()` default: deeper trees are refused rather than overflow the call stack. */
export const MAX_PICKLE_DEPTH = 1000;

const BATCH = 1000;

/** Python 3 module names a protocol-2 pickle writes by their Python 2 name (CPython's fix_imports). */
const PY2_MODULES: Readonly<Record<string, string>> = { builtins: "__builtin__", copyreg: "copy_reg" };

class ByteSink {
  private buf = new Uint8Array(1 << 16);
  length = 0;
  private ensure(n: number): void {
    if (this.length + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.length + n) size *= 2;
    const b = new Uint8Array(size);
    b.set(this.buf.subarray(0, this.length));
    this.buf = b;
  }
  op(b: number): void {
    this.ensure(1);
    this.buf[this.length++] = b;
  }
  bytes(b: Uint8Array): void {
    this.ensure(b.length);
    this.buf.set(b, this.length);
    this.length += b.length;
  }
  u8(v: number): void {
    this.op(v & 0xff);
  }
  u16(v: number): void {
    this.ensure(2);
    this.buf[this.length++] = v & 0xff;
    this.buf[this.length++] = (v >>> 8) & 0xff;
  }
  u32(v: number): void {
    this.ensure(4);
    new DataView(this.buf.buffer).setUint32(this.length, v, true);
    this.length += 4;
  }
  i32(v: number): void {
    this.ensure(4);
    new DataView(this.buf.buffer).setInt32(this.length, v, true);
    this.length += 4;
  }
  f64be(v: number): void {
    this.ensure(8);
    new DataView(this.buf.buffer).setFloat64(this.length, v, false);
    this.length += 8;
  }
  result(): Uint8Array {
    return this.buf.slice(0, this.length);
  }
}

/** UTF-8 with lone surrogates encoded as their 3-byte forms (Python's "surrogatepass"). */
export function encodeUtf8(s: string): Uint8Array {
  if (!/[\uD800-\uDFFF]/.test(s)) return new Uint8Array(Buffer.from(s, "utf8"));
  const out: number[] = [];
  for (let i = 0; i < s.length; i++) {
    let c = s.charCodeAt(i);
    if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        c = 0x10000 + ((c - 0xd800) << 10) + (d - 0xdc00);
        i++;
      }
    }
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 0x3f));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 0x3f), 0x80 | ((c >> 6) & 0x3f), 0x80 | (c & 0x3f));
  }
  return Uint8Array.from(out);
}

/** Python's pickle.encode_long: the shortest little-endian two's complement of `x` (empty for 0). */
export function encodeLong(x: bigint): Uint8Array {
  if (x === 0n) return new Uint8Array(0);
  const abs = x < 0n ? -x : x;
  const bits = abs.toString(2).length; // x.bit_length()
  let n = (bits >> 3) + 1;
  let v = x < 0n ? (1n << BigInt(8 * n)) + x : x;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    out[i] = Number(v & 0xffn);
    v >>= 8n;
  }
  if (x < 0n && n > 1 && out[n - 1] === 0xff && (out[n - 2]! & 0x80) !== 0) n--;
  return out.subarray(0, n);
}

const isPlainObject = (v: object): v is Record<string, PyValue> => {
  const p = Object.getPrototypeOf(v) as unknown;
  return p === Object.prototype || p === null;
};

const keyText = (k: unknown): string => (typeof k === "string" && /^[A-Za-z_][A-Za-z0-9_]*$/.test(k) ? `.${k}` : `[${pyRepr(k, 40)}]`);

/**
 * The protocol-2 pickle of `value` (a tree of values.ts values, plain objects as dicts with string keys, and what
 * `hooks.reduce` knows). `path` names the file in errors; a value with no pickle form is a TorchFormatError
 * "bad-value" naming where it is in the tree ("value.state[0].exp_avg").
 */
export function pickle(value: unknown, path: string, hooks: PickleHooks = {}): Uint8Array {
  const out = new ByteSink();
  const ids = new Map<object, number>();
  const strings = new Map<string, number>();
  const globals = new Map<string, number>();
  let memoSize = 0;
  const trail: string[] = ["value"];

  const fail = (problem: string): never => {
    throw new TorchFormatError(path, "bad-value", `${trail.join("")}: ${problem}`);
  };
  const put = (): number => {
    const i = memoSize++;
    if (i < 256) {
      out.op(0x71);
      out.u8(i);
    } else {
      out.op(0x72);
      out.u32(i);
    }
    return i;
  };
  const get = (i: number): void => {
    if (i < 256) {
      out.op(0x68);
      out.u8(i);
    } else {
      out.op(0x6a);
      out.u32(i);
    }
  };
  /** After an object's opcodes: BINPUT it, or (it referred to itself, so it is in the memo now) POP it and BINGET. */
  const memoizeObject = (v: object): void => {
    const i = ids.get(v);
    if (i !== undefined) {
      out.op(0x30);
      get(i);
      return;
    }
    ids.set(v, put());
  };

  const saveInt = (x: bigint): void => {
    if (x >= 0n && x <= 0xffn) {
      out.op(0x4b);
      out.u8(Number(x));
      return;
    }
    if (x >= 0n && x <= 0xffffn) {
      out.op(0x4d);
      out.u16(Number(x));
      return;
    }
    if (x >= -0x80000000n && x <= 0x7fffffffn) {
      out.op(0x4a);
      out.i32(Number(x));
      return;
    }
    const b = encodeLong(x);
    if (b.length < 256) {
      out.op(0x8a);
      out.u8(b.length);
    } else {
      out.op(0x8b);
      out.i32(b.length);
    }
    out.bytes(b);
  };
  const saveStr = (s: string): void => {
    const i = strings.get(s);
    if (i !== undefined) {
      get(i);
      return;
    }
    const b = encodeUtf8(s);
    if (b.length > 0xffffffff) fail(`a string of ${b.length} bytes (protocol 2 holds at most 4 GiB)`);
    out.op(0x58);
    out.u32(b.length);
    out.bytes(b);
    strings.set(s, put());
  };
  const saveGlobal = (g: PyGlobal): void => {
    const i = globals.get(g.dotted);
    if (i !== undefined) {
      get(i);
      return;
    }
    const module = Object.hasOwn(PY2_MODULES, g.module) ? PY2_MODULES[g.module]! : g.module;
    if (/[\n]/.test(module) || /[\n]/.test(g.name)) fail(`a global name with a newline (${pyRepr(g.dotted, 60)})`);
    out.op(0x63);
    out.bytes(encodeUtf8(`${module}\n${g.name}\n`));
    globals.set(g.dotted, put());
  };

  const saveItems = (items: Iterable<PyValue>, depth: number): void => {
    let i = 0;
    for (const it of items) {
      trail.push(`[${i++}]`);
      save(it, depth);
      trail.pop();
    }
  };
  /** CPython's batch_list_exact: one item APPEND, else batches of 1000 as MARK ... APPENDS. */
  const appends = (list: readonly PyValue[], depth: number): void => {
    if (list.length === 0) return;
    if (list.length === 1) {
      trail.push("[0]");
      save(list[0], depth);
      trail.pop();
      out.op(0x61);
      return;
    }
    for (let at = 0; at < list.length; at += BATCH) {
      out.op(0x28);
      for (let i = at; i < Math.min(list.length, at + BATCH); i++) {
        trail.push(`[${i}]`);
        save(list[i], depth);
        trail.pop();
      }
      out.op(0x65);
    }
  };
  const pair = (k: unknown, v: unknown, depth: number): void => {
    trail.push(keyText(k));
    save(k, depth);
    save(v, depth);
    trail.pop();
  };
  /** CPython's batch_dict_exact (a dict): one item SETITEM, else MARK ... SETITEMS per 1000, and an empty batch after a full one. */
  const setItemsExact = (entries: readonly (readonly [unknown, unknown])[], depth: number): void => {
    if (entries.length === 0) return;
    if (entries.length === 1) {
      pair(entries[0]![0], entries[0]![1], depth);
      out.op(0x73);
      return;
    }
    let at = 0,
      n: number;
    do {
      out.op(0x28);
      n = 0;
      while (at < entries.length) {
        pair(entries[at]![0], entries[at]![1], depth);
        at++;
        if (++n === BATCH) break;
      }
      out.op(0x75);
    } while (n === BATCH);
  };
  /** CPython's batch_dict (any other mapping, an OrderedDict): batches of 1000, a last batch of one as SETITEM. */
  const setItemsIter = (entries: readonly (readonly [unknown, unknown])[], depth: number): void => {
    for (let at = 0; at < entries.length; at += BATCH) {
      const end = Math.min(entries.length, at + BATCH);
      if (end - at === 1) {
        pair(entries[at]![0], entries[at]![1], depth);
        out.op(0x73);
        break;
      }
      out.op(0x28);
      for (let i = at; i < end; i++) pair(entries[i]![0], entries[i]![1], depth);
      out.op(0x75);
    }
  };
  const saveTuple = (t: PyTuple, depth: number): void => {
    const n = t.items.length;
    if (n === 0) {
      out.op(0x29);
      return;
    }
    if (n <= 3) {
      saveItems(t.items, depth);
      const i = ids.get(t);
      if (i !== undefined) {
        for (let k = 0; k < n; k++) out.op(0x30);
        get(i);
        return;
      }
      out.op(0x84 + n); // TUPLE1..3
    } else {
      out.op(0x28);
      saveItems(t.items, depth);
      const i = ids.get(t);
      if (i !== undefined) {
        out.op(0x31);
        get(i);
        return;
      }
      out.op(0x74);
    }
    ids.set(t, put());
  };
  const saveReduce = (v: object, callee: PyGlobal, args: PyTuple, depth: number, how: "reduce" | "newobj" = "reduce"): void => {
    saveGlobal(callee);
    trail.push("(args)");
    saveTuple(args, depth);
    trail.pop();
    out.op(how === "reduce" ? 0x52 : 0x81);
    memoizeObject(v);
  };
  const saveState = (state: PyValue | undefined, depth: number): void => {
    if (state === undefined) return;
    trail.push("(state)");
    save(state, depth);
    trail.pop();
    out.op(0x62);
  };

  function save(v: unknown, depth: number): void {
    if (depth > MAX_PICKLE_DEPTH) fail(`nested deeper than ${MAX_PICKLE_DEPTH} levels`);
    const d = depth + 1;
    if (v === null) {
      out.op(0x4e);
      return;
    }
    switch (typeof v) {
      case "boolean":
        out.op(v ? 0x88 : 0x89);
        return;
      case "bigint":
        saveInt(v);
        return;
      case "number":
        out.op(0x47);
        out.f64be(v);
        return;
      case "string":
        saveStr(v);
        return;
      case "object":
        break;
      default:
        fail(`a JavaScript ${typeof v} has no Python form`);
    }
    const o = v as object;
    const seen = ids.get(o);
    if (seen !== undefined) {
      get(seen);
      return;
    }
    if (o instanceof PersistentId) {
      save(o.pid, d);
      out.op(0x51);
      return;
    }
    if (o instanceof Uint8Array) {
      const s = Buffer.from(o.buffer, o.byteOffset, o.byteLength).toString("latin1");
      saveReduce(o, ENCODE, new PyTuple([s, "latin1"]), d);
      return;
    }
    if (Array.isArray(o)) {
      out.op(0x5d);
      ids.set(o, put());
      appends(o as PyValue[], d);
      return;
    }
    if (o instanceof PyTuple) {
      saveTuple(o, d);
      return;
    }
    if (o instanceof PyDict) {
      const entries = [...o.map];
      if (o.kind === "dict") {
        if (o.state !== undefined) fail("a dict with BUILD state (only an OrderedDict or Counter has one)");
        out.op(0x7d);
        ids.set(o, put());
        setItemsExact(entries, d);
      } else if (o.kind === "OrderedDict") {
        saveReduce(o, ORDERED_DICT, EMPTY, d);
        setItemsIter(entries, d);
        saveState(o.state, d);
      } else {
        saveReduce(o, COUNTER, new PyTuple([new PyDict("dict", entries)]), d);
        saveState(o.state, d);
      }
      return;
    }
    if (o instanceof PySet) {
      if (o.frozen) fail("a frozenset (builtins.frozenset is not a global torch.load(weights_only=True) accepts)");
      saveReduce(o, SET, new PyTuple([[...o.items]]), d);
      return;
    }
    if (o instanceof PyGlobal) {
      saveGlobal(o);
      return;
    }
    if (o instanceof PyObject) {
      saveReduce(o, o.callee, o.args, d, o.how);
      saveState(o.state, d);
      return;
    }
    const r = hooks.reduce?.(o, trail.join(""));
    if (r) {
      saveReduce(o, r.callee, new PyTuple(r.args as PyValue[]), d);
      return;
    }
    if (isPlainObject(o)) {
      out.op(0x7d);
      ids.set(o, put());
      setItemsExact(Object.entries(o), d);
      return;
    }
    fail(`a ${pyTypeName(o)} has no Python form here`);
  }

  out.op(0x80);
  out.u8(2);
  save(value, 0);
  out.op(0x2e);
  return out.result();
}

const ENCODE = new PyGlobal("_codecs", "encode");
const ORDERED_DICT = new PyGlobal("collections", "OrderedDict");
const COUNTER = new PyGlobal("collections", "Counter");
const SET = new PyGlobal("builtins", "set");
const EMPTY = new PyTuple([]);

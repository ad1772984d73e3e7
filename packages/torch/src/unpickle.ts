/**
 * A restricted unpickler: it reads the pickles torch.save writes (protocol 2) and the ones Python's pickler writes for
 * the same containers in protocols 3 to 5, and refuses every global that torch.load(weights_only=True) refuses
 * (allowlist.ts). It executes nothing: an allowed global is a name (PyGlobal), a call of one is a record (PyObject)
 * unless a hook interprets it (torch.ts turns `_rebuild_tensor_v2` into a TorchTensor), and a persistent id goes to a
 * hook (torch.ts makes storages). It runs in a loop with an explicit stack (no recursion), so a deep or long pickle
 * cannot overflow the call stack.
 *
 * Opcodes, by the byte (Python's Lib/pickle.py and Lib/pickletools.py name and document each one):
 * - read: every opcode of protocols 2-5 that builds data — PROTO FRAME STOP MARK POP POP_MARK DUP, NONE NEWTRUE
 *   NEWFALSE, BININT BININT1 BININT2 LONG1 LONG4, BINFLOAT, BINUNICODE SHORT_BINUNICODE BINUNICODE8, BINSTRING
 *   SHORT_BINSTRING (Python 2 str, decoded as UTF-8 as torch.load does), BINBYTES SHORT_BINBYTES BINBYTES8,
 *   EMPTY_TUPLE TUPLE TUPLE1-3, EMPTY_LIST APPEND APPENDS, EMPTY_DICT SETITEM SETITEMS, EMPTY_SET ADDITEMS
 *   FROZENSET, BINPUT LONG_BINPUT MEMOIZE BINGET LONG_BINGET, GLOBAL STACK_GLOBAL, REDUCE NEWOBJ BUILD, BINPERSID;
 * - refused (unsupported-opcode): the protocol 0/1 text opcodes (INT LONG FLOAT STRING UNICODE GET PUT DICT LIST
 *   INST OBJ PERSID), the extension registry (EXT1 EXT2 EXT4), NEWOBJ_EX, BYTEARRAY8 and the out-of-band buffers
 *   (NEXT_BUFFER READONLY_BUFFER), and any other byte. torch's weights_only unpickler executes none of these either.
 * REDUCE, NEWOBJ, BUILD, APPEND(S) and SETITEM(S) apply torch's rules: the callee is an allowed global, APPEND goes to
 * a list, SETITEM to a dict, BUILD to an OrderedDict, Counter or a call record.
 */
import { globalName, isAllowedGlobal } from "./allowlist.js";
import { RefusedGlobalError, TorchFormatError, printableName } from "./errors.js";
import { PyDict, PyGlobal, PyObject, PySet, PyTuple, type PyValue, isHashable, pyTypeName } from "./values.js";

/** What a layer above the pickle gives the unpickler: how persistent ids and interpreted calls become values. */
export interface UnpickleHooks {
  /** The value a persistent id (BINPERSID) stands for. Absent: a persistent id is an error. */
  persistentLoad?(pid: PyValue): PyValue;
  /** The value of `callee(*args)` for a call this layer interprets; undefined keeps the call as an inert PyObject. */
  reduce?(callee: PyGlobal, args: PyTuple): PyValue | undefined;
}

/** Opcode names by byte, for messages. */
const NAMES: Record<number, string> = {
  0x28: "MARK",
  0x2e: "STOP",
  0x30: "POP",
  0x31: "POP_MARK",
  0x32: "DUP",
  0x46: "FLOAT",
  0x49: "INT",
  0x4a: "BININT",
  0x4b: "BININT1",
  0x4c: "LONG",
  0x4d: "BININT2",
  0x4e: "NONE",
  0x50: "PERSID",
  0x51: "BINPERSID",
  0x52: "REDUCE",
  0x53: "STRING",
  0x54: "BINSTRING",
  0x55: "SHORT_BINSTRING",
  0x56: "UNICODE",
  0x58: "BINUNICODE",
  0x61: "APPEND",
  0x62: "BUILD",
  0x63: "GLOBAL",
  0x64: "DICT",
  0x7d: "EMPTY_DICT",
  0x65: "APPENDS",
  0x67: "GET",
  0x68: "BINGET",
  0x69: "INST",
  0x6a: "LONG_BINGET",
  0x6c: "LIST",
  0x5d: "EMPTY_LIST",
  0x6f: "OBJ",
  0x70: "PUT",
  0x71: "BINPUT",
  0x72: "LONG_BINPUT",
  0x73: "SETITEM",
  0x74: "TUPLE",
  0x29: "EMPTY_TUPLE",
  0x75: "SETITEMS",
  0x47: "BINFLOAT",
  0x80: "PROTO",
  0x81: "NEWOBJ",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x85: "TUPLE1",
  0x86: "TUPLE2",
  0x87: "TUPLE3",
  0x88: "NEWTRUE",
  0x89: "NEWFALSE",
  0x8a: "LONG1",
  0x8b: "LONG4",
  0x42: "BINBYTES",
  0x43: "SHORT_BINBYTES",
  0x8c: "SHORT_BINUNICODE",
  0x8d: "BINUNICODE8",
  0x8e: "BINBYTES8",
  0x8f: "EMPTY_SET",
  0x90: "ADDITEMS",
  0x91: "FROZENSET",
  0x92: "NEWOBJ_EX",
  0x93: "STACK_GLOBAL",
  0x94: "MEMOIZE",
  0x95: "FRAME",
  0x96: "BYTEARRAY8",
  0x97: "NEXT_BUFFER",
  0x98: "READONLY_BUFFER",
};

export const opcodeName = (op: number): string => NAMES[op] ?? `0x${op.toString(16).padStart(2, "0")}`;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * UTF-8 as Python's "surrogatepass" decodes it: strict UTF-8 that also allows the 3-byte forms of U+D800-U+DFFF.
 * Null where the bytes are not that.
 */
export function decodeUtf8(b: Uint8Array): string | null {
  try {
    return utf8.decode(b);
  } catch {
    // Slow path: strict decoding with encoded surrogates allowed.
    let s = "";
    for (let i = 0; i < b.length;) {
      const c = b[i]!;
      let cp: number, n: number;
      if (c < 0x80) {
        cp = c;
        n = 1;
      } else if (c >= 0xc2 && c < 0xe0) {
        cp = c & 0x1f;
        n = 2;
      } else if (c >= 0xe0 && c < 0xf0) {
        cp = c & 0x0f;
        n = 3;
      } else if (c >= 0xf0 && c < 0xf5) {
        cp = c & 0x07;
        n = 4;
      } else return null;
      if (i + n > b.length) return null;
      for (let k = 1; k < n; k++) {
        const d = b[i + k]!;
        if ((d & 0xc0) !== 0x80) return null;
        cp = (cp << 6) | (d & 0x3f);
      }
      if ((n === 3 && cp < 0x800) || (n === 4 && (cp < 0x10000 || cp > 0x10ffff))) return null; // overlong, out of range
      s += String.fromCodePoint(cp);
      i += n;
    }
    return s;
  }
}

/** A little-endian two's-complement integer of `b` (LONG1/LONG4's encoding; empty is 0). */
export function decodeLong(b: Uint8Array): bigint {
  if (b.length === 0) return 0n;
  let hex = "";
  for (let i = b.length - 1; i >= 0; i--) hex += b[i]!.toString(16).padStart(2, "0");
  let v = BigInt(`0x${hex}`);
  if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
  return v;
}

/**
 * The value a pickle describes. `path` names the file in errors, `what` the record ("data.pkl"). Every problem is a
 * TorchFormatError: a global outside the allow-list is a RefusedGlobalError (code "refused-global") naming it; the
 * others say where in the record ("data.pkl byte 120: SETITEMS on a list").
 */
export function unpickle(data: Uint8Array, path: string, hooks: UnpickleHooks = {}, what = "data.pkl"): PyValue {
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  let pos = 0;
  let opAt = 0;
  let op = 0;
  let stack: PyValue[] = [];
  const metastack: PyValue[][] = [];
  const memo = new Map<number, PyValue>();

  const fail = (code: "malformed" | "truncated" | "unsupported-opcode", problem: string): never => {
    throw new TorchFormatError(path, code, `${what} byte ${opAt}: ${problem}`);
  };
  const malformed = (problem: string): never => fail("malformed", `${opcodeName(op)}: ${problem}`);
  const need = (n: number): void => {
    if (n > data.length - pos) fail("truncated", `${opcodeName(op)} needs ${n} more bytes, the ${what} ends after ${data.length - pos}`);
  };
  const u8 = (): number => {
    need(1);
    return data[pos++]!;
  };
  const u32 = (): number => {
    need(4);
    const v = view.getUint32(pos, true);
    pos += 4;
    return v;
  };
  const u64 = (): number => {
    need(8);
    const v = view.getBigUint64(pos, true);
    pos += 8;
    if (v > BigInt(data.length)) fail("truncated", `${opcodeName(op)} announces ${v} bytes, the ${what} has ${data.length}`);
    return Number(v);
  };
  const bytes = (n: number): Uint8Array => {
    need(n);
    const b = data.subarray(pos, pos + n);
    pos += n;
    return b;
  };
  const text = (n: number): string => {
    const s = decodeUtf8(bytes(n));
    return s ?? malformed(`${n} bytes that are not UTF-8`);
  };
  const line = (): string => {
    const end = data.indexOf(0x0a, pos);
    if (end < 0) fail("truncated", `${opcodeName(op)}: the ${what} ends inside a line`);
    const s = decodeUtf8(data.subarray(pos, end));
    pos = end + 1;
    return s ?? malformed("a name that is not UTF-8");
  };

  const push = (v: PyValue): void => {
    stack.push(v);
  };
  const pop = (): PyValue => {
    if (stack.length === 0) malformed(metastack.length > 0 ? "pops across a MARK" : "stack empty");
    return stack.pop()!;
  };
  const top = (): PyValue => {
    if (stack.length === 0) malformed(metastack.length > 0 ? "reads across a MARK" : "stack empty");
    return stack[stack.length - 1]!;
  };
  const popMark = (): PyValue[] => {
    const items = stack;
    const outer = metastack.pop();
    if (outer === undefined) malformed("no MARK to pop to");
    stack = outer!;
    return items;
  };
  const setTop = (v: PyValue): void => {
    stack[stack.length - 1] = v;
  };
  const memoPut = (i: number): void => {
    memo.set(i, top());
  };
  const memoGet = (i: number): void => {
    if (!memo.has(i)) malformed(`memo entry ${i} was never stored`);
    push(memo.get(i)!);
  };

  const keyOf = (k: PyValue): PyValue => (isHashable(k) ? k : malformed(`unhashable ${pyTypeName(k)} as a dict key`));
  const setItems = (target: PyValue, items: readonly PyValue[]): void => {
    if (!(target instanceof PyDict)) malformed(`sets items on a ${pyTypeName(target)} (only a dict, OrderedDict or Counter)`);
    const d = target as PyDict;
    for (let i = 0; i + 1 < items.length; i += 2) d.map.set(keyOf(items[i]!) as never, items[i + 1]!);
    if (items.length % 2 !== 0) malformed("an odd number of items (a key without a value)");
  };
  const appendTo = (target: PyValue, items: readonly PyValue[]): void => {
    if (!Array.isArray(target)) malformed(`appends to a ${pyTypeName(target)} (only a list)`);
    for (const it of items) (target as PyValue[]).push(it);
  };
  const addTo = (target: PyValue, items: readonly PyValue[]): void => {
    if (!(target instanceof PySet) || target.frozen) malformed(`adds items to a ${pyTypeName(target)} (only a set)`);
    for (const it of items) (target as PySet).items.push(it);
  };

  const refGlobal = (module: string, name: string): PyGlobal => {
    const g = globalName(module, name);
    if (!isAllowedGlobal(module, name)) throw new RefusedGlobalError(path, g.dotted);
    const dot = g.dotted.lastIndexOf(".");
    return new PyGlobal(g.dotted.slice(0, dot), g.dotted.slice(dot + 1));
  };

  /** `callee(*args)` for the calls this layer knows; the hook's; else an inert record. */
  const call = (callee: PyValue, args: PyValue): PyValue => {
    if (!(callee instanceof PyGlobal)) return malformed(`calls a ${pyTypeName(callee)} (only an allowed global)`);
    if (!(args instanceof PyTuple)) return malformed(`calls ${printableName(callee.dotted)} with a ${pyTypeName(args)} of arguments (only a tuple)`);
    const a = args.items;
    switch (callee.dotted) {
      case "collections.OrderedDict":
      case "collections.Counter": {
        const d = new PyDict(callee.name as "OrderedDict" | "Counter");
        if (a.length === 0) return d;
        const src = a[0];
        if (a.length === 1 && src instanceof PyDict && src.kind === "dict") {
          for (const [k, v] of src.map) d.map.set(k, v);
          return d;
        }
        if (a.length === 1 && Array.isArray(src) && src.every((p) => p instanceof PyTuple && p.length === 2)) {
          for (const p of src as PyTuple[]) d.map.set(keyOf(p.items[0]!) as never, p.items[1]!);
          return d;
        }
        break;
      }
      case "_codecs.encode": {
        // How protocol 2 pickles bytes: _codecs.encode(<the bytes as a latin-1 str>, "latin1").
        const [s, enc] = a;
        if (a.length === 2 && typeof s === "string" && (enc === "latin1" || enc === "latin-1")) {
          const b = new Uint8Array(s.length);
          for (let i = 0; i < s.length; i++) {
            const c = s.charCodeAt(i);
            if (c > 0xff) return malformed(`_codecs.encode of a character U+${c.toString(16)} to latin-1`);
            b[i] = c;
          }
          return b;
        }
        break;
      }
      case "builtins.set":
        if (a.length === 0) return new PySet();
        if (a.length === 1 && Array.isArray(a[0])) {
          for (const item of a[0]) if (!isHashable(item)) malformed(`unhashable ${pyTypeName(item)} in a set`);
          return new PySet([...a[0]]);
        }
        break;
      default: {
        const v = hooks.reduce?.(callee, args);
        if (v !== undefined) return v;
      }
    }
    return new PyObject(callee, args, "reduce");
  };

  for (;;) {
    opAt = pos;
    if (pos >= data.length) fail("truncated", `the ${what} ends without STOP`);
    op = data[pos++]!;
    switch (op) {
      case 0x80: {
        // PROTO
        const v = u8();
        if (v > 5) fail("unsupported-opcode", `pickle protocol ${v} (protocols up to 5 are read)`);
        break;
      }
      case 0x95: {
        // FRAME: a length prefix for the opcodes that follow; they are read as they come.
        const n = u64();
        if (n > data.length - pos) fail("truncated", `a frame of ${n} bytes, the ${what} has ${data.length - pos} left`);
        break;
      }
      case 0x2e: // STOP: the value on top, as Python's and torch's unpicklers take it (what is left is ignored)
        return pop();
      case 0x28:
        metastack.push(stack);
        stack = [];
        break; // MARK
      case 0x30:
        if (stack.length > 0) stack.pop();
        else popMark();
        break; // POP
      case 0x31:
        popMark();
        break; // POP_MARK
      case 0x32:
        push(top());
        break; // DUP
      case 0x4e:
        push(null);
        break; // NONE
      case 0x88:
        push(true);
        break; // NEWTRUE
      case 0x89:
        push(false);
        break; // NEWFALSE
      case 0x4a:
        need(4);
        push(BigInt(view.getInt32(pos, true)));
        pos += 4;
        break; // BININT
      case 0x4b:
        push(BigInt(u8()));
        break; // BININT1
      case 0x4d:
        need(2);
        push(BigInt(view.getUint16(pos, true)));
        pos += 2;
        break; // BININT2
      case 0x8a:
        push(decodeLong(bytes(u8())));
        break; // LONG1
      case 0x8b: {
        // LONG4
        need(4);
        const n = view.getInt32(pos, true);
        pos += 4;
        if (n < 0) malformed(`negative length ${n}`);
        push(decodeLong(bytes(n)));
        break;
      }
      case 0x47:
        need(8);
        push(view.getFloat64(pos, false));
        pos += 8;
        break; // BINFLOAT (big-endian)
      case 0x58:
        push(text(u32()));
        break; // BINUNICODE
      case 0x8c:
        push(text(u8()));
        break; // SHORT_BINUNICODE
      case 0x8d:
        push(text(u64()));
        break; // BINUNICODE8
      case 0x55:
        push(text(u8()));
        break; // SHORT_BINSTRING
      case 0x54: {
        // BINSTRING
        need(4);
        const n = view.getInt32(pos, true);
        pos += 4;
        if (n < 0) malformed(`negative length ${n}`);
        push(text(n));
        break;
      }
      case 0x43:
        push(bytes(u8()).slice());
        break; // SHORT_BINBYTES
      case 0x42:
        push(bytes(u32()).slice());
        break; // BINBYTES
      case 0x8e:
        push(bytes(u64()).slice());
        break; // BINBYTES8
      case 0x29:
        push(new PyTuple([]));
        break; // EMPTY_TUPLE
      case 0x74:
        push(new PyTuple(popMark()));
        break; // TUPLE
      case 0x85:
        setTop(new PyTuple([top()]));
        break; // TUPLE1
      case 0x86: {
        const b = pop(),
          a = pop();
        push(new PyTuple([a, b]));
        break;
      } // TUPLE2
      case 0x87: {
        const c = pop(),
          b = pop(),
          a = pop();
        push(new PyTuple([a, b, c]));
        break;
      } // TUPLE3
      case 0x5d:
        push([]);
        break; // EMPTY_LIST
      case 0x61: {
        const v = pop();
        appendTo(top(), [v]);
        break;
      } // APPEND
      case 0x65: {
        const items = popMark();
        appendTo(top(), items);
        break;
      } // APPENDS
      case 0x7d:
        push(new PyDict());
        break; // EMPTY_DICT
      case 0x73: {
        const v = pop(),
          k = pop();
        setItems(top(), [k, v]);
        break;
      } // SETITEM
      case 0x75: {
        const items = popMark();
        setItems(top(), items);
        break;
      } // SETITEMS
      case 0x8f:
        push(new PySet());
        break; // EMPTY_SET
      case 0x90: {
        // ADDITEMS
        const items = popMark();
        for (const item of items) if (!isHashable(item)) malformed(`unhashable ${pyTypeName(item)} in a set`);
        addTo(top(), items);
        break;
      }
      case 0x91: {
        // FROZENSET
        const items = popMark();
        for (const item of items) if (!isHashable(item)) malformed(`unhashable ${pyTypeName(item)} in a frozenset`);
        push(new PySet(items, true));
        break;
      }
      case 0x71:
        memoPut(u8());
        break; // BINPUT
      case 0x72:
        memoPut(u32());
        break; // LONG_BINPUT
      case 0x94:
        memoPut(memo.size);
        break; // MEMOIZE
      case 0x68:
        memoGet(u8());
        break; // BINGET
      case 0x6a:
        memoGet(u32());
        break; // LONG_BINGET
      case 0x63: {
        const module = line();
        const name = line();
        push(refGlobal(module, name));
        break;
      } // GLOBAL
      case 0x93: {
        // STACK_GLOBAL
        const name = pop(),
          module = pop();
        if (typeof module !== "string" || typeof name !== "string")
          malformed(`names a global by a ${pyTypeName(module)} and a ${pyTypeName(name)} (only strings)`);
        push(refGlobal(module as string, name as string));
        break;
      }
      case 0x52: {
        const args = pop();
        setTop(call(top(), args));
        break;
      } // REDUCE
      case 0x81: {
        // NEWOBJ
        const args = pop(),
          cls = pop();
        if (!(cls instanceof PyGlobal)) malformed(`instantiates a ${pyTypeName(cls)} (only an allowed global)`);
        if (!(args instanceof PyTuple)) malformed(`instantiates with a ${pyTypeName(args)} of arguments (only a tuple)`);
        push(new PyObject(cls as PyGlobal, args as PyTuple, "newobj"));
        break;
      }
      case 0x62: {
        // BUILD
        const state = pop();
        const inst = top();
        if ((inst instanceof PyDict && inst.kind !== "dict") || inst instanceof PyObject) {
          if (inst.state !== undefined) malformed(`builds a ${pyTypeName(inst)} twice`);
          inst.state = state;
        } else {
          malformed(`builds a ${pyTypeName(inst)} (only an OrderedDict, a Counter or an allowed call)`);
        }
        break;
      }
      case 0x51: {
        // BINPERSID
        const pid = pop();
        if (!hooks.persistentLoad) malformed("a persistent id where none is expected");
        push(hooks.persistentLoad!(pid));
        break;
      }
      default:
        fail(
          "unsupported-opcode",
          `opcode ${opcodeName(op)}${NAMES[op] ? "" : " (not a pickle opcode)"} is not read (torch.load(weights_only=True) does not execute it either)`,
        );
    }
  }
}

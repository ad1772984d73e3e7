/**
 * The safetensors header's JSON, read as serde_json reads it (https://github.com/serde-rs/json, src/de.rs and
 * src/read.rs): one linear pass, no recursion, over the decoded text, into a tree that keeps what JSON.parse loses
 * and serde sees: every member of an object in order (duplicates included) and how each number was written. The
 * rules it applies are listed in ./header.ts.
 */

/** serde_json's recursion limit is 128: the 128th nested array/object fails. */
export const MAX_JSON_DEPTH = 127;

export const U64_MAX = 2n ** 64n - 1n;

/** An object's members in order, duplicates kept: name, value, name, value, ... */
export class JsonObject {
  readonly members: JsonValue[] = [];
}

/**
 * A number other than a plain unsigned integer ≤ 2^53 − 1 (those are JS numbers), as written.
 * `u64`: a plain unsigned integer ≤ 2^64 − 1, which serde would accept as a usize.
 */
export class JsonNumber {
  constructor(
    readonly raw: string,
    readonly u64: boolean,
  ) {}
}

export type JsonValue = null | boolean | string | number | JsonNumber | JsonValue[] | JsonObject;

/** Not JSON as serde_json reads it: what is wrong, at character `at` of the text. */
export class JsonSyntaxError extends Error {
  constructor(
    message: string,
    readonly at: number,
  ) {
    super(message);
  }
}

const isJsonWs = (c: number): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09;

const hexValue = (c: number): number =>
  c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1;

/** The JSON value of `text` (whitespace around it allowed), as serde_json would read it. */
export function readJson(text: string): JsonValue {
  const n = text.length;
  let i = 0;
  const fail = (what: string, at: number = i): never => {
    throw new JsonSyntaxError(what, at);
  };

  const hex4 = (at: number): number => {
    let v = 0;
    for (let k = at; k < at + 4; k++) {
      const h = k < n ? hexValue(text.charCodeAt(k)) : -1;
      if (h < 0) fail("invalid \\u escape (needs 4 hex digits)", at - 2);
      v = (v << 4) | h;
    }
    return v;
  };

  /** The string starting at text[i] === '"'; leaves i after the closing quote. */
  const readString = (): string => {
    const start = i + 1;
    let j = start;
    for (;;) {
      if (j >= n) fail("unterminated string", start - 1);
      const c = text.charCodeAt(j);
      if (c === 0x22) {
        i = j + 1;
        return text.slice(start, j);
      }
      if (c === 0x5c) break;
      if (c < 0x20) fail("control character in a string (it must be escaped)", j);
      j++;
    }
    const parts = [text.slice(start, j)];
    for (;;) {
      if (j >= n) fail("unterminated string", start - 1);
      const c = text.charCodeAt(j);
      if (c === 0x22) {
        i = j + 1;
        return parts.join("");
      }
      if (c !== 0x5c) {
        const from = j;
        while (j < n) {
          const d = text.charCodeAt(j);
          if (d === 0x22 || d === 0x5c) break;
          if (d < 0x20) fail("control character in a string (it must be escaped)", j);
          j++;
        }
        parts.push(text.slice(from, j));
        continue;
      }
      const e = j + 1 < n ? text.charCodeAt(j + 1) : -1;
      switch (e) {
        case 0x22:
          parts.push('"');
          break;
        case 0x5c:
          parts.push("\\");
          break;
        case 0x2f:
          parts.push("/");
          break;
        case 0x62:
          parts.push("\b");
          break;
        case 0x66:
          parts.push("\f");
          break;
        case 0x6e:
          parts.push("\n");
          break;
        case 0x72:
          parts.push("\r");
          break;
        case 0x74:
          parts.push("\t");
          break;
        case 0x75: {
          const u = hex4(j + 2);
          if (u >= 0xdc00 && u <= 0xdfff)
            fail(`unpaired surrogate escape \\u${text.slice(j + 2, j + 6)} (a low surrogate with no high surrogate before it)`, j);
          if (u >= 0xd800 && u <= 0xdbff) {
            const lowOk = text.charCodeAt(j + 6) === 0x5c && text.charCodeAt(j + 7) === 0x75;
            const low = lowOk ? hex4(j + 8) : -1;
            if (low < 0xdc00 || low > 0xdfff)
              fail(`unpaired surrogate escape \\u${text.slice(j + 2, j + 6)} (a high surrogate not followed by a \\uDC00-\\uDFFF escape)`, j);
            parts.push(String.fromCharCode(u, low));
            j += 12;
          } else {
            parts.push(String.fromCharCode(u));
            j += 6;
          }
          continue;
        }
        default:
          fail(e < 0 ? "unterminated string" : `invalid escape \\${String.fromCharCode(e)}`, j);
      }
      j += 2;
    }
  };

  /** The number starting at text[i]; leaves i after it. */
  const readNumber = (): number | JsonNumber => {
    const start = i;
    let plain = true;
    if (text.charCodeAt(i) === 0x2d) {
      plain = false;
      i++;
    }
    let c = i < n ? text.charCodeAt(i) : -1;
    let value = 0;
    let digits = 0;
    if (c === 0x30) {
      i++;
      digits = 1;
      c = i < n ? text.charCodeAt(i) : -1;
      if (c >= 0x30 && c <= 0x39) fail("invalid number (leading zero)", start);
    } else if (c >= 0x31 && c <= 0x39) {
      while (c >= 0x30 && c <= 0x39) {
        value = value * 10 + (c - 0x30);
        digits++;
        i++;
        c = i < n ? text.charCodeAt(i) : -1;
      }
    } else {
      fail("invalid number", start);
    }
    if (c === 0x2e) {
      plain = false;
      i++;
      c = i < n ? text.charCodeAt(i) : -1;
      if (!(c >= 0x30 && c <= 0x39)) fail("invalid number (no digit after the decimal point)", start);
      while (c >= 0x30 && c <= 0x39) {
        i++;
        c = i < n ? text.charCodeAt(i) : -1;
      }
    }
    if (c === 0x65 || c === 0x45) {
      plain = false;
      i++;
      c = i < n ? text.charCodeAt(i) : -1;
      if (c === 0x2b || c === 0x2d) {
        i++;
        c = i < n ? text.charCodeAt(i) : -1;
      }
      if (!(c >= 0x30 && c <= 0x39)) fail("invalid number (no digit in the exponent)", start);
      while (c >= 0x30 && c <= 0x39) {
        i++;
        c = i < n ? text.charCodeAt(i) : -1;
      }
    }
    if (plain && digits <= 15) return value; // < 10^15: exact
    const raw = text.slice(start, i);
    const approx = Number(raw);
    if (!Number.isFinite(approx)) fail(`number out of range (${raw.length > 24 ? `${raw.slice(0, 21)}...` : raw} overflows f64)`, start);
    if (!plain) return new JsonNumber(raw, false);
    if (approx <= Number.MAX_SAFE_INTEGER) return approx; // integers up to 2^53 are exact, so this is too
    return new JsonNumber(raw, BigInt(raw) <= U64_MAX);
  };

  const skipWs = (): void => {
    while (i < n && isJsonWs(text.charCodeAt(i))) i++;
  };

  /** A member name and its colon, at text[i] (after whitespace); leaves i at the value. */
  const readKey = (obj: JsonObject): void => {
    if (text.charCodeAt(i) !== 0x22) fail(i >= n ? "unexpected end of header, expected a member name" : "expected a member name in double quotes");
    obj.members.push(readString());
    skipWs();
    if (text.charCodeAt(i) !== 0x3a) fail(i >= n ? "unexpected end of header, expected ':'" : "expected ':'");
    i++;
    skipWs();
  };

  const stack: (JsonValue[] | JsonObject)[] = [];
  let root: JsonValue = null;
  skipWs();
  for (;;) {
    // A value starts at text[i].
    if (i >= n) fail("unexpected end of header, expected a value");
    const c = text.charCodeAt(i);
    let value: JsonValue;
    let opened = false;
    if (c === 0x7b || c === 0x5b) {
      if (stack.length >= MAX_JSON_DEPTH) {
        fail(`arrays/objects nested deeper than ${MAX_JSON_DEPTH} levels (serde_json's recursion limit)`);
      }
      value = c === 0x7b ? new JsonObject() : [];
      opened = true;
      i++;
    } else if (c === 0x22) {
      value = readString();
    } else if (c === 0x2d || (c >= 0x30 && c <= 0x39)) {
      value = readNumber();
    } else if (c === 0x74 && text.startsWith("true", i)) {
      value = true;
      i += 4;
    } else if (c === 0x66 && text.startsWith("false", i)) {
      value = false;
      i += 5;
    } else if (c === 0x6e && text.startsWith("null", i)) {
      value = null;
      i += 4;
    } else {
      value = fail("expected a value");
    }
    const parent = stack[stack.length - 1];
    if (parent === undefined) root = value;
    else if (parent instanceof JsonObject) parent.members.push(value);
    else parent.push(value);
    skipWs();
    if (opened) {
      const container = value as JsonValue[] | JsonObject;
      stack.push(container);
      const isObject = container instanceof JsonObject;
      if (text.charCodeAt(i) !== (isObject ? 0x7d : 0x5d)) {
        if (isObject) readKey(container);
        continue;
      }
      i++;
      stack.pop();
      skipWs();
    }
    // After a complete value: close containers until one has a next element.
    for (;;) {
      const top = stack[stack.length - 1];
      if (top === undefined) {
        if (i < n) fail("trailing characters after the JSON value");
        return root;
      }
      const isObject = top instanceof JsonObject;
      const d = text.charCodeAt(i);
      if (d === 0x2c) {
        i++;
        skipWs();
        if (isObject) readKey(top);
        break;
      }
      if (d !== (isObject ? 0x7d : 0x5d)) {
        fail(i >= n ? "unexpected end of header" : isObject ? "expected ',' or '}'" : "expected ',' or ']'");
      }
      i++;
      stack.pop();
      skipWs();
    }
  }
}

/** Compact JSON-like text of a header value (numbers as written), cut at about 80 characters. */
export function show(v: JsonValue): string {
  const out: string[] = [];
  let len = 0;
  const put = (s: string): void => {
    out.push(s);
    len += s.length;
  };
  const walk = (x: JsonValue): void => {
    if (len > 80) return;
    if (x instanceof JsonNumber) put(x.raw);
    else if (x instanceof JsonObject) {
      put("{");
      for (let k = 0; k < x.members.length && len <= 80; k += 2) {
        put(`${k ? "," : ""}${JSON.stringify(x.members[k])}:`);
        walk(x.members[k + 1]!);
      }
      put("}");
    } else if (Array.isArray(x)) {
      put("[");
      x.forEach((e, i) => {
        if (len > 80) return;
        if (i) put(",");
        walk(e);
      });
      put("]");
    } else put(JSON.stringify(x));
  };
  walk(v);
  const s = out.join("");
  return s.length > 80 ? `${s.slice(0, 77)}...` : s;
}

/** Byte offset in the UTF-8 header of character index `at` of its decoded text. */
export const byteOffset = (text: string, at: number): number => new TextEncoder().encode(text.slice(0, at)).length;

/**
 * The first duplicate key of any object in a JSON text already known to be valid (JSON.parse keeps
 * the last silently), with the keys leading to that object.
 */
export function findDuplicateKey(text: string): { path: string[]; key: string } | null {
  // One frame per open object/array: its keys so far (null for arrays) and its last key.
  const keys: (Set<string> | null)[] = [];
  const last: string[] = [];
  let expectKey = false;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let escaped = false;
      for (;;) {
        const d = text.charCodeAt(j);
        if (d === 0x22) break;
        if (d === 0x5c /* \\ */) {
          escaped = true;
          j += 2;
        } else j++;
      }
      if (expectKey) {
        const raw = text.slice(i + 1, j);
        const key = escaped ? (JSON.parse(text.slice(i, j + 1)) as string) : raw;
        const set = keys[keys.length - 1]!;
        if (set.has(key)) return { path: last.slice(0, keys.length - 1), key };
        set.add(key);
        last[keys.length - 1] = key;
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */) {
      keys.push(new Set());
      last.push("");
      expectKey = true;
    } else if (c === 0x5b /* [ */) {
      keys.push(null);
      last.push("");
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      keys.pop();
      last.pop();
    } else if (c === 0x2c /* , */) {
      expectKey = keys[keys.length - 1] != null;
    }
  }
  return null;
}

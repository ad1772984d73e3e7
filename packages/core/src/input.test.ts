import { mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { inputError, parseJsonFile, printable } from "./files.js";
import { openInput, readInputWithin } from "./input.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-input-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe("readInputWithin", () => {
  it("reads a file up to the limit and refuses a larger one from its size, before reading it", async () => {
    const f = join(dir, "t.json");
    await writeFile(f, "0123456789");
    expect(new TextDecoder().decode(await readInputWithin(f, "the tokenizer", { maxBytes: 10, kind: "a tokenizer.json" }))).toBe("0123456789");
    await expect(readInputWithin(f, "the tokenizer", { maxBytes: 9, kind: "a tokenizer.json" })).rejects.toThrow(
      `${f}: 10 bytes is too large for a tokenizer.json (limit 9 bytes)`,
    );
    // A sparse file: its size is refused at once, nothing of it is read (or written to disk).
    const sparse = join(dir, "sparse.json");
    await writeFile(sparse, "");
    await truncate(sparse, 300 * 2 ** 20);
    const t0 = performance.now();
    await expect(readInputWithin(sparse, "the data", { maxBytes: 2 ** 20, kind: "text data", why: "tokenize it" })).rejects.toThrow(
      `${sparse}: 314572800 bytes is too large for text data (limit 1048576 bytes; tokenize it)`,
    );
    expect(performance.now() - t0).toBeLessThan(1000);
  });
  it("gives readInput's one-line errors", async () => {
    await expect(readInputWithin(join(dir, "none"), "the tokenizer", { maxBytes: 9, kind: "x" })).rejects.toThrow(
      /none: cannot read the tokenizer \(no such file\)$/,
    );
    await expect(readInputWithin(dir, "the tokenizer", { maxBytes: 9, kind: "x" })).rejects.toThrow(
      `${dir}: cannot read the tokenizer (a directory)`,
    );
    await expect(openInput(dir, "the data")).rejects.toThrow(`${dir}: cannot read the data (a directory)`);
  });
  it("says what a file over 2 GiB is in words", () => {
    const e = Object.assign(new RangeError("File size (3000000000) is greater than 2 GiB"), { code: "ERR_FS_FILE_TOO_LARGE" });
    expect(inputError("big.bin", "the data", e).message).toBe("big.bin: cannot read the data (over 2 GiB, more than one read holds)");
  });
});

describe("parseJsonFile", () => {
  it("escapes the control characters of the parser's quote of a binary file", () => {
    const text = new TextDecoder().decode(Uint8Array.from([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x00, 0xff, 0x1b, 0x5b]));
    let message = "";
    try {
      parseJsonFile(text, "/usr/bin/ls");
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/^\/usr\/bin\/ls: invalid JSON \(/);
    // eslint-disable-next-line no-control-regex
    expect(message).not.toMatch(/[\u0000-\u001f\u007f-\u009f\ufffd]/);
    expect(message).toContain("\\u007f");
    expect(printable("a\nb\u2028c")).toBe("a\\u000ab\\u2028c");
  });
});

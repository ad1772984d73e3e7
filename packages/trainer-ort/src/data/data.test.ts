import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { brownDocuments, brownText, untagSentence } from "./brown.js";
import { decodeTokenFile, encodeTokenFile, prepareData, readTokenFile, readTokens, tokenFileDtype } from "./corpus.js";
import { createSampler, evalBlockCount } from "./sampler.js";
import { byteTokenizer, checkTokenizerFits, hfTokenizer, loadHfTokenizer, tokenizerOf } from "./tokenizer.js";
import { tinyBpeTokenizerJson } from "./testing.js";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-data-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const bytes = byteTokenizer();

describe("brown", () => {
  it("strips the tags and detokenizes punctuation and quotes", () => {
    expect(untagSentence("\tThe/at jury/nn said/vbd ``/`` no/at evidence/nn ''/'' ,/, 1/2/cd (/( yes/rb )/) ./.")).toBe(
      'The jury said "no evidence", 1/2 (yes).',
    );
  });
  it("splits the 500 documents by id: every 20th is validation", async () => {
    const train = await brownDocuments("train");
    const val = await brownDocuments("validation");
    expect(train.length).toBe(475);
    expect(val.length).toBe(25);
    expect(val[0]).toBe("ca20");
    expect(new Set([...train, ...val]).size).toBe(500);
  });
  it("gives plain text without tags", async () => {
    const text = await brownText("validation");
    expect(text.length).toBeGreaterThan(100_000);
    expect(text).not.toMatch(/\/(at|nn|vbd|in)\b/);
  });
});

describe("tokenizers", () => {
  it("bytes round-trip UTF-8", () => {
    const ids = bytes.encode("héllo");
    expect(Array.from(ids)).toEqual([104, 195, 169, 108, 108, 111]);
    expect(bytes.decode(ids)).toBe("héllo");
  });
  it("loads an HF tokenizer.json and checks its vocabulary against the model's", async () => {
    const t = await hfTokenizer(tinyBpeTokenizerJson());
    expect(t.vocabSize).toBe(259);
    expect(t.decode(t.encode("the cat\nthe end"))).toBe("the cat\nthe end");
    expect(Array.from(t.encode("the"))).toEqual([257]);
    expect(() => checkTokenizerFits(t, 256, "tok.json")).toThrow(/259 ids, more than the model's vocab_size 256/);
    checkTokenizerFits(t, 300, "tok.json");
    await expect(hfTokenizer("{nope", "bad.json")).rejects.toThrow(/bad.json: invalid JSON/);
    await expect(hfTokenizer("{}", "bad.json")).rejects.toThrow(/not a Hugging Face tokenizer.json/);
  });
  it("refuses a binary file without echoing its bytes, and names a stored one by its checkpoint", async () => {
    const elf = Uint8Array.from([0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0xff, 0xfe, 0x00, 0x1b]);
    await expect(hfTokenizer(elf, "/usr/bin/ls")).rejects.toThrow(/^\/usr\/bin\/ls: not a tokenizer\.json \(not UTF-8 text\)$/);
    // Valid UTF-8 but not JSON (NULs, an escape): the parser's quote of the text is escaped.
    const nul = new TextEncoder().encode("\u0000\u0000\u001b[2Jhello");
    const e = await hfTokenizer(nul, "nul.json").then(
      () => null,
      (x: Error) => x,
    );
    expect(e?.message).toMatch(/^nul\.json: invalid JSON \(/);
    expect(e?.message).toContain("\\u0000");
    // eslint-disable-next-line no-control-regex
    expect(e?.message).not.toMatch(/[\u0000-\u001f]/);
    const f = join(dir, "ls-like.json");
    await writeFile(f, elf);
    await expect(loadHfTokenizer(f)).rejects.toThrow(`${f}: not a tokenizer.json (not UTF-8 text)`);
    const files = new Map([["tokenizer.json", new TextEncoder().encode("{nope")]]);
    await expect(tokenizerOf({ kind: "hf", file: "tokenizer.json" }, files, "runs/a")).rejects.toThrow(/^runs\/a\/tokenizer\.json: invalid JSON/);
    await expect(tokenizerOf({ kind: "hf", file: "tokenizer.json" }, new Map(), "runs/a")).rejects.toThrow(
      /^runs\/a: names tokenizer\.json as its tokenizer, but has no such file/,
    );
  });
});

describe("token files", () => {
  it("round-trip uint16 little-endian", () => {
    const enc = encodeTokenFile([1, 2, 300, 65535]);
    expect(Array.from(enc.subarray(0, 4))).toEqual([1, 0, 2, 0]);
    expect(Array.from(decodeTokenFile(enc, 65536, "x.bin"))).toEqual([1, 2, 300, 65535]);
  });
  it("reject an odd length and ids outside the vocabulary, naming file and offset", async () => {
    expect(() => decodeTokenFile(new Uint8Array(5), 256, "odd.bin")).toThrow(/odd.bin: 5 bytes, an odd length/);
    expect(() => decodeTokenFile(encodeTokenFile([1, 2, 256]), 256, "big.bin")).toThrow(/big.bin: token id 256 at byte offset 4 is outside/);
    const f = join(dir, "big.bin");
    await writeFile(f, encodeTokenFile([5, 999]));
    await expect(readTokens(f, bytes, 256)).rejects.toThrow(`${f}: token id 999 at byte offset 2`);
  });
  it("reject empty data, missing files and text ids outside the vocabulary", async () => {
    const empty = join(dir, "empty.txt");
    await writeFile(empty, "");
    await expect(readTokens(empty, bytes, 256)).rejects.toThrow(/empty data/);
    await expect(readTokens(join(dir, "none.txt"), bytes, 256)).rejects.toThrow(/none.txt: cannot read the data \(no such file\)/);
    const hi = join(dir, "hi.txt");
    await writeFile(hi, "abc\u00e9");
    await expect(readTokens(hi, bytes, 128)).rejects.toThrow(/token id 195 at token 3 is outside the model's vocabulary \(vocab_size 128\)/);
  });
});

describe("token files in pieces", () => {
  const ids = Array.from({ length: 1001 }, (_, i) => (i * 7919) % 1000);
  it("read the same ids whatever the piece size, uint16 for .bin and uint32 for .u32.bin", async () => {
    expect(tokenFileDtype("a.bin")).toBe("uint16");
    expect(tokenFileDtype("/x/a.U32.BIN")).toBe("uint32");
    expect(tokenFileDtype("a.u32")).toBeNull();
    expect(tokenFileDtype("a.txt")).toBeNull();
    const u16 = join(dir, "p.bin"),
      u32 = join(dir, "p.u32.bin");
    await writeFile(u16, encodeTokenFile(ids));
    await writeFile(u32, encodeTokenFile(ids, "uint32"));
    for (const chunkBytes of [4, 8, 12, 400, 1 << 20]) {
      expect(Array.from(await readTokenFile(u16, 1000, { chunkBytes }))).toEqual(ids);
      expect(Array.from(await readTokenFile(u32, 1000, { chunkBytes }))).toEqual(ids);
    }
    expect(Array.from((await readTokens(u32, bytes, 1000)).tokens)).toEqual(ids);
  });
  it("uint32 ids past 65,536, and ids at or past the vocabulary refused in any piece, with their byte offset", async () => {
    const big = [70_000, 5, 199_999, 131_071];
    const f = join(dir, "wide.u32.bin");
    await writeFile(f, encodeTokenFile(big, "uint32"));
    expect(Array.from(await readTokenFile(f, 200_000, { chunkBytes: 4 }))).toEqual(big);
    await expect(readTokenFile(f, 199_999, { chunkBytes: 4 })).rejects.toThrow(
      `${f}: token id 199999 at byte offset 8 is outside the model's vocabulary (vocab_size 199999)`,
    );
    // 2³² − 1 does not become −1 on its way to the Int32Array: it is refused as what it is.
    await writeFile(f, encodeTokenFile([1, 0xffffffff], "uint32"));
    await expect(readTokenFile(f, 2 ** 24)).rejects.toThrow(`${f}: token id 4294967295 at byte offset 4`);
    const g = join(dir, "late.bin");
    await writeFile(g, encodeTokenFile([...ids, 1000]));
    await expect(readTokenFile(g, 1000, { chunkBytes: 8 })).rejects.toThrow(`${g}: token id 1000 at byte offset 2002 is outside`);
  });
  it("refuse a length that is not whole ids, a directory, too little memory, and a bad piece size", async () => {
    const f = join(dir, "six.u32.bin");
    await writeFile(f, new Uint8Array(6));
    await expect(readTokenFile(f, 256)).rejects.toThrow(`${f}: 6 bytes, not a multiple of 4: not a file of uint32 token ids (.u32.bin)`);
    const odd = join(dir, "odd.bin");
    await writeFile(odd, new Uint8Array(7));
    await expect(readTokenFile(odd, 256)).rejects.toThrow(`${odd}: 7 bytes, an odd length: not a file of uint16 token ids`);
    await mkdir(join(dir, "d.bin"), { recursive: true });
    await expect(readTokenFile(join(dir, "d.bin"), 256)).rejects.toThrow(`${join(dir, "d.bin")}: cannot read the data (a directory)`);
    const g = join(dir, "mem.bin");
    await writeFile(g, encodeTokenFile(ids));
    await expect(readTokenFile(g, 1000, { freeBytes: 4000 })).rejects.toThrow(
      `${g}: 1001 token ids need 4.0 kB of memory (4 bytes each); 4.0 kB is free`,
    );
    await expect(readTokenFile(g, 1000, { chunkBytes: 6 })).rejects.toThrow(/chunkBytes must be a positive multiple of 4, got 6/);
  });
});

describe("prepareData", () => {
  it("holds out the last 5% (at least one block) of a file", async () => {
    const f = join(dir, "a.txt");
    await writeFile(f, "x".repeat(1000));
    const d = await prepareData({ data: f, tokenizer: bytes, vocab: 256, context: 16 });
    expect(d.train.tokens.length).toBe(950);
    expect(d.validation.tokens.length).toBe(50);
    const small = await prepareData({ data: f, tokenizer: bytes, vocab: 256, context: 100 });
    expect(small.validation.tokens.length).toBe(100);
    expect(small.train.tokens.length).toBe(900);
    expect(small.validationFrom).toBe("held-out");
  });
  it("uses --val-data when given and the Brown split for brown", async () => {
    const f = join(dir, "b.txt"),
      v = join(dir, "v.txt");
    await writeFile(f, "y".repeat(100));
    await writeFile(v, "z".repeat(40));
    const d = await prepareData({ data: f, valData: v, tokenizer: bytes, vocab: 256, context: 16 });
    expect(d.train.tokens.length).toBe(100);
    expect(d.validation.tokens.length).toBe(40);
    const b = await prepareData({ data: "brown", tokenizer: bytes, vocab: 256, context: 64 });
    expect(b.validationFrom).toBe("brown-split");
    expect(b.train.tokens.length).toBeGreaterThan(10 * b.validation.tokens.length);
  });
  it("rejects data shorter than one block or too short to hold out a block", async () => {
    const f = join(dir, "c.txt");
    await writeFile(f, "short");
    await expect(prepareData({ data: f, tokenizer: bytes, vocab: 256, context: 16 })).rejects.toThrow(
      /5 tokens of data, shorter than one block of 16 tokens/,
    );
    await writeFile(f, "x".repeat(20));
    await expect(prepareData({ data: f, tokenizer: bytes, vocab: 256, context: 16 })).rejects.toThrow(/too short to train on one block/);
  });
});

describe("samplers", () => {
  const tokens = Int32Array.from({ length: 1000 }, (_, i) => i % 256);
  it("random: the batch of step s is a pure function of (seed, s), inside the stream", () => {
    const a = createSampler("random", tokens, { batch: 4, context: 16, seed: 7 });
    const b = createSampler("random", tokens, { batch: 4, context: 16, seed: 7 });
    const c = createSampler("random", tokens, { batch: 4, context: 16, seed: 8 });
    expect(Array.from(a.batch(5))).toEqual(Array.from(b.batch(5)));
    expect(a.offsets(5)).not.toEqual(a.offsets(6));
    expect(a.offsets(5)).not.toEqual(c.offsets(5));
    // Order of calls does not matter.
    const first = a.offsets(3);
    a.batch(10);
    a.batch(0);
    expect(a.offsets(3)).toEqual(first);
    let max = 0;
    for (let s = 0; s < 500; s++)
      for (const o of a.offsets(s)) {
        expect(o).toBeGreaterThanOrEqual(0);
        expect(o).toBeLessThanOrEqual(1000 - 16);
        max = Math.max(max, o);
      }
    expect(max).toBeGreaterThan(900);
    const ids = a.batch(2);
    expect(ids.length).toBe(64);
    const off = a.offsets(2);
    for (let i = 0; i < 4; i++) expect(Array.from(ids.subarray(i * 16, i * 16 + 16))).toEqual(Array.from(tokens.subarray(off[i]!, off[i]! + 16)));
  });
  it("sequential: step s takes blocks [sB, (s+1)B) of the non-overlapping split, wrapping around", () => {
    const s = createSampler("sequential", tokens, { batch: 4, context: 100, seed: 0 }); // 10 blocks
    expect(s.offsets(0)).toEqual([0, 100, 200, 300]);
    expect(s.offsets(1)).toEqual([400, 500, 600, 700]);
    expect(s.offsets(2)).toEqual([800, 900, 0, 100]);
    expect(Array.from(s.batch(0).subarray(100, 102))).toEqual([100, 101]);
  });
  it("rejects bad settings and counts eval blocks", () => {
    expect(() => createSampler("random", tokens.subarray(0, 10), { batch: 1, context: 16, seed: 0 })).toThrow(/shorter than one block/);
    expect(() => createSampler("zigzag" as never, tokens, { batch: 1, context: 16, seed: 0 })).toThrow(/unknown sampler/);
    expect(evalBlockCount(1000, 16)).toBe(62);
    expect(evalBlockCount(1000, 16, 5)).toBe(5);
  });
});

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import fc from "fast-check";
import { Tokenizer } from "@huggingface/tokenizers";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { byteLevelTokenizerConfig, byteLevelTokenizerJson, bytesToUnicode } from "@staged/core";
import { byteTokenizer } from "@staged/trainer-ort";

/**
 * The byte-level tokenizer.json of @staged/core through the HF tokenizers of JavaScript: @huggingface/tokenizers
 * (what transformers.js runs) and transformers.js' AutoTokenizer. It must give exactly the byte tokenizer's ids
 * (UTF-8 bytes) and decode as it does (UTF-8, invalid sequences as U+FFFD).
 */
const config = JSON.parse(byteLevelTokenizerConfig()) as Record<string, unknown>;
const hf = new Tokenizer(JSON.parse(byteLevelTokenizerJson()), config);
const bytes = byteTokenizer();
const encode = (text: string) => hf.encode(text, { add_special_tokens: false }).ids;
const decode = (ids: number[]) => (ids.length ? hf.decode(ids, { skip_special_tokens: true }) : ""); // it refuses no ids
const utf8 = (text: string) => [...new TextEncoder().encode(text)];

describe("the byte-level tokenizer.json in @huggingface/tokenizers", () => {
  it("every byte is one token, its id the byte's value, and back", () => {
    const chars = bytesToUnicode();
    for (let b = 0; b < 256; b++) {
      expect(hf.token_to_id(chars[b]!)).toBe(b);
      expect(hf.id_to_token(b)).toBe(chars[b]);
    }
    expect(hf.get_vocab(true).size).toBe(256);
  });

  it("encodes any text to its UTF-8 bytes (the byte tokenizer's ids), and decodes them back", () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ unit: "grapheme", maxLength: 200 }), fc.string({ unit: "binary", maxLength: 200 })), (text) => {
        const ids = encode(text);
        expect(ids).toEqual(utf8(text));
        expect(ids).toEqual([...bytes.encode(text)]);
        expect(decode(ids)).toBe(text);
      }),
      { numRuns: 500 },
    );
    for (const text of ["", " ", "  x  ", "a .b , c", "tab\tnew\nline\r\n", "\u0000nul", "Ā ā Ġ", "日本語 🙂 e\u0301", "don't 're 's"]) {
      expect(encode(text)).toEqual(utf8(text));
      expect(decode(encode(text)), JSON.stringify(text)).toBe(text);
    }
  });

  it("decodes any byte sequence, valid UTF-8 or not, as TextDecoder does (the byte tokenizer's decode)", () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 200 }), (b) => {
        const ids = [...b];
        expect(decode(ids)).toBe(new TextDecoder().decode(b));
        expect(decode(ids)).toBe(bytes.decode(ids));
        // Where the bytes are valid UTF-8, encoding the text gives them back.
        const text = decode(ids);
        if (!text.includes("\uFFFD")) expect(encode(text)).toEqual(ids);
      }),
      { numRuns: 500 },
    );
    const all = Array.from({ length: 256 }, (_, i) => i);
    expect(decode(all)).toBe(new TextDecoder().decode(Uint8Array.from(all)));
    expect(decode([0xff, 0xfe, 0x41, 0xc3])).toBe("\uFFFD\uFFFDA\uFFFD");
  });

  it("text with lone surrogates (not Unicode) encodes as TextEncoder does: U+FFFD's bytes", () => {
    expect(encode("a\ud800b")).toEqual([0x61, 0xef, 0xbf, 0xbd, 0x62]);
    expect(encode("a\ud800b")).toEqual([...bytes.encode("a\ud800b")]);
  });
});

describe("transformers.js' AutoTokenizer on the tokenizer files", () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "staged-export-tokenizer-"));
    await writeFile(join(dir, "tokenizer.json"), byteLevelTokenizerJson());
    await writeFile(join(dir, "tokenizer_config.json"), byteLevelTokenizerConfig());
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it("pads a batch on the left with id 0 masked out, adds no special tokens, and decodes without touching spaces", async () => {
    const { AutoTokenizer } = await import("@huggingface/transformers");
    const tok = await AutoTokenizer.from_pretrained(dir, { local_files_only: true });
    const batch = tok(["Hi .", "Hello"], { padding: true });
    expect(batch.input_ids.tolist()).toEqual([[0n, ...utf8("Hi .").map(BigInt)], utf8("Hello").map(BigInt)]);
    expect(batch.attention_mask.tolist()).toEqual([
      [0n, 1n, 1n, 1n, 1n],
      [1n, 1n, 1n, 1n, 1n],
    ]);
    expect(tok.decode([...utf8("a , b ."), 0], { skip_special_tokens: true })).toBe("a , b .\u0000");
    expect(tok.all_special_ids).toEqual([]);
  });
});

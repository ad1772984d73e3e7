import { describe, expect, it } from "vitest";
import { BYTE_LEVEL_PAD_ID, byteLevelTokenizerConfig, byteLevelTokenizerFiles, byteLevelTokenizerJson, bytesToUnicode } from "./tokenizer-json.js";

// Encoding and decoding through @huggingface/tokenizers and transformers.js are tested in @staged/export
// (src/tokenizer.test.ts), which depends on them; here, the files' structure.
describe("byte-level tokenizer.json", () => {
  it("GPT-2's byte-to-unicode alphabet: printable bytes as themselves, the others from U+0100 on, all distinct", () => {
    const chars = bytesToUnicode();
    expect(chars).toHaveLength(256);
    expect(new Set(chars).size).toBe(256);
    expect(chars[65]).toBe("A");
    expect(chars[0]).toBe("\u0100");
    expect(chars[32]).toBe("\u0120"); // "Ġ", GPT-2's space
    expect(chars[10]).toBe("\u010a"); // "Ċ", GPT-2's newline
    expect(chars[173]).toBe(String.fromCharCode(256 + 32 + 1 + 34)); // the soft hyphen comes after 0..32 and 127..160
    for (const c of chars) expect(c.length).toBe(1);
  });

  it("a BPE whose 256 entries are the bytes, id = byte value, no merges, no added tokens, byte-level pre-tokenizer and decoder", () => {
    const json = JSON.parse(byteLevelTokenizerJson()) as {
      model: { type: string; merges: unknown[]; vocab: Record<string, number> };
      added_tokens: unknown[];
      normalizer: unknown;
      pre_tokenizer: unknown;
      decoder: unknown;
    };
    const chars = bytesToUnicode();
    expect(json.model.type).toBe("BPE");
    expect(json.model.merges).toEqual([]);
    expect(Object.keys(json.model.vocab)).toHaveLength(256);
    chars.forEach((c, b) => expect(json.model.vocab[c]).toBe(b));
    expect(json.added_tokens).toEqual([]);
    expect(json.normalizer).toBeNull();
    expect(json.pre_tokenizer).toMatchObject({ type: "ByteLevel", add_prefix_space: false });
    expect(json.decoder).toMatchObject({ type: "ByteLevel", add_prefix_space: false });
    expect(byteLevelTokenizerJson()).toBe(byteLevelTokenizerJson());
  });

  it("tokenizer_config.json: no special tokens added, left padding with id 0, no clean-up of spaces", () => {
    const config = JSON.parse(byteLevelTokenizerConfig()) as Record<string, unknown>;
    expect(config).toMatchObject({
      tokenizer_class: "PreTrainedTokenizerFast",
      add_bos_token: false,
      add_eos_token: false,
      bos_token: null,
      eos_token: null,
      padding_side: "left",
      clean_up_tokenization_spaces: false,
    });
    expect(config.pad_token).toBe(bytesToUnicode()[BYTE_LEVEL_PAD_ID]);
    expect(config.model_max_length).toBeUndefined();
  });

  it("byteLevelTokenizerFiles: both files, as the bytes of the JSON texts", () => {
    const files = byteLevelTokenizerFiles();
    expect([...files.keys()]).toEqual(["tokenizer.json", "tokenizer_config.json"]);
    expect(new TextDecoder().decode(files.get("tokenizer.json"))).toBe(byteLevelTokenizerJson());
    expect(new TextDecoder().decode(files.get("tokenizer_config.json"))).toBe(byteLevelTokenizerConfig());
  });
});

describe("byte-level checkpoints carry the tokenizer", () => {
  it("a saved byte-level state has tokenizer.json and tokenizer_config.json, and still loads as bytes", async () => {
    const { mkdtemp, readdir, rm } = await import("node:fs/promises");
    const { tmpdir } = await import("node:os");
    const { join } = await import("node:path");
    const { initTrainingState } = await import("./state/init.js");
    const { loadTrainingState } = await import("./state/load.js");
    const { saveTrainingState } = await import("./state/save.js");
    const dir = await mkdtemp(join(tmpdir(), "staged-bytes-tok-"));
    try {
      await saveTrainingState(join(dir, "ck"), initTrainingState("gpt2", { n_layer: 1, n_embd: 8, n_head: 2, vocab_size: 256, n_positions: 8 }, 1));
      expect((await readdir(join(dir, "ck"))).filter((f) => f.startsWith("tokenizer"))).toEqual(["tokenizer.json", "tokenizer_config.json"]);
      const back = await loadTrainingState(join(dir, "ck"));
      expect(back.tokenizer).toEqual({ kind: "bytes" });
      const text = (b: Uint8Array | undefined) => new TextDecoder().decode(b);
      expect(text(back.files?.get("tokenizer.json"))).toBe(text(byteLevelTokenizerFiles().get("tokenizer.json")));
      await back.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

/**
 * The byte-level tokenizer (ids 0..255 = the UTF-8 bytes of the text) as Hugging Face files, so that HF tools
 * (transformers, tokenizers, transformers.js) encode and decode a byte-level checkpoint as this project does.
 *
 * tokenizer.json is a byte-level BPE with GPT-2's byte-to-unicode alphabet, 256 entries (id = byte value) and no
 * merges: the ByteLevel pre-tokenizer turns text into its UTF-8 bytes, each one a token; the ByteLevel decoder
 * turns ids back into bytes and decodes them as UTF-8, invalid sequences as U+FFFD (what TextDecoder does).
 * tokenizer_config.json names no special tokens besides a padding token (id 0, the NUL byte, which no text
 * needs: padding is masked by the attention mask) on the left, so batched prompts of a decoder-only model work.
 */

/** GPT-2's bytes_to_unicode: byte b is written as the character BYTE_CHARS[b] in the vocabulary. */
export function bytesToUnicode(): string[] {
  const printable: number[] = [];
  for (let b = 33; b <= 126; b++) printable.push(b);
  for (let b = 161; b <= 172; b++) printable.push(b);
  for (let b = 174; b <= 255; b++) printable.push(b);
  const chars = new Array<string>(256);
  for (const b of printable) chars[b] = String.fromCharCode(b);
  let next = 0;
  for (let b = 0; b < 256; b++) if (chars[b] === undefined) chars[b] = String.fromCharCode(256 + next++);
  return chars;
}

/** The padding token of the byte-level tokenizer: id 0 (the NUL byte), written as its vocabulary character. */
export const BYTE_LEVEL_PAD_ID = 0;

/** tokenizer.json of the byte-level tokenizer (JSON text, deterministic). */
export function byteLevelTokenizerJson(): string {
  const chars = bytesToUnicode();
  const vocab: Record<string, number> = {};
  chars.forEach((c, b) => {
    vocab[c] = b;
  });
  const byteLevel = { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true };
  return (
    JSON.stringify(
      {
        version: "1.0",
        truncation: null,
        padding: null,
        added_tokens: [],
        normalizer: null,
        pre_tokenizer: byteLevel,
        post_processor: null,
        decoder: byteLevel,
        model: {
          type: "BPE",
          dropout: null,
          unk_token: null,
          continuing_subword_prefix: null,
          end_of_word_suffix: null,
          fuse_unk: false,
          byte_fallback: false,
          ignore_merges: false,
          vocab,
          merges: [],
        },
      },
      null,
      2,
    ) + "\n"
  );
}

/**
 * tokenizer_config.json of the byte-level tokenizer: the generic fast tokenizer class, no BOS/EOS added, the
 * padding token and side for batches, and no clean-up of spaces on decoding (" ." stays " ."). No
 * model_max_length: a tokenizer that truncates would cut the end of a long prompt without a word.
 */
export function byteLevelTokenizerConfig(): string {
  const pad = bytesToUnicode()[BYTE_LEVEL_PAD_ID]!;
  return (
    JSON.stringify(
      {
        tokenizer_class: "PreTrainedTokenizerFast",
        add_bos_token: false,
        add_eos_token: false,
        bos_token: null,
        eos_token: null,
        unk_token: null,
        pad_token: pad,
        padding_side: "left",
        clean_up_tokenization_spaces: false,
      },
      null,
      2,
    ) + "\n"
  );
}

/** The files a byte-level checkpoint carries for HF tools: tokenizer.json and tokenizer_config.json, as bytes. */
export function byteLevelTokenizerFiles(): Map<string, Uint8Array> {
  const enc = new TextEncoder();
  return new Map([
    ["tokenizer.json", enc.encode(byteLevelTokenizerJson())],
    ["tokenizer_config.json", enc.encode(byteLevelTokenizerConfig())],
  ]);
}

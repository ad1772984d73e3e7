/**
 * A tiny byte-level BPE tokenizer.json (GPT-2's byte-to-unicode alphabet, 256 ids, plus the given merges),
 * for tests and examples that need an HF tokenizer without downloading one.
 */
export function tinyBpeTokenizerJson(
  merges: [string, string][] = [
    ["t", "h"],
    ["th", "e"],
    ["Ġ", "th"],
  ],
): string {
  const bs: number[] = [];
  for (let i = 33; i <= 126; i++) bs.push(i);
  for (let i = 161; i <= 172; i++) bs.push(i);
  for (let i = 174; i <= 255; i++) bs.push(i);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++)
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  const vocab: Record<string, number> = {};
  const order = bs.map((b, i) => [b, String.fromCharCode(cs[i]!)] as const).sort((a, b) => a[0] - b[0]);
  for (const [b, ch] of order) vocab[ch] = b;
  let next = 256;
  for (const [a, b] of merges) if (!(a + b in vocab)) vocab[a + b] = next++;
  return JSON.stringify({
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: [],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    post_processor: null,
    decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: "",
      end_of_word_suffix: "",
      fuse_unk: false,
      byte_fallback: false,
      vocab,
      merges: merges.map(([a, b]) => `${a} ${b}`),
    },
  });
}

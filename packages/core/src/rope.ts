/** Rotary position embeddings as the trainer's and the export's graphs use them (HF modeling_llama.py). */
/**
 * Rotary tables for positions 0..T−1 (HF LlamaRotaryEmbedding, rope_type "default"): angle = t · inv_freq_i
 * with inv_freq_i = θ^(−2i/headDim), both halves of the head the same (emb = cat(freqs, freqs)). HF computes
 * inv_freq and the angles in float32; so does this (Math.fround), so that a pretrained model sees the
 * positions it was trained with. `sin` carries rotate_half's sign: rotate_half(x)·sin = cat(x₂, x₁)·cat(−sin, sin).
 * Both tables are multiplied by `scale` (the attention scale folded into q).
 */
export function rotaryTables(T: number, headDim: number, theta: number, scale = 1): { cos: Float32Array; sin: Float32Array } {
  const half = headDim / 2;
  const cos = new Float32Array(T * headDim),
    sin = new Float32Array(T * headDim);
  for (let i = 0; i < half; i++) {
    const invFreq = Math.fround(1 / Math.fround(theta ** Math.fround((2 * i) / headDim)));
    for (let t = 0; t < T; t++) {
      const angle = Math.fround(t * invFreq);
      const c = Math.fround(Math.cos(angle)) * scale,
        s = Math.fround(Math.sin(angle)) * scale;
      cos[t * headDim + i] = c;
      cos[t * headDim + half + i] = c;
      sin[t * headDim + i] = -s;
      sin[t * headDim + half + i] = s;
    }
  }
  return { cos, sin };
}

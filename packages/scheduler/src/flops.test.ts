import { describe, expect, it } from "vitest";
import type { ModelShape } from "@staged/core";
import { flopsPerToken, matrixParams, nonEmbeddingParams } from "./flops.js";

const gpt2: ModelShape = { layers: 12, dModel: 768, heads: 12, headDim: 64, ffn: 3072, vocab: 50257, context: 1024 };

describe("flopsPerToken", () => {
  it("counts 6 FLOPs per matrix parameter plus Kaplan's attention term", () => {
    // GPT-2 small: 12·(4·768² + 2·768·3072) = 84,934,656 non-embedding, + 50257·768 output layer.
    expect(nonEmbeddingParams(gpt2)).toBe(84_934_656);
    expect(matrixParams(gpt2)).toBe(84_934_656 + 38_597_376);
    const attention = 6 * 12 * 1024 * 768; // 3 × Kaplan's forward 2·n_layer·n_ctx·d
    expect(flopsPerToken(gpt2, 1024)).toBe(6 * 123_532_032 + attention);
    expect(flopsPerToken(gpt2, 1024, { attention: "full" })).toBe(6 * 123_532_032 + 2 * attention);
    // A tiny shape by hand: 2 layers, d=4, ffn=16, vocab=10, context 8.
    const tiny: ModelShape = { layers: 2, dModel: 4, heads: 1, headDim: 4, ffn: 16, vocab: 10, context: 8 };
    expect(flopsPerToken(tiny, 8)).toBe(6 * (2 * (64 + 128) + 40) + 6 * 2 * 8 * 4);
  });

  it("counts grouped-query attention and gated MLPs as they are (Llama 2 7B, Llama 3 8B)", () => {
    // Llama 2 7B: 32·(4·4096² + 3·4096·11008) = 6,476,005,376; with both embeddings 6.74B parameters.
    const llama2: ModelShape = {
      layers: 32,
      dModel: 4096,
      heads: 32,
      headDim: 128,
      kvHeads: 32,
      ffn: 11008,
      vocab: 32000,
      context: 4096,
      gatedMlp: true,
    };
    expect(nonEmbeddingParams(llama2)).toBe(6_476_005_376);
    // Llama 3 8B: k and v have 8 heads of 128: 32·(2·4096² + 2·4096·1024 + 3·4096·14336) = 6,979,321,856.
    const llama3: ModelShape = { ...llama2, kvHeads: 8, ffn: 14336, vocab: 128256, context: 8192 };
    expect(nonEmbeddingParams(llama3)).toBe(6_979_321_856);
    expect(nonEmbeddingParams(llama3) + 2 * 128256 * 4096).toBe(8_029_995_008); // the published 8.03B
    expect(flopsPerToken(llama3, 8192)).toBe(6 * (6_979_321_856 + 128256 * 4096) + 6 * 32 * 8192 * 4096);
  });

  it("rejects bad shapes and contexts", () => {
    expect(() => flopsPerToken({ ...gpt2, layers: 0 }, 1024)).toThrow(/shape.layers/);
    expect(() => flopsPerToken(gpt2, 1.5)).toThrow(/context/);
    expect(() => flopsPerToken(gpt2, 8, { attention: "x" as never })).toThrow(/attention/);
  });
});

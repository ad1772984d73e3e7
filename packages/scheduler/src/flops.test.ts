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

  it("rejects bad shapes and contexts", () => {
    expect(() => flopsPerToken({ ...gpt2, layers: 0 }, 1024)).toThrow(/shape.layers/);
    expect(() => flopsPerToken(gpt2, 1.5)).toThrow(/context/);
    expect(() => flopsPerToken(gpt2, 8, { attention: "x" as never })).toThrow(/attention/);
  });
});

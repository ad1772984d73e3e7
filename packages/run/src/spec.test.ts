import { grownModel, modelConfig, runEntries, shapeOf } from "./run.js";
import { describe, expect, it } from "vitest";
import { parseRunSpec } from "./spec.js";

const base = {
  data: "brown",
  context: 32,
  batch: 4,
  optimizer: { lr: 1e-3 },
  eval: { every: 5 },
  budget: { flops: 1e9 },
  model: { layers: 1, dModel: 16, heads: 2 },
  stages: [{ grow: "width", at: { fraction: 0.5 } }],
};
const parse = (over: Record<string, unknown>) => parseRunSpec({ ...base, ...over }, "/x/spec.json");

describe("parseRunSpec", () => {
  it("fills the defaults", () => {
    const s = parse({});
    expect(s.name).toBe("staged");
    expect(s.seeds).toEqual([0]);
    expect(s.schedule).toEqual({ kind: "constant", warmup: 0 });
    expect(s.eval).toEqual({ every: 5, blocks: 64 });
    expect(s.model).toEqual({ arch: "gpt2", layers: 1, dModel: 16, heads: 2, vocab: 256 });
    expect(s.stages[0]).toEqual({ grow: "width", factor: 2, at: { fraction: 0.5 }, options: {}, rewarmup: 0, continueAt: "keep" });
    // the re-warmup defaults to the run's warmup; lrScale stays the operator's
    expect(parse({ schedule: { warmup: 7 } }).stages[0]!.rewarmup).toBe(7);
  });

  it("resolves data paths against the spec's directory, keeps brown", () => {
    expect(parse({ data: "corpus.txt" }).data).toBe("/x/corpus.txt");
    expect(parse({ data: "/abs/c.txt" }).data).toBe("/abs/c.txt");
    expect(parse({}).data).toBe("brown");
  });

  it.each([
    [{ batch: 0 }, "/x/spec.json: batch must be an integer in [1, 65536], got 0"],
    [{ batch: 2.5 }, "batch must be an integer"],
    [{ microBatch: 3 }, "microBatch must divide batch 4, got 3"],
    [{ budget: { flops: 1, tokens: 2 } }, "budget must be"],
    [{ budget: { flops: -1 } }, "budget.flops must be a number > 0"],
    [{ schedule: { kind: "cosine" } }, 'schedule.kind must be "constant"'],
    [{ model: { layers: 1, dModel: 10, heads: 3 } }, "model.dModel 10 is not divisible by model.heads 3"],
    [{ stages: [{ grow: "sideways", at: "auto" }] }, 'stages[0].grow must be "width" or "depth"'],
    [{ stages: [{ grow: "width", at: { fraction: 1.5 } }] }, "stages[0].at.fraction must be below 1"],
    [{ stages: [{ grow: "width", at: "soon" }] }, "stages[0].at must be"],
    [{ stages: [{ grow: "width", at: "auto" }] }, 'law is needed by an "auto"'],
    [{ stages: [{ grow: "width", at: { step: 3 }, options: { factor: 4 } }] }, "stages[0].options.factor is set by the stage itself"],
    [{ stages: [{ grow: "width", at: { step: 3 }, speed: 1 }] }, "stages[0].speed is not a field"],
    [{ seeds: [1, 1] }, "seeds has a seed twice"],
    [{ name: "baseline" }, "name must be"],
    [{ extra: 1 }, '"extra" is not a spec field'],
    [{ optimizer: { lr: 1e-3, betas: [0.9] } }, "optimizer.betas must be two numbers"],
    [{ optimizer: { lr: 1e-3, biasCorrection: "off" } }, 'optimizer.biasCorrection must be true or false, got "off"'],
    [{ stages: [{ grow: "width", at: { step: 3 }, lrScaleParams: "some" }] }, 'stages[0].lrScaleParams must be one of "all", "fanIn", got "some"'],
    [{ stages: [{ grow: "width", at: { step: 3 }, lrRamp: -5 }] }, "stages[0].lrRamp must be an integer in [0, "],
    [{ stages: [{ grow: "width", at: { step: 3 }, options: { lrRamp: 5 } }] }, "stages[0].options.lrRamp is set by the stage itself (lrRamp)"],
  ])("refuses %j", (over, message) => {
    expect(() => parse(over)).toThrow(message);
  });

  it("takes the seed's Adam setting and the per-parameter LR scale of a growth", () => {
    const s = parse({
      optimizer: { lr: 2e-3, betas: [0.9, 0.98], eps: 1e-6, biasCorrection: false },
      stages: [{ grow: "width", at: { step: 3 }, lrScale: 0.5, lrScaleParams: "fanIn", lrRamp: 500 }],
    });
    expect(s.optimizer).toEqual({ lr: 2e-3, betas: [0.9, 0.98], eps: 1e-6, biasCorrection: false });
    expect(s.stages[0]).toMatchObject({ lrScale: 0.5, lrScaleParams: "fanIn", lrRamp: 500 });
  });

  it("takes any registered architecture, with key/value heads", () => {
    const s = parse({ model: { arch: "llama", layers: 2, dModel: 64, heads: 4, kvHeads: 2 } });
    expect(s.model).toMatchObject({ arch: "llama", kvHeads: 2 });
    expect(shapeOf(s.model, 32)).toEqual({
      layers: 2,
      dModel: 64,
      heads: 4,
      headDim: 16,
      kvHeads: 2,
      ffn: 256,
      vocab: 256,
      context: 32,
      gatedMlp: true,
    });
    expect(shapeOf(grownModel(s.model, [{ grow: "width", factor: 2, options: {} } as never]), 32)).toMatchObject({
      dModel: 128,
      heads: 8,
      kvHeads: 4,
    });
    // The output layer is tied as the architecture's default says (as `staged init` does): Llama unties, GPT-2 ties.
    expect(modelConfig(s.model, 32).tie_word_embeddings).toBe(false);
    expect(modelConfig(parse({ model: { arch: "llama", layers: 1, dModel: 16, heads: 2, tie: true } }).model, 32).tie_word_embeddings).toBe(true);
    expect(modelConfig(parse({}).model, 32).tie_word_embeddings).not.toBe(false);
    expect(modelConfig(parse({ model: { layers: 1, dModel: 16, heads: 2, tie: false } }).model, 32).tie_word_embeddings).toBe(false);
    expect(() => parse({ model: { arch: "falcon", layers: 1, dModel: 8, heads: 2 } })).toThrow(
      /spec.json: model.arch must be one of gpt2, llama, got "falcon"/,
    );
    expect(() => parse({ model: { arch: "llama", layers: 1, dModel: 8, heads: 4, kvHeads: 3 } })).toThrow(
      /spec.json: model.kvHeads 3 does not divide model.heads 4/,
    );
  });

  it("model.dropout (default 0) reaches the configs of the first model and of the baseline", () => {
    expect(parse({}).model.dropout).toBeUndefined();
    expect(modelConfig(parse({}).model, 32)).toMatchObject({ embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 });
    const s = parse({ model: { layers: 1, dModel: 16, heads: 2, dropout: 0.1 }, baseline: { seeds: [0] } });
    expect(s.model.dropout).toBe(0.1);
    for (const e of runEntries(s)) expect(modelConfig(e.model, 32), e.name).toMatchObject({ embd_pdrop: 0.1, attn_pdrop: 0.1, resid_pdrop: 0.1 });
    expect(modelConfig(parse({ model: { arch: "llama", layers: 1, dModel: 16, heads: 2, dropout: 0.2 } }).model, 32).attention_dropout).toBe(0.2);
    for (const bad of [1, -0.5, "0.1"]) {
      expect(() => parse({ model: { layers: 1, dModel: 16, heads: 2, dropout: bad } })).toThrow(
        `/x/spec.json: model.dropout must be a number in [0, 1), got ${JSON.stringify(bad)}`,
      );
    }
  });

  it("device: one of the trainer's execution providers, not part of a run's identity", () => {
    expect(parse({ device: "webgpu" }).device).toBe("webgpu");
    expect(parse({}).device).toBeUndefined();
    expect(() => parse({ device: "tpu" })).toThrow('/x/spec.json: device must be one of cpu, cuda, webgpu, got "tpu"');
  });

  it("precision: fp32 or mixed, part of a run's identity", () => {
    expect(parse({ precision: "mixed" }).precision).toBe("mixed");
    expect(parse({}).precision).toBeUndefined();
    expect(() => parse({ precision: "bf16" })).toThrow('/x/spec.json: precision must be one of fp32, mixed, got "bf16"');
  });

  it("errors are one line naming the file", () => {
    try {
      parse({ eval: { every: 0 } });
    } catch (e) {
      expect((e as Error).message).toMatch(/^\/x\/spec\.json: eval\.every must be an integer/);
      expect((e as Error).message).not.toContain("\n");
    }
    expect.assertions(2);
  });
});

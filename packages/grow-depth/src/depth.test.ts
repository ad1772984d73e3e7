import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { Tensor, initTrainingState, loadTrainingState, saveTrainingState, type LazyTensor, type TrainingState } from "@staged/core";
import { depthLossPreserving, growDepth, layerMap, targetLayers } from "./depth.js";
import { depthGrowth } from "./index.js";

const tiny = { model_type: "gpt2", n_layer: 2, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8 };

function stateWithMoments(): TrainingState {
  const s = initTrainingState("gpt2", tiny, 1);
  const plus = (c: number) => new Map([...s.params].map(([n, t]) => [n, {
    dtype: t.dtype, shape: t.shape, read: async () => new Tensor("F32", t.shape, (await t.read()).f32.map((v) => v + c)),
  } as LazyTensor]));
  return { ...s, optimizer: { ...s.optimizer, step: 6, expAvg: plus(1), expAvgSq: plus(2) },
    schedule: { kind: "cosine", peakLr: 1e-3, warmupSteps: 1, totalSteps: 50, restarts: [] }, progress: { ...s.progress, step: 6 } };
}
const values = async (m: Map<string, LazyTensor> | undefined, name: string) => [...(await m!.get(name)!.read()).f32];

describe("layerMap", () => {
  it("places copies alternately or appended, for a factor or a target count", () => {
    expect(layerMap(3, {})).toEqual([0, 0, 1, 1, 2, 2]);
    expect(layerMap(3, { placement: "append" })).toEqual([0, 1, 2, 0, 1, 2]);
    expect(layerMap(2, { factor: 3 })).toEqual([0, 0, 0, 1, 1, 1]);
    expect(layerMap(2, { layers: 3 })).toEqual([0, 0, 1]);
    expect(layerMap(2, { layers: 5, placement: "append" })).toEqual([0, 1, 0, 1, 0]);
    expect(layerMap(2, { layerMap: [0, 1, 1] })).toEqual([0, 1, 1]);
  });

  it("rejects maps that cannot hold", () => {
    expect(() => layerMap(2, { layerMap: [0, 1, 2] })).toThrow("layer map names layer 2, but the model has layers 0..1");
    expect(() => layerMap(2, { layerMap: [0, 0, 0] })).toThrow(/omits layer 1/);
    expect(() => layerMap(2, { layerMap: [0, 1] })).toThrow(/growth needs more than 2/);
    expect(() => layerMap(2, { factor: 1 })).toThrow(/factor must be an integer ≥ 2/);
    expect(() => layerMap(2, { factor: 1.5 })).toThrow(/factor must be an integer ≥ 2/);
    expect(() => layerMap(2, { layers: 2 })).toThrow(/above the current 2/);
    expect(() => layerMap(2, { factor: 2, layers: 4 })).toThrow(/only one of/);
  });

  it("knows which maps identity init keeps exact", () => {
    expect(depthLossPreserving([0, 0, 1, 1], "identity")).toBe(true);
    expect(depthLossPreserving([0, 1, 0, 1], "identity")).toBe(true);
    expect(depthLossPreserving([1, 0, 1], "identity")).toBe(false);
    expect(depthLossPreserving([0, 0, 1, 1], "copy")).toBe(false);
    expect(depthGrowth.lossPreserving({ layerMap: [1, 0, 0] })).toBe(false);
    expect(depthGrowth.lossPreserving({ factor: 2, placement: "append" })).toBe(true);
  });
});

describe("growDepth", () => {
  it("identity init copies a layer and zeroes its residual output projections and their moments", async () => {
    const s = stateWithMoments();
    const g = growDepth(s, { factor: 2 });
    expect(g.shape.layers).toBe(4);
    expect(g.config.n_layer).toBe(4);
    // layer 2 is the original layer 1; layer 1 the new copy of layer 0
    expect(await values(g.params, "transformer.h.2.attn.c_attn.weight")).toEqual(await values(s.params, "transformer.h.1.attn.c_attn.weight"));
    expect(await values(g.params, "transformer.h.1.attn.c_attn.weight")).toEqual(await values(s.params, "transformer.h.0.attn.c_attn.weight"));
    for (const p of ["attn.c_proj.weight", "attn.c_proj.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"]) {
      expect((await values(g.params, `transformer.h.1.${p}`)).every((x) => x === 0)).toBe(true);
      expect((await values(g.optimizer.expAvg, `transformer.h.1.${p}`)).every((x) => x === 0)).toBe(true);
      expect(await values(g.params, `transformer.h.0.${p}`)).toEqual(await values(s.params, `transformer.h.0.${p}`));
    }
    expect(await values(g.optimizer.expAvgSq, "transformer.h.3.mlp.c_fc.weight")).toEqual(await values(s.optimizer.expAvgSq, "transformer.h.1.mlp.c_fc.weight"));
    expect(g.optimizer.noDecay).toContain("transformer.h.3.ln_2.bias");
    expect(g.optimizer.noDecay).not.toContain("transformer.h.3.mlp.c_fc.weight");
    expect(g.optimizer.step).toBe(6);
  });

  it("copy init stacks the source layer as it is; reset zeroes only the new layers' moments", async () => {
    const s = stateWithMoments();
    const g = growDepth(s, { placement: "append", init: "copy", moments: "reset" });
    expect(await values(g.params, "transformer.h.3.mlp.c_proj.weight")).toEqual(await values(s.params, "transformer.h.1.mlp.c_proj.weight"));
    expect((await values(g.optimizer.expAvg, "transformer.h.3.mlp.c_fc.weight")).every((x) => x === 0)).toBe(true);
    expect((await values(g.optimizer.expAvgSq, "transformer.h.2.ln_1.bias")).every((x) => x === 0)).toBe(true);
    expect(await values(g.optimizer.expAvg, "transformer.h.1.mlp.c_fc.weight")).toEqual(await values(s.optimizer.expAvg, "transformer.h.1.mlp.c_fc.weight"));
    expect(g.optimizer.step).toBe(6);
    expect(growDepth(initTrainingState("gpt2", tiny, 1), { moments: "copy" }).optimizer.expAvg).toBeUndefined();
  });

  it("records the stage and the LR restart", () => {
    const g = growDepth(stateWithMoments(), { layers: 3, rewarmup: 2, continueAt: 3 });
    expect(g.progress.stages.at(-1)).toMatchObject({ operator: "depth", step: 6, continueAt: 3, options: { layerMap: [0, 0, 1], init: "identity", moments: "copy" } });
    expect(g.schedule!.restarts).toEqual([{ step: 3, warmupSteps: 2 }]);
    expect(() => growDepth(stateWithMoments(), { rewarmup: -1 })).toThrow(/rewarmup must be an integer ≥ 0/);
    // No schedule yet (a fresh or pretrained checkpoint): the re-warmup goes into the trainer's default one.
    const fresh = initTrainingState("gpt2", tiny, 1);
    expect(growDepth(fresh, { rewarmup: 4 }).schedule).toEqual({ kind: "constant", peakLr: fresh.optimizer.lr, warmupSteps: 0, totalSteps: 1, restarts: [{ step: 0, warmupSteps: 4 }] });
    expect(growDepth(fresh, {}).schedule).toBeNull();
    expect(() => growDepth(stateWithMoments(), { init: "zero" as never })).toThrow(/init must be identity or copy/);
  });

  it("checks the grown size against the model limits before building the layer map", () => {
    const s = stateWithMoments();
    const t0 = performance.now();
    expect(() => growDepth(s, { layers: 100_000 })).toThrow("depth growth: layers 100000 gives 8.7e7 parameters (349 MB as F32); the limit is layers ≤ 10000");
    expect(() => growDepth(s, { factor: 50_000_000 })).toThrow(
      "depth growth: factor 50000000 gives layers 100000000 and 8.7e10 parameters (349 GB as F32); the limit is layers ≤ 10000");
    expect(performance.now() - t0).toBeLessThan(100);
    expect(targetLayers(2, { factor: 3 })).toBe(6);
    expect(targetLayers(2, { layerMap: [0, 1, 1] })).toBe(3);
  });

  it("grows to the layer limit in linear time", () => {
    const t0 = performance.now();
    const g = growDepth(stateWithMoments(), { layers: 10_000 });
    expect(g.shape.layers).toBe(10_000);
    expect(g.params.size).toBe(2 + 10_000 * 12 + 2);
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it("returns a state without the loaded input's source directory and close", async () => {
    const dir = await mkdtemp(join(tmpdir(), "staged-depth-"));
    try {
      await saveTrainingState(join(dir, "small"), stateWithMoments());
      const loaded = await loadTrainingState(join(dir, "small"));
      const g = growDepth(loaded, { layers: 3 });
      expect(loaded.source).toBeTruthy();
      expect("source" in g).toBe(false);
      expect("close" in g).toBe(false);
      expect((await g.params.get("transformer.h.2.ln_1.weight")!.read()).shape).toEqual([8]);
      await loaded.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

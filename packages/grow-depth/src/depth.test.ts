import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { initTrainingState, loadTrainingState, mapValues, saveTrainingState, type LazyTensor, type TrainingState } from "@staged/core";
import { TINY_CONFIGS, TINY_GPT2 } from "@staged/testing";
import { depthLossPreserving, growDepth, layerMap, targetLayers, type DepthOptions } from "./depth.js";
import { depthGrowth } from "./index.js";

function stateWithMoments(): TrainingState {
  const s = initTrainingState("gpt2", TINY_GPT2, 1);
  const plus = (c: number) => mapValues(s.params, (v) => v + c);
  return {
    ...s,
    optimizer: { ...s.optimizer, step: 6, expAvg: plus(1), expAvgSq: plus(2) },
    schedule: { kind: "cosine", peakLr: 1e-3, warmupSteps: 1, totalSteps: 50, restarts: [] },
    progress: { ...s.progress, step: 6 },
  };
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
    expect(await values(g.optimizer.expAvgSq, "transformer.h.3.mlp.c_fc.weight")).toEqual(
      await values(s.optimizer.expAvgSq, "transformer.h.1.mlp.c_fc.weight"),
    );
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
    expect(await values(g.optimizer.expAvg, "transformer.h.1.mlp.c_fc.weight")).toEqual(
      await values(s.optimizer.expAvg, "transformer.h.1.mlp.c_fc.weight"),
    );
    expect(g.optimizer.step).toBe(6);
    expect(growDepth(initTrainingState("gpt2", TINY_GPT2, 1), { moments: "copy" }).optimizer.expAvg).toBeUndefined();
  });

  it("records the stage and the LR restart", () => {
    const g = growDepth(stateWithMoments(), { layers: 3, rewarmup: 2, continueAt: 3 });
    expect(g.progress.stages.at(-1)).toMatchObject({
      operator: "depth",
      step: 6,
      continueAt: 3,
      options: { layerMap: [0, 0, 1], init: "identity", moments: "copy" },
    });
    expect(g.schedule!.restarts).toEqual([{ step: 3, warmupSteps: 2 }]);
    expect(() => growDepth(stateWithMoments(), { rewarmup: -1 })).toThrow(/rewarmup must be an integer ≥ 0/);
    // No schedule yet (a fresh or pretrained checkpoint): the re-warmup goes into the trainer's default one.
    const fresh = initTrainingState("gpt2", TINY_GPT2, 1);
    expect(growDepth(fresh, { rewarmup: 4 }).schedule).toEqual({
      kind: "constant",
      peakLr: fresh.optimizer.lr,
      warmupSteps: 0,
      totalSteps: 1,
      restarts: [{ step: 0, warmupSteps: 4 }],
    });
    expect(growDepth(fresh, {}).schedule).toBeNull();
    expect(() => growDepth(stateWithMoments(), { init: "zero" as never })).toThrow(/init must be identity or copy/);
  });

  it("checks the grown size against the model limits before building the layer map", () => {
    const s = stateWithMoments();
    const t0 = performance.now();
    expect(() => growDepth(s, { layers: 100_000 })).toThrow(
      "depth growth: layers 100000 gives 8.7e7 parameters (349 MB as F32); the limit is layers ≤ 10000",
    );
    expect(() => growDepth(s, { factor: 50_000_000 })).toThrow(
      "depth growth: factor 50000000 gives layers 100000000 and 8.7e10 parameters (349 GB as F32); the limit is layers ≤ 10000",
    );
    expect(performance.now() - t0).toBeLessThan(100);
    expect(targetLayers(2, { factor: 3 })).toBe(6);
    expect(targetLayers(2, { layerMap: [0, 1, 1] })).toBe(3);
  });

  it("grows to the layer limit in linear time", () => {
    const t0 = performance.now();
    const g = growDepth(stateWithMoments(), { layers: 10_000 });
    expect(g.shape.layers).toBe(10_000);
    expect(g.params.size).toBe(2 + 10_000 * 12 + 2);
    expect(performance.now() - t0).toBeLessThan(30_000); // at once: generous for a loaded machine
  });
});

describe("growDepth on stored bytes", () => {
  const cases: [string, DepthOptions][] = [
    ["×2 identity", { factor: 2 }],
    ["×2 copy", { factor: 2, init: "copy" }],
    ["×3 appended, moments reset", { factor: 3, placement: "append", moments: "reset" }],
  ];
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    it(`${dtype}: writes the same bytes as the values path, reading each source tensor once per file and no value`, async () => {
      const dir = await mkdtemp(join(tmpdir(), "staged-depth-bytes-"));
      try {
        for (const [arch, config] of TINY_CONFIGS) {
          const s = initTrainingState(arch, config, 4);
          const edgy = (v: number, i: number) => (i % 7 === 3 ? -0 : i % 11 === 5 ? -1e-39 : v);
          const as = (f: (v: number) => number) => mapValues(s.params, (v, i) => f(edgy(v, i)), dtype);
          await saveTrainingState(
            join(dir, "in"),
            { ...s, params: as((v) => v), optimizer: { ...s.optimizer, step: 3, expAvg: as((v) => v / 7), expAvgSq: as((v) => v * v) } },
            { overwrite: true },
          );
          const loaded = await loadTrainingState(join(dir, "in"));
          const reads = new Map<string, number>();
          const count = (key: string) => reads.set(key, (reads.get(key) ?? 0) + 1);
          const wrap = (prefix: string, m: Map<string, LazyTensor> | undefined, bytes: boolean) =>
            new Map(
              [...m!].map(([n, t]) => [
                n,
                {
                  dtype: t.dtype,
                  shape: t.shape,
                  read: () => {
                    count(`${prefix}read ${n}`);
                    return t.read();
                  },
                  ...(bytes
                    ? {
                        readBytes: () => {
                          count(`${prefix}bytes ${n}`);
                          return t.readBytes!();
                        },
                        streamBytes: (buffer?: (n: number) => Uint8Array) => {
                          count(`${prefix}bytes ${n}`);
                          return t.streamBytes!(buffer);
                        },
                      }
                    : {}),
                } as LazyTensor,
              ]),
            );
          const state = (bytes: boolean): TrainingState => ({
            ...loaded,
            params: wrap("", loaded.params, bytes),
            optimizer: {
              ...loaded.optimizer,
              expAvg: wrap("m ", loaded.optimizer.expAvg, bytes),
              expAvgSq: wrap("v ", loaded.optimizer.expAvgSq, bytes),
            },
          });
          const stored = state(true),
            values = state(false);
          for (const [label, o] of cases) {
            reads.clear();
            await saveTrainingState(join(dir, "bytes"), growDepth(stored, o), { overwrite: true });
            // Every source tensor is kept somewhere (the originals), and read once for its file however many copies it has.
            expect(
              [...reads.keys()].filter((k) => k.includes("read ")),
              label,
            ).toEqual([]);
            expect(reads.size, label).toBe(3 * s.params.size);
            for (const [key, n] of reads) expect(n, `${label}: ${key}`).toBe(1);
            await saveTrainingState(join(dir, "values"), growDepth(values, o), { overwrite: true });
            const names = (await readdir(join(dir, "bytes"))).sort();
            expect((await readdir(join(dir, "values"))).sort()).toEqual(names);
            for (const f of names)
              expect(Buffer.compare(await readFile(join(dir, "bytes", f)), await readFile(join(dir, "values", f))), `${label}: ${f}`).toBe(0);
          }
          await loaded.close();
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  it("reads a source tensor once per output file when its copies land in several shards", async () => {
    const dir = await mkdtemp(join(tmpdir(), "staged-depth-bytes-"));
    try {
      await saveTrainingState(join(dir, "in"), initTrainingState("gpt2", TINY_GPT2, 4));
      const loaded = await loadTrainingState(join(dir, "in"));
      const reads = new Map<string, number>();
      const count = (n: string) => reads.set(n, (reads.get(n) ?? 0) + 1);
      const params = new Map(
        [...loaded.params].map(([n, t]) => [
          n,
          {
            ...t,
            readBytes: () => {
              count(n);
              return t.readBytes!();
            },
            streamBytes: (buffer?: (n: number) => Uint8Array) => {
              count(n);
              return t.streamBytes!(buffer);
            },
          } as LazyTensor,
        ]),
      );
      // Appended copies: layer 0 is at 0, 2 and 4, which small shards put in different files.
      await saveTrainingState(join(dir, "out"), growDepth({ ...loaded, params }, { factor: 3, placement: "append", init: "copy" }), {
        maxShardBytes: 2000,
      });
      const files = (await readdir(join(dir, "out"))).filter((f) => /^model-\d+-of-\d+\.safetensors$/.test(f));
      expect(files.length).toBeGreaterThan(3);
      const index = JSON.parse(await readFile(join(dir, "out", "model.safetensors.index.json"), "utf8")) as { weight_map: Record<string, string> };
      const w = "transformer.h.0.attn.c_attn.weight";
      const shardsOf = new Set([0, 2, 4].map((l) => index.weight_map[w.replace("h.0", `h.${l}`)]));
      expect(shardsOf.size).toBeGreaterThan(1);
      expect(reads.get(w)).toBe(shardsOf.size);
      await loaded.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

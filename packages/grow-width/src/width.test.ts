import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  Tensor, blockDiagonal, initTrainingState, loadTrainingState, saveTrainingState, type LazyTensor, type TrainingState,
} from "@staged/core";
import { growWidth } from "./width.js";

const tiny = { model_type: "gpt2", n_layer: 2, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8 };

/** A small state with distinct, recognizable moments (m = value, v = value²) and a schedule. */
function stateWithMoments(config: Record<string, unknown> = tiny): TrainingState {
  const s = initTrainingState("gpt2", config, 1);
  const scaled = (p: number) => new Map([...s.params].map(([n, t]) => [n, {
    dtype: t.dtype, shape: t.shape, read: async () => { const x = (await t.read()).f32; return new Tensor("F32", t.shape, x.map((v) => (v + 0.5) ** p)); },
  } as LazyTensor]));
  return {
    ...s,
    optimizer: { ...s.optimizer, step: 10, expAvg: scaled(1), expAvgSq: scaled(2) },
    schedule: { kind: "linear", peakLr: 1e-3, warmupSteps: 2, totalSteps: 100, restarts: [] },
    progress: { ...s.progress, step: 10 },
  };
}
const read = async (m: Map<string, LazyTensor> | undefined, name: string) => (await m!.get(name)!.read());

describe("growWidth", () => {
  it("grows every shape by the factor with the head size kept, and emits the grown config", () => {
    const g = growWidth(stateWithMoments(), { factor: 3 });
    expect(g.shape).toEqual({ layers: 2, dModel: 24, heads: 6, headDim: 4, ffn: 96, vocab: 16, context: 8 });
    expect(g.config).toMatchObject({ n_embd: 24, n_head: 6, n_inner: null });
    expect(g.params.get("transformer.h.0.attn.c_attn.weight")!.shape).toEqual([24, 72]);
    const ffnOnly = growWidth(stateWithMoments(), { factor: 1, ffnFactor: 2 });
    expect(ffnOnly.shape).toMatchObject({ dModel: 8, heads: 2, ffn: 64 });
    expect(ffnOnly.config.n_inner).toBe(64);
    expect(growWidth(stateWithMoments(), { factor: 2, ffnFactor: 2 }).shape.ffn).toBe(128);
  });

  it("builds the paper's block-diagonal q|k|v, tiles vectors and divides the final LayerNorm", async () => {
    const s = stateWithMoments();
    const g = growWidth(s, { factor: 2 });
    const w = await read(s.params, "transformer.h.1.attn.c_attn.weight");
    const [q, k, v] = w.chunk(1, 3);
    const expected = [q!, k!, v!].map((p) => blockDiagonal([p, p]));
    const grown = (await read(g.params, "transformer.h.1.attn.c_attn.weight")).chunk(1, 3);
    grown.forEach((part, i) => expect(part.f32).toEqual(expected[i]!.f32));
    const b = await read(s.params, "transformer.h.0.attn.c_attn.bias");
    expect((await read(g.params, "transformer.h.0.attn.c_attn.bias")).chunk(0, 3).map((p) => [...p.f32]))
      .toEqual(b.chunk(0, 3).map((p) => [...p.f32, ...p.f32]));
    const lnf = await read(s.params, "transformer.ln_f.weight");
    expect([...(await read(g.params, "transformer.ln_f.weight")).f32]).toEqual([...lnf.f32, ...lnf.f32].map((x) => x / 2));
    const wte = await read(s.params, "transformer.wte.weight");
    expect((await read(g.params, "transformer.wte.weight")).slice(1, 8, 16).f32).toEqual(wte.f32);
  });

  it("maps moments: consistent on every block, paper only on the diagonal, reset drops them", async () => {
    const s = stateWithMoments();
    const name = "transformer.h.0.mlp.c_fc.weight";
    const m = await read(s.optimizer.expAvg, name), v = await read(s.optimizer.expAvgSq, name);
    const consistent = growWidth(s, { moments: "consistent" });
    const paper = growWidth(s, { moments: "paper" });
    const cm = await read(consistent.optimizer.expAvg, name), cv = await read(consistent.optimizer.expAvgSq, name);
    const off = (t: Tensor) => t.slice(0, 0, 8).slice(1, 32, 64); // input copy 0 → output copy 1
    const diag = (t: Tensor) => t.slice(0, 8, 16).slice(1, 32, 64);
    expect(off(cm).f32).toEqual(m.scale(1 / 2).f32);
    expect(diag(cv).f32).toEqual(v.scale(1 / 4).f32);
    const pm = await read(paper.optimizer.expAvg, name);
    expect(diag(pm).f32).toEqual(m.scale(1 / 2).f32);
    expect(off(pm).f32.every((x) => x === 0)).toBe(true);
    // The final LayerNorm's gradient is unchanged by the growth, so are its moments (tiled).
    const lnf = await read(s.optimizer.expAvg, "transformer.ln_f.bias");
    expect([...(await read(paper.optimizer.expAvg, "transformer.ln_f.bias")).f32]).toEqual([...lnf.f32, ...lnf.f32]);
    const reset = growWidth(s, { moments: "reset" });
    expect(reset.optimizer.expAvg).toBeUndefined();
    expect(reset.optimizer.step).toBe(0);
    expect(consistent.optimizer.step).toBe(10);
  });

  it("FFN-only growth duplicates c_fc columns and halves c_proj rows; moments follow the gradients", async () => {
    const s = stateWithMoments();
    const g = growWidth(s, { factor: 1, ffnFactor: 2, moments: "consistent" });
    const fc = await read(s.params, "transformer.h.0.mlp.c_fc.weight");
    expect((await read(g.params, "transformer.h.0.mlp.c_fc.weight")).f32).toEqual(fc.tile(1, 2).f32);
    const proj = await read(s.params, "transformer.h.0.mlp.c_proj.weight");
    expect((await read(g.params, "transformer.h.0.mlp.c_proj.weight")).f32).toEqual(proj.scale(0.5).tile(0, 2).f32);
    const m = await read(s.optimizer.expAvg, "transformer.h.0.mlp.c_proj.weight");
    expect((await read(g.optimizer.expAvg, "transformer.h.0.mlp.c_proj.weight")).f32).toEqual(m.tile(0, 2).f32);
    const mb = await read(s.optimizer.expAvgSq, "transformer.h.0.mlp.c_fc.bias");
    expect((await read(g.optimizer.expAvgSq, "transformer.h.0.mlp.c_fc.bias")).f32).toEqual(mb.scale(1 / 4).tile(0, 2).f32);
  });

  it("split makes the copies' weights differ while every output copy still sums to the original", async () => {
    const s = stateWithMoments();
    const g = growWidth(s, { symmetry: "split", seed: 3 });
    const w = await read(s.params, "transformer.h.0.attn.c_proj.weight");
    const gw = await read(g.params, "transformer.h.0.attn.c_proj.weight");
    const block = (i: number, j: number) => gw.slice(0, i * 8, (i + 1) * 8).slice(1, j * 8, (j + 1) * 8).f32;
    for (const j of [0, 1]) {
      const sum = block(0, j).map((x, e) => x + block(1, j)[e]!);
      sum.forEach((x, e) => expect(x).toBeCloseTo(w.f32[e]!, 6));
    }
    expect(block(0, 0)).not.toEqual(block(1, 1));
    const again = await read(growWidth(s, { symmetry: "split", seed: 3 }).params, "transformer.h.0.attn.c_proj.weight");
    expect(again.f32).toEqual(gw.f32);
  });

  it("keeps the dtype, records the stage and restarts the schedule", async () => {
    const s = stateWithMoments();
    const half: TrainingState = { ...s, params: new Map([...s.params].map(([n, t]) => [n, { ...t, dtype: "BF16" as const, read: async () => (await t.read()).withDType("BF16") }])) };
    const g = growWidth(half, { factor: 2, rewarmup: 5, continueAt: 4 });
    expect(g.params.get("transformer.wpe.weight")!.dtype).toBe("BF16");
    expect((await read(g.params, "transformer.wpe.weight")).dtype).toBe("BF16");
    expect(g.progress.step).toBe(4);
    // Rewound to step 4: the sampler draws new batches rather than those the small model saw at steps 4..10.
    expect(g.progress.samplerSeed).not.toBe(s.progress.samplerSeed);
    expect(growWidth(half, { factor: 2 }).progress.samplerSeed).toBe(s.progress.samplerSeed);
    expect(g.schedule!.restarts).toEqual([{ step: 4, warmupSteps: 5 }]);
    expect(g.progress.stages).toEqual([{ step: 10, operator: "width", options: { factor: 2, ffnFactor: 1, moments: "consistent", symmetry: "none", seed: 0, lrScale: 0.5 },
      before: s.shape, after: g.shape, continueAt: 4 }]);
  });

  it("scales the peak LR by 1/factor by default (lrScale overrides it), keeping the schedule's shape", () => {
    const s = stateWithMoments();
    const peak = s.schedule!.peakLr;
    const g = growWidth(s, { factor: 2 });
    expect(g.schedule!.peakLr).toBe(peak / 2);
    expect(g.optimizer.lr).toBe(s.optimizer.lr / 2);
    expect({ ...g.schedule, peakLr: peak }).toEqual(s.schedule);
    expect(growWidth(s, { factor: 4 }).schedule!.peakLr).toBe(peak / 4);
    const same = growWidth(s, { factor: 2, lrScale: 1 });
    expect(same.schedule).toEqual(s.schedule);
    expect(same.progress.stages[0]!.options.lrScale).toBe(1);
    // a state without a schedule gets the trainer's default constant schedule at the scaled LR
    const bare = growWidth({ ...s, schedule: null }, { factor: 2 });
    expect(bare.schedule).toMatchObject({ kind: "constant", peakLr: s.optimizer.lr / 2, restarts: [] });
    expect(() => growWidth(s, { factor: 2, lrScale: 0 })).toThrow(/lrScale must be a number > 0, got 0/);
  });

  it("rejects options that cannot hold", () => {
    const s = stateWithMoments();
    expect(() => growWidth(s, { factor: 1 })).toThrow(/factor must be an integer ≥ 2/);
    expect(() => growWidth(s, { factor: 2.5 })).toThrow(/factor must be an integer ≥ 1, got 2.5/);
    expect(() => growWidth(s, { ffnFactor: 0 })).toThrow(/ffnFactor must be an integer ≥ 1/);
    expect(() => growWidth(s, { moments: "magic" as never })).toThrow(/moments must be one of/);
    expect(() => growWidth(s, { noiseStd: 0.1 })).toThrow(/noiseStd is only used with symmetry "noise"/);
    expect(() => growWidth(s, { continueAt: 101 })).toThrow(/past the schedule's last step 100/);
    expect(() => growWidth({ ...s, params: new Map([...s.params].slice(1)) })).toThrow(/transformer.wte.weight is missing/);
  });

  it("is lazy: nothing is read until a grown tensor is", async () => {
    const s = initTrainingState("gpt2", tiny, 1);
    let reads = 0;
    const counted = new Map([...s.params].map(([n, t]) => [n, { ...t, read: () => { reads++; return t.read(); } }]));
    const g = growWidth({ ...s, params: counted });
    expect(reads).toBe(0);
    await g.params.get("transformer.h.0.ln_1.weight")!.read();
    expect(reads).toBe(1);
  });

  it("checks the grown size against the model limits before building anything", () => {
    const s = stateWithMoments();
    const t0 = performance.now();
    expect(() => growWidth(s, { factor: 1_000_000 })).toThrow(
      "width growth: factor 1000000 gives d_model 8000000, heads 2000000, ffn 32000000 and 1.5e15 parameters (6.1 PB as F32); " +
      "the limits are d_model ≤ 1048576, heads ≤ 1048576, ffn ≤ 1048576 and 1e13 parameters");
    expect(() => growWidth(s, { factor: 2, ffnFactor: 100_000 })).toThrow(/^width growth: factor 2, ffnFactor 100000 gives ffn 6400000 and .*; the limit is ffn ≤ 1048576$/);
    expect(performance.now() - t0).toBeLessThan(100);
  });

  it("returns a state without the loaded input's source directory and close", async () => {
    const dir = await mkdtemp(join(tmpdir(), "staged-width-"));
    try {
      await saveTrainingState(join(dir, "small"), stateWithMoments());
      const loaded = await loadTrainingState(join(dir, "small"));
      const g = growWidth(loaded, { factor: 2 });
      expect(loaded.source).toBeTruthy();
      expect("source" in g).toBe(false);
      expect("close" in g).toBe(false);
      // Its tensors still read from the input until the input is closed.
      expect((await g.params.get("transformer.wte.weight")!.read()).shape).toEqual([16, 16]);
      await loaded.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

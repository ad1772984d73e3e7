import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import {
  Tensor,
  blockDiagonal,
  encodeTensor,
  initTrainingState,
  loadTrainingState,
  mapValues,
  saveTrainingState,
  type LazyTensor,
  type TrainingState,
} from "@staged/core";
import { TINY_CONFIGS, TINY_GPT2 } from "@staged/testing";
import { growWidth, type WidthOptions } from "./width.js";

/** A small state with distinct, recognizable moments (m = value, v = value²) and a schedule. */
function stateWithMoments(config: Record<string, unknown> = TINY_GPT2): TrainingState {
  const s = initTrainingState("gpt2", config, 1);
  const scaled = (p: number) => mapValues(s.params, (v) => (v + 0.5) ** p);
  return {
    ...s,
    optimizer: { ...s.optimizer, step: 10, expAvg: scaled(1), expAvgSq: scaled(2) },
    schedule: { kind: "linear", peakLr: 1e-3, warmupSteps: 2, totalSteps: 100, restarts: [] },
    progress: { ...s.progress, step: 10 },
  };
}
const read = async (m: Map<string, LazyTensor> | undefined, name: string) => await m!.get(name)!.read();

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
    expect((await read(g.params, "transformer.h.0.attn.c_attn.bias")).chunk(0, 3).map((p) => [...p.f32])).toEqual(
      b.chunk(0, 3).map((p) => [...p.f32, ...p.f32]),
    );
    const lnf = await read(s.params, "transformer.ln_f.weight");
    expect([...(await read(g.params, "transformer.ln_f.weight")).f32]).toEqual([...lnf.f32, ...lnf.f32].map((x) => x / 2));
    const wte = await read(s.params, "transformer.wte.weight");
    expect((await read(g.params, "transformer.wte.weight")).slice(1, 8, 16).f32).toEqual(wte.f32);
  });

  it("maps moments: consistent on every block, paper only on the diagonal, reset drops them", async () => {
    const s = stateWithMoments();
    const name = "transformer.h.0.mlp.c_fc.weight";
    const m = await read(s.optimizer.expAvg, name),
      v = await read(s.optimizer.expAvgSq, name);
    const consistent = growWidth(s, { moments: "consistent" });
    const paper = growWidth(s, { moments: "paper" });
    const cm = await read(consistent.optimizer.expAvg, name),
      cv = await read(consistent.optimizer.expAvgSq, name);
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
    const half: TrainingState = {
      ...s,
      params: new Map([...s.params].map(([n, t]) => [n, { ...t, dtype: "BF16" as const, read: async () => (await t.read()).withDType("BF16") }])),
    };
    const g = growWidth(half, { factor: 2, rewarmup: 5, continueAt: 4 });
    expect(g.params.get("transformer.wpe.weight")!.dtype).toBe("BF16");
    expect((await read(g.params, "transformer.wpe.weight")).dtype).toBe("BF16");
    expect(g.progress.step).toBe(4);
    // Rewound to step 4: the sampler draws new batches rather than those the small model saw at steps 4..10.
    expect(g.progress.samplerSeed).not.toBe(s.progress.samplerSeed);
    expect(growWidth(half, { factor: 2 }).progress.samplerSeed).toBe(s.progress.samplerSeed);
    expect(g.schedule!.restarts).toEqual([{ step: 4, warmupSteps: 5 }]);
    expect(g.progress.stages).toEqual([
      {
        step: 10,
        operator: "width",
        options: { factor: 2, ffnFactor: 1, moments: "consistent", symmetry: "none", seed: 0, lrScale: 0.5 },
        before: s.shape,
        after: g.shape,
        continueAt: 4,
      },
    ]);
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

  it("lrScaleParams fanIn and lrRamp: a per-parameter factor of the schedule (the matrices whose input grew), the peak LR kept", () => {
    const s = stateWithMoments();
    const g = growWidth(s, { factor: 2, lrScaleParams: "fanIn", lrRamp: 300, rewarmup: 5 });
    expect(g.schedule!.peakLr).toBe(s.schedule!.peakLr);
    expect(g.optimizer.lr).toBe(s.optimizer.lr);
    expect(g.schedule!.restarts).toEqual([{ step: 10, warmupSteps: 5 }]);
    // GPT-2 (tied): every block matrix reads the grown hidden state or the grown FFN; the embeddings read the vocabulary.
    expect(g.schedule!.paramScales).toEqual([
      { step: 10, scale: 0.5, rampSteps: 300, roles: ["attn.qkv.weight", "attn.out.weight", "mlp.in.weight", "mlp.out.weight"] },
    ]);
    expect(g.progress.stages[0]!.options).toMatchObject({ lrScale: 0.5, lrScaleParams: "fanIn", lrRamp: 300 });
    // Every parameter, ramping: roles null.
    expect(growWidth(s, { factor: 2, lrRamp: 100 }).schedule!.paramScales).toEqual([{ step: 10, scale: 0.5, rampSteps: 100, roles: null }]);
    // FFN only: only the FFN's output matrix reads a grown dimension.
    expect(growWidth(s, { factor: 1, ffnFactor: 2, lrScale: 0.5, lrScaleParams: "fanIn" }).schedule!.paramScales![0]!.roles).toEqual([
      "mlp.out.weight",
    ]);
    expect(() => growWidth(s, { factor: 2, lrScaleParams: "some" as never })).toThrow(/lrScaleParams must be one of all, fanIn, got "some"/);
    expect(() => growWidth(s, { factor: 2, lrRamp: -1 })).toThrow(/lrRamp must be an integer ≥ 0, got -1/);
  });

  it("fresh units: recorded with the stage, drawn from the seed, the old units' biases first", async () => {
    const s = stateWithMoments();
    const g = growWidth(s, { units: "fresh", seed: 2 });
    expect(g.progress.stages.at(-1)!.options).toMatchObject({ units: "fresh", seed: 2 });
    const name = "transformer.h.0.mlp.c_proj.weight";
    expect((await read(g.params, name)).f32).toEqual((await read(growWidth(s, { units: "fresh", seed: 2 }).params, name)).f32);
    const fc = "transformer.h.0.mlp.c_fc.weight";
    expect((await read(g.params, fc)).f32).not.toEqual((await read(growWidth(s, { units: "fresh", seed: 3 }).params, fc)).f32);
    // GPT-2's fresh biases are 0 (HF's init); the old units' come first in each of q, k, v.
    const b = await read(s.params, "transformer.h.0.attn.c_attn.bias");
    expect((await read(g.params, "transformer.h.0.attn.c_attn.bias")).chunk(0, 3).map((p) => [...p.f32])).toEqual(
      b.chunk(0, 3).map((p) => [...p.f32, ...p.f32.map(() => 0)]),
    );
    // The writers' new rows start at 0, their old rows write into both copies of the hidden state.
    const w = await read(s.params, name),
      gw = await read(g.params, name);
    const [rows, cols] = w.shape as [number, number];
    for (let r = 0; r < 2 * rows; r++) {
      expect([...gw.f32.subarray(r * 2 * cols, (r + 1) * 2 * cols)]).toEqual(
        r < rows ? [...w.f32.subarray(r * cols, (r + 1) * cols), ...w.f32.subarray(r * cols, (r + 1) * cols)] : new Array(2 * cols).fill(0),
      );
    }
  });

  it("rejects options that cannot hold", () => {
    const s = stateWithMoments();
    expect(() => growWidth(s, { factor: 1 })).toThrow(/factor must be an integer ≥ 2/);
    expect(() => growWidth(s, { factor: 2.5 })).toThrow(/factor must be an integer ≥ 1, got 2.5/);
    expect(() => growWidth(s, { ffnFactor: 0 })).toThrow(/ffnFactor must be an integer ≥ 1/);
    expect(() => growWidth(s, { moments: "magic" as never })).toThrow(/moments must be one of/);
    expect(() => growWidth(s, { noiseStd: 0.1 })).toThrow(/noiseStd is only used with symmetry "noise"/);
    expect(() => growWidth(s, { units: "cloned" as never })).toThrow("units must be one of copies, fresh, got cloned");
    expect(() => growWidth(s, { units: "fresh", symmetry: "split" })).toThrow(
      /units "fresh" breaks the symmetry itself; it takes symmetry "none", got "split"/,
    );
    expect(() => growWidth(s, { units: "fresh", moments: "paper" })).toThrow(/moments "paper" are for copied units/);
    expect(() => growWidth(s, { continueAt: 101 })).toThrow(/past the schedule's last step 100/);
    expect(() => growWidth({ ...s, params: new Map([...s.params].slice(1)) })).toThrow(/transformer.wte.weight is missing/);
  });

  it("is lazy: nothing is read until a grown tensor is", async () => {
    const s = initTrainingState("gpt2", TINY_GPT2, 1);
    let reads = 0;
    const counted = new Map(
      [...s.params].map(([n, t]) => [
        n,
        {
          ...t,
          read: () => {
            reads++;
            return t.read();
          },
        },
      ]),
    );
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
        "the limits are d_model ≤ 1048576, heads ≤ 1048576, ffn ≤ 1048576 and 1e13 parameters",
    );
    expect(() => growWidth(s, { factor: 2, ffnFactor: 100_000 })).toThrow(
      /^width growth: factor 2, ffnFactor 100000 gives ffn 6400000 and .*; the limit is ffn ≤ 1048576$/,
    );
    expect(performance.now() - t0).toBeLessThan(5000); // nothing built: generous for a loaded machine
  });
});

/**
 * A checkpoint on disk in `dtype` with AdamW moments whose values include −0, subnormals and large ones, and the
 * same state loaded twice: as loaded (stored bytes) and with only read() (the values path, the reference).
 */
async function storedAndValues(dir: string, arch: string, config: Record<string, unknown>, dtype: "F32" | "F16" | "BF16") {
  const s = initTrainingState(arch, config, 4);
  const smallest = dtype === "F32" ? 1e-40 : dtype === "F16" ? 6e-8 : 1e-39;
  const edgy = (v: number, i: number) => (i % 7 === 3 ? -0 : i % 11 === 5 ? -smallest : i % 13 === 6 ? v * 100 : v);
  const as = (f: (v: number, i: number) => number) => mapValues(s.params, (v, i) => f(edgy(v, i), i), dtype);
  await saveTrainingState(
    join(dir, "in"),
    {
      ...s,
      params: as((v) => v),
      optimizer: { ...s.optimizer, step: 3, expAvg: as((v) => v / 7), expAvgSq: as((v) => v * v) },
    },
    { overwrite: true },
  );
  const loaded = await loadTrainingState(join(dir, "in"));
  const reads = new Map<string, number>();
  // Counting wrappers that keep both paths (one object per tensor, so a writer can see copies of one source).
  const counted = (prefix: string, m: Map<string, LazyTensor> | undefined) =>
    new Map(
      [...m!].map(([n, t]) => [
        n,
        {
          dtype: t.dtype,
          shape: t.shape,
          read: () => {
            reads.set(`${prefix}read ${n}`, (reads.get(`${prefix}read ${n}`) ?? 0) + 1);
            return t.read();
          },
          readBytes: () => {
            reads.set(`${prefix}bytes ${n}`, (reads.get(`${prefix}bytes ${n}`) ?? 0) + 1);
            return t.readBytes!();
          },
        } as LazyTensor,
      ]),
    );
  const valuesOnly = (m: Map<string, LazyTensor> | undefined) =>
    new Map([...m!].map(([n, t]) => [n, { dtype: t.dtype, shape: t.shape, read: () => t.read() } as LazyTensor]));
  const stored: TrainingState = {
    ...loaded,
    params: counted("", loaded.params),
    optimizer: { ...loaded.optimizer, expAvg: counted("m ", loaded.optimizer.expAvg), expAvgSq: counted("v ", loaded.optimizer.expAvgSq) },
  };
  const values: TrainingState = {
    ...loaded,
    params: valuesOnly(loaded.params),
    optimizer: { ...loaded.optimizer, expAvg: valuesOnly(loaded.optimizer.expAvg), expAvgSq: valuesOnly(loaded.optimizer.expAvgSq) },
  };
  return { stored, values, reads, close: () => loaded.close() };
}

/** Every file of two checkpoint directories, byte for byte. */
async function expectSameFiles(a: string, b: string): Promise<void> {
  const names = (await readdir(a)).sort();
  expect((await readdir(b)).sort()).toEqual(names);
  for (const f of names) expect(Buffer.compare(await readFile(join(a, f)), await readFile(join(b, f))), f).toBe(0);
}

describe("growWidth on stored bytes", () => {
  const cases: [string, WidthOptions][] = [
    ["×2", { factor: 2 }],
    ["FFN-only ×2", { factor: 1, ffnFactor: 2 }],
    ["×2, FFN ×3, paper moments", { factor: 2, ffnFactor: 3, moments: "paper" }],
    ["×3", { factor: 3 }],
    ["×2 with noise in the matrices", { factor: 2, symmetry: "noise", seed: 5 }],
  ];
  for (const dtype of ["F32", "F16", "BF16"] as const) {
    it(`${dtype}: writes the same bytes as the values path (GPT-2 and Llama with GQA), reading no value where nothing is scaled per value`, async () => {
      const dir = await mkdtemp(join(tmpdir(), "staged-width-bytes-"));
      try {
        for (const [arch, config] of TINY_CONFIGS) {
          const { stored, values, reads, close } = await storedAndValues(dir, arch, config, dtype);
          for (const [label, o] of cases) {
            reads.clear();
            const viaBytes = growWidth(stored, o),
              viaValues = growWidth(values, o);
            for (const [n, t] of viaBytes.params) {
              expect(typeof t.readBytes === "function", `${n} has stored bytes`).toBe(
                !(o.symmetry === "noise" && t.shape.length === 2 && !/wte|wpe|embed|lm_head/.test(n)),
              );
            }
            await saveTrainingState(join(dir, "bytes"), viaBytes, { overwrite: true });
            await saveTrainingState(join(dir, "values"), viaValues, { overwrite: true });
            await expectSameFiles(join(dir, "bytes"), join(dir, "values"));
            // Each source tensor was read once, as stored bytes unless a matrix draws noise per value.
            for (const [key, n] of reads) expect(n, `${label}: ${key}`).toBe(1);
            const valueReads = [...reads.keys()].filter((k) => /^(m |v )?read /.test(k));
            if (o.symmetry === undefined) expect(valueReads, label).toEqual([]);
            // And a grown tensor's own readBytes equals its values encoded.
            const name = arch === "gpt2" ? "transformer.h.1.attn.c_attn.weight" : "model.layers.1.mlp.down_proj.weight";
            for (const m of [viaBytes.params, viaBytes.optimizer.expAvgSq]) {
              if (m?.get(name)?.readBytes) expect(await m.get(name)!.readBytes!()).toEqual(encodeTensor(await m.get(name)!.read()));
            }
          }
          await close();
        }
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  }

  it("streams a grown tensor in pieces that add up to its bytes", async () => {
    const dir = await mkdtemp(join(tmpdir(), "staged-width-bytes-"));
    try {
      const { stored, close } = await storedAndValues(dir, "gpt2", TINY_GPT2, "BF16");
      const g = growWidth(stored, { factor: 2 });
      for (const name of ["transformer.h.0.attn.c_attn.weight", "transformer.ln_f.weight", "transformer.wte.weight"]) {
        const t = g.params.get(name)!;
        const pieces: Uint8Array[] = [];
        for await (const p of t.streamBytes!()) pieces.push(p);
        expect(Buffer.concat(pieces)).toEqual(Buffer.from(await t.readBytes!()));
      }
      await close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

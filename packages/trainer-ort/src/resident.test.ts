import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gpt2, initTrainingState, llama, type ArchitecturePlugin } from "@staged/core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initWeights } from "./testing/weights.js";
import { createEngine, type EngineOptions } from "./engine.js";
import { train, type EngineFactory } from "./trainer.js";

/**
 * Issue 18: the resident engine keeps the training state in the tensors the step returns and feeds them back (on a
 * GPU they stay there; webgpu.test.ts runs it where an adapter exists). On the CPU provider it runs the same code
 * path: it must train exactly as the host engine does, bit for bit, in every mode the engine has.
 */
const B = 8,
  T = 16;
const CASES: [string, ArchitecturePlugin, Record<string, unknown>][] = [
  ["gpt2", gpt2, gpt2.initConfig({ layers: 2, dModel: 32, heads: 2, vocab: 64, context: T }, true)],
  ["llama", llama, llama.initConfig({ layers: 2, dModel: 32, heads: 2, kvHeads: 1, vocab: 64, context: T }, false)],
];
const batchOf = (s: number) => Int32Array.from({ length: B * T }, (_, i) => (i * 5 + s * 11 + (i >> 4)) % 64);
const copy = (m: Map<string, Float32Array>) => new Map([...m].map(([n, d]) => [n, Float32Array.from(d)]));

async function trainWith(architecture: string, config: Record<string, unknown>, w0: Map<string, Float32Array>, o: Partial<EngineOptions>) {
  const e = await createEngine(architecture, config, w0, undefined, { batch: B, context: T, threads: 1, ...o });
  try {
    const steps = [];
    for (let s = 1; s <= 4; s++) steps.push(await e.step(batchOf(s), 3e-3, s));
    const evalLoss = await e.evalLoss(batchOf(9));
    const grads = (await e.gradients(batchOf(10))).grads;
    await e.sync();
    const m = e.moments();
    return { steps, evalLoss, grads, params: copy(e.params()), expAvg: copy(m.expAvg), expAvgSq: copy(m.expAvgSq), lossScale: e.lossScale() };
  } finally {
    await e.release();
  }
}

describe.each(CASES)("%s: resident state on the CPU provider", (architecture, plugin, config) => {
  const w0 = initWeights(plugin, config, 3);
  it.each([
    ["one batch", {}],
    ["micro-batches", { microBatch: B / 4 }],
    ["micro-batches at 4 threads", { microBatch: B / 4, threads: 4 }],
    ["mixed precision, an overflow on the way", { precision: "mixed" as const, lossScale: { scale: 2 ** 40, goodSteps: 0 } }],
    ["mixed precision with micro-batches", { precision: "mixed" as const, microBatch: B / 2, lossScale: { scale: 2 ** 40, goodSteps: 0 } }],
  ])(
    "%s: the same steps, evaluation, gradients, weights and moments as the host engine, bit for bit",
    async (_label, o) => {
      const host = await trainWith(architecture, config, w0, { ...o, resident: false });
      const resident = await trainWith(architecture, config, w0, { ...o, resident: true });
      expect(resident).toEqual(host);
      if ("lossScale" in o) expect(host.lossScale.scale).toBeLessThan(2 ** 40); // the overflowed steps were dropped and repeated
    },
    60_000,
  );
});

describe("resident state", () => {
  const [architecture, plugin, config] = CASES[0]!;
  const w0 = initWeights(plugin, config, 3);

  it("the weights are read after sync(): before it, one line that says so; the caller's arrays are never written", async () => {
    const given = copy(w0);
    const e = await createEngine(architecture, config, given, undefined, { batch: B, context: T, threads: 1, resident: true });
    expect(e.resident).toBe(true);
    expect(e.params().get("transformer.wte.weight")).toEqual(w0.get("transformer.wte.weight")); // before any step: the start
    await e.step(batchOf(1), 3e-3, 1);
    expect(() => e.params()).toThrow("the state is on the device: await engine.sync() before reading it");
    await e.sync();
    expect(e.params().get("transformer.wte.weight")).not.toEqual(w0.get("transformer.wte.weight"));
    expect(given).toEqual(w0);
    await e.release();
  });

  it("is refused on CUDA, and is off by default on the CPU", async () => {
    await expect(createEngine(architecture, config, w0, undefined, { batch: B, context: T, device: "cuda", resident: true })).rejects.toThrow(
      /resident state is not possible on CUDA/,
    );
    const e = await createEngine(architecture, config, w0, undefined, { batch: B, context: T, threads: 1 });
    expect(e.resident).toBe(false);
    await e.release();
  });

  describe("train() on a resident engine", () => {
    let dir: string, text: string;
    beforeAll(async () => {
      dir = await mkdtemp(join(tmpdir(), "staged-resident-"));
      text = join(dir, "data.txt");
      await writeFile(text, "a resident state stays where the step left it. ".repeat(100));
    });
    afterAll(() => rm(dir, { recursive: true, force: true }));

    it("saves (a download) and returns the same checkpoint as the host engine", async () => {
      const state = () => initTrainingState("gpt2", { n_layer: 1, n_embd: 32, n_head: 2, vocab_size: 256, n_positions: 16 }, 3);
      const residentFactory: EngineFactory = (a, c, w, m, o) => createEngine(a, c, w, m, { ...o, resident: true });
      const o = { data: text, batch: 4, context: 16, lr: 3e-3, steps: 4, saveEvery: 2, threads: 1 };
      const host = await train(state(), { ...o, saveDir: join(dir, "host") });
      const resident = await train(state(), { ...o, saveDir: join(dir, "resident"), engineFactory: residentFactory });
      expect(resident.result.losses).toEqual(host.result.losses);
      for (const f of ["model.safetensors", "optimizer.safetensors", "training_state.json"]) {
        expect(await readFile(join(dir, "resident", f)), f).toEqual(await readFile(join(dir, "host", f)));
      }
    }, 60_000);
  });
});

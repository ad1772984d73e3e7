import { existsSync } from "node:fs";
import { spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { hostname } from "node:os";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  canonicalPath,
  createDefaultRegistry,
  gpt2,
  initTrainingState,
  llama,
  loadTrainingState,
  processStart,
  saveTrainingState,
  writeCheckpoint,
  type TrainingState,
} from "@staged/core";
import { flopsPerToken } from "@staged/scheduler";
import {
  defaultEngineFactory,
  evaluate,
  evaluateBlocks,
  resolveSchedule,
  train,
  type EngineFactory,
  type TrainEngine,
  type TrainOptions,
} from "./trainer.js";
import { parseMetrics } from "@staged/scheduler";

let dir: string;
let text: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-trainer-"));
  text = join(dir, "data.txt");
  const words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far"];
  let s = "",
    x = 1;
  for (let i = 0; i < 2000; i++) {
    x = (x * 1103515245 + 12345) % 2147483648;
    s += words[x % words.length] + (i % 12 === 11 ? ".\n" : " ");
  }
  await writeFile(text, s);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const tiny = (): TrainingState => initTrainingState("gpt2", { n_layer: 2, n_embd: 32, n_head: 2, vocab_size: 256, n_positions: 16 }, 3);

/**
 * A pure-JS stand-in for the ONNX engine: AdamW on the "loss" ½·mean(p²) + a term of the batch, in
 * float32, deterministic; enough to check the trainer's bookkeeping without onnxruntime.
 */
const fakeEngine: EngineFactory = async (_arch, _config, given, moments, options) => {
  const weights = new Map([...given].map(([n, a]) => [n, a.slice()]));
  const copy = (x?: Map<string, Float32Array>) => x && new Map([...x].map(([n, a]) => [n, a.slice()]));
  const m = copy(moments?.expAvg) ?? new Map([...weights].map(([n, a]) => [n, new Float32Array(a.length)]));
  const v = copy(moments?.expAvgSq) ?? new Map([...weights].map(([n, a]) => [n, new Float32Array(a.length)]));
  const [b1, b2] = options.betas ?? [0.9, 0.999];
  const eps = options.eps ?? 1e-8;
  const batchTerm = (ids: Int32Array) => {
    let s = 0;
    for (const id of ids) s += id;
    return s / ids.length / 256;
  };
  const lossOf = (ids: Int32Array) => {
    let s = 0,
      n = 0;
    for (const a of weights.values())
      for (const x of a) {
        s += x * x;
        n++;
      }
    return Math.fround((0.5 * s) / n + batchTerm(ids));
  };
  const engine: TrainEngine = {
    paramNames: [...weights.keys()],
    async step(ids, lr, k) {
      const loss = lossOf(ids);
      const t = batchTerm(ids);
      for (const [name, p] of weights) {
        const mm = m.get(name)!,
          vv = v.get(name)!;
        for (let i = 0; i < p.length; i++) {
          const g = Math.fround(p[i]! + t * 1e-3);
          p[i] = Math.fround(p[i]! * (1 - lr * (options.weightDecay ?? 0)));
          mm[i] = Math.fround(b1 * mm[i]! + (1 - b1) * g);
          vv[i] = Math.fround(b2 * vv[i]! + (1 - b2) * g * g);
          const mh = mm[i]! / (1 - b1 ** k),
            vh = vv[i]! / (1 - b2 ** k);
          p[i] = Math.fround(p[i]! - (lr * mh) / (Math.sqrt(vh) + eps));
        }
      }
      return { loss, gradNorm: 1 };
    },
    async evalLoss(ids) {
      return lossOf(ids);
    },
    params: () => weights,
    moments: () => ({ expAvg: m, expAvgSq: v }),
    async release() {},
  };
  return engine;
};

const engineReady = existsSync(new URL("./engine.ts", import.meta.url));
const engines: [string, EngineFactory][] = [
  ["fake engine", fakeEngine],
  ...(engineReady ? [["onnxruntime engine", defaultEngineFactory] as [string, EngineFactory]] : []),
];

async function tensors(state: TrainingState, which: "params" | "expAvg" | "expAvgSq"): Promise<Map<string, Float32Array>> {
  const map = which === "params" ? state.params : state.optimizer[which]!;
  const out = new Map<string, Float32Array>();
  for (const [n, t] of map) out.set(n, (await t.read()).f32);
  return out;
}

describe.each(engines)("train with the %s", (_name, engineFactory) => {
  const base = (): Omit<TrainOptions, "steps"> => ({
    data: text,
    batch: 4,
    context: 16,
    lr: 3e-3,
    schedule: "linear",
    warmup: 2,
    totalSteps: 8,
    sampler: "random",
    seed: 11,
    evalEvery: 2,
    engineFactory,
    threads: 1,
  });

  it("N steps in one go equal N/2 + N/2 with a save and reload in between", async () => {
    const one = join(dir, `one-${_name}`),
      two = join(dir, `two-${_name}`);
    const a = await train(tiny(), { ...base(), steps: 8, saveDir: one });
    const b1 = await train(tiny(), { ...base(), steps: 4, saveDir: two });
    const loaded = await loadTrainingState(two);
    // The second half takes its schedule, seed and counters from the checkpoint.
    const b2 = await train(loaded, { data: text, batch: 4, context: 16, steps: 4, evalEvery: 2, engineFactory, threads: 1 });
    await loaded.close();
    expect(b2.result.step).toBe(8);
    expect([...b1.result.losses, ...b2.result.losses]).toEqual(a.result.losses);
    const [sa, sb] = [await loadTrainingState(one), await loadTrainingState(two)];
    for (const which of ["params", "expAvg", "expAvgSq"] as const) {
      const [ta, tb] = [await tensors(sa, which), await tensors(sb, which)];
      for (const [n, x] of ta) expect(tb.get(n), `${which} ${n}`).toEqual(x);
    }
    expect(sb.progress).toEqual(sa.progress);
    expect(sb.optimizer.step).toBe(8);
    expect(sb.schedule).toEqual(sa.schedule);
    expect(await readFile(join(two, "metrics.jsonl"), "utf8")).toBe(await readFile(join(one, "metrics.jsonl"), "utf8"));
    await sa.close();
    await sb.close();
  });

  it("writes progress, schedule and metrics.jsonl into the checkpoint", async () => {
    const out = join(dir, `metrics-${_name}`);
    const saves: number[] = [];
    const { result, state } = await train(
      tiny(),
      { ...base(), steps: 5, saveEvery: 2, saveDir: out },
      {
        onSave: (s) => {
          saves.push(s.step);
        },
      },
    );
    expect(saves).toEqual([2, 4, 5]);
    const fpt = flopsPerToken(state.shape, 16);
    const lines = parseMetrics(await readFile(join(out, "metrics.jsonl"), "utf8"));
    expect(lines.map((l) => l.step)).toEqual([1, 2, 3, 4, 5]);
    expect(lines.map((l) => l.tokens)).toEqual([64, 128, 192, 256, 320]);
    expect(lines[4]!.flops).toBe(320 * fpt);
    expect(lines.map((l) => l.valLoss !== undefined)).toEqual([false, true, false, true, true]);
    [0, 1.5e-3, 3e-3, 2.5e-3, 2e-3].forEach((lr, i) => expect(lines[i]!.lr).toBeCloseTo(lr, 12));
    expect(lines.map((l) => l.loss)).toEqual(result.losses);
    expect(result.valLoss).toBe(lines[4]!.valLoss);
    const saved = await loadTrainingState(out);
    expect(saved.progress).toMatchObject({ step: 5, tokensSeen: 320, flopsSeen: 320 * fpt, samplerSeed: 11 });
    expect(saved.schedule).toMatchObject({ kind: "linear", peakLr: 3e-3, warmupSteps: 2, totalSteps: 8 });
    expect(saved.optimizer.expAvg?.size).toBe(state.params.size);
    await saved.close();
    expect(result.tokensPerSecond).toBeGreaterThan(0);
  });
});

describe("stored settings, global step, stopping, snapshots", () => {
  it("a resumed run needs only the steps: batch, context, eval settings and data come from the checkpoint", async () => {
    const out = join(dir, "stored");
    await train(tiny(), { data: text, steps: 3, batch: 2, context: 8, evalEvery: 3, evalBlocks: 2, saveDir: out, engineFactory: fakeEngine });
    const st = await loadTrainingState(out);
    expect(st.training).toEqual({ batch: 2, context: 8, evalEvery: 3, evalBlocks: 2, data: text });
    const seen: number[] = [];
    const { result, state } = await train(
      st,
      { steps: 3, engineFactory: fakeEngine },
      {
        onEval: (e) => {
          seen.push(e.step);
        },
      },
    );
    await st.close();
    expect(result.runTokens).toBe(3 * 2 * 8); // batch 2 × context 8, not the defaults 8 × 16
    expect(seen).toEqual([6]);
    expect(state.training).toEqual({ batch: 2, context: 8, evalEvery: 3, evalBlocks: 2, data: text });
    // an explicit option wins and is stored
    const again = await train(state, { steps: 1, batch: 4, saveDir: join(dir, "stored2"), engineFactory: fakeEngine });
    expect(again.state.training?.batch).toBe(4);
    await expect(train(tiny(), { steps: 1, engineFactory: fakeEngine })).rejects.toThrow(/no training data/);
  });

  it("the global step never goes back: a growth that continues at an earlier step keeps counting", async () => {
    const a = await train(tiny(), { data: text, steps: 6, batch: 2, context: 8, saveDir: join(dir, "gs"), engineFactory: fakeEngine });
    // what a growth with continueAt 2 does to progress (see @staged/core grownState)
    const rewound = {
      ...a.state,
      progress: {
        ...a.state.progress,
        step: 2,
        globalStep: 6,
        stages: [{ step: 6, operator: "width", options: {}, before: a.state.shape, after: a.state.shape, continueAt: 2 }],
      },
    };
    const b = await train(rewound, { steps: 3, saveDir: join(dir, "gs"), engineFactory: fakeEngine });
    const lines = parseMetrics(await readFile(join(dir, "gs", "metrics.jsonl"), "utf8"));
    expect(lines.map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6, 3, 4, 5]);
    expect(lines.map((l) => l.globalStep)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    expect(b.state.progress.globalStep).toBe(9);
  });

  it('onEval returning "stop" ends the call after that step, saved there', async () => {
    const out = join(dir, "stop");
    const { result } = await train(
      tiny(),
      { data: text, steps: 20, batch: 2, context: 8, evalEvery: 2, saveDir: out, engineFactory: fakeEngine },
      { onEval: (e) => (e.step === 6 ? "stop" : undefined) },
    );
    expect(result.step).toBe(6);
    expect(result.losses).toHaveLength(6);
    const st = await loadTrainingState(out);
    expect(st.progress.step).toBe(6);
    await st.close();
  });

  it("an aborted signal stops after the step in progress, saves it, and the run resumes to an uninterrupted one's state", async () => {
    const full = join(dir, "sig-full"),
      cut = join(dir, "sig-cut");
    const opts = { data: text, batch: 2, context: 8, evalEvery: 3, seed: 4, engineFactory: fakeEngine };
    const a = await train(tiny(), { ...opts, steps: 10, saveDir: full });
    const ac = new AbortController();
    const evals: number[] = [];
    const b = await train(
      tiny(),
      { ...opts, steps: 10, saveDir: cut, signal: ac.signal },
      {
        onStep: (i) => {
          if (i.step === 4) ac.abort();
        },
        onEval: (e) => {
          evals.push(e.step);
        },
      },
    );
    expect(b.result).toMatchObject({ step: 4, interrupted: true });
    expect(b.result.losses).toHaveLength(4);
    expect(evals).toEqual([3]); // no evaluation delays the stop
    const st = await loadTrainingState(cut);
    expect(st.progress.step).toBe(4);
    const c = await train(st, { data: text, steps: 6, batch: 2, context: 8, engineFactory: fakeEngine });
    await st.close();
    expect(c.result.interrupted).toBe(false);
    expect([...b.result.losses, ...c.result.losses]).toEqual(a.result.losses);
    // Aborted before the first step: nothing runs, nothing is written.
    const none = join(dir, "sig-none");
    const d = await train(tiny(), { ...opts, steps: 5, saveDir: none, signal: AbortSignal.abort() });
    expect(d.result).toMatchObject({ step: 0, interrupted: true, saveDir: null });
    expect(d.result.losses).toEqual([]);
    expect(existsSync(none)).toBe(false);
  });

  it("keepEvery writes never-replaced snapshots beside the checkpoint", async () => {
    const out = join(dir, "keep");
    await train(tiny(), { data: text, steps: 5, batch: 2, context: 8, keepEvery: 2, saveDir: out, engineFactory: fakeEngine });
    expect(existsSync(`${out}.step-2`) && existsSync(`${out}.step-4`)).toBe(true);
    expect(existsSync(`${out}.step-5`)).toBe(false);
    const s2 = await loadTrainingState(`${out}.step-2`);
    expect(s2.progress.step).toBe(2);
    await s2.close();
  });
});

describe("nothing lost", () => {
  it("a diverged run (lr 1e5) stops at the step that diverged and keeps the last good checkpoint", async () => {
    const out = join(dir, "diverge");
    await train(tiny(), { data: text, steps: 2, batch: 2, context: 8, saveDir: out, threads: 1 });
    const before = await readFile(join(out, "model.safetensors"));
    const st = await loadTrainingState(out);
    const run = train(st, { steps: 30, lr: 1e5, saveEvery: 1, threads: 1 });
    await expect(run).rejects.toThrow(
      /^step \d+: the (training loss is (NaN|Infinity)|gradient norm is (NaN|Infinity)) \(learning rate 1\.00e\+5\): training diverged and stopped; the checkpoint .*diverge keeps step \d+, the last good one$/,
    );
    await st.close();
    // Whatever was saved before the divergence is finite, and loads.
    const after = await loadTrainingState(out);
    for (const t of after.params.values()) expect((await t.read()).f32.every(Number.isFinite)).toBe(true);
    await after.close();
    expect(before.length).toBeGreaterThan(0);
  });

  it("a non-finite loss at the first step leaves the checkpoint unchanged", async () => {
    const out = join(dir, "nan-first");
    await train(tiny(), { data: text, steps: 1, batch: 2, context: 8, saveDir: out, engineFactory: fakeEngine });
    const before = await readFile(join(out, "model.safetensors"));
    const nanEngine: EngineFactory = async (...a) => ({ ...(await fakeEngine(...a)), step: async () => ({ loss: NaN, gradNorm: NaN }) });
    const st = await loadTrainingState(out);
    await expect(train(st, { steps: 3, engineFactory: nanEngine })).rejects.toThrow(
      /^step 2: the training loss is NaN .* the checkpoint .*nan-first is unchanged \(step 1\)$/,
    );
    await st.close();
    expect(await readFile(join(out, "model.safetensors"))).toEqual(before);
  });

  it("a state not loaded from a directory needs saveDir (or null): a grown state never overwrites its source", async () => {
    await expect(train(tiny(), { data: text, steps: 1, engineFactory: fakeEngine })).rejects.toThrow(/not loaded from a directory .*give saveDir/);
    const { result } = await train(tiny(), { data: text, steps: 1, batch: 2, context: 8, saveDir: null, engineFactory: fakeEngine });
    expect(result.saveDir).toBeNull();
  });

  it("refuses a schedule that ends before the run, and a warmup longer than the schedule", async () => {
    const s = tiny();
    s.progress.step = 10;
    expect(() => resolveSchedule(s, { steps: 5, totalSteps: 12 })).toThrow(
      /total steps 12 ends the schedule before this run does \(step 15: 10 done \+ 5\); give at least 15/,
    );
    expect(() => resolveSchedule(s, { steps: 5, warmup: 20 })).toThrow(/warmup 20 is longer than the schedule \(15 steps\)/);
    expect(resolveSchedule(s, { steps: 5, totalSteps: 15, warmup: 15 }).totalSteps).toBe(15);
  });

  it("refuses text for an HF checkpoint whose vocabulary needs a tokenizer it lacks; token ids are fine", async () => {
    const hf = join(dir, "hf-no-tokenizer");
    const config = { model_type: "gpt2", n_layer: 1, n_embd: 8, n_head: 2, vocab_size: 300, n_positions: 8 };
    await mkdir(hf, { recursive: true });
    await writeFile(join(hf, "config.json"), JSON.stringify(config));
    await writeCheckpoint(
      hf,
      "model",
      [...gpt2.init(config, 1)].map(([name, tensor]) => ({ name, tensor })),
    );
    const st = await loadTrainingState(hf);
    expect(st.tokenizer).toEqual({ kind: "none" });
    await expect(train(st, { data: text, steps: 1, saveDir: join(dir, "hf-out"), engineFactory: fakeEngine })).rejects.toThrow(
      /hf-no-tokenizer: has a vocabulary larger than 256 but no tokenizer.json, .*--tokenizer/,
    );
    const ids = join(dir, "ids.bin");
    await writeFile(join(ids), new Uint8Array(new Uint16Array(Array.from({ length: 400 }, (_, i) => (i * 7) % 300)).buffer));
    const { result } = await train(st, { data: ids, steps: 1, batch: 2, context: 8, saveDir: join(dir, "hf-out"), engineFactory: fakeEngine });
    expect(result.step).toBe(1);
    await st.close();
  });

  it("refuses to train a checkpoint another live process reads or writes, before any setup", async () => {
    const out = await canonicalPath(join(dir, "locked"));
    await saveTrainingState(out, tiny());
    const other = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      const holder = { pid: other.pid, host: hostname(), start: processStart(other.pid!), command: "staged grow width locked", since: "now" };
      await symlink(JSON.stringify(holder), join(dir, ".locked.reader-9-x"));
      const st = await loadTrainingState(out);
      await expect(train(st, { data: text, steps: 1, engineFactory: fakeEngine })).rejects.toThrow(
        new RegExp(`locked: being read by pid ${other.pid} \\(staged grow width locked`),
      );
      await st.close();
    } finally {
      other.kill("SIGKILL");
    }
  });
});

describe("plugins of your own", () => {
  it("train() and evaluate() find the architecture in the registry given", async () => {
    const registry = createDefaultRegistry().register("architecture", { ...llama, name: "my-llama", modelTypes: ["my-llama"] });
    const config = {
      model_type: "llama",
      hidden_size: 16,
      intermediate_size: 24,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      vocab_size: 256,
      max_position_embeddings: 16,
    };
    const state = initTrainingState("my-llama", config, 1, registry);
    await expect(train(state, { data: text, steps: 1, batch: 2, context: 8, saveDir: null, threads: 1 })).rejects.toThrow(
      /unknown architecture "my-llama"/,
    );
    const { result } = await train(state, { data: text, steps: 1, batch: 2, context: 8, saveDir: null, threads: 1, registry });
    expect(Number.isFinite(result.loss)).toBe(true);
    expect(Number.isFinite((await evaluate(state, { data: text, context: 8, maxBlocks: 2, threads: 1, registry })).loss)).toBe(true);
  });

  it("train() runs an LR schedule kind of the registry given; an unknown kind names the known ones", async () => {
    // Research code's own schedule: the peak LR over 1 + step.
    const registry = createDefaultRegistry().register("lrSchedule", { name: "inverse", create: (s) => (step) => s.peakLr / (1 + step) });
    const o: TrainOptions = {
      data: text,
      steps: 4,
      batch: 2,
      context: 8,
      saveDir: null,
      engineFactory: fakeEngine,
      lr: 0.1,
      schedule: "inverse",
      registry,
    };
    const { state, result } = await train(tiny(), o);
    expect(result.metrics.map((m) => m.lr)).toEqual([0.1, 0.05, 0.1 / 3, 0.025]);
    expect(result.schedule.kind).toBe("inverse");
    // The state keeps the kind: the next call (a resumed or grown run) finds it in the registry again.
    expect((await train(state, { ...o, schedule: undefined, steps: 1 })).result.metrics[0]!.lr).toBe(0.1 / 5);
    expect(() => resolveSchedule(tiny(), { steps: 1, schedule: "inverse" })).toThrow(
      'unknown LR schedule kind "inverse" (kinds: constant, linear, cosine, wsd, restart-linear)',
    );
    expect(() => resolveSchedule(state, { steps: 1 })).toThrow(/^the state: schedule: unknown LR schedule kind "inverse"/);
  });
});

describe("dropout from config.json", () => {
  it("is on at HF's default (GPT-2: 0.1); keyed by seed and global step, a resumed run draws the masks an uninterrupted one does", async () => {
    expect(gpt2.decoder(tiny().config).dropout).toEqual({ embedding: 0.1, attention: 0.1, residual: 0.1 });
    const o = { data: text, batch: 2, context: 8, lr: 3e-3, seed: 5, threads: 1 };
    const one = join(dir, "dropout-one"),
      two = join(dir, "dropout-two");
    const a = await train(tiny(), { ...o, steps: 4, saveDir: one });
    await train(tiny(), { ...o, steps: 2, saveDir: two });
    const loaded = await loadTrainingState(two);
    const b = await train(loaded, { steps: 2, threads: 1 });
    await loaded.close();
    expect(b.state.progress.globalStep).toBe(4);
    expect(parseMetrics(await readFile(join(two, "metrics.jsonl"), "utf8")).map((l) => l.loss)).toEqual(a.result.losses);
    const [pa, pb] = [await tensors(a.state, "params"), await tensors(b.state, "params")];
    for (const [n, x] of pa) expect(pb.get(n), n).toEqual(x);
    // The masks change training: the same run without dropout, or with another seed's masks, differs.
    const noDropout = { ...tiny(), config: { ...tiny().config, embd_pdrop: 0, attn_pdrop: 0, resid_pdrop: 0 } };
    const c = await train(noDropout, { ...o, steps: 4, saveDir: null });
    expect(c.result.losses[0]).not.toBe(a.result.losses[0]);
    const d = await train(tiny(), { ...o, steps: 1, saveDir: null, seed: 6 });
    expect(d.result.losses[0]).not.toBe(a.result.losses[0]);
    // Evaluation has none: the dropout and the dropout-free config evaluate the same weights alike.
    const [ea, ec] = [
      await evaluate(a.state, { data: text, context: 8, maxBlocks: 4, threads: 1 }),
      await evaluate({ ...a.state, config: noDropout.config }, { data: text, context: 8, maxBlocks: 4, threads: 1 }),
    ];
    expect(ea.loss).toBe(ec.loss);
  });
});

describe("resolveSchedule", () => {
  it("per-parameter LR factors of the schedule reach the engine each step by role; bias correction is passed and stored", async () => {
    const seen: { options: Parameters<EngineFactory>[4]; steps: { lr: number; scales: number[] | null }[]; names: readonly string[] } = {
      options: { batch: 0, context: 0 },
      steps: [],
      names: [],
    };
    const spy: EngineFactory = async (...args) => {
      const e = await fakeEngine(...args);
      seen.options = args[4];
      seen.names = e.paramNames;
      return {
        ...e,
        paramNames: e.paramNames,
        step: (ids, lr, k, o) => {
          seen.steps.push({ lr, scales: o?.lrScales ? Array.from(o.lrScales) : null });
          return e.step(ids, lr, k);
        },
      };
    };
    const s = tiny();
    const state: TrainingState = {
      ...s,
      schedule: {
        kind: "constant",
        peakLr: 1e-3,
        warmupSteps: 0,
        totalSteps: 10,
        restarts: [],
        paramScales: [{ step: 1, scale: 0.5, rampSteps: 2, roles: ["mlp.in.weight"] }],
      },
    };
    const { state: after } = await train(state, {
      data: text,
      steps: 4,
      batch: 2,
      context: 8,
      saveDir: null,
      engineFactory: spy,
      biasCorrection: false,
    });
    expect(seen.options).toMatchObject({ perParamLr: true, biasCorrection: false });
    const fc = seen.names.indexOf("transformer.h.0.mlp.c_fc.weight"),
      wte = seen.names.indexOf("transformer.wte.weight");
    // Steps 0..3 of the schedule: before the factor, at it, half way back, back at 1.
    expect(seen.steps.map((x) => x.scales![fc])).toEqual([1, 0.5, 0.75, 1]);
    expect(seen.steps.every((x) => x.scales![wte] === 1 && x.lr === 1e-3)).toBe(true);
    expect(after.optimizer.biasCorrection).toBe(false);
    // Without factors the engine is compiled as before and gets none.
    seen.steps = [];
    await train(s, { data: text, steps: 1, batch: 2, context: 8, saveDir: null, engineFactory: spy });
    expect(seen.options.perParamLr).toBeUndefined();
    expect(seen.options.biasCorrection).toBeUndefined();
    expect(seen.steps[0]!.scales).toBeNull();
    await expect(train(s, { data: text, steps: 1, saveDir: null, engineFactory: spy, biasCorrection: "no" as never })).rejects.toThrow(
      'biasCorrection must be true or false, got "no"',
    );
  });

  it("names the state a bad stored optimizer step, sampler, schedule kind or metrics line comes from", async () => {
    const s = tiny();
    const opts: TrainOptions = { data: text, steps: 1, batch: 2, context: 8, saveDir: null, engineFactory: fakeEngine };
    await expect(train({ ...s, optimizer: { ...s.optimizer, step: -5 } }, opts)).rejects.toThrow(
      /^the state: optimizer\.step must be an integer ≥ 0, got -5$/,
    );
    await expect(train({ ...s, progress: { ...s.progress, sampler: "zigzag" } }, opts)).rejects.toThrow(
      /^the state: progress\.sampler must be random or sequential, got "zigzag"$/,
    );
    const zigzag = { kind: "zigzag", peakLr: 1e-3, warmupSteps: 0, totalSteps: 10, restarts: [] };
    await expect(train({ ...s, schedule: zigzag }, opts)).rejects.toThrow(/^the state: schedule: unknown LR schedule kind "zigzag"/);
    // Loaded from a directory: its training_state.json. An option at fault is not blamed on the state.
    const loaded = Object.assign({ ...s, schedule: zigzag }, { source: "runs/a" });
    expect(() => resolveSchedule(loaded, { steps: 1 })).toThrow(/^runs\/a\/training_state\.json: schedule: unknown LR schedule kind "zigzag"/);
    expect(resolveSchedule(loaded, { steps: 1, schedule: "constant" }).kind).toBe("constant");
    expect(() => resolveSchedule(s, { steps: 1, schedule: "zigzag" })).toThrow(/^unknown LR schedule kind "zigzag"/);
    const files = new Map([["metrics.jsonl", new TextEncoder().encode('{"step":1,"tokens":1,"flops":1,"loss":1}\nnot json\n')]]);
    const withMetrics = Object.assign({ ...s, files }, { source: join(dir, "m-src") });
    await expect(train(withMetrics, { ...opts, saveDir: join(dir, "m-out") })).rejects.toThrow(`${join(dir, "m-src", "metrics.jsonl")}:2: not JSON`);
  });

  it("creates a schedule on a fresh state and extends a stored one only when the run goes past it", () => {
    const s = tiny();
    expect(resolveSchedule(s, { steps: 10 })).toEqual({ kind: "constant", peakLr: 1e-3, warmupSteps: 0, totalSteps: 10, restarts: [] });
    s.schedule = { kind: "cosine", peakLr: 1e-2, warmupSteps: 5, totalSteps: 100, restarts: [{ step: 50, warmupSteps: 5 }] };
    s.progress.step = 60;
    expect(resolveSchedule(s, { steps: 10 })).toEqual(s.schedule);
    expect(resolveSchedule(s, { steps: 50 }).totalSteps).toBe(110);
    expect(resolveSchedule(s, { steps: 10, lr: 5e-3, totalSteps: 200 })).toMatchObject({ kind: "cosine", peakLr: 5e-3, totalSteps: 200 });
    expect(() => resolveSchedule(s, { steps: 1, schedule: "zigzag" })).toThrow(/unknown LR schedule kind/);
  });
});

describe("evaluateBlocks", () => {
  // Per-block loss = first id of the block; the engine returns the batch mean.
  const engine = (B: number, T: number) => ({
    async evalLoss(ids: Int32Array) {
      const rows = ids.length / T;
      expect(rows).toBeLessThanOrEqual(B);
      let s = 0;
      for (let i = 0; i < rows; i++) s += ids[i * T]!;
      return s / rows;
    },
  });
  const tokens = Int32Array.from({ length: 100 }, (_, i) => i);
  it("averages full batches and a partial last batch by blocks", async () => {
    // 11 blocks of 8: first ids 0, 8, ..., 80 → mean 40.
    expect(await evaluateBlocks(engine(4, 8), tokens, 4, 8, 11)).toBeCloseTo(40, 10);
    expect(await evaluateBlocks(engine(4, 8), tokens, 4, 8, 9)).toBeCloseTo(32, 10);
    expect(await evaluateBlocks(engine(4, 8), tokens, 4, 8, 8)).toBeCloseTo(28, 10);
    expect(await evaluateBlocks(engine(3, 8), tokens, 3, 8, 2)).toBeCloseTo(4, 10);
  });
});

import { cp, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  createDefaultRegistry,
  loadTrainingState,
  namedParameters,
  saveTrainingState,
  STAGED_FORMAT,
  type LazyTensor,
  type LoadedTrainingState,
  type Registry,
  type TrainingState,
} from "@staged/core";
import { growWidth } from "@staged/grow-width";
import { growDepth } from "@staged/grow-depth";
import { PyDict, PyGlobal, PyObject, TorchFile, TorchTensor, tuple, writeTorchFile } from "@staged/torch";
import { GROWTH_KEY, HF_TRAINER_FORMAT, hfTrainerFormat, trainerGroups, trainerRecords, trainerSummary, trainingProblem } from "./index.js";

/** The repository's Trainer checkpoints (fixtures/hf-trainer/README.md). */
const FIX = new URL("../../../fixtures/hf-trainer/", import.meta.url).pathname;
const FACTS = JSON.parse(await readFile(join(FIX, "facts.json"), "utf8")) as Record<
  string,
  { named_parameters: [string, number[]][]; groups: string[][] }
>;
const registry = (): Registry => createDefaultRegistry().register("checkpointFormat", hfTrainerFormat);
const load = (dir: string): Promise<LoadedTrainingState> => loadTrainingState(dir, { registry: registry() });

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-hf-trainer-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});
const at = (name: string): string => join(root, name);

/** Read a torch file's value and close it (its tensors read first where asked). */
async function torchValue(path: string): Promise<PyDict> {
  const f = await TorchFile.open(path);
  await f.close();
  return f.value as PyDict;
}
const trainerState = async (dir: string) =>
  JSON.parse(await readFile(join(dir, "trainer_state.json"), "utf8")) as Record<string, unknown> & { log_history: Record<string, unknown>[] };

describe.each(["gpt2", "llama"])("%s: Trainer's parameter order", (model) => {
  it("the architecture's named_parameters() order and decay flags are torch's and Trainer's two groups", async () => {
    const s = await load(join(FIX, model, "checkpoint-3"));
    try {
      const arch = createDefaultRegistry().get("architecture", s.architecture);
      const specs = arch.params(s.config);
      expect(namedParameters(arch, specs).map((p) => [p.name, p.shape])).toEqual(FACTS[model]!.named_parameters);
      expect(trainerGroups(arch, specs)).toEqual(FACTS[model]!.groups);
    } finally {
      await s.close();
    }
  });
});

describe.each([
  ["gpt2", "checkpoint-3"],
  ["llama", "checkpoint-6"],
])("%s %s read", (model, checkpoint) => {
  const src = join(FIX, model, checkpoint);

  it("holds the optimizer's moments by parameter name, its step, settings and Trainer's schedule", async () => {
    const s = await load(src);
    try {
      const step = Number(checkpoint.split("-")[1]);
      expect(s.foreign?.format).toBe(HF_TRAINER_FORMAT);
      expect(s.progress.step).toBe(step);
      expect(s.optimizer).toMatchObject({ step, lr: 0.003, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0.01, biasCorrection: true });
      expect(s.optimizer.noDecay).toEqual(FACTS[model]!.groups[1]);
      // Trainer's linear schedule with 2 warmup steps over 6, found from the logged LRs.
      expect(s.schedule).toEqual({ kind: "linear", peakLr: 0.003, warmupSteps: 2, totalSteps: 6, restarts: [] });
      // Index i of optimizer.pt is the i-th name of Trainer's groups, decayed first.
      const names = FACTS[model]!.groups.flat();
      const opt = await TorchFile.open(join(src, "optimizer.pt"));
      try {
        const state = (opt.value as PyDict).get("state") as PyDict;
        for (const i of [0, 3, names.length - 1]) {
          const saved = await ((state.get(BigInt(i)) as PyDict).get("exp_avg_sq") as TorchTensor).read();
          expect((await s.optimizer.expAvgSq!.get(names[i]!)!.read()).f32).toEqual(saved.f32);
        }
      } finally {
        await opt.close();
      }
      expect(trainerSummary(s)).toMatchObject({
        globalStep: step,
        maxSteps: 6,
        lr: step === 3 ? 0.0022500000000000003 : 0,
        lastLosses: expect.any(Array),
      });
      expect(trainerSummary(s)!.copiedFiles.sort()).toEqual(["rng_state.pth", "training_args.bin"]);
      expect(trainingProblem(s)).toBeNull();
    } finally {
      await s.close();
    }
  });

  it("written back unchanged is the same checkpoint: optimizer.pt, scheduler.pt, weights and copied files byte for byte", async () => {
    const out = at(`${model}-${checkpoint}-same`);
    const s = await load(src);
    try {
      await saveTrainingState(out, s, { registry: registry() });
    } finally {
      await s.close();
    }
    for (const f of ["optimizer.pt", "scheduler.pt", "model.safetensors", "rng_state.pth", "training_args.bin", "generation_config.json"]) {
      expect(Buffer.compare(await readFile(join(out, f)), await readFile(join(src, f))), f).toBe(0);
    }
    expect(await trainerState(out)).toEqual(await trainerState(src));
  });
});

describe("growing a Trainer checkpoint", () => {
  it("width: Trainer's groups over the grown model, LRs × the operator's scale, the step kept, the growth logged", async () => {
    const s = await load(join(FIX, "gpt2", "checkpoint-3"));
    const out = at("gpt2-wide");
    try {
      await saveTrainingState(out, await growWidth(s, { factor: 2 }), { registry: registry() });
    } finally {
      await s.close();
    }
    const opt = await torchValue(join(out, "optimizer.pt"));
    const groups = opt.get("param_groups") as PyDict[];
    expect(groups.map((g) => (g.get("params") as bigint[]).length)).toEqual([10, 18]);
    expect((groups[1]!.get("params") as bigint[])[0]).toBe(10n);
    expect(groups.map((g) => [g.get("lr"), g.get("initial_lr"), g.get("weight_decay"), g.get("fused")])).toEqual([
      [0.0022500000000000003 * 0.5, 0.0015, 0.01, true],
      [0.0022500000000000003 * 0.5, 0.0015, 0, true],
    ]);
    const sched = await torchValue(join(out, "scheduler.pt"));
    expect([sched.get("base_lrs"), sched.get("last_epoch"), sched.get("_step_count"), sched.get("_last_lr")]).toEqual([
      [0.0015, 0.0015],
      3n,
      4n,
      [0.0022500000000000003 * 0.5, 0.0022500000000000003 * 0.5],
    ]);
    const ts = await trainerState(out);
    expect(ts.global_step).toBe(3);
    expect(ts.log_history).toHaveLength(4);
    expect(ts.log_history[3]).toMatchObject({
      step: 3,
      [GROWTH_KEY]: {
        operator: "width",
        options: { factor: 2, lrScale: 0.5 },
        schedule: { kind: "linear", peakLr: 0.0015, warmupSteps: 2, totalSteps: 6 },
      },
    });
    const g = await load(out);
    try {
      expect(g.shape).toMatchObject({ dModel: 128, heads: 8 });
      expect(g.progress.stages).toMatchObject([{ operator: "width", step: 3, after: { dModel: 128 } }]);
      expect(g.optimizer.expAvg!.get("transformer.h.1.mlp.c_fc.weight")!.shape).toEqual([128, 512]);
      // The logged LRs before the growth count at the scale the growth gave: one schedule, at the grown base LR.
      expect(g.schedule).toEqual({ kind: "linear", peakLr: 0.0015, warmupSteps: 2, totalSteps: 6, restarts: [] });
      expect(trainerSummary(g)!.lr).toBe(0.0022500000000000003 * 0.5);
      expect(await readdir(out)).toEqual(expect.arrayContaining(["rng_state.pth", "training_args.bin"]));
    } finally {
      await g.close();
    }
  });

  it("depth with continueAt: the scheduler and trainer_state at the new step, its LR the one Trainer logged there", async () => {
    const s = await load(join(FIX, "llama", "checkpoint-3"));
    const out = at("llama-deep");
    try {
      await saveTrainingState(out, await growDepth(s, { factor: 2, continueAt: 2 }), { registry: registry() });
    } finally {
      await s.close();
    }
    const sched = await torchValue(join(out, "scheduler.pt"));
    expect([sched.get("base_lrs"), sched.get("last_epoch"), sched.get("_step_count"), sched.get("_last_lr")]).toEqual([
      [0.003, 0.003],
      2n,
      3n,
      [0.003, 0.003],
    ]);
    const opt = await torchValue(join(out, "optimizer.pt"));
    const groups = opt.get("param_groups") as PyDict[];
    expect(groups.map((g) => (g.get("params") as bigint[]).length)).toEqual([30, 9]); // 4 layers × 7 matrices, the embedding, the untied output layer; 4 × 2 norms and the final one
    expect(groups[0]!.get("lr")).toBe(0.003);
    // Adam's step count (its bias correction) is the optimizer's, not the schedule's.
    const f = await TorchFile.open(join(out, "optimizer.pt"));
    const steps = await Promise.all(
      [...((f.value as PyDict).get("state") as PyDict).values()].map(async (e) => (await ((e as PyDict).get("step") as TorchTensor).read()).f32[0]),
    );
    await f.close();
    expect(new Set(steps)).toEqual(new Set([3]));
    expect((await trainerState(out)).global_step).toBe(2);
    const g = await load(out);
    try {
      // Logged LRs up to step 2 are all in the warmup (linear and constant fit them): the schedule recorded with the growth decides.
      expect(g.schedule).toEqual({ kind: "linear", peakLr: 0.003, warmupSteps: 2, totalSteps: 6, restarts: [] });
      expect(g.progress).toMatchObject({ step: 2, stages: [{ operator: "depth", continueAt: 2 }] });
    } finally {
      await g.close();
    }
  });

  it("an LR re-warmup or per-parameter LR factors are refused before anything is written", async () => {
    const s = await load(join(FIX, "gpt2", "checkpoint-3"));
    try {
      for (const [options, problem] of [
        [{ factor: 2, rewarmup: 2 }, "an LR re-warmup (--rewarmup) cannot be written to a Trainer checkpoint"],
        [{ factor: 2, lrScaleParams: "fanIn" as const }, "per-parameter LR factors (--lr-scale-params fanIn, --lr-ramp) cannot be written"],
        [{ factor: 2, lrRamp: 10 }, "per-parameter LR factors"],
      ] as const) {
        await expect(saveTrainingState(at("refused"), await growWidth(s, options), { registry: registry() })).rejects.toThrow(problem);
        expect(await readdir(root)).not.toContain("refused");
      }
      // Written in the project's format they are kept.
      await saveTrainingState(at("rewarmed"), await growWidth(s, { factor: 2, rewarmup: 2 }), { registry: registry(), format: STAGED_FORMAT });
      const r = await load(at("rewarmed"));
      expect([r.foreign, r.schedule?.restarts]).toEqual([undefined, [{ step: 3, warmupSteps: 2 }]]);
      await r.close();
    } finally {
      await s.close();
    }
  });
});

describe("BF16 and sharded Trainer checkpoints", () => {
  it("BF16 weights and moments stay BF16 (BFloat16Storage) through growth; sharded model files load", async () => {
    const s = await load(join(FIX, "gpt2", "checkpoint-3"));
    const bf16 = (m: ReadonlyMap<string, LazyTensor>) =>
      new Map([...m].map(([n, t]) => [n, { dtype: "BF16" as const, shape: t.shape, read: async () => (await t.read()).withDType("BF16") }]));
    try {
      const state: TrainingState = {
        ...s,
        params: bf16(s.params),
        optimizer: { ...s.optimizer, expAvg: bf16(s.optimizer.expAvg!), expAvgSq: bf16(s.optimizer.expAvgSq!) },
      };
      await saveTrainingState(at("bf16"), state, { registry: registry(), maxShardBytes: 100_000 });
    } finally {
      await s.close();
    }
    expect(await readdir(at("bf16"))).toEqual(expect.arrayContaining(["model.safetensors.index.json", "optimizer.pt"]));
    const b = await load(at("bf16"));
    try {
      expect(new Set([...b.params.values(), ...b.optimizer.expAvg!.values()].map((t) => t.dtype))).toEqual(new Set(["BF16"]));
      await saveTrainingState(at("bf16-wide"), await growWidth(b, { factor: 2 }), { registry: registry(), maxShardBytes: 400_000 });
    } finally {
      await b.close();
    }
    const f = await TorchFile.open(join(at("bf16-wide"), "optimizer.pt"));
    try {
      const m = ((f.value as PyDict).get("state") as PyDict).get(0n) as PyDict;
      expect([(m.get("exp_avg") as TorchTensor).torchDtype, (m.get("exp_avg") as TorchTensor).shape]).toEqual(["bfloat16", [256, 128]]);
      expect((m.get("step") as TorchTensor).dtype).toBe("F32");
    } finally {
      await f.close();
    }
    const w = await load(at("bf16-wide"));
    expect([w.shape.dModel, w.params.get("transformer.wte.weight")!.dtype]).toEqual([128, "BF16"]);
    await w.close();
  });
});

describe("converting", () => {
  it("staged → Trainer → staged keeps moments, step, schedule; the Trainer checkpoint records the schedule", async () => {
    const s = await load(join(FIX, "gpt2", "checkpoint-6"));
    const { foreign: _f, ...plain } = s as TrainingState;
    try {
      await saveTrainingState(at("as-staged"), plain, { registry: registry() });
    } finally {
      await s.close();
    }
    const staged = await load(at("as-staged"));
    try {
      expect(staged.foreign).toBeUndefined();
      await saveTrainingState(at("back"), staged, { registry: registry(), format: HF_TRAINER_FORMAT });
    } finally {
      await staged.close();
    }
    const back = await load(at("back"));
    try {
      expect(back.progress.step).toBe(6);
      expect(back.schedule).toEqual({ kind: "linear", peakLr: 0.003, warmupSteps: 2, totalSteps: 6, restarts: [] });
      expect(trainerRecords(back)!.groups[0]!.get("fused")).toBeNull(); // torch's AdamW defaults for a state from elsewhere
      const want = await load(join(FIX, "gpt2", "checkpoint-6"));
      for (const name of ["transformer.wte.weight", "transformer.ln_f.bias"]) {
        expect((await back.optimizer.expAvg!.get(name)!.read()).f32).toEqual((await want.optimizer.expAvg!.get(name)!.read()).f32);
      }
      await want.close();
    } finally {
      await back.close();
    }
    const sched = await torchValue(join(at("back"), "scheduler.pt"));
    expect([sched.get("last_epoch"), sched.get("_last_lr")]).toEqual([6n, [0, 0]]);
  });

  it("a schedule of a kind research code registered gives the LR written, through the save's registry", async () => {
    const s = await load(join(FIX, "gpt2", "checkpoint-6"));
    const { foreign: _f, ...plain } = s as TrainingState;
    const custom: TrainingState = { ...plain, schedule: { kind: "half", peakLr: 0.004, warmupSteps: 0, totalSteps: 10, restarts: [] } };
    try {
      await expect(saveTrainingState(at("custom-unknown"), custom, { registry: registry(), format: HF_TRAINER_FORMAT })).rejects.toThrow(
        /unknown LR schedule kind "half"/,
      );
      expect(await readdir(root)).not.toContain("custom-unknown");
      const withHalf = registry().register("lrSchedule", { name: "half", create: (spec) => () => spec.peakLr / 2 });
      await saveTrainingState(at("custom"), custom, { registry: withHalf, format: HF_TRAINER_FORMAT });
    } finally {
      await s.close();
    }
    const sched = await torchValue(join(at("custom"), "scheduler.pt"));
    expect(sched.get("_last_lr")).toEqual([0.002, 0.002]);
  });
});

describe("bad Trainer checkpoints", () => {
  const copy = async (name: string, from = join(FIX, "gpt2", "checkpoint-3")): Promise<string> => {
    await cp(from, at(name), { recursive: true });
    return at(name);
  };

  it("a pickle calling os.system is refused naming the global, nothing run", async () => {
    const dir = await copy("evil");
    await writeTorchFile(
      join(dir, "optimizer.pt"),
      PyDict.from({ state: new PyDict(), param_groups: [new PyObject(new PyGlobal("os", "system"), tuple("touch pwned"))] }),
    );
    await expect(load(dir)).rejects.toThrow(`${join(dir, "optimizer.pt")}: refused global os.system (torch.load(weights_only=True) refuses it too)`);
    expect(await readdir(dir)).not.toContain("pwned");
  });

  it("another model's optimizer.pt is refused by its groups' sizes", async () => {
    const dir = await copy("mismatch");
    await cp(join(FIX, "llama", "checkpoint-3", "optimizer.pt"), join(dir, "optimizer.pt"));
    await expect(load(dir)).rejects.toThrow(
      `${join(dir, "optimizer.pt")}: parameter groups of 16 and 5 parameters; Trainer's groups of this gpt2 model have 10 and 18`,
    );
  });

  it("a trainer_state.json without global_step, or a growth record that is not one, is refused naming the field", async () => {
    const dir = await copy("no-step");
    const ts = await trainerState(dir);
    delete ts.global_step;
    await writeFile(join(dir, "trainer_state.json"), JSON.stringify(ts));
    await expect(load(dir)).rejects.toThrow(`${join(dir, "trainer_state.json")}: global_step`);
    const dir2 = await copy("bad-growth");
    const ts2 = await trainerState(dir2);
    ts2.log_history.push({ step: 3, [GROWTH_KEY]: { operator: "width" } });
    await writeFile(join(dir2, "trainer_state.json"), JSON.stringify(ts2));
    await expect(load(dir2)).rejects.toThrow(`${join(dir2, "trainer_state.json")}: log_history[3].staged_growth.options`);
  });

  it("a schedule the logged LRs do not determine: growth in place is written, training on or moving the step is refused", async () => {
    const dir = await copy("custom-lr");
    const ts = await trainerState(dir);
    for (const e of ts.log_history) delete e.learning_rate;
    await writeFile(join(dir, "trainer_state.json"), JSON.stringify(ts));
    const s = await load(dir);
    try {
      // One point (the scheduler's last LR, past the warmup) fits a linear and a cosine schedule with other warmups.
      expect(s.schedule).toBeNull();
      expect(trainingProblem(s)).toMatch(/could not be found from trainer_state.json's logged learning rates/);
      await saveTrainingState(at("custom-wide"), await growWidth(s, { factor: 2 }), { registry: registry() });
      await expect(saveTrainingState(at("custom-back"), await growWidth(s, { factor: 2, continueAt: 1 }), { registry: registry() })).rejects.toThrow(
        "optimizer.pt: the LR of Trainer's schedule at step 1 is unknown",
      );
    } finally {
      await s.close();
    }
    const sched = await torchValue(join(at("custom-wide"), "scheduler.pt"));
    expect(sched.get("_last_lr")).toEqual([0.0022500000000000003 * 0.5, 0.0022500000000000003 * 0.5]);
  });

  it("without the format registered, core refuses a Trainer checkpoint instead of dropping its optimizer state", async () => {
    const dir = join(FIX, "gpt2", "checkpoint-3");
    await expect(loadTrainingState(dir)).rejects.toThrow(
      `${dir}: a Hugging Face Trainer checkpoint (optimizer.pt), and no checkpoint format to read it is registered`,
    );
  });
});

import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { lstat, mkdir, mkdtemp, readFile, readdir, readlink, realpath, rename, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gpt2 } from "./gpt2.js";
import { writeCheckpoint } from "./shards.js";
import { inMemory, initTrainingState, parameterCount } from "./state/init.js";
import { loadTrainingState } from "./state/load.js";
import { saveTrainingState, type SaveProgress } from "./state/save.js";
import { Tensor } from "./tensor.js";
import type { TrainingState } from "./types.js";

const tiny = { model_type: "gpt2", n_layer: 2, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8 };
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-state-"));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** Write an HF-style checkpoint as other tools do: names, dtype, extra tensors as given. */
async function foreign(
  path: string,
  opts: { prefix?: boolean; lmHead?: boolean; buffers?: boolean; dtype?: "F32" | "F16" | "BF16"; maxShardBytes?: number; config?: object } = {},
) {
  await mkdir(path, { recursive: true });
  const config = { ...tiny, ...opts.config };
  await writeFile(join(path, "config.json"), JSON.stringify(config));
  const weights = gpt2.init(config, 1);
  const entries = [];
  for (const [name, t] of weights) {
    const stored = opts.prefix === false ? name.replace(/^transformer\./, "") : name;
    entries.push({ name: stored, tensor: t.withDType(opts.dtype ?? "F32") });
  }
  if (opts.lmHead) entries.push({ name: "lm_head.weight", tensor: weights.get("transformer.wte.weight")! });
  if (opts.buffers) {
    for (let i = 0; i < tiny.n_layer; i++) {
      entries.push({
        name: `${opts.prefix === false ? "" : "transformer."}h.${i}.attn.bias`,
        tensor: Tensor.fromArray([1, 1, 8, 8], new Array(64).fill(1)),
      });
      entries.push({ name: `h.${i}.attn.masked_bias`, tensor: Tensor.fromArray([], [-1e4]) });
    }
  }
  await writeCheckpoint(path, "model", entries, { maxShardBytes: opts.maxShardBytes, metadata: { format: "pt" } });
  return weights;
}

async function expectSameWeights(state: TrainingState, weights: Map<string, Tensor>, exact = true) {
  expect([...state.params.keys()].sort()).toEqual([...weights.keys()].sort());
  for (const [name, t] of weights) {
    const got = (await state.params.get(name)!.read()).f32;
    if (exact) expect(got).toEqual(t.f32);
    else got.forEach((v, i) => expect(Math.abs(v - t.f32[i]!)).toBeLessThanOrEqual(Math.abs(t.f32[i]!) * 2 ** -7));
  }
}

// training_state.json as parsed JSON, for tests that corrupt one field.
interface Meta {
  format: unknown;
  optimizer: Record<string, unknown>;
  progress: Record<string, unknown>;
  training?: unknown;
}

describe("loadTrainingState of foreign HF GPT-2 checkpoints", () => {
  for (const variant of [
    { label: "GPT2LMHeadModel names, tied", opts: {} },
    { label: "GPT2Model names without the transformer. prefix", opts: { prefix: false } },
    { label: "lm_head.weight stored although tied", opts: { lmHead: true } },
    { label: "legacy attn.bias / attn.masked_bias buffers", opts: { buffers: true, prefix: false } },
    { label: "sharded with an index", opts: { maxShardBytes: 2000 } },
  ]) {
    it(variant.label, async () => {
      const weights = await foreign(join(dir, "m"), variant.opts);
      const state = await loadTrainingState(join(dir, "m"));
      await expectSameWeights(state, weights);
      expect(state.optimizer.expAvg).toBeUndefined();
      expect(state.progress).toEqual({ step: 0, tokensSeen: 0, flopsSeen: 0, samplerSeed: 0, stages: [] });
      expect(parameterCount(state)).toBe([...weights.values()].reduce((s, t) => s + t.size, 0));
      await state.close();
    });
  }

  it("keeps an untied lm_head", async () => {
    const weights = await foreign(join(dir, "m"), { config: { tie_word_embeddings: false } });
    expect(weights.has("lm_head.weight")).toBe(true);
    const state = await loadTrainingState(join(dir, "m"));
    await expectSameWeights(state, weights);
    await state.close();
  });

  for (const dtype of ["F16", "BF16"] as const) {
    it(`reads ${dtype} weights and writes them back as ${dtype}`, async () => {
      const weights = await foreign(join(dir, "m"), { dtype });
      const state = await loadTrainingState(join(dir, "m"));
      expect(state.params.get("transformer.wte.weight")!.dtype).toBe(dtype);
      await expectSameWeights(state, weights, false);
      await saveTrainingState(join(dir, "out"), state);
      const again = await loadTrainingState(join(dir, "out"));
      expect(again.params.get("transformer.h.0.mlp.c_fc.weight")!.dtype).toBe(dtype);
      for (const name of state.params.keys()) expect((await again.params.get(name)!.read()).f32).toEqual((await state.params.get(name)!.read()).f32);
      expect(JSON.parse(await readFile(join(dir, "out", "config.json"), "utf8")).torch_dtype).toBe(dtype === "F16" ? "float16" : "bfloat16");
      await Promise.all([state.close(), again.close()]);
    });
  }
});

describe("loadTrainingState errors name the file and the problem", () => {
  it("missing directory, config or weights", async () => {
    await expect(loadTrainingState(join(dir, "nope"))).rejects.toThrow(/nope: not a checkpoint directory/);
    await mkdir(join(dir, "m"));
    await expect(loadTrainingState(join(dir, "m"))).rejects.toThrow(/m\/config.json: cannot read/);
    await writeFile(join(dir, "m", "config.json"), "{oops");
    await expect(loadTrainingState(join(dir, "m"))).rejects.toThrow(/config.json: invalid JSON/);
    await writeFile(join(dir, "m", "config.json"), JSON.stringify(tiny));
    await expect(loadTrainingState(join(dir, "m"))).rejects.toThrow(/no model.safetensors/);
    await writeFile(join(dir, "m", "config.json"), JSON.stringify({ ...tiny, model_type: "falcon" }));
    await expect(loadTrainingState(join(dir, "m"))).rejects.toThrow(/unknown architecture model_type "falcon" \(registered: gpt2, llama\)/);
  });

  it("shapes that disagree with the config, missing and unexpected tensors", async () => {
    await foreign(join(dir, "m"));
    await writeFile(join(dir, "m", "config.json"), JSON.stringify({ ...tiny, vocab_size: 17 }));
    await expect(loadTrainingState(join(dir, "m"))).rejects.toThrow(
      /model.safetensors: tensor transformer.wte.weight has shape \[16,8\], the config says \[17,8\]/,
    );
    await writeFile(join(dir, "m", "config.json"), JSON.stringify({ ...tiny, n_layer: 3 }));
    await expect(loadTrainingState(join(dir, "m"))).rejects.toThrow(/missing tensor transformer.h.2.ln_1.weight/);
    await writeFile(join(dir, "m", "config.json"), JSON.stringify({ ...tiny, n_layer: 1 }));
    await expect(loadTrainingState(join(dir, "m"))).rejects.toThrow(/unexpected tensors transformer.h.1/);
  });

  it("moments that do not match the model", async () => {
    const state = initTrainingState("gpt2", tiny, 3);
    const zeros = new Map([...state.params].map(([n, t]) => [n, inMemory(Tensor.zeros("F32", t.shape))]));
    await saveTrainingState(join(dir, "s"), { ...state, optimizer: { ...state.optimizer, expAvg: zeros, expAvgSq: zeros } });
    const entries = [...zeros].slice(1).map(([n, t]) => ({ name: `exp_avg.${n}`, tensor: t }));
    await writeCheckpoint(join(dir, "s"), "optimizer", entries);
    await expect(loadTrainingState(join(dir, "s"))).rejects.toThrow(/optimizer.safetensors: missing moment exp_avg.transformer.wte.weight/);
  });
});

describe("saveTrainingState", () => {
  it("round-trips the whole state, sharded, with HF's layout", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    const m1 = new Map(
      [...state.params].map(([n, t]) => [
        n,
        inMemory(
          Tensor.fromArray(
            t.shape,
            Array.from({ length: t.shape.reduce((a, b) => a * b, 1) }, (_, i) => i * 1e-3),
          ),
        ),
      ]),
    );
    const full: TrainingState = {
      ...state,
      optimizer: { ...state.optimizer, step: 7, clip: null, biasCorrection: false, expAvg: m1, expAvgSq: m1 },
      schedule: {
        kind: "linear",
        peakLr: 1e-3,
        warmupSteps: 2,
        totalSteps: 20,
        restarts: [{ step: 5, warmupSteps: 1 }],
        paramScales: [{ step: 5, scale: 0.5, rampSteps: 10, roles: ["mlp.in.weight"] }],
      },
      progress: { step: 7, tokensSeen: 896, flopsSeen: 1e9, samplerSeed: 5, sampler: "sequential", stages: [] },
      files: new Map([["metrics.jsonl", new TextEncoder().encode('{"step":1,"tokens":8,"flops":100,"loss":2.5}\n')]]),
    };
    await saveTrainingState(join(dir, "runs", "out"), full, { maxShardBytes: 3000 });
    await rename(join(dir, "runs", "out"), join(dir, "out"));
    expect((await stat(join(dir, "out"))).mode & 0o777).toBe(0o777 & ~process.umask());
    const files = (await readdir(join(dir, "out"))).sort();
    expect(files).toContain("model.safetensors.index.json");
    expect(files).toContain("optimizer.safetensors.index.json");
    expect(files.filter((f) => /^model-\d{5}-of-\d{5}\.safetensors$/.test(f)).length).toBeGreaterThan(1);
    const config = JSON.parse(await readFile(join(dir, "out", "config.json"), "utf8"));
    expect(config).toMatchObject({ model_type: "gpt2", architectures: ["GPT2LMHeadModel"], n_layer: 2, torch_dtype: "float32" });
    const back = await loadTrainingState(join(dir, "out"));
    expect(back.optimizer).toMatchObject({ step: 7, lr: 1e-3, betas: [0.9, 0.999], clip: null, biasCorrection: false });
    expect(new TextDecoder().decode(back.files!.get("metrics.jsonl"))).toBe('{"step":1,"tokens":8,"flops":100,"loss":2.5}\n');
    expect(back.schedule).toEqual(full.schedule);
    expect(back.progress).toEqual(full.progress);
    for (const [n, t] of m1) expect((await back.optimizer.expAvgSq!.get(n)!.read()).f32).toEqual((await t.read()).f32);
    await back.close();
  });

  it("refuses a training_state.json whose biasCorrection is not a boolean", async () => {
    await saveTrainingState(join(dir, "bc"), { ...initTrainingState("gpt2", tiny, 5) });
    const file = join(dir, "bc", "training_state.json");
    const meta = JSON.parse(await readFile(file, "utf8"));
    await writeFile(file, JSON.stringify({ ...meta, optimizer: { ...meta.optimizer, biasCorrection: "yes" } }));
    await expect(loadTrainingState(join(dir, "bc"))).rejects.toThrow(/training_state\.json: optimizer\.biasCorrection must be true or false$/);
    await rm(join(dir, "bc"), { recursive: true });
  });

  // What no command-line flag could have produced is refused at load, naming the file and the field, so nothing trains
  // on it or copies it into a grown checkpoint.
  it.each([
    [
      "a step past 2^53",
      (m: Meta) => {
        m.progress.step = 1e300;
      },
      /progress\.step must be an integer ≥ 0/,
    ],
    [
      "a fractional step",
      (m: Meta) => {
        m.optimizer.step = 2.5;
      },
      /optimizer\.step must be an integer ≥ 0/,
    ],
    [
      "betas outside [0, 1)",
      (m: Meta) => {
        m.optimizer.betas = [1.5, 2];
      },
      /optimizer\.betas\[0\] must be a number in \[0, 1\)/,
    ],
    [
      "eps 0",
      (m: Meta) => {
        m.optimizer.eps = 0;
      },
      /optimizer\.eps must be a positive number/,
    ],
    [
      "a loss scale that is not a power of two",
      (m: Meta) => {
        (m.optimizer as Record<string, unknown>).lossScale = { scale: 3, goodSteps: 0 };
      },
      /optimizer\.lossScale\.scale must be a power of two/,
    ],
    [
      "a precision no flag sets",
      (m: Meta) => {
        (m as unknown as Record<string, unknown>).training = { batch: 1, context: 2, evalEvery: 0, evalBlocks: 1, precision: "bf16" };
      },
      /training\.precision/,
    ],
    [
      "a negative LR",
      (m: Meta) => {
        m.optimizer.lr = -1e-3;
      },
      /optimizer\.lr must be a positive number/,
    ],
    [
      "negative FLOPs seen",
      (m: Meta) => {
        m.progress.flopsSeen = -5;
      },
      /progress\.flopsSeen must be a number ≥ 0/,
    ],
    [
      "a growth record without its fields",
      (m: Meta) => {
        m.progress.stages = [{ bogus: 1 }];
      },
      /progress\.stages\[0\]\.step /,
    ],
    [
      "an unknown sampler",
      (m: Meta) => {
        m.progress.sampler = "shuffled";
      },
      /progress\.sampler /,
    ],
    [
      "a batch of 0",
      (m: Meta) => {
        m.training = { batch: 0, context: 8, evalEvery: 0, evalBlocks: 1 };
      },
      /training\.batch must be an integer ≥ 1/,
    ],
    [
      "an unknown format",
      (m: Meta) => {
        m.format = "other";
      },
      /format must be "staged-training-state"/,
    ],
  ])("refuses a training_state.json with %s", async (_what, edit, message) => {
    await saveTrainingState(join(dir, "range"), { ...initTrainingState("gpt2", tiny, 5) });
    const file = join(dir, "range", "training_state.json");
    const meta = JSON.parse(await readFile(file, "utf8")) as Meta;
    edit(meta);
    await writeFile(file, JSON.stringify(meta));
    const error = await loadTrainingState(join(dir, "range")).then(
      () => null,
      (e: unknown) => e as Error,
    );
    expect(error?.message.split("\n")).toHaveLength(1);
    expect(error?.message).toMatch(new RegExp(`^${file.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: `));
    expect(error?.message).toMatch(message);
    await rm(join(dir, "range"), { recursive: true });
  });

  it("is atomic: a failure mid-write leaves no directory and the input untouched", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    await saveTrainingState(join(dir, "in"), state);
    const before = await readFile(join(dir, "in", "model.safetensors"));
    const loaded = await loadTrainingState(join(dir, "in"));
    const broken = new Map(loaded.params);
    broken.set("transformer.ln_f.bias", {
      dtype: "F32",
      shape: [8],
      read: async () => {
        throw new Error("disk on fire");
      },
    });
    await expect(saveTrainingState(join(dir, "out"), { ...loaded, params: broken })).rejects.toThrow("disk on fire");
    await expect(saveTrainingState(join(dir, "in"), { ...loaded, params: broken }, { overwrite: true })).rejects.toThrow("disk on fire");
    await loaded.close();
    expect((await readdir(dir)).sort()).toEqual(["in"]);
    expect(await readFile(join(dir, "in", "model.safetensors"))).toEqual(before);
  });

  it("refuses to overwrite without asking and to write inside its input", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    await saveTrainingState(join(dir, "in"), state);
    await expect(saveTrainingState(join(dir, "in"), state)).rejects.toThrow(/already exists/);
    const loaded = await loadTrainingState(join(dir, "in"));
    await expect(saveTrainingState(join(dir, "in", "sub"), loaded)).rejects.toThrow(/inside the input/);
    await expect(saveTrainingState(dir, loaded, { overwrite: true })).rejects.toThrow(/contains the input/);
    await saveTrainingState(join(dir, "in"), { ...loaded, progress: { ...loaded.progress, step: 3 } }, { overwrite: true });
    const again = await loadTrainingState(join(dir, "in"));
    expect(again.progress.step).toBe(3);
    await Promise.all([loaded.close(), again.close()]);
  });

  it("knows a checkpoint by its real path: a symlink neither hides the input nor gets replaced", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    await saveTrainingState(join(dir, "real"), state);
    await symlink(join(dir, "real"), join(dir, "link"));
    const loaded = await loadTrainingState(join(dir, "link"));
    expect(loaded.source).toBe(await realpath(join(dir, "real")));
    await expect(saveTrainingState(join(dir, "real"), loaded)).rejects.toThrow(/already exists/);
    await saveTrainingState(join(dir, "link"), { ...loaded, progress: { ...loaded.progress, step: 9 } }, { overwrite: true });
    expect((await lstat(join(dir, "link"))).isSymbolicLink()).toBe(true);
    const again = await loadTrainingState(join(dir, "real"));
    expect(again.progress.step).toBe(9);
    await Promise.all([loaded.close(), again.close()]);
  });

  it("keeps the other files of a checkpoint it replaces, and clears saves killed midway", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    await saveTrainingState(join(dir, "ck"), state, { maxShardBytes: 3000 });
    await writeFile(join(dir, "ck", "README.md"), "notes");
    await mkdir(join(dir, ".ck.tmp-dead01"));
    await saveTrainingState(join(dir, "ck"), state, { overwrite: true });
    const files = await readdir(join(dir, "ck"));
    expect(files).toContain("README.md");
    expect(files.filter((f) => f.startsWith("model-"))).toEqual([]);
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("keeps a symlink of a checkpoint it replaces as it was: a relative one relative, even one pointing out of the directory", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    const ck = join(dir, "ck");
    await saveTrainingState(ck, state);
    await mkdir(join(ck, "notes"));
    await writeFile(join(ck, "notes", "a.md"), "a");
    await writeFile(join(dir, "shared.md"), "shared");
    await symlink("notes/a.md", join(ck, "README.md"));
    await symlink("a.md", join(ck, "notes", "latest.md"));
    await symlink("../shared.md", join(ck, "SHARED.md"));
    await symlink("gone.md", join(ck, "dangling.md"));
    await symlink(join(dir, "shared.md"), join(ck, "absolute.md"));
    await saveTrainingState(ck, { ...state, progress: { ...state.progress, step: 2 } }, { overwrite: true });
    expect(await readlink(join(ck, "README.md"))).toBe("notes/a.md");
    expect(await readlink(join(ck, "notes", "latest.md"))).toBe("a.md");
    expect(await readlink(join(ck, "SHARED.md"))).toBe("../shared.md");
    expect(await readlink(join(ck, "dangling.md"))).toBe("gone.md");
    expect(await readlink(join(ck, "absolute.md"))).toBe(join(dir, "shared.md"));
    expect(await readFile(join(ck, "README.md"), "utf8")).toBe("a");
    expect(await readFile(join(ck, "SHARED.md"), "utf8")).toBe("shared");
  });

  it("refuses an output that is a symlink to nothing, saying so, and writes nothing", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    await symlink(join(dir, "elsewhere", "ck"), join(dir, "ck"));
    await expect(saveTrainingState(join(dir, "ck"), state)).rejects.toThrow(
      new RegExp(`^${join(dir, "ck")}: a symlink to ${join(dir, "elsewhere", "ck")}, which does not exist$`),
    );
    await expect(saveTrainingState(join(dir, "ck"), state, { overwrite: true })).rejects.toThrow(/ck: a symlink to .*, which does not exist/);
    // Under a symlink to nothing: that symlink is named.
    await expect(saveTrainingState(join(dir, "ck", "sub"), state)).rejects.toThrow(
      new RegExp(`^${join(dir, "ck")}: a symlink to ${join(dir, "elsewhere", "ck")}, which does not exist$`),
    );
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("restores the previous checkpoint that a save of an earlier version left between its two renames, and says so", async () => {
    await saveTrainingState(join(dir, "ck"), {
      ...initTrainingState("gpt2", tiny, 5),
      progress: { step: 4, tokensSeen: 0, flopsSeen: 0, samplerSeed: 0, stages: [] },
    });
    await rename(join(dir, "ck"), join(dir, ".ck.tmp-abc123.old"));
    const notes: string[] = [];
    const back = await loadTrainingState(join(dir, "ck"), { notice: (l) => notes.push(l) });
    expect(back.progress.step).toBe(4);
    expect(notes).toEqual([expect.stringMatching(/ck: restored the previous checkpoint \(step 4\)/)]);
    await back.close();
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("never saves non-finite weights or moments, and leaves the checkpoint there unchanged", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    await saveTrainingState(join(dir, "ck"), state);
    const before = await readFile(join(dir, "ck", "model.safetensors"));
    const params = new Map(state.params);
    const w = Tensor.zeros("F32", [8]);
    w.f32[3] = NaN;
    params.set("transformer.ln_f.weight", inMemory(w));
    await expect(saveTrainingState(join(dir, "ck"), { ...state, params }, { overwrite: true })).rejects.toThrow(
      /ck: not saved: transformer.ln_f.weight holds NaN at index 3 .*unchanged/,
    );
    const m = Tensor.zeros("F32", [8]);
    m.f32[0] = Infinity;
    const expAvg = new Map(
      [...state.params].map(([n, t]) => [n, n === "transformer.ln_f.bias" ? inMemory(m) : inMemory(Tensor.zeros("F32", t.shape))]),
    );
    await expect(
      saveTrainingState(join(dir, "ck"), { ...state, optimizer: { ...state.optimizer, expAvg, expAvgSq: expAvg } }, { overwrite: true }),
    ).rejects.toThrow(/exp_avg.transformer.ln_f.bias holds Infinity at index 0/);
    // Finite in float32 but infinite once stored as float16.
    const big = new Map(
      [...state.params].map(([n, t]) => [
        n,
        inMemory(n === "transformer.ln_f.bias" ? Tensor.fromArray([8], new Array(8).fill(7e4), "F16") : Tensor.zeros("F16", t.shape)),
      ]),
    );
    await expect(saveTrainingState(join(dir, "ck"), { ...state, params: big }, { overwrite: true })).rejects.toThrow(
      /ln_f.bias holds 70000 at index 0/,
    );
    expect(await readFile(join(dir, "ck", "model.safetensors"))).toEqual(before);
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("checks stored bytes copied as they are on their exponent bits, and BF16 values once rounded", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    await saveTrainingState(join(dir, "ck"), state);
    const before = await readFile(join(dir, "ck", "model.safetensors"));
    const bf16 = (words: number[]) => ({
      ...inMemory(Tensor.zeros("BF16", [8])),
      read: async () => {
        throw new Error("not read");
      },
      readBytes: async () => new Uint8Array(Uint16Array.from(words).buffer),
    });
    for (const [word, shown] of [
      [0x7f80, "Infinity"],
      [0xff80, "-Infinity"],
      [0x7fc1, "NaN"],
    ] as const) {
      const params = new Map([...state.params].map(([n, t]) => [n, t.dtype === "F32" ? inMemory(Tensor.zeros("BF16", t.shape)) : t]));
      params.set("transformer.ln_f.bias", bf16([0x3f80, 0, 0, 0, 0, word, 0, 0x7f7f]));
      await expect(saveTrainingState(join(dir, "ck"), { ...state, params }, { overwrite: true })).rejects.toThrow(
        new RegExp(`ck: not saved: transformer.ln_f.bias holds ${shown} at index 5 .*unchanged`),
      );
    }
    // Finite in float32, but past the largest bfloat16 once rounded (the values check alone let it through).
    const huge = new Map(
      [...state.params].map(([n, t]) => [
        n,
        inMemory(
          n === "transformer.ln_f.bias" ? new Tensor("BF16", [8], Float32Array.from([1, 3.4e38, 0, 0, 0, 0, 0, 0])) : Tensor.zeros("BF16", t.shape),
        ),
      ]),
    );
    await expect(saveTrainingState(join(dir, "ck"), { ...state, params: huge }, { overwrite: true })).rejects.toThrow(
      /ln_f.bias holds Infinity at index 1/,
    );
    expect(await readFile(join(dir, "ck", "model.safetensors"))).toEqual(before);
    // Stored bytes that are finite are saved as they are.
    const fine = new Map([...state.params].map(([n, t]) => [n, inMemory(Tensor.zeros("BF16", t.shape))]));
    fine.set("transformer.ln_f.bias", bf16([0x3f80, 0x8000, 0x0001, 0x7f7f, 0xff7f, 0x8001, 0x4040, 0]));
    await saveTrainingState(join(dir, "ck"), { ...state, params: fine }, { overwrite: true });
    const back = await loadTrainingState(join(dir, "ck"));
    expect(await back.params.get("transformer.ln_f.bias")!.readBytes!()).toEqual(
      new Uint8Array(Uint16Array.of(0x3f80, 0x8000, 0x0001, 0x7f7f, 0xff7f, 0x8001, 0x4040, 0).buffer),
    );
    await back.close();
  });

  it("says to save a derived state before closing the checkpoint it reads from", async () => {
    await saveTrainingState(join(dir, "ck"), initTrainingState("gpt2", tiny, 5));
    const loaded = await loadTrainingState(join(dir, "ck"));
    const { source: _s, close: _c, ...derived } = loaded;
    await loaded.close();
    await expect(saveTrainingState(join(dir, "out"), derived)).rejects.toThrow(
      /model.safetensors: closed before tensor "transformer\.[a-z0-9_.]+" was read: .*save it .* before closing/,
    );
    // Not taken for a system call's error (its code names a kind of problem: files.ts systemCode).
    await expect(saveTrainingState(join(dir, "out"), derived)).rejects.toMatchObject({ code: "Closed" });
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("reads moments whose parameter names carry or lack the HF prefix, like the parameters", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    await saveTrainingState(join(dir, "ck"), state);
    const entries = [];
    for (const prefix of ["exp_avg", "exp_avg_sq"]) {
      for (const [name, t] of state.params)
        entries.push({ name: `${prefix}.${name.replace(/^transformer\./, "")}`, tensor: Tensor.zeros("F32", t.shape) });
    }
    await writeCheckpoint(join(dir, "ck"), "optimizer", entries);
    const loaded = await loadTrainingState(join(dir, "ck"));
    expect([...loaded.optimizer.expAvg!.keys()].sort()).toEqual([...state.params.keys()].sort());
    await loaded.close();
    entries.push({ name: "exp_avg.transformer.h.0.ln_1.weight", tensor: Tensor.zeros("F32", [8]) });
    await writeCheckpoint(join(dir, "ck"), "optimizer", entries);
    await expect(loadTrainingState(join(dir, "ck"))).rejects.toThrow(
      /moments "exp_avg.h.0.ln_1.weight" and "exp_avg.transformer.h.0.ln_1.weight" are the same moment/,
    );
  });

  it("refuses F64 parameters, naming the tensor", async () => {
    await foreign(join(dir, "m"));
    const weights = gpt2.init(tiny, 1);
    const entries = [...weights].map(([name, t]) => ({
      name,
      tensor: name.endsWith("ln_f.bias") ? new Tensor("F64", t.shape, Float64Array.from(t.f32)) : t,
    }));
    await writeCheckpoint(join(dir, "m"), "model", entries);
    await expect(loadTrainingState(join(dir, "m"))).rejects.toThrow(/tensor transformer.ln_f.bias has dtype F64; parameters must be F32, F16, BF16/);
  });

  it("reports progress tensor by tensor", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    const seen: SaveProgress[] = [];
    await saveTrainingState(join(dir, "out"), state, { onTensor: (p) => seen.push(p) });
    expect(seen).toHaveLength(state.params.size);
    expect(seen.map((p) => p.tensors)).toEqual(seen.map((_, i) => i + 1));
    expect(seen.at(-1)).toMatchObject({ totalTensors: state.params.size, bytes: parameterCount(state) * 4, totalBytes: parameterCount(state) * 4 });
  });

  it("reports progress piece by piece as bytes are written, a tensor under two names counted at each place", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    const params = new Map(state.params);
    // One object for two parameters of one shape (a depth copy): produced once, written twice, counted twice.
    params.set("transformer.h.1.ln_1.weight", params.get("transformer.h.0.ln_1.weight")!);
    const seen: SaveProgress[] = [];
    await saveTrainingState(join(dir, "out"), { ...state, params }, { onProgress: (p) => seen.push(p) });
    const total = parameterCount(state) * 4;
    expect(seen).toHaveLength(state.params.size);
    expect(seen.map((p) => p.bytes)).toEqual([...seen.map((p) => p.bytes)].sort((a, b) => a - b));
    expect(seen.at(-1)).toMatchObject({ bytes: total, totalBytes: total, totalTensors: state.params.size, tensors: state.params.size - 1 });
    expect(
      seen
        .filter((p) => /h\.[01]\.ln_1\.weight/.test(p.name))
        .map((p) => p.name)
        .sort(),
    ).toEqual(["transformer.h.0.ln_1.weight", "transformer.h.1.ln_1.weight"]);
  });

  it("checks shapes before writing anything", async () => {
    const state = initTrainingState("gpt2", tiny, 5);
    const params = new Map(state.params);
    params.set("transformer.wpe.weight", inMemory(Tensor.zeros("F32", [9, 8])));
    await expect(saveTrainingState(join(dir, "out"), { ...state, params })).rejects.toThrow(
      /transformer.wpe.weight has shape \[9,8\], the config says \[8,8\]/,
    );
    expect(await readdir(dir)).toEqual([]);
  });
});

describe("firstNonFinite", () => {
  it("finds the first NaN or ±Infinity at any position of a float32 tensor, and F16 overflow", async () => {
    const { firstNonFinite } = await import("./state/save.js");
    for (const n of [1, 3, 4, 5, 8, 13]) {
      for (let at = 0; at < n; at++) {
        for (const bad of [NaN, Infinity, -Infinity]) {
          const t = Tensor.fromArray(
            [n],
            Array.from({ length: n }, (_, i) => (i === at ? bad : i % 2 ? -3.4e38 : 1e-40 * i)),
          );
          expect(firstNonFinite(t)).toEqual({ index: at, value: bad });
        }
      }
      expect(firstNonFinite(Tensor.fromArray([n], new Array(n).fill(3.4e38)))).toBeNull();
    }
    expect(firstNonFinite(Tensor.fromArray([3], [1, 65504, -65519], "F16"))).toBeNull();
    expect(firstNonFinite(Tensor.fromArray([3], [1, 65504, -65520], "F16"))).toEqual({ index: 2, value: -65520 });
    expect(firstNonFinite(new Tensor("F64", [2], Float64Array.from([1, NaN])))).toEqual({ index: 1, value: NaN });
  });
});

describe("files a checkpoint holds, from elsewhere", () => {
  const tiny2 = { model_type: "gpt2", n_layer: 1, n_embd: 8, n_head: 2, n_positions: 8, vocab_size: 16 };
  const fails = (p: Promise<unknown>): Promise<string> =>
    p.then(
      () => "loaded",
      (e: unknown) => (e as Error).message,
    );
  let root: string;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), "staged-foreign-"));
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it("refuses a symlink that leaves the checkpoint, for copied files and for weights, and says which", async () => {
    const ck = join(root, "ck");
    await saveTrainingState(ck, initTrainingState("gpt2", tiny2, 1));
    await writeFile(join(root, "secret.json"), '{"model": {"type": "BPE"}, "secret": 1}');
    await rm(join(ck, "tokenizer.json"));
    await symlink(join(root, "secret.json"), join(ck, "tokenizer.json"));
    expect(await fails(loadTrainingState(ck))).toMatch(/ck\/tokenizer\.json: a symlink to .*secret\.json, outside the checkpoint directory/);
    await rm(join(ck, "tokenizer.json"));
    await rename(join(ck, "model.safetensors"), join(root, "model.safetensors"));
    await symlink("../model.safetensors", join(ck, "model.safetensors"));
    expect(await fails(loadTrainingState(ck))).toMatch(/ck\/model\.safetensors: a symlink to .*outside the checkpoint directory/);
  });

  it("follows a symlink inside the checkpoint, and the hub cache's snapshot → blob links", async () => {
    const ck = join(root, "ck");
    await saveTrainingState(ck, initTrainingState("gpt2", tiny2, 1));
    await mkdir(join(ck, "sub"));
    await rename(join(ck, "model.safetensors"), join(ck, "sub", "w.safetensors"));
    await symlink("sub/w.safetensors", join(ck, "model.safetensors"));
    const a = await loadTrainingState(ck);
    await a.close();
    // models--x/snapshots/<rev>/<file> → ../../blobs/<hash>, as huggingface_hub lays out its cache.
    const repo = join(root, "models--org--tiny"),
      snap = join(repo, "snapshots", "0123abc");
    await mkdir(join(repo, "blobs"), { recursive: true });
    await mkdir(snap, { recursive: true });
    for (const f of ["config.json", "model.safetensors"]) {
      await rename(join(ck, f === "model.safetensors" ? "sub/w.safetensors" : f), join(repo, "blobs", `blob-${f}`));
      await symlink(`../../blobs/blob-${f}`, join(snap, f));
    }
    const b = await loadTrainingState(snap);
    expect(b.shape.dModel).toBe(8);
    await b.close();
  });

  it.each([
    ["tokenizer.json", "[1, 2]", /tokenizer\.json: expected a JSON object/],
    ["tokenizer.json", '{"version": "1.0"}', /tokenizer\.json: not a tokenizer\.json \(no "model" object\)/],
    ["tokenizer_config.json", "{not json", /tokenizer_config\.json: invalid JSON/],
    ["metrics.jsonl", '{"step": 1, "tokens": 8, "flops": 1}\ngarbage\n', /metrics\.jsonl:2: not JSON/],
    ["metrics.jsonl", '{"step": -1, "tokens": 8, "flops": 1}\n', /metrics\.jsonl:1: step must be an integer ≥ 0/],
    ["merges.txt", new Uint8Array([0xff, 0xfe, 0x00]), /merges\.txt: not UTF-8 text/],
  ])("refuses a corrupt %s that a grown or exported checkpoint would inherit", async (name, content, message) => {
    const ck = join(root, "ck");
    await saveTrainingState(ck, initTrainingState("gpt2", tiny2, 1));
    await writeFile(join(ck, name), content);
    const m = await fails(loadTrainingState(ck));
    expect(m).toMatch(message);
    expect(m.split("\n")).toHaveLength(1);
  });
});

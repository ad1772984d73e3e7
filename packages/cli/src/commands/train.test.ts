import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { encodeTokenFile, tinyBpeTokenizerJson } from "@staged/trainer-ort";

// End-to-end through the built command (the test target builds first: nx `test` depends on `build`).
const BIN = fileURLToPath(new URL("../../dist/bin.js", import.meta.url));

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}
function staged(...args: string[]): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
function ok(...args: string[]): Run {
  const r = staged(...args);
  if (r.status !== 0) throw new Error(`staged ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r;
}
const json = (...args: string[]) => JSON.parse(ok("--json", ...args).stdout) as Record<string, unknown>;

/** Hash of every file of a directory and the names in its parent, to show that nothing was written. */
async function fingerprint(dir: string): Promise<string> {
  const h = createHash("sha256");
  for (const name of (await readdir(dir)).sort()) h.update(name).update(await readFile(join(dir, name)));
  h.update((await readdir(join(dir, ".."))).sort().join("|"));
  return h.digest("hex");
}

let root: string;
let model: string;
let text: string;
const SHAPE = ["--layers", "2", "--d-model", "32", "--heads", "2", "--context", "16"];
const TRAIN = ["--batch", "4", "--context", "16", "--threads", "1"];

beforeAll(async () => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build the cli package first`);
  root = await mkdtemp(join(tmpdir(), "staged-cli-train-"));
  text = join(root, "data.txt");
  await writeFile(text, "the quick brown fox jumps over the lazy dog. ".repeat(40));
  // Alone in its parent, so the fingerprint also sees any stray temporary sibling.
  model = join(root, "ckpt", "m");
  ok("init", model, ...SHAPE, "--seed", "5");
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("staged init → train → eval → inspect", () => {
  it("runs, resumes and reports", async () => {
    const a = json("train", model, "--data", text, "--steps", "4", ...TRAIN, "--lr", "3e-3", "--eval-every", "2", "--save-every", "2");
    expect(a.step).toBe(4);
    expect((a.losses as number[]).length).toBe(4);
    expect(a.loss).toBe((a.losses as number[])[3]);
    expect(typeof a.valLoss).toBe("number");
    expect(a.tokens).toBe(4 * 4 * 16);
    expect(a.tokensPerSecond as number).toBeGreaterThan(0);
    expect(a.flops as number).toBeGreaterThan(0);
    expect(a.seconds as number).toBeGreaterThan(0);

    const b = json("train", model, "--data", text, "--steps", "3", ...TRAIN);
    expect(b.step).toBe(7);
    expect(b.tokens).toBe(7 * 64);
    const lines = (await readFile(join(model, "metrics.jsonl"), "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    expect(lines.map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    expect(lines.slice(4).map((l) => l.loss)).toEqual(b.losses);
    expect(lines[6].valLoss).toBe(b.valLoss);

    const e = json("eval", model, "--data", text, "--context", "16", "--max-blocks", "5", "--batch", "2");
    expect(e).toMatchObject({ tokens: 80, blocks: 5 });
    expect(e.loss as number).toBeGreaterThan(0);
    expect(e.loss as number).toBeLessThan(Math.log(256) + 1);

    const i = json("inspect", model);
    expect(i).toMatchObject({ step: 7, tokensSeen: 7 * 64, optimizerStep: 7, hasOptimizerState: true });

    // Human output: progress lines on stderr, a summary on stdout.
    const h = ok("train", model, "--data", text, "--steps", "2", ...TRAIN);
    expect(h.stderr).toMatch(/step 9 \(2\/2\)\s+loss \d/);
    expect(h.stdout).toMatch(/^step 9: loss/);
  });

  it("--progress jsonl: one JSON object per line on stderr, the counts with the step's fields; none: silent; other modes refused", async () => {
    const m = join(root, "progress", "m");
    ok("init", m, ...SHAPE);
    const j = ok("--json", "train", m, "--data", text, "--steps", "2", ...TRAIN, "--progress", "jsonl");
    const objects = j.stderr
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(objects.map((o) => o.done)).toEqual([1, 2]);
    expect(objects[1]).toMatchObject({
      progress: "training",
      done: 2,
      total: 2,
      unit: "steps",
      step: 2,
      loss: expect.any(Number),
      lr: expect.any(Number),
      tokensPerSecond: expect.any(Number),
      etaSeconds: 0,
    });
    expect(ok("train", m, "--data", text, "--steps", "2", ...TRAIN, "--progress", "none").stderr).not.toMatch(/tok\/s|"done"/);
    const bad = staged("train", m, "--data", text, "--steps", "2", ...TRAIN, "--progress", "loud");
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/--progress.*loud/);
    // --schedule's choices are the registry's LR schedule kinds.
    const kind = staged("train", m, "--data", text, "--steps", "2", ...TRAIN, "--schedule", "zigzag");
    expect(kind.status).toBe(1);
    expect(kind.stderr).toMatch(/--schedule.*zigzag.*constant, linear, cosine, wsd, restart-linear/);
  });

  it("trains with an HF tokenizer.json, stores it and evaluates with it", async () => {
    const tok = join(root, "tok", "tokenizer.json");
    await mkdir(join(root, "tok"), { recursive: true });
    await writeFile(tok, tinyBpeTokenizerJson());
    const m = join(root, "hf");
    ok("init", m, ...SHAPE, "--vocab", "260");
    const t = json("train", m, "--data", text, "--tokenizer", tok, "--steps", "2", ...TRAIN);
    expect(t.step).toBe(2);
    expect(await readFile(join(m, "tokenizer.json"), "utf8")).toBe(tinyBpeTokenizerJson());
    expect(json("inspect", m).tokenizer).toBe("hf");
    expect(json("train", m, "--data", text, "--steps", "1", ...TRAIN).step).toBe(3);
    const e = json("eval", m, "--data", text, "--max-blocks", "2");
    expect(e.blocks).toBe(2);
  });

  it("keeps the small model's metrics when the grown one continues at an earlier step", async () => {
    const small = join(root, "stage-small"),
      wide = join(root, "stage-wide");
    ok("init", small, ...SHAPE, "--seed", "4");
    ok("train", small, "--data", text, ...TRAIN, "--steps", "4");
    ok("grow", "width", small, wide, "--continue-at", "2", "--rewarmup", "1");
    ok("train", wide, "--data", text, ...TRAIN, "--steps", "2");
    const lines = (await readFile(join(wide, "metrics.jsonl"), "utf8"))
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as { step: number; stage: number });
    expect(lines.map((l) => [l.stage, l.step])).toEqual([
      [0, 1],
      [0, 2],
      [0, 3],
      [0, 4],
      [1, 3],
      [1, 4],
    ]);
  });

  it("--clip none trains without clipping and stores that in the checkpoint", async () => {
    const dir = join(root, "noclip");
    ok("init", dir, ...SHAPE, "--seed", "3");
    json("train", dir, "--data", text, ...TRAIN, "--steps", "1", "--clip", "none");
    expect(JSON.parse(await readFile(join(dir, "training_state.json"), "utf8")).optimizer.clip).toBeNull();
  });

  it("--precision mixed is stored and kept, with the loss scale; another value is refused", async () => {
    const dir = join(root, "mixed");
    ok("init", dir, ...SHAPE, "--seed", "3");
    const stored = async () => JSON.parse(await readFile(join(dir, "training_state.json"), "utf8"));
    json("train", dir, "--data", text, ...TRAIN, "--steps", "1", "--precision", "mixed");
    json("train", dir, "--data", text, ...TRAIN, "--steps", "1");
    const meta = await stored();
    expect(meta.training.precision).toBe("mixed");
    expect(meta.optimizer.lossScale.goodSteps).toBe(2);
    const r = staged("train", dir, "--data", text, ...TRAIN, "--steps", "1", "--precision", "bf16");
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/--precision.*bf16.*fp32, mixed/);
  }, 60_000);

  it("--no-bias-correction is stored and kept; --bias-correction turns it back on", async () => {
    const dir = join(root, "nobc");
    ok("init", dir, ...SHAPE, "--seed", "3");
    const stored = async () => JSON.parse(await readFile(join(dir, "training_state.json"), "utf8")).optimizer.biasCorrection;
    json("train", dir, "--data", text, ...TRAIN, "--steps", "1", "--no-bias-correction");
    expect(await stored()).toBe(false);
    json("train", dir, "--data", text, ...TRAIN, "--steps", "1");
    expect(await stored()).toBe(false);
    json("train", dir, "--data", text, ...TRAIN, "--steps", "1", "--bias-correction");
    expect(await stored()).not.toBe(false);
    // The same start with and without: the first loss is the same (taken before any update), the second is not.
    const withBc = join(root, "bc"),
      withoutBc = join(root, "nobc2");
    ok("init", withBc, ...SHAPE, "--seed", "3");
    ok("init", withoutBc, ...SHAPE, "--seed", "3");
    const common = ["--data", text, ...TRAIN, "--steps", "2", "--betas", "0.9,0.98", "--eps", "1e-6"];
    const l1 = json("train", withBc, ...common).losses as number[];
    const l0 = json("train", withoutBc, ...common, "--no-bias-correction").losses as number[];
    expect(l0[0]).toBe(l1[0]);
    expect(l0[1]).not.toBe(l1[1]);
  }, 60_000);

  it("continues a checkpoint exactly: N steps equal N/2 + N/2", () => {
    const one = join(root, "one"),
      two = join(root, "two");
    for (const d of [one, two]) ok("init", d, ...SHAPE, "--seed", "9");
    const args = [
      "--data",
      text,
      ...TRAIN,
      "--schedule",
      "linear",
      "--warmup",
      "2",
      "--total-steps",
      "6",
      "--sampler",
      "sequential",
      "--clip",
      "0.5",
    ];
    const full = json("train", one, ...args, "--steps", "6");
    const h1 = json("train", two, ...args, "--steps", "3");
    // The resumed half is given only data and steps: the schedule, clip and sampler come from the checkpoint.
    const h2 = json("train", two, "--data", text, ...TRAIN, "--steps", "3");
    expect([...(h1.losses as number[]), ...(h2.losses as number[])]).toEqual(full.losses);
    return Promise.all([readFile(join(one, "model.safetensors")), readFile(join(two, "model.safetensors"))]).then(([x, y]) =>
      expect(Buffer.compare(x, y)).toBe(0),
    );
  });
});

describe("token files", () => {
  it("trains a model of a vocabulary past 65,536 on uint32 ids (.u32.bin)", async () => {
    const wide = join(root, "wide");
    ok("init", wide, "--layers", "1", "--d-model", "16", "--heads", "2", "--context", "16", "--vocab", "70000");
    const ids = join(root, "wide.u32.bin");
    await writeFile(
      ids,
      encodeTokenFile(
        Array.from({ length: 2000 }, (_, i) => (i * 7919) % 70_000),
        "uint32",
      ),
    );
    const r = json("train", wide, "--data", ids, "--steps", "1", ...TRAIN);
    expect(r.step).toBe(1);
    expect(typeof r.loss).toBe("number");
  }, 60_000);
});

describe("bad input: one line, exit status 1, the checkpoint untouched", () => {
  const cases: [string, () => Promise<string[]>, RegExp][] = [
    [
      "empty data",
      async () => {
        const f = join(root, "empty.txt");
        await writeFile(f, "");
        return ["--data", f];
      },
      /empty data/,
    ],
    [
      "data shorter than one block",
      async () => {
        const f = join(root, "short.txt");
        await writeFile(f, "tiny");
        return ["--data", f];
      },
      /4 tokens of data, shorter than one block of 16 tokens/,
    ],
    ["a context above n_positions", async () => ["--data", text, "--context", "32"], /context 32 is above the model's n_positions 16/],
    [
      "a token id outside the vocabulary",
      async () => {
        const f = join(root, "ids.bin");
        await writeFile(f, encodeTokenFile([...Array(40).fill(7), 300]));
        return ["--data", f];
      },
      /ids\.bin: token id 300 at byte offset 80 is outside the model's vocabulary \(vocab_size 256\)/,
    ],
    [
      "a .bin file of odd length",
      async () => {
        const f = join(root, "odd.bin");
        await writeFile(f, new Uint8Array(41));
        return ["--data", f];
      },
      /odd\.bin: 41 bytes, an odd length/,
    ],
    [
      "a uint32 token id outside the vocabulary",
      async () => {
        const f = join(root, "ids.u32.bin");
        await writeFile(f, encodeTokenFile([...Array(40).fill(7), 70_000], "uint32"));
        return ["--data", f];
      },
      /ids\.u32\.bin: token id 70000 at byte offset 160 is outside the model's vocabulary \(vocab_size 256\)$/,
    ],
    [
      "a .u32.bin file whose length is not whole uint32 ids",
      async () => {
        const f = join(root, "six.u32.bin");
        await writeFile(f, new Uint8Array(66));
        return ["--data", f];
      },
      /six\.u32\.bin: 66 bytes, not a multiple of 4: not a file of uint32 token ids \(\.u32\.bin\)$/,
    ],
    [
      "a binary file as the tokenizer",
      async () => {
        const f = join(root, "ls");
        await writeFile(f, Uint8Array.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0xff, 0xfe, 0x1b, 0x5b]));
        return ["--data", text, "--tokenizer", f];
      },
      /ls: not a tokenizer\.json \(not UTF-8 text\)$/,
    ],
    [
      "a tokenizer.json past the size limit (sparse: refused from its size, not read)",
      async () => {
        const f = join(root, "huge.json");
        await writeFile(f, "");
        await truncate(f, 300 * 2 ** 20);
        return ["--data", text, "--tokenizer", f];
      },
      /huge\.json: 314572800 bytes is too large for a tokenizer\.json \(limit 268435456 bytes\)$/,
    ],
    ["a missing data file", async () => ["--data", join(root, "nothing.txt")], /nothing\.txt: cannot read the data \(no such file\)/],
    [
      "a tokenizer larger than the model's vocabulary",
      async () => {
        const f = join(root, "tokenizer.json");
        await writeFile(f, tinyBpeTokenizerJson());
        return ["--data", text, "--tokenizer", f];
      },
      /the tokenizer's vocabulary has 259 ids, more than the model's vocab_size 256/,
    ],
    [
      "micro-batch not dividing the batch",
      async () => ["--data", text, "--micro-batch", "3"],
      /micro-batch must be a positive integer that divides the batch 4/,
    ],
    [
      "a schedule that ends before the run",
      async () => ["--data", text, "--total-steps", "5"],
      /total steps 5 ends the schedule before this run does \(step \d+: \d+ done \+ 2\); give at least \d+/,
    ],
    [
      "a warmup longer than the schedule",
      async () => ["--data", text, "--schedule", "wsd", "--warmup", "500", "--total-steps", "400"],
      /warmup 500 is longer than the schedule \(400 steps\)/,
    ],
  ];
  for (const [what, args, message] of cases) {
    it(what, async () => {
      const before = await fingerprint(model);
      const r = staged("train", model, "--steps", "2", ...TRAIN, ...(await args()));
      expect(r.status).toBe(1);
      expect(r.stdout).toBe("");
      const lines = r.stderr.trim().split("\n");
      expect(lines).toHaveLength(1);
      expect(lines[0]).toMatch(/^staged: /);
      expect(lines[0]).toMatch(message);
      expect(await fingerprint(model)).toBe(before);
    });
  }

  it("a stored schedule of an unknown kind: named by the checkpoint's training_state.json", async () => {
    const c = join(root, "bad-schedule");
    await cp(model, c, { recursive: true });
    const file = join(c, "training_state.json");
    const st = JSON.parse(await readFile(file, "utf8")) as { schedule: Record<string, unknown> | null };
    st.schedule = { kind: "zigzag", peakLr: 1e-3, warmupSteps: 0, totalSteps: 10, restarts: [] };
    await writeFile(file, JSON.stringify(st));
    const before = await fingerprint(c);
    const r = staged("train", c, "--data", text, "--steps", "1", ...TRAIN);
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toEqual([expect.stringMatching(/^staged: .*bad-schedule\/training_state\.json: schedule.*"zigzag"/)]);
    expect(await fingerprint(c)).toBe(before);
  });

  it("--device cuda without the CUDA provider", async () => {
    const before = await fingerprint(model);
    const r = staged("train", model, "--data", text, "--steps", "1", ...TRAIN, "--device", "cuda");
    if (r.status === 0) return; // a machine with CUDA: nothing to check here
    expect(r.status).toBe(1);
    expect(r.stdout).toBe("");
    // onnxruntime may log its own native error first; ours is the last line.
    expect(r.stderr.trim().split("\n").at(-1)).toMatch(/^staged: CUDA execution provider is not available/);
    expect(await fingerprint(model)).toBe(before);
  });

  it("a missing or malformed checkpoint", async () => {
    const r = staged("train", join(root, "absent"), "--data", text, "--steps", "1");
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toEqual([expect.stringMatching(/absent: not a checkpoint directory/)]);
    expect(existsSync(join(root, "absent"))).toBe(false);
    const bad = join(root, "bad");
    ok("init", bad, ...SHAPE);
    await writeFile(join(bad, "config.json"), "{ not json");
    const before = await fingerprint(bad);
    const m = staged("train", bad, "--data", text, "--steps", "1", ...TRAIN);
    expect(m.status).toBe(1);
    expect(m.stderr.trim().split("\n")).toEqual([expect.stringMatching(/config\.json: invalid JSON/)]);
    expect(await fingerprint(bad)).toBe(before);
    const e = staged("eval", bad, "--data", text);
    expect(e.status).toBe(1);
    expect(e.stderr).toMatch(/config\.json: invalid JSON/);
  });

  it("eval: data shorter than one block, a context above n_positions", () => {
    const r = staged("eval", model, "--data", text, "--context", "17");
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toBe("staged: context 17 is above the model's n_positions 16");
    const short = staged("eval", model, "--data", join(root, "short.txt"));
    expect(short.status).toBe(1);
    expect(short.stderr).toMatch(/shorter than one block of 16 tokens/);
  });

  it("init: an existing directory and heads that do not divide d-model", async () => {
    const before = await fingerprint(model);
    const r = staged("init", model, ...SHAPE);
    expect(r.status).toBe(1);
    expect(r.stderr.trim()).toMatch(/already exists/);
    expect(await fingerprint(model)).toBe(before);
    const h = staged("init", join(root, "h3"), "--layers", "1", "--d-model", "32", "--heads", "3");
    expect(h.status).toBe(1);
    expect(h.stderr.trim()).toBe("staged: --d-model 32 is not divisible by --heads 3");
    expect(existsSync(join(root, "h3"))).toBe(false);
  });
});

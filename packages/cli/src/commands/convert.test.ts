import { cp, mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeTorchFile, PyDict, PyGlobal, PyObject, tuple } from "@staged/torch";
import { fingerprint, json, ok, staged, testCheckpoint } from "../testing.js";

/** The repository's Trainer checkpoints (fixtures/hf-trainer/README.md). */
const FIX = new URL("../../../../fixtures/hf-trainer/", import.meta.url).pathname;
const GPT2 = join(FIX, "gpt2", "checkpoint-3");

let root: string;
const at = (name: string) => join(root, name);
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-convert-cli-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("Hugging Face Trainer checkpoints in the CLI", () => {
  it("inspect shows the Trainer's step, next LR, schedule and last losses", () => {
    const r = json("inspect", GPT2);
    expect(r).toMatchObject({
      format: "hf-trainer",
      hasOptimizerState: true,
      step: 3,
      trainer: {
        globalStep: 3,
        maxSteps: 6,
        lr: 0.0022500000000000003,
        lastLosses: [{ step: 1 }, { step: 2 }, { step: 3, loss: 5.1889142990112305 }],
      },
    });
    expect(ok("inspect", GPT2).stdout).toContain("Hugging Face Trainer checkpoint: global step 3 of 6, next LR 0.0022500000000000003");
  }, 120_000);

  it("grow width writes a Trainer checkpoint whose model computes the same loss", () => {
    const r = json("grow", "width", GPT2, at("wide"), "--eval-data", join(FIX, "README.md"), "--progress", "none");
    expect(r).toMatchObject({ lossChange: 0, after: { dModel: 128 } });
    expect(json("inspect", at("wide"))).toMatchObject({
      format: "hf-trainer",
      trainer: { lr: 0.0022500000000000003 * 0.5 },
      stages: [{ operator: "width" }],
    });
  }, 120_000);

  it("convert --to staged and back; the same format, a missing --to, an unknown one are refused", async () => {
    expect(json("convert", GPT2, at("staged"), "--to", "staged", "--progress", "none")).toMatchObject({
      from: "hf-trainer",
      to: "staged",
      step: 3,
      hasOptimizerState: true,
    });
    expect(await readdir(at("staged"))).toContain("training_state.json");
    expect(json("convert", at("staged"), at("trainer"), "--to", "hf-trainer", "--progress", "none")).toMatchObject({
      from: "staged",
      to: "hf-trainer",
    });
    expect(json("inspect", at("trainer"))).toMatchObject({ format: "hf-trainer", schedule: { kind: "linear", warmupSteps: 2, totalSteps: 6 } });
    for (const [args, message] of [
      [[GPT2, at("x"), "--to", "hf-trainer"], `${GPT2}: already a Hugging Face Trainer checkpoint (nothing to convert)`],
      [[GPT2, at("x")], "required option '--to <format>' not specified"],
      [[GPT2, at("x"), "--to", "gguf"], "argument 'gguf' is invalid. Allowed choices are staged, hf-trainer."],
      [[at("nothing"), at("x"), "--to", "staged"], "not a checkpoint directory"],
      [[GPT2, at("staged"), "--to", "staged"], "already exists (refusing to overwrite)"],
      [[GPT2, join(GPT2, "inner"), "--to", "staged"], "the output is inside the input checkpoint"],
    ] as const) {
      const r = staged("convert", ...args);
      expect(r.status, r.stderr).not.toBe(0);
      expect(r.stderr).toContain(message);
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
    }
    expect(await readdir(root)).not.toContain("x");
  }, 120_000);

  it("train continues a Trainer checkpoint on Trainer's schedule and refuses schedule options", async () => {
    const dir = at("resumed");
    await cp(GPT2, dir, { recursive: true });
    const before = await fingerprint(dir);
    const refused = staged("train", dir, "--data", join(FIX, "README.md"), "--steps", "1", "--lr", "0.01");
    expect(refused.status).toBe(1);
    expect(refused.stderr).toContain("a Hugging Face Trainer checkpoint trains on with Trainer's schedule");
    expect(await fingerprint(dir)).toBe(before);
    ok("train", dir, "--data", join(FIX, "README.md"), "--steps", "2", "--batch", "2", "--context", "32", "--threads", "1");
    const r = json("inspect", dir);
    // Trainer's linear schedule: the updates of steps 4 and 5 use 2.25e-3 and 1.5e-3; the next one 7.5e-4.
    expect(r).toMatchObject({ step: 5, trainer: { globalStep: 5, lr: 0.00075, lastLosses: [{ step: 3 }, { step: 4 }, { step: 5 }] } });
  }, 120_000);

  it("a pickle that calls os.system: refused naming the global, nothing written", async () => {
    const dir = at("evil");
    await cp(GPT2, dir, { recursive: true });
    await writeTorchFile(
      join(dir, "optimizer.pt"),
      PyDict.from({ state: new PyDict(), param_groups: [new PyObject(new PyGlobal("os", "system"), tuple("touch pwned"))] }),
    );
    for (const args of [
      ["grow", "width", dir, at("evil-out")],
      ["convert", dir, at("evil-out"), "--to", "staged"],
      ["inspect", dir],
    ]) {
      const r = staged(...args);
      expect(r.status).toBe(1);
      expect(r.stderr.trim()).toBe(`staged: ${join(dir, "optimizer.pt")}: refused global os.system (torch.load(weights_only=True) refuses it too)`);
    }
    expect(await readdir(root)).not.toContain("evil-out");
    expect(await readdir(dir)).not.toContain("pwned");
  }, 120_000);

  it("a staged checkpoint converts to a Trainer checkpoint that converts back to the same state", async () => {
    await testCheckpoint(at("tiny"));
    ok("convert", at("tiny"), at("tiny-trainer"), "--to", "hf-trainer", "--progress", "none");
    ok("convert", at("tiny-trainer"), at("tiny-back"), "--to", "staged", "--progress", "none");
    const a = json("inspect", at("tiny")),
      b = json("inspect", at("tiny-back"));
    for (const key of ["step", "optimizerStep", "schedule", "parameters", "hasOptimizerState"]) expect(b[key], key).toEqual(a[key]);
  }, 120_000);
});

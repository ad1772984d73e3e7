import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, join } from "node:path";

// Disk-full and similar failures cannot be made on demand in a test, so the file system fails on cue here.
const fail = vi.hoisted(() => ({ code: null as string | null, on: "", once: false }));
vi.mock("node:fs/promises", async (importOriginal) => {
  const fs = await importOriginal<typeof import("node:fs/promises")>();
  const failing = <A extends unknown[], R>(fn: (...a: A) => Promise<R>, pathOf: (...a: A) => string) => async (...a: A): Promise<R> => {
    if (fail.code && basename(pathOf(...a)) === fail.on) {
      const code = fail.code;
      if (fail.once) fail.code = null;
      throw Object.assign(new Error(`${code}: simulated`), { code });
    }
    return fn(...a);
  };
  return {
    ...fs,
    writeFile: failing(fs.writeFile, (p) => String(p)),
    rename: failing(fs.rename, (_from, to) => String(to)),
  };
});

const { initTrainingState, loadTrainingState, saveTrainingState } = await import("./state.js");
const { writeFileAtomic } = await import("./files.js");

const tiny = { model_type: "gpt2", n_layer: 1, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8 };
const atStep = (step: number) => ({ ...initTrainingState("gpt2", tiny, step), progress: { step, tokensSeen: 0, flopsSeen: 0, samplerSeed: 0, stages: [] } });
let dir: string;
beforeEach(async () => { dir = await mkdtemp(join(tmpdir(), "staged-fserr-")); });
afterEach(async () => {
  Object.assign(fail, { code: null, once: false });
  await rm(dir, { recursive: true, force: true });
});

describe("file system errors name the path, and nothing is lost", () => {
  it.each([
    ["ENOSPC", "no space left on device"], ["EDQUOT", "disk quota exceeded"], ["EACCES", "permission denied"], ["EROFS", "read-only file system"],
  ])("%s while writing a checkpoint", async (code, words) => {
    const ck = join(dir, "ck");
    await saveTrainingState(ck, initTrainingState("gpt2", tiny, 1));
    const before = await readFile(join(ck, "model.safetensors"));
    Object.assign(fail, { code, on: "training_state.json" });
    await expect(saveTrainingState(ck, initTrainingState("gpt2", tiny, 2), { overwrite: true }))
      .rejects.toThrow(new RegExp(`^${ck}: cannot save \\(${words} \\(${code}\\)\\); the checkpoint there is unchanged$`));
    fail.code = null;
    expect(await readFile(join(ck, "model.safetensors"))).toEqual(before);
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("ENOENT and EEXIST while putting a checkpoint in place: the old one is put back", async () => {
    const ck = join(dir, "ck");
    await saveTrainingState(ck, initTrainingState("gpt2", tiny, 1));
    const before = await readFile(join(ck, "model.safetensors"));
    for (const [code, words] of [["ENOENT", "no such file"], ["EEXIST", "already exists"]] as const) {
      Object.assign(fail, { code, on: "ck", once: true });
      await expect(saveTrainingState(ck, initTrainingState("gpt2", tiny, 2), { overwrite: true }))
        .rejects.toThrow(new RegExp(`^${ck}: cannot save \\(${words} \\(${code}\\)\\); the checkpoint there is unchanged$`));
      expect(await readFile(join(ck, "model.safetensors"))).toEqual(before);
      expect(await readdir(dir)).toEqual(["ck"]);
    }
  });

  it("when neither copy can be put in place, both stay and the next command puts the newer there", async () => {
    const ck = join(dir, "ck");
    await saveTrainingState(ck, atStep(1));
    Object.assign(fail, { code: "EIO", on: "ck" });
    await expect(saveTrainingState(ck, atStep(2), { overwrite: true }))
      .rejects.toThrow(new RegExp(`^${ck}: cannot save \\(input/output error \\(EIO\\)\\); the previous checkpoint is at .*\\.ck\\.old-.* and the new one at .*\\.ck\\.new-.*: the next staged command on .*ck puts the newer in place$`));
    fail.code = null;
    expect((await readdir(dir)).length).toBe(2);
    const notes: string[] = [];
    const back = await loadTrainingState(ck, { notice: (l) => notes.push(l) });
    expect(back.progress.step).toBe(2);
    await back.close();
    expect(notes[0]).toMatch(/completed an interrupted save \(a failed save of this process\)/);
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("writeFileAtomic names the file and leaves no temporary behind", async () => {
    const f = join(dir, "result.json");
    Object.assign(fail, { code: "ENOSPC", on: "result.json" });
    await expect(writeFileAtomic(f, "{}")).rejects.toThrow(new RegExp(`^${f}: cannot write \\(no space left on device \\(ENOSPC\\)\\)$`));
    expect(await readdir(dir)).toEqual([]);
  });
});

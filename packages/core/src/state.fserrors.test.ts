import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, symlink } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { basename, join } from "node:path";

// Disk-full and similar failures cannot be made on demand in a test, so the file system fails on cue here.
// `on` is a file name, or with `prefix` the start of one (a lock's name ends with a random part).
const fail = vi.hoisted(() => ({ code: null as string | null, on: "", once: false, prefix: false }));
vi.mock("node:fs/promises", async (importOriginal) => {
  const fs = await importOriginal<typeof import("node:fs/promises")>();
  const failing =
    <A extends unknown[], R>(fn: (...a: A) => Promise<R>, pathOf: (...a: A) => string) =>
    async (...a: A): Promise<R> => {
      const name = basename(pathOf(...a));
      if (fail.code && (fail.prefix ? name.startsWith(fail.on) : name === fail.on)) {
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
    symlink: failing(fs.symlink, (_target, path) => String(path)),
  };
});

const { initTrainingState } = await import("./state/init.js");
const { loadTrainingState } = await import("./state/load.js");
const { saveTrainingState } = await import("./state/save.js");
const { writeFileAtomic } = await import("./files.js");
const { processStart } = await import("./lock.js");

/** A process id that was in use and is no more. */
const deadPid = spawnSync("true").pid!;

const tiny = { model_type: "gpt2", n_layer: 1, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8 };
const atStep = (step: number) => ({
  ...initTrainingState("gpt2", tiny, step),
  progress: { step, tokensSeen: 0, flopsSeen: 0, samplerSeed: 0, stages: [] },
});
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-fserr-"));
});
afterEach(async () => {
  Object.assign(fail, { code: null, once: false, prefix: false });
  await rm(dir, { recursive: true, force: true });
});

describe("file system errors name the path, and nothing is lost", () => {
  it.each([
    ["ENOSPC", "no space left on device"],
    ["EDQUOT", "disk quota exceeded"],
    ["EACCES", "permission denied"],
    ["EROFS", "read-only file system"],
  ])("%s while writing a checkpoint", async (code, words) => {
    const ck = join(dir, "ck");
    await saveTrainingState(ck, initTrainingState("gpt2", tiny, 1));
    const before = await readFile(join(ck, "model.safetensors"));
    Object.assign(fail, { code, on: "training_state.json" });
    await expect(saveTrainingState(ck, initTrainingState("gpt2", tiny, 2), { overwrite: true })).rejects.toThrow(
      new RegExp(`^${ck}: cannot save \\(${words} \\(${code}\\)\\); the checkpoint there is unchanged$`),
    );
    fail.code = null;
    expect(await readFile(join(ck, "model.safetensors"))).toEqual(before);
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("ENOENT and EEXIST while putting a checkpoint in place: the old one is put back", async () => {
    const ck = join(dir, "ck");
    await saveTrainingState(ck, initTrainingState("gpt2", tiny, 1));
    const before = await readFile(join(ck, "model.safetensors"));
    for (const [code, words] of [
      ["ENOENT", "no such file"],
      ["EEXIST", "already exists"],
    ] as const) {
      Object.assign(fail, { code, on: "ck", once: true });
      await expect(saveTrainingState(ck, initTrainingState("gpt2", tiny, 2), { overwrite: true })).rejects.toThrow(
        new RegExp(`^${ck}: cannot save \\(${words} \\(${code}\\)\\); the checkpoint there is unchanged$`),
      );
      expect(await readFile(join(ck, "model.safetensors"))).toEqual(before);
      expect(await readdir(dir)).toEqual(["ck"]);
    }
  });

  it("when neither copy can be put in place, both stay and the next command puts the newer there", async () => {
    const ck = join(dir, "ck");
    await saveTrainingState(ck, atStep(1));
    Object.assign(fail, { code: "EIO", on: "ck" });
    await expect(saveTrainingState(ck, atStep(2), { overwrite: true })).rejects.toThrow(
      new RegExp(
        `^${ck}: cannot save \\(input/output error \\(EIO\\)\\); the previous checkpoint is at .*\\.ck\\.old-.* and the new one at .*\\.ck\\.new-.*: the next staged command on .*ck puts the newer in place$`,
      ),
    );
    fail.code = null;
    expect((await readdir(dir)).length).toBe(2);
    const notes: string[] = [];
    const back = await loadTrainingState(ck, { notice: (l) => notes.push(l) });
    expect(back.progress.step).toBe(2);
    await back.close();
    expect(notes[0]).toMatch(/completed an interrupted save \(a failed save of this process\)/);
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it.each(["ENOSPC", "EDQUOT"])("%s making a reader's lock: the checkpoint is read without one, nothing left behind", async (code) => {
    const ck = join(dir, "ck");
    await saveTrainingState(ck, atStep(3));
    await symlink(
      JSON.stringify({ pid: deadPid, host: hostname(), start: null, command: "staged eval ck", since: "" }),
      join(dir, ".ck.reader-1-dead"),
    );
    Object.assign(fail, { code, on: ".ck.reader-", prefix: true });
    const back = await loadTrainingState(ck);
    expect(back.lock.held).toBe(false);
    expect(back.progress.step).toBe(3);
    await back.close();
    // The dead reader's lock is cleared all the same.
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("ENOSPC making a reader's lock while a live process writes: refused, naming it", async () => {
    const ck = join(dir, "ck");
    await saveTrainingState(ck, atStep(3));
    await symlink(
      JSON.stringify({
        pid: process.ppid,
        host: hostname(),
        start: processStart(process.ppid),
        command: "staged train ck",
        since: "2026-11-27T12:00:00.000Z",
      }),
      join(dir, ".ck.lock"),
    );
    Object.assign(fail, { code: "ENOSPC", on: ".ck.reader-", prefix: true });
    await expect(loadTrainingState(ck)).rejects.toThrow(
      new RegExp(
        `^.*ck: being written by pid ${process.ppid} \\(staged train ck, since 2026-11-27T12:00:00.000Z\\); try again when it has finished$`,
      ),
    );
    expect((await readdir(dir)).sort()).toEqual([".ck.lock", "ck"]);
  });

  it.each([
    ["ENOSPC", "no space left on device"],
    ["EDQUOT", "disk quota exceeded"],
  ])("%s making the writer's lock: one line, nothing written", async (code, words) => {
    const ck = join(dir, "ck");
    await saveTrainingState(ck, atStep(3));
    Object.assign(fail, { code, on: ".ck.lock" });
    await expect(saveTrainingState(ck, atStep(4), { overwrite: true })).rejects.toThrow(
      new RegExp(`^${ck}: cannot write here \\(${words} \\(${code}\\) creating the lock ${join(dir, ".ck.lock")}\\)$`),
    );
    fail.code = null;
    expect(await readdir(dir)).toEqual(["ck"]);
    const back = await loadTrainingState(ck);
    expect(back.progress.step).toBe(3);
    await back.close();
  });

  it("writeFileAtomic names the file and leaves no temporary behind", async () => {
    const f = join(dir, "result.json");
    Object.assign(fail, { code: "ENOSPC", on: "result.json" });
    await expect(writeFileAtomic(f, "{}")).rejects.toThrow(new RegExp(`^${f}: cannot write \\(no space left on device \\(ENOSPC\\)\\)$`));
    expect(await readdir(dir)).toEqual([]);
  });
});

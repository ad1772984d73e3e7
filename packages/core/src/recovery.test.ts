import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { cp, mkdir, mkdtemp, readdir, rename, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initTrainingState } from "./state/init.js";
import { loadTrainingState } from "./state/load.js";
import { canonicalPath } from "./state/paths.js";
import { saveTrainingState } from "./state/save.js";
import type { TrainingState } from "./types.js";

const tiny = { model_type: "gpt2", n_layer: 1, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8 };
let dir: string, ck: string;
let live: ChildProcess;
let dead: number;

beforeAll(() => {
  live = spawn("sleep", ["600"], { stdio: "ignore" });
  dead = spawnSync("true").pid!;
});
afterAll(() => {
  live.kill("SIGKILL");
});
beforeEach(async () => {
  dir = await canonicalPath(await mkdtemp(join(tmpdir(), "staged-recover-")));
  ck = join(dir, "ck");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const atStep = (step: number): TrainingState => ({
  ...initTrainingState("gpt2", tiny, step),
  progress: { step, tokensSeen: 0, flopsSeen: 0, samplerSeed: step, stages: [] },
});

/** A complete checkpoint at `step`, saved at `path` (as an interrupted save would have left it). */
async function complete(path: string, step: number): Promise<void> {
  const scratch = join(dir, `scratch-${step}`);
  await saveTrainingState(scratch, atStep(step));
  await rename(scratch, path);
}

async function load(): Promise<{ step: number; notes: string[] }> {
  const notes: string[] = [];
  const s = await loadTrainingState(ck, { notice: (l) => notes.push(l) });
  await s.close();
  return { step: s.progress.step, notes };
}

describe("recovery from saves killed at each point", () => {
  it("killed while writing: the incomplete copy goes, the checkpoint stays", async () => {
    await complete(ck, 3);
    await mkdir(join(dir, `.ck.tmp-${dead}-a1`));
    await writeFile(join(dir, `.ck.tmp-${dead}-a1`, "config.json"), "{");
    const r = await load();
    expect(r.step).toBe(3);
    expect(r.notes).toEqual([
      expect.stringMatching(new RegExp(`removed the incomplete save \\.ck\\.tmp-${dead}-a1 \\(pid ${dead}, no longer running\\)`)),
    ]);
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("killed after the new copy was complete, before the swap: the newer checkpoint is put in place", async () => {
    await complete(ck, 3);
    await complete(join(dir, `.ck.new-${dead}-b2`), 4);
    const r = await load();
    expect(r.step).toBe(4);
    expect(r.notes[0]).toMatch(/completed an interrupted save .*\(step 4\) is now in place/);
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("killed between the two renames: the newer complete checkpoint wins, not the old one", async () => {
    await complete(join(dir, `.ck.old-${dead}-c3`), 3);
    await complete(join(dir, `.ck.new-${dead}-c3`), 4);
    const r = await load();
    expect(r.step).toBe(4);
    expect(r.notes).toHaveLength(2);
    expect(r.notes[1]).toMatch(/removed \.ck\.old-\d+-c3, a superseded copy/);
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("killed after the swap: the superseded copy is cleared", async () => {
    await complete(ck, 4);
    await complete(join(dir, `.ck.old-${dead}-d4`), 3);
    expect((await load()).step).toBe(4);
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("with only the old copy left, brings it back", async () => {
    await complete(join(dir, `.ck.old-${dead}-e5`), 3);
    const r = await load();
    expect(r.step).toBe(3);
    expect(r.notes[0]).toMatch(/restored the previous checkpoint \(step 3\)/);
  });

  it("never touches the saves of a live process", async () => {
    await complete(ck, 3);
    await complete(join(dir, `.ck.new-${live.pid}-f6`), 9);
    await mkdir(join(dir, `.ck.tmp-${live.pid}-f6`));
    expect(await load()).toEqual({ step: 3, notes: [] });
    expect((await readdir(dir)).sort()).toEqual([`.ck.new-${live.pid}-f6`, `.ck.tmp-${live.pid}-f6`, "ck"]);
  });

  it("a save recovers first: it never deletes the newer complete checkpoint an interrupted save left", async () => {
    await complete(join(dir, `.ck.old-${dead}-g7`), 3);
    await complete(join(dir, `.ck.new-${dead}-g7`), 4);
    const notes: string[] = [];
    await expect(saveTrainingState(ck, atStep(5), { notice: (l) => notes.push(l) })).rejects.toThrow(/already exists/);
    expect(notes[0]).toMatch(/completed an interrupted save/);
    expect((await load()).step).toBe(4);
    await saveTrainingState(ck, atStep(5), { overwrite: true });
    expect((await load()).step).toBe(5);
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("leaves other names alone", async () => {
    await complete(ck, 3);
    await cp(ck, join(dir, "ck.step-3"), { recursive: true });
    await mkdir(join(dir, ".ckx.tmp-1-a"));
    expect((await load()).step).toBe(3);
    expect((await readdir(dir)).sort()).toEqual([".ckx.tmp-1-a", "ck", "ck.step-3"]);
  });
});

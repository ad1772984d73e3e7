import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from "vitest";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtemp, readdir, readlink, rm, symlink, unlink } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { LockedError, holderAlive, lockCheckpoint, processStart, type LockHolder } from "./lock.js";
import { initTrainingState } from "./state/init.js";
import { loadTrainingState } from "./state/load.js";
import { canonicalPath } from "./state/paths.js";
import { saveTrainingState } from "./state/save.js";

const tiny = { model_type: "gpt2", n_layer: 1, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8 };
let dir: string;
let ck: string;
let live: ChildProcess;
/** A process id that was in use and is no more. */
let deadPid: number;

beforeAll(() => {
  live = spawn("sleep", ["600"], { stdio: "ignore" });
  deadPid = spawnSync("true").pid!;
});
afterAll(() => {
  live.kill("SIGKILL");
});
beforeEach(async () => {
  dir = await canonicalPath(await mkdtemp(join(tmpdir(), "staged-lock-")));
  ck = join(dir, "ck");
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const holder = (pid: number, start = processStart(pid)): LockHolder => ({
  pid,
  host: hostname(),
  start,
  command: "staged train ck",
  since: "2026-11-27T12:00:00.000Z",
});
/** Plant a lock as another process would hold it. */
const plant = (name: string, h: LockHolder) => symlink(JSON.stringify(h), join(dir, name));

describe("lockCheckpoint", () => {
  it("tells a live process from a dead one, and from a reused pid", () => {
    expect(holderAlive(holder(live.pid!))).toBe(true);
    expect(holderAlive(holder(deadPid, null))).toBe(false);
    expect(holderAlive(holder(live.pid!, "1"))).toBe(false);
    expect(holderAlive({ ...holder(deadPid), host: "elsewhere" })).toBe(true);
  });

  it("refuses a writer and a reader while another live process writes, naming it", async () => {
    await plant(".ck.lock", holder(live.pid!));
    const writer = lockCheckpoint(ck, "exclusive");
    await expect(writer).rejects.toBeInstanceOf(LockedError);
    await expect(lockCheckpoint(ck, "exclusive")).rejects.toThrow(
      new RegExp(`ck: being written by pid ${live.pid} \\(staged train ck, since 2026-11-27T12:00:00.000Z\\); try again`),
    );
    await expect(lockCheckpoint(ck, "shared")).rejects.toThrow(/being written by pid/);
    // Nothing of the refused attempts stays behind.
    expect((await readdir(dir)).sort()).toEqual([".ck.lock"]);
  });

  it("refuses a writer while another live process reads, and lets readers share", async () => {
    await plant(".ck.reader-1-a", holder(live.pid!));
    await expect(lockCheckpoint(ck, "exclusive")).rejects.toThrow(new RegExp(`ck: being read by pid ${live.pid}`));
    const r = await lockCheckpoint(ck, "shared");
    expect(r.held).toBe(true);
    await r.release();
    expect(await readdir(dir)).toEqual([".ck.reader-1-a"]);
  });

  it("removes the locks of dead holders", async () => {
    await plant(".ck.lock", holder(deadPid, null));
    await plant(".ck.reader-2-b", holder(deadPid, null));
    const w = await lockCheckpoint(ck, "exclusive");
    expect(JSON.parse(await readlink(join(dir, ".ck.lock"))).pid).toBe(process.pid);
    expect(await readdir(dir)).toEqual([".ck.lock"]);
    await w.release();
    await plant(".ck.lock", holder(deadPid, null));
    const r = await lockCheckpoint(ck, "shared");
    await r.release();
    expect(await readdir(dir)).toEqual([]);
  });

  it("a reader clears the reader locks of dead readers, and leaves live ones", async () => {
    for (let i = 0; i < 18; i++) await plant(`.ck.reader-${deadPid}-k${i}`, holder(deadPid, null));
    await plant(".ck.reader-1-a", holder(live.pid!));
    const r = await lockCheckpoint(ck, "shared");
    const readers = (await readdir(dir)).filter((f) => f !== ".ck.reader-1-a");
    expect(readers).toHaveLength(1);
    expect(JSON.parse(await readlink(join(dir, readers[0]!))).pid).toBe(process.pid);
    await r.release();
    expect(await readdir(dir)).toEqual([".ck.reader-1-a"]);
  });

  it("in one process: a writer may follow the process's own reader, a second writer may not", async () => {
    const r = await lockCheckpoint(ck, "shared");
    const w = await lockCheckpoint(ck, "exclusive");
    await expect(lockCheckpoint(ck, "exclusive")).rejects.toThrow(/already being written by this process/);
    await w.verify();
    await w.release();
    await r.release();
    expect(await readdir(dir)).toEqual([]);
  });

  it("notices when its write lock was taken over", async () => {
    const w = await lockCheckpoint(ck, "exclusive");
    await unlink(join(dir, ".ck.lock"));
    await plant(".ck.lock", holder(live.pid!));
    await expect(w.verify()).rejects.toThrow(/lost the write lock/);
    await w.release();
    // Releasing never removes another holder's lock.
    expect(JSON.parse(await readlink(join(dir, ".ck.lock"))).pid).toBe(live.pid);
  });
});

describe("checkpoint commands under locks", () => {
  it("load refuses while another process writes; save refuses while another reads or writes, writing nothing", async () => {
    const state = initTrainingState("gpt2", tiny, 1);
    await saveTrainingState(ck, state);
    await plant(".ck.lock", holder(live.pid!));
    await expect(loadTrainingState(ck)).rejects.toThrow(/ck: being written by pid/);
    await expect(saveTrainingState(ck, state, { overwrite: true })).rejects.toThrow(/ck: being written by pid/);
    await unlink(join(dir, ".ck.lock"));
    await plant(".ck.reader-3-c", holder(live.pid!));
    await expect(saveTrainingState(ck, state, { overwrite: true })).rejects.toThrow(/ck: being read by pid/);
    const loaded = await loadTrainingState(ck);
    await loaded.close();
    expect((await readdir(dir)).sort()).toEqual([".ck.reader-3-c", "ck"]);
  });

  it("a loaded checkpoint holds its read lock until closed", async () => {
    await saveTrainingState(ck, initTrainingState("gpt2", tiny, 1));
    const loaded = await loadTrainingState(ck);
    const readers = (await readdir(dir)).filter((f) => f.startsWith(".ck.reader-"));
    expect(readers).toHaveLength(1);
    expect(JSON.parse(await readlink(join(dir, readers[0]!))).pid).toBe(process.pid);
    await loaded.close();
    expect(await readdir(dir)).toEqual(["ck"]);
  });

  it("rejects a lock that is not the target's write lock", async () => {
    const state = initTrainingState("gpt2", tiny, 1);
    const r = await lockCheckpoint(ck, "shared");
    await expect(saveTrainingState(ck, state, { lock: r })).rejects.toThrow(/the lock given is shared/);
    await r.release();
  });
});

describe("loading for writing", () => {
  it("holds the write lock until closed; saves over the source use it; a second writer is refused", async () => {
    await saveTrainingState(ck, initTrainingState("gpt2", tiny, 1));
    const loaded = await loadTrainingState(ck, { lock: "exclusive" });
    expect(loaded.lock.mode).toBe("exclusive");
    expect(JSON.parse(await readlink(join(dir, ".ck.lock"))).pid).toBe(process.pid);
    await expect(lockCheckpoint(ck, "exclusive")).rejects.toThrow(/already being written by this process/);
    await saveTrainingState(ck, { ...loaded, progress: { ...loaded.progress, step: 7 } }, { overwrite: true });
    await loaded.close();
    expect(await readdir(dir)).toEqual(["ck"]);
    const back = await loadTrainingState(ck);
    expect(back.progress.step).toBe(7);
    await back.close();
  });
});

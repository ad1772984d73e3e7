import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { cp, lstat, mkdtemp, readdir, rm, symlink, unlink, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { canonicalPath, loadTrainingState, processStart } from "@staged/core";
import { fingerprint, ok, staged } from "../testing.js";

// Locks are between processes: the command runs as its own process (the test target builds first).
let root: string, ck: string, text: string;
let other: ChildProcess;

beforeAll(async () => {
  root = await canonicalPath(await mkdtemp(join(tmpdir(), "staged-cli-locks-")));
  ck = join(root, "ck");
  text = join(root, "data.txt");
  await writeFile(text, "the cat sat on the mat and the dog ran far away. ".repeat(200));
  ok("init", ck, "--layers", "1", "--d-model", "16", "--heads", "2", "--context", "16");
  ok("train", ck, "--data", text, "--steps", "2", "--batch", "2", "--threads", "1");
  other = spawn("sleep", ["600"], { stdio: "ignore" });
});
afterAll(async () => {
  other.kill("SIGKILL");
  await rm(root, { recursive: true, force: true });
});

/** Hold `ck`'s write lock as a `staged train` in another live process would. */
async function heldByTrain(fn: () => Promise<void>): Promise<void> {
  const lock = join(root, ".ck.lock");
  await symlink(
    JSON.stringify({
      pid: other.pid,
      host: hostname(),
      start: processStart(other.pid!),
      command: "staged train ck --steps 1000",
      since: "2026-11-27T15:00:00.000Z",
    }),
    lock,
  );
  try {
    await fn();
  } finally {
    await unlink(lock);
  }
}

const oneLine = (stderr: string): string => {
  const lines = stderr.trim().split("\n");
  expect(lines).toHaveLength(1);
  return lines[0]!;
};

describe("commands on a checkpoint another process is writing", () => {
  it("a second train, grow, eval and inspect are refused with the holder named, and nothing is written", async () => {
    await heldByTrain(async () => {
      const before = await fingerprint(ck);
      const holder = new RegExp(
        `^staged: .*ck: being written by pid ${other.pid} \\(staged train ck --steps 1000, since 2026-11-27T15:00:00.000Z\\); try again when it has finished$`,
      );
      for (const args of [
        ["train", ck, "--data", text, "--steps", "1"],
        ["grow", "width", ck, join(root, "wide"), "--factor", "2"],
        ["eval", ck, "--data", text],
        ["inspect", ck],
      ]) {
        const r = staged(...args);
        expect(r.status, args.join(" ")).toBe(1);
        expect(oneLine(r.stderr)).toMatch(holder);
      }
      expect(existsSync(join(root, "wide"))).toBe(false);
      expect(await fingerprint(ck)).toBe(before);
    });
  });

  it("train --lr 1e5 stops at the diverged step with a non-zero exit, and the checkpoint stays finite", async () => {
    const div = join(root, "div");
    await cp(ck, div, { recursive: true });
    const r = staged("train", div, "--steps", "40", "--lr", "1e5", "--save-every", "1", "--threads", "1");
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(
      /staged: step \d+: the (training loss|gradient norm) is (NaN|Infinity) \(learning rate 1\.00e\+5\): training diverged and stopped; the checkpoint .*div (keeps step \d+, the last good one|is unchanged \(step 2\))/,
    );
    const after = await loadTrainingState(div);
    for (const t of after.params.values()) expect((await t.read()).f32.every(Number.isFinite)).toBe(true);
    await after.close();
  });

  it("after a save killed between its renames, the next command puts the newest complete checkpoint in place and says so", async () => {
    const dead = spawnSync("true").pid!;
    const ck2 = join(root, "ck2");
    ok("init", ck2, "--layers", "1", "--d-model", "16", "--heads", "2", "--context", "16");
    await cp(ck, join(root, `.ck2.new-${dead}-k1`), { recursive: true }); // step 2
    await cp(ck2, join(root, `.ck2.old-${dead}-k1`), { recursive: true }); // step 0
    await rm(ck2, { recursive: true });
    const r = ok("--json", "inspect", ck2);
    expect(JSON.parse(r.stdout)).toMatchObject({ step: 2 });
    expect(r.stderr).toMatch(
      /ck2: completed an interrupted save \(pid \d+, no longer running\): the checkpoint it had written \(step 2\) is now in place/,
    );
    expect((await readdir(root)).filter((f) => f.startsWith(".ck2."))).toEqual([]);
  });
});

describe("how a command describes itself in its locks", () => {
  it("a train holding a checkpoint is named as the staged command it is", async () => {
    const big = join(root, "busy");
    await cp(ck, big, { recursive: true });
    const child = spawn(
      process.execPath,
      [fileURLToPath(new URL("../../dist/bin.js", import.meta.url)), "train", big, "--steps", "100000", "--threads", "1"],
      { stdio: "ignore" },
    );
    let exited: number | null | undefined;
    child.on("exit", (code) => {
      exited = code;
    });
    try {
      // Wait for the train's writer lock by looking at it (an inspect meanwhile would hold a reader lock, and a train
      // that found one would be refused and exit: the race this test once lost on a loaded machine).
      for (
        let i = 0;
        i < 600 &&
        exited === undefined &&
        !(await lstat(join(root, ".busy.lock")).then(
          () => true,
          () => false,
        ));
        i++
      ) {
        await new Promise((res) => setTimeout(res, 100));
      }
      expect(exited, "the train exited before taking its lock").toBeUndefined();
      const r = staged("inspect", big);
      expect(oneLine(r.stderr)).toMatch(
        new RegExp(`^staged: .*busy: being written by pid ${child.pid} \\(staged train .*busy --steps 100000 --threads 1, since `),
      );
    } finally {
      child.kill("SIGKILL");
    }
  }, 60_000);
});

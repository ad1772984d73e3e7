import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// Ctrl-C and SIGTERM through the built command (src/interrupt.ts): a real process, a real signal.
const BIN = fileURLToPath(new URL("../../dist/bin.js", import.meta.url));

interface Done { status: number | null; stdout: string; stderr: string }

/** Run `staged args`, send each of `signals` (together) once stderr matches `when`, and wait for the exit. */
function interrupted(args: string[], when: RegExp, signals: NodeJS.Signals[]): Promise<Done> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "", stderr = "", sent = false;
    const timer = setTimeout(() => { child.kill("SIGKILL"); reject(new Error(`timed out; stderr: ${stderr}`)); }, 90_000);
    child.stdout.on("data", (d: Buffer) => { stdout += d.toString(); });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      if (!sent && when.test(stderr)) { sent = true; for (const s of signals) child.kill(s); }
    });
    child.on("exit", (status) => { clearTimeout(timer); resolve({ status, stdout, stderr }); });
  });
}
const ok = (...args: string[]): string => {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 60_000 });
  if (r.status !== 0) throw new Error(`staged ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r.stdout;
};
const stored = async (dir: string): Promise<number> =>
  (JSON.parse(await readFile(join(dir, "training_state.json"), "utf8")) as { progress: { step: number } }).progress.step;

let root: string, text: string;
const SHAPE = ["--layers", "1", "--d-model", "32", "--heads", "2", "--context", "16"];
const TRAIN = ["--batch", "4", "--context", "16", "--threads", "1"];
beforeAll(async () => {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: build the cli package first`);
  root = await mkdtemp(join(tmpdir(), "staged-cli-signals-"));
  text = join(root, "data.txt");
  await writeFile(text, "the quick brown fox jumps over the lazy dog. ".repeat(40));
});
afterAll(async () => { await rm(root, { recursive: true, force: true }); });

describe("train under Ctrl-C and SIGTERM", () => {
  it("Ctrl-C: the step in progress finishes and is saved, nothing is lost, the status is 130", async () => {
    const dir = join(root, "int", "m");
    ok("init", dir, ...SHAPE, "--seed", "1");
    ok("train", dir, "--data", text, ...TRAIN, "--steps", "3");
    const r = await interrupted(["--json", "train", dir, "--data", text, ...TRAIN, "--steps", "100000", "--save-every", "100000"], /^step \d+/m, ["SIGINT"]);
    expect(r.status, r.stderr).toBe(130);
    expect(r.stderr).toMatch(/staged: Ctrl-C: finishing the step in progress and saving \(again to abort at once: /);
    const result = JSON.parse(r.stdout) as { step: number; interrupted: boolean };
    expect(result.interrupted).toBe(true);
    expect(result.step).toBeGreaterThan(3);
    expect(await stored(dir)).toBe(result.step);
    const metrics = (await readFile(join(dir, "metrics.jsonl"), "utf8")).trim().split("\n");
    expect((JSON.parse(metrics.at(-1)!) as { step: number }).step).toBe(result.step);
    expect(await readdir(join(dir, ".."))).toEqual(["m"]);
  }, 60_000);

  it("a second signal aborts at once and says how many steps since the last save it loses; the checkpoint stays whole", async () => {
    const dir = join(root, "term", "m");
    ok("init", dir, ...SHAPE, "--seed", "2");
    ok("train", dir, "--data", text, ...TRAIN, "--steps", "2");
    const r = await interrupted(["train", dir, "--data", text, ...TRAIN, "--steps", "100000"], /^step \d+/m, ["SIGTERM", "SIGTERM"]);
    expect(r.status, r.stderr).toBe(143);
    expect(r.stderr).toMatch(/staged: SIGTERM: finishing the step in progress and saving/);
    expect(r.stderr.trim().split("\n").at(-1)).toMatch(/^staged: aborted: (\d+ steps? since the last save are lost|nothing is lost) \(.*m keeps step 2\)$/);
    expect(await stored(dir)).toBe(2);
    expect(JSON.parse(ok("--json", "inspect", dir)) as object).toMatchObject({});
  }, 60_000);
});

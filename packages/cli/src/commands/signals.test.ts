import { spawn } from "node:child_process";
import { existsSync, readdirSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RESULT_FILE } from "@staged/run";
import { brownText } from "@staged/trainer-ort";
import { tinyRunSpec } from "@staged/testing";
import { ok } from "../testing.js";

// Ctrl-C and SIGTERM through the built command (src/interrupt.ts): a real process, a real signal.
const BIN = fileURLToPath(new URL("../../dist/bin.js", import.meta.url));

interface Done {
  status: number | null;
  stdout: string;
  stderr: string;
}

/** Run `staged args`, send each of `signals` (together) once stderr matches `when` (or `when()` holds), and wait for the exit. */
function interrupted(args: string[], when: RegExp | (() => boolean), signals: NodeJS.Signals[]): Promise<Done> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "",
      stderr = "",
      sent = false;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`timed out; stderr: ${stderr}`));
    }, 90_000);
    const fire = (): void => {
      if (!sent) {
        sent = true;
        for (const s of signals) child.kill(s);
      }
    };
    const poll =
      typeof when === "function"
        ? setInterval(() => {
            if (when()) fire();
          }, 20)
        : null;
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
      if (typeof when !== "function" && when.test(stderr)) fire();
    });
    child.on("exit", (status) => {
      clearTimeout(timer);
      if (poll) clearInterval(poll);
      resolve({ status, stdout, stderr });
    });
  });
}
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
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("train under Ctrl-C and SIGTERM", () => {
  it("Ctrl-C: the step in progress finishes and is saved, nothing is lost, the status is 130", async () => {
    const dir = join(root, "int", "m");
    ok("init", dir, ...SHAPE, "--seed", "1");
    ok("train", dir, "--data", text, ...TRAIN, "--steps", "3");
    const r = await interrupted(["--json", "train", dir, "--data", text, ...TRAIN, "--steps", "100000", "--save-every", "100000"], /^step \d+/m, [
      "SIGINT",
    ]);
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
});

describe("staged run under Ctrl-C", () => {
  it("stops after the step in progress with its work saved, exits 130, and the same command resumes to an uninterrupted run's result", async () => {
    await writeFile(join(root, "corpus.txt"), (await brownText("train")).slice(0, 40_000));
    await writeFile(join(root, "spec.json"), JSON.stringify(tinyRunSpec("corpus.txt", { budget: { flops: 4e8 }, seeds: [0] })));
    ok("run", join(root, "spec.json"), "--out", join(root, "whole"));
    const out = join(root, "cut");
    const r = await interrupted(
      ["run", join(root, "spec.json"), "--out", out],
      () => existsSync(join(out, "w-s0", "stage-0", "training_state.json")),
      ["SIGINT"],
    );
    expect(r.status, r.stderr).toBe(130);
    expect(r.stderr).toMatch(/staged: Ctrl-C: finishing the step in progress and saving/);
    expect(r.stderr.trim().split("\n").at(-1)).toMatch(
      /^staged: w-s0: interrupted at step \d+, saved in .*cut\/w-s0\/stage-\d; run the same command again to resume$/,
    );
    expect(existsSync(join(out, "w-s0", RESULT_FILE))).toBe(false);
    ok("run", join(root, "spec.json"), "--out", out);
    const points = async (d: string): Promise<unknown> =>
      (JSON.parse(await readFile(join(d, "w-s0", RESULT_FILE), "utf8")) as { points: unknown }).points;
    expect(await points(out)).toEqual(await points(join(root, "whole")));
  }, 90_000);
});

describe("grow and export under Ctrl-C", () => {
  it("abandon the write at once: temporary files removed, nothing written, status 130", async () => {
    const input = join(root, "big", "m");
    ok("init", input, "--layers", "2", "--d-model", "768", "--heads", "12", "--context", "64");
    const parent = join(root, "outs");
    ok("init", join(parent, "keep"), ...SHAPE);
    const writing = () => readdirSync(parent).some((n) => n !== "keep");
    const grown = join(parent, "grown");
    const g = await interrupted(["grow", "width", input, grown, "--factor", "2"], writing, ["SIGINT"]);
    expect(g.status, g.stderr).toBe(130);
    expect(g.stderr.trim().split("\n").at(-1)).toBe(`staged: ${grown}: interrupted: nothing was written`);
    expect(readdirSync(parent)).toEqual(["keep"]);
    const exported = join(parent, "onnx-out");
    const e = await interrupted(["export", input, "--out", exported], writing, ["SIGINT"]);
    expect(e.status, e.stderr).toBe(130);
    expect(e.stderr.trim().split("\n").at(-1)).toBe(`staged: ${exported}: interrupted: nothing was written`);
    expect(readdirSync(parent)).toEqual(["keep"]);
  }, 120_000);
});

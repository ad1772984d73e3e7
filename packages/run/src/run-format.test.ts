import { mkdir, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { useTempDir } from "@staged/testing";
import { executeRun, runEntries } from "./run.js";
import {
  formatGrowths,
  formatRunResult,
  GROWTHS_FILE,
  parseGrowths,
  parseRunIdentity,
  parseRunResult,
  readCooldownStart,
  readFrontier,
  readGrowths,
  readRunResult,
  RESULT_FILE,
  RUN_FILE,
} from "./run-format.js";
import { tinyRunSpec } from "@staged/testing";
import { parseRunSpec } from "./spec.js";
import type { GrowthEvent, RunResult } from "./types.js";

const dir = useTempDir("staged-run-format-");

const growth: GrowthEvent = {
  stage: 1,
  operator: "width",
  options: { factor: 2, rewarmup: 2, continueAt: "keep" },
  flops: 5e8,
  globalStep: 20,
  timing: "fraction",
  valLossBefore: 3.1,
  valLossAfter: 3.1,
  paramsBefore: 100,
  paramsAfter: 400,
};
const result: RunResult = {
  format: "staged-run-result",
  version: 1,
  name: "w-s0",
  group: "w",
  seed: 0,
  done: true,
  budgetFlops: 1e9,
  points: [
    { globalStep: 4, step: 4, stage: 0, flops: 1e8, tokens: 256, valLoss: 3.5 },
    { globalStep: 24, step: 4, stage: 1, flops: 6e8, tokens: 1536, valLoss: 3 },
  ],
  growths: [growth],
  final: { steps: 10, flops: 1.1e9, valLoss: 2.9, blocks: 8, tokens: 128, valLossBefore: 3 },
};
const bad = (over: Record<string, unknown>) => ({ ...result, ...over });

describe("result.json", () => {
  it("reads back what it writes; fields it does not know (dynamics-ablation.mjs's divergence) are dropped", async () => {
    expect(parseRunResult(JSON.parse(formatRunResult(result)), RESULT_FILE)).toEqual(result);
    const f = join(dir(), RESULT_FILE);
    await writeFile(f, JSON.stringify({ ...result, divergence: [0.1] }));
    expect(await readRunResult(f)).toEqual(result);
  });

  it.each([
    [{ format: "staged-export" }, 'format must be "staged-run-result"'],
    [{ version: 2 }, "version must be 1 (the version this reads)"],
    [{ name: 3 }, "name must be a string, got 3"],
    [{ seed: -1 }, "seed must be an integer ≥ 0, got -1"],
    [{ done: "yes" }, "done must be true or false"],
    [{ budgetFlops: undefined }, "budgetFlops must be a finite number, got nothing"],
    [{ points: [{ ...result.points[0], valLoss: null }] }, "points[0].valLoss must be a finite number, got null"],
    [
      { points: [result.points[1], result.points[0]] },
      "points[1].flops 100000000 is below points[0].flops 600000000 (points must be in increasing FLOPs order)",
    ],
    [{ growths: [{ ...growth, operator: undefined }] }, "growths[0].operator must be a string, got nothing"],
    [{ final: { ...result.final, blocks: 1.5 } }, "final.blocks must be an integer ≥ 0, got 1.5"],
  ])("a bad field %j is one line naming the file and the field", (over, message) => {
    expect(() => parseRunResult(bad(over), "r/result.json")).toThrow(new Error(`r/result.json: ${message}`));
  });

  it("a file that is not JSON, or not there, is named", async () => {
    const f = join(dir(), "broken.json");
    await writeFile(f, "{");
    await expect(readRunResult(f)).rejects.toThrow(new RegExp(`^${f}: invalid JSON`));
    await expect(readRunResult(join(dir(), "none.json"))).rejects.toThrow(/none\.json: cannot read the run result \(no such file/);
  });
});

describe("growths.json, run.json, frontier.json, cooldown.json", () => {
  it("growths.json has a format and a version; a bare list (or another file) is refused", async () => {
    expect(parseGrowths(JSON.parse(formatGrowths([growth])), GROWTHS_FILE)).toEqual([growth]);
    expect(JSON.parse(formatGrowths([]))).toEqual({ format: "staged-run-growths", version: 1, growths: [] });
    expect(() => parseGrowths([growth], "g.json")).toThrow(new Error("g.json: expected object, received array"));
    expect(() => parseGrowths({ format: "staged-run-growths", version: 1, growths: [{ ...growth, flops: "1" }] }, "g.json")).toThrow(
      new Error('g.json: growths[0].flops must be a finite number, got "1"'),
    );
    const f = join(dir(), "g.json");
    await writeFile(f, JSON.stringify(result));
    await expect(readGrowths(f)).rejects.toThrow(new Error(`${f}: format must be "staged-run-growths"`));
  });

  it("run.json names its format; its model and stages are objects", () => {
    const id = { format: "staged-run-entry", version: 1, data: "brown", group: "w", seed: 0, model: { arch: "gpt2", layers: 1 }, stages: [] };
    expect(parseRunIdentity(id, RUN_FILE)).toEqual(id);
    expect(() => parseRunIdentity({ ...id, format: "staged-run-result" }, RUN_FILE)).toThrow(
      new Error('run.json: format must be "staged-run-entry"'),
    );
    expect(() => parseRunIdentity({ ...id, stages: [1] }, RUN_FILE)).toThrow(new Error("run.json: stages[0] must be a JSON object"));
  });

  it("frontier.json and cooldown.json are checked field by field", async () => {
    const fr = join(dir(), "frontier.json"),
      cd = join(dir(), "cooldown.json");
    await writeFile(fr, JSON.stringify([{ ...result.final, valLoss: "x" }]));
    await expect(readFrontier(fr)).rejects.toThrow(new Error(`${fr}: [0].valLoss must be a finite number, got "x"`));
    await writeFile(cd, JSON.stringify({ step: 3 }));
    await expect(readCooldownStart(cd)).rejects.toThrow(new Error(`${cd}: valLossBefore must be a finite number, got nothing`));
  });
});

describe("a run directory with a bad file is refused before anything trains", () => {
  const spec = () => parseRunSpec(tinyRunSpec("brown"), join(dir(), "spec.json"));

  it.each([
    [RUN_FILE, { format: "something-else" }, 'format must be "staged-run-entry"'],
    [RESULT_FILE, { ...result, points: "none" }, "points expected array, received string"],
    [GROWTHS_FILE, [], "expected object, received array"],
  ])("%s", async (file, content, message) => {
    const s = spec();
    const entry = runEntries(s)[0]!;
    const d = join(dir(), `bad-${file}`);
    await mkdir(d, { recursive: true });
    // A run.json of this spec first (the other files are read after it), then the bad file.
    if (file !== RUN_FILE) await executeRun(s, entry, d, { signal: AbortSignal.abort() }).catch(() => undefined);
    await rm(join(d, "stage-0"), { recursive: true, force: true });
    await writeFile(join(d, file), JSON.stringify(content));
    await expect(executeRun(s, entry, d)).rejects.toThrow(new Error(`${join(d, file)}: ${message}`));
  });
});

import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RESULT_FILE } from "@staged/run";
import { brownText } from "@staged/trainer-ort";
import { tinyRunSpec } from "@staged/testing";
import { staged } from "../testing.js";

let root: string;
const at = (name: string) => join(root, name);

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-run-cli-"));
  await writeFile(at("corpus.txt"), (await brownText("train")).slice(0, 40_000));
  await writeFile(at("spec.json"), JSON.stringify(tinyRunSpec("corpus.txt", { budget: { flops: 4e8 }, seeds: [0], baseline: { seeds: [0] } })));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("staged run / staged report", () => {
  it("runs the staged schedule and its baseline: one JSON object on stdout, progress on stderr; a rerun resumes (here: nothing left)", () => {
    const r = staged("--json", "run", at("spec.json"));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    const out = JSON.parse(r.stdout) as { out: string; runs: { name: string; growths: unknown[]; flops: number }[]; report: { groups: unknown[] } };
    expect(out.out).toBe(at("spec"));
    expect(out.runs.map((x) => [x.name, x.growths.length])).toEqual([
      ["w-s0", 1],
      ["baseline-s0", 0],
    ]);
    expect(out.runs.every((x) => x.flops >= 4e8)).toBe(true);
    expect(out.report.groups).toHaveLength(2);
    expect(r.stderr).toMatch(/\[w-s0\] stage 1\/1 +10\d\.\d% of 4\.00e\+8 FLOPs {2}step \d+ {2}val \d\.\d{4} {2}\d+ tok\/s {2}ETA 0s/);
    expect(r.stderr).toMatch(/w-s0: grew width ×2 at/);
    const again = staged("--json", "run", at("spec.json"));
    expect(again.status).toBe(0);
    expect(JSON.parse(again.stdout)).toEqual(out);
  });

  it("report: the table, the saving, and SVG + PNG plots", async () => {
    const r = staged("report", at("spec"), "--plot", at("c.svg"), at("c.png"));
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/\| baseline \| 1 \|/);
    expect(r.stdout).toMatch(/\| w \| 1 \|/);
    expect(r.stdout).toMatch(/growth #/);
    expect(r.stdout).toContain("| group | growth # | operator | loss at growth | ratio, W 5% | Δ (nats), W 5% | ratio, W 10% |");
    expect(r.stdout).toMatch(/\| w \| 1 \| width \| \d\.\d{4} \|/);
    expect(await readFile(at("c.svg"), "utf8")).toMatch(/^<svg/);
    expect([...(await readFile(at("c.png"))).subarray(0, 4)]).toEqual([0x89, 0x50, 0x4e, 0x47]);
    const j = staged(
      "--json",
      "report",
      join(at("spec"), "w-s0"),
      join(at("spec"), "baseline-s0", RESULT_FILE),
      "--loss",
      "3,2.9",
      "--window",
      "0.2,0.5",
    );
    expect(j.status, j.stderr).toBe(0);
    const rep = (
      JSON.parse(j.stdout) as {
        report: {
          targets: { loss: number }[];
          windows: number[];
          groups: { growths: { dynamics: { window: number; runs: number; perRun: { flops: number; perBaseline: unknown[] }[] }[] }[] }[];
        };
      }
    ).report;
    expect(rep.targets.map((t) => t.loss)).toEqual([3, 2.9]);
    expect(rep.windows).toEqual([0.2, 0.5]);
    const dyn = rep.groups[1]!.growths[0]!.dynamics;
    expect(dyn.map((d) => [d.window, d.runs, d.perRun[0]!.perBaseline.length])).toEqual([
      [0.2, 1, 1],
      [0.5, 1, 1],
    ]);
    expect(dyn[0]!.perRun[0]!.flops).toBeGreaterThan(0);
  });

  it("report: a result with a non-finite number is named by its file; an unwritable plot says so once", async () => {
    const runs = at("synthetic");
    const result = (name: string, group: string, flops: (number | null)[]) => ({
      format: "staged-run-result",
      version: 1,
      name,
      group,
      seed: 0,
      done: true,
      budgetFlops: 100,
      growths: [],
      points: flops.map((f, i) => ({ globalStep: i + 1, step: i + 1, stage: 0, flops: f, tokens: i + 1, valLoss: 3 - i })),
    });
    for (const [name, group, flops] of [
      ["baseline-s0", "baseline", [10, 100]],
      ["staged-s0", "staged", [null, 100]],
    ] as const) {
      await mkdir(join(runs, name), { recursive: true });
      await writeFile(join(runs, name, RESULT_FILE), JSON.stringify(result(name, group, [...flops])));
    }
    const bad = staged("report", runs);
    expect(bad.status).toBe(1);
    expect(bad.stderr.trim().split("\n")).toEqual([
      `staged: ${join(runs, "staged-s0", RESULT_FILE)}: points[0].flops must be a finite number, got null`,
    ]);
    await writeFile(join(runs, "staged-s0", RESULT_FILE), JSON.stringify(result("staged-s0", "staged", [100, 10])));
    expect(staged("report", runs).stderr.trim()).toBe(
      `staged: ${join(runs, "staged-s0", RESULT_FILE)}: points[1].flops 10 is below points[0].flops 100 (points must be in increasing FLOPs order)`,
    );
    await writeFile(join(runs, "staged-s0", RESULT_FILE), JSON.stringify(result("staged-s0", "staged", [5, 100])));
    const plot = staged("report", runs, "--plot", "/proc/x.svg");
    expect(plot.status).toBe(1);
    expect(plot.stderr.trim().split("\n")).toEqual([expect.stringMatching(/^staged: \/proc\/x\.svg: cannot write \([^()]*(\([A-Z]+\))?\)$/)]);
  }, 60_000);

  it.each([
    [["run", "nope.json"], /nope\.json: .*(no such file|not found)/i],
    [["run", "bad.json"], /bad\.json: batch must be an integer/],
    [["run", "bad.json", "--only", "x"], /bad\.json: batch must be an integer/],
    [["run", "spec.json", "--only", "x", "--out", "onlyx"], /--only: no run named "x" \(runs: w-s0, baseline-s0\)/],
    [["run", "nodata.json"], /missing\.txt: cannot read the data \(no such file\)/],
    [["run", "nolaw.json"], /missing-law\.json: cannot read the law \(no such file\)/],
    [["run", "notrainer.json"], /notrainer\.json: trainer: unknown trainer "torch" \(registered: ort\)/],
    [["run", "nolawname.json"], /nolawname\.json: law\.name: unknown scaling law "mine" \(registered: chinchilla, kaplan\)/],
    [["report", "empty"], /empty: no result\.json/],
    [["report", "spec", "--plot", "x.gif"], /x\.gif: --plot writes \.svg or \.png/],
    [["report", "spec", "--loss", "a"], /--loss must be positive numbers/],
    [["report", "spec", "--window", "0.1,0"], /--window must be fractions of the budget in \(0, 1\]/],
    [["report", "spec", "--window", "2"], /--window must be fractions of the budget in \(0, 1\]/],
    [["report", "spec", "--baseline", "nope"], /no baseline group "nope"/],
  ])("bad input %j: one line, exit 1, nothing written", async (args, message) => {
    await writeFile(at("bad.json"), JSON.stringify({ data: "brown", context: 16, batch: 0 }));
    // valid specs whose files are missing: refused before the run directory is made
    const ok = JSON.parse(await readFile(at("spec.json"), "utf8")) as Record<string, unknown>;
    await writeFile(at("nodata.json"), JSON.stringify({ ...ok, data: "missing.txt" }));
    await writeFile(at("nolaw.json"), JSON.stringify({ ...ok, law: "missing-law.json", stages: [{ grow: "width", at: "auto" }] }));
    await writeFile(at("notrainer.json"), JSON.stringify({ ...ok, trainer: "torch" }));
    await writeFile(at("nolawname.json"), JSON.stringify({ ...ok, law: { name: "mine" } }));
    await rm(at("empty"), { recursive: true, force: true });
    await import("node:fs/promises").then((fs) => fs.mkdir(at("empty")));
    const before = (await readdir(root)).sort();
    const r = staged(
      ...(args as string[]).map((a) =>
        /^(nope|bad|nodata|nolaw|notrainer|nolawname|spec)\.json$|^empty$|^spec$|^onlyx$|^x\.gif$/.test(a) ? at(a) : a,
      ),
    );
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(message);
    expect(r.stderr.trim().split("\n")).toHaveLength(1);
    expect((await readdir(root)).sort()).toEqual(before);
    for (const dir of ["bad", "nodata", "nolaw", "notrainer", "nolawname", "onlyx"]) expect(existsSync(at(dir))).toBe(false);
  });
});

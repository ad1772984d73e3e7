import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  OnlineGrowthDetector,
  THRESHOLDS,
  chinchillaLaw,
  flopsPerToken,
  kaplan,
  lawFromFit,
  nonEmbeddingParams,
  planGrowthInRunUnits,
  type ChinchillaLaw,
  type FitResult,
} from "@staged/scheduler";
import { json, staged } from "../testing.js";

let root: string;
const at = (name: string) => join(root, name);

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-plan-cli-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A run directory with a config.json and a metrics.jsonl following a known Chinchilla-form law. */
async function run(name: string, layers: number, d: number): Promise<string> {
  const dir = at(name);
  await mkdir(dir, { recursive: true });
  await writeFile(
    join(dir, "config.json"),
    JSON.stringify({ model_type: "gpt2", n_layer: layers, n_embd: d, n_head: 4, vocab_size: 256, n_positions: 128 }),
  );
  const n = layers * 12 * d * d;
  const law = chinchillaLaw({ E: 1.5, A: 200, alpha: 0.3, B: 300, beta: 0.28 }, 8192);
  const fpt = flopsPerToken({ layers, dModel: d, heads: 4, headDim: d / 4, ffn: 4 * d, vocab: 256, context: 128 }, 128);
  const lines: string[] = [];
  for (let step = 50; step <= 20000; step = Math.round(step * 1.2)) {
    const tokens = step * 8192;
    const valLoss = law.loss(n, tokens);
    lines.push(JSON.stringify({ step, tokens, flops: tokens * fpt, loss: valLoss * 1.01, valLoss, lr: 1e-3 }));
  }
  await writeFile(join(dir, "metrics.jsonl"), lines.join("\n") + "\n");
  return join(dir, "metrics.jsonl");
}

describe("staged plan", () => {
  it("--json prints one object with the single growth's plan (Kaplan, width)", () => {
    const r = staged("--json", "plan", "--law", "kaplan", "--target-params", "4e8", "--grow", "width");
    expect(r.status).toBe(0);
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    const p = JSON.parse(r.stdout) as Record<string, number>;
    expect(p).toMatchObject({ law: "kaplan", targetParams: 4e8, growAtStep: 26210, continueAtStep: 9640, optimalityStep: 25390, paramsBefore: 1e8 });
    expect(p.constantOp).toBeCloseTo(2.717, 2);
    expect(p.lossAtGrowth).toBeCloseTo(3.0786, 4);
    expect(p.computeSaving).toBeCloseTo(0.0776, 4);
    expect(p.computeSaving).toBeGreaterThan(0);
    expect(p.computeSaving).toBeLessThan(1);
  });

  it("plans several stages, honours threshold overrides, and draws the plan to SVG", async () => {
    const svg = at("plan.svg");
    const p = json("plan", "--law", "kaplan", "--target-params", "8e8", "--grow", "width,depth", "--plot", svg) as {
      stages: { operator: string; constantOp: number }[];
      computeSaving: number;
      plot: string;
    };
    expect(p.stages.map((s) => s.operator)).toEqual(["width", "depth"]);
    expect(p.plot).toBe(svg);
    const text = await readFile(svg, "utf8");
    expect(text.startsWith("<svg")).toBe(true);
    expect(text).toContain("staged path");
    expect((await readdir(root)).filter((f) => f.endsWith(".tmp"))).toEqual([]);
    const q = json(
      "plan",
      "--law",
      "kaplan",
      "--target-params",
      "8e8",
      "--grow",
      "width,depth",
      "--threshold-grow",
      "-0.05,-0.06",
      "--threshold-opt",
      "-0.05",
    ) as {
      stages: { threshold: number }[];
      thresholdOpt: number;
    };
    expect(q.stages.map((s) => s.threshold)).toEqual([-0.05, -0.06]);
    expect(q.thresholdOpt).toBe(-0.05);
    const c = json("plan", "--law", "chinchilla", "--target-params", "3e8", "--grow", "depth");
    expect(c.law).toBe("chinchilla");
  }, 30_000);

  it("prints human-readable output without --json", () => {
    const r = staged("plan", "--law", "kaplan", "--target-params", "3.4e8", "--grow", "width");
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/grow width .* at step 25790/);
    expect(r.stdout).toMatch(/saving 7\.8%/);
  });

  it("bad input: one stderr line, exit 1, nothing on stdout, nothing written", async () => {
    const cases: [string[], RegExp][] = [
      [["--target-params", "-5", "--law", "kaplan", "--grow", "width"], /--target-params must be a number > 0/],
      [["--target-params", "1e8", "--law", "kaplan", "--grow", "height"], /unknown operator "height"/],
      [["--target-params", "1e8", "--grow", "width"], /--law is required/],
      [["--target-params", "1e8", "--law", at("none.json"), "--grow", "width"], /not kaplan or chinchilla, and the file cannot be read \(ENOENT\)/],
      [["--target-params", "1e8", "--law", "kaplan", "--grow", "width", "--threshold-grow", "0.1"], /negative slope/],
      [["--target-params", "1e8", "--law", "kaplan", "--grow", "width,depth", "--threshold-grow", "-0.1,-0.2,-0.3"], /one per growth/],
      [["--target-params", "1e8", "--law", "kaplan", "--grow", "width", "--threshold-grow", "-0.001", "--plot", at("bad.svg")], /not reached/],
      [["--target-params", "1e8", "--law", "kaplan", "--grow", "width", "--steps", "10,5,1"], /--steps must be from,to,every/],
    ];
    for (const [args, message] of cases) {
      const r = staged("--json", "plan", ...args);
      expect(r.status).toBe(1);
      expect(r.stdout).toBe("");
      expect(r.stderr.trim().split("\n")).toHaveLength(1);
      expect(r.stderr).toMatch(message);
    }
    expect((await readdir(root)).includes("bad.svg")).toBe(false);
  }, 60_000);
});

describe("staged plan fit", () => {
  it("fits a law to metrics.jsonl files, and plans with the fit", async () => {
    const files = [await run("a", 2, 64), await run("b", 4, 128), await run("c", 8, 256), await run("d", 8, 512)];
    const out = at("fit.json");
    const r = json("plan", "fit", ...files, "--law", "chinchilla", "--out", out) as {
      constants: Record<string, number>;
      rmse: number;
      curves: { params: number; paramsEstimated: boolean }[];
    };
    expect(r.curves.map((c) => c.params)).toEqual([2 * 12 * 64 * 64, 4 * 12 * 128 * 128, 8 * 12 * 256 * 256, 8 * 12 * 512 * 512]);
    expect(r.curves.every((c) => !c.paramsEstimated)).toBe(true);
    expect(r.constants.E).toBeCloseTo(1.5, 1);
    expect(r.constants.alpha).toBeCloseTo(0.3, 1);
    expect(r.rmse).toBeLessThan(1e-3);
    const fit = JSON.parse(await readFile(out, "utf8")) as { format: string; residuals: unknown[] };
    expect(fit.format).toBe("staged-scaling-fit");
    expect(fit.residuals.length).toBeGreaterThan(50);
    // Small runs: simulate the curves over other steps than the seed's 4000–90000.
    const p = json("plan", "--law", out, "--target-params", "1e7", "--grow", "depth", "--steps", "100,1000000,100");
    expect(p.law).toBe("fit:chinchilla");
    expect(p.constantOp as number).toBeGreaterThan(1);
    // Four sizes of exact law curves: no warnings; the run-unit growth plan agrees with the library's.
    expect((r as unknown as { warnings: string[] }).warnings).toEqual([]);
    const g = json("plan", "growth", "--law", out, "--small", "2x64", "--large", "2x128", "--batch", "16", "--context", "128") as {
      grow: boolean;
      growAtStep: number;
      continueAtStep: number;
      predictedSaving: number;
    };
    const fitted = lawFromFit(JSON.parse(await readFile(out, "utf8")) as FitResult) as ChinchillaLaw;
    const shape = (layers: number, d: number) => ({ layers, dModel: d, heads: 1, headDim: d, ffn: 4 * d, vocab: 256, context: 128 });
    const m = (layers: number, d: number) => ({ params: nonEmbeddingParams(shape(layers, d)), flopsPerToken: flopsPerToken(shape(layers, d), 128) });
    const expected = planGrowthInRunUnits(fitted, m(2, 64), m(2, 128), { batchTokens: 2048 })!;
    expect(g).toMatchObject({ grow: true, growAtStep: expected.growAtStep, continueAtStep: expected.continueAtStep });
    expect(g.predictedSaving).toBeCloseTo(expected.predictedSaving, 12);
    const bad = staged("plan", "growth", "--law", out, "--small", "2by64", "--large", "2x128");
    expect(bad.status).toBe(1);
    expect(bad.stderr).toMatch(/^staged: --small must be layers x width such as 2x64, got "2by64"\n$/);
    expect(staged("plan", "growth", "--law", "kaplan", "--small", "2x64", "--large", "2x128").stderr).toMatch(/needs a Chinchilla-form law/);
    // Llama: the gated MLP's third matrix is counted (3·d·ffn instead of 2·d·ffn per layer).
    const gl = json("plan", "growth", "--law", out, "--small", "2x64", "--large", "2x128", "--arch", "llama") as { small: { params: number } };
    expect(gl.small.params).toBe(2 * (4 * 64 * 64 + 3 * 64 * 256));
    expect(staged("plan", "growth", "--law", out, "--small", "2x64", "--large", "2x128", "--arch", "t5").stderr).toMatch(
      /^staged: --arch must be one of gpt2, llama, got "t5"\n$/,
    );
  }, 30_000);

  it("says when a fit is ill-determined (two sizes), on stderr also with --json", async () => {
    const files = [await run("g", 2, 64), await run("h", 4, 128)];
    const r = staged("--json", "plan", "fit", ...files, "--law", "chinchilla", "--out", at("fit2.json"));
    expect(r.status).toBe(0);
    expect((JSON.parse(r.stdout) as { warnings: string[] }).warnings.some((w) => /only 2 model sizes/.test(w))).toBe(true);
    expect(r.stderr).toMatch(/staged: warning: only 2 model sizes/);
  }, 30_000);

  it("refuses to overwrite an input, and rejects bad input", async () => {
    const file = await run("e", 2, 64);
    const before = await readFile(file, "utf8");
    const r = staged("plan", "fit", file, await run("f", 4, 64), "--law", "kaplan", "--out", file);
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/refusing to overwrite an input/);
    expect(await readFile(file, "utf8")).toBe(before);
    const one = staged("plan", "fit", file, "--law", "kaplan", "--out", at("one.json"));
    expect(one.stderr).toMatch(/at least 2 model sizes/);
    expect(staged("plan", "fit", file, "--law", "gpt", "--out", at("x.json")).stderr).toMatch(/--law must be kaplan or chinchilla/);
    expect(staged("plan", "fit", at("missing/metrics.jsonl"), file, "--law", "kaplan", "--out", at("x.json")).stderr).toMatch(/cannot read/);
    // The plot of a plan never replaces the fit it reads.
    await writeFile(at("fit2.json"), await readFile(at("fit.json"), "utf8"));
    const p = staged(
      "plan",
      "--law",
      at("fit2.json"),
      "--target-params",
      "1e7",
      "--grow",
      "depth",
      "--steps",
      "100,1000000,100",
      "--plot",
      at("fit2.json"),
    );
    expect(p.status).toBe(1);
    expect(p.stderr).toMatch(/refusing to overwrite an input/);
    expect(JSON.parse(await readFile(at("fit2.json"), "utf8")).format).toBe("staged-scaling-fit");
  }, 60_000);
});

describe("staged plan check", () => {
  const steps = (last: number) => Array.from({ length: (last - 4000) / 500 + 1 }, (_, i) => 4000 + 500 * i);
  /** A run directory whose validation curve is the Kaplan law's simulated curve for its size, up to `lastStep`. */
  async function kaplanRun(name: string, lastStep: number): Promise<string> {
    const dir = at(name);
    await mkdir(dir, { recursive: true });
    await writeFile(
      join(dir, "config.json"),
      JSON.stringify({ model_type: "gpt2", n_layer: 4, n_embd: 512, n_head: 8, vocab_size: 256, n_positions: 128 }),
    );
    const points = kaplan.curve(4 * 12 * 512 * 512, steps(lastStep));
    await writeFile(
      join(dir, "metrics.jsonl"),
      points.map((p) => JSON.stringify({ step: p.step, tokens: p.step * 1e4, flops: p.compute, loss: p.loss, valLoss: p.loss })).join("\n") + "\n",
    );
    return dir;
  }

  it("says when to grow and where the grown model continues, as the online detector does", async () => {
    const dir = await kaplanRun("kaplan-run", 90000);
    const r = json("plan", "check", dir, "--grow", "width");
    const detector = new OnlineGrowthDetector({ threshold: THRESHOLDS.width, constantOp: r.constantOp as number });
    const points = kaplan.curve(4 * 12 * 512 * 512, steps(90000));
    let expected = null;
    for (const p of points) expected ??= detector.push(p);
    expect(expected).not.toBeNull();
    expect(r).toMatchObject({
      grow: true,
      operator: "width",
      growAtStep: expected!.growAtStep,
      thresholdStep: expected!.point.step,
      continueAtStep: Math.round(expected!.growAtStep / (r.constantOp as number)),
    });
    expect(r.constantOp).toBeCloseTo(2.718, 2);
    expect(json("plan", "check", dir, "--grow", "width", "--constant-op", "2").continueAtStep).toBe(Math.round(expected!.growAtStep / 2));
  });

  it("says not yet early in the run, and names a missing metrics file", async () => {
    const dir = await kaplanRun("early-run", 6000);
    expect(json("plan", "check", dir, "--grow", "width")).toMatchObject({ grow: false, lastStep: 6000 });
    const r = staged("plan", "check", at("nowhere"), "--grow", "width");
    expect(r.status).toBe(1);
    expect(r.stderr).toMatch(/nowhere\/metrics.jsonl: cannot read the metrics \(no such file\)/);
  });
});

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { fitChinchilla, fitKaplan, fitLossCeiling, lawFromFit, type LearningCurve } from "./fit.js";
import { chinchillaLaw, kaplanLaw } from "./laws.js";
import { curveFromMetrics, parseCurveArg, parseMetrics, paramsFromConfig, readLearningCurve } from "./metrics.js";
import { constantOp } from "./plan.js";

function gauss(seed: number): () => number {
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(u())) * Math.cos(2 * Math.PI * u());
}

describe("fitted laws", () => {
  it("recovers Chinchilla-form constants from noisy synthetic curves", () => {
    const truth = { E: 1.8, A: 300, alpha: 0.32, B: 500, beta: 0.3 };
    const law = chinchillaLaw(truth, 65536);
    const noise = gauss(7);
    const curves: LearningCurve[] = [1e6, 4e6, 1.6e7, 6.4e7, 2.56e8].map((n) => ({
      params: n,
      points: law
        .curve(
          n,
          Array.from({ length: 40 }, (_, i) => Math.round(200 * 1.15 ** i)),
        )
        .map((p) => ({ step: p.step, tokens: p.tokens, loss: p.loss * (1 + 0.002 * noise()) })),
    }));
    const fit = fitChinchilla(curves);
    expect(fit.form).toBe("chinchilla");
    expect(fit.constants.E).toBeCloseTo(truth.E, 1);
    expect(fit.constants.alpha).toBeCloseTo(truth.alpha, 1);
    expect(fit.constants.beta).toBeCloseTo(truth.beta, 1);
    expect(Math.abs(Math.log(fit.constants.A! / truth.A))).toBeLessThan(0.5);
    expect(Math.abs(Math.log(fit.constants.B! / truth.B))).toBeLessThan(0.5);
    expect(fit.rmse).toBeLessThan(0.02);
    expect(fit.residuals).toHaveLength(200);
    expect(fit.batchTokens).toBe(65536);
    // the fitted law predicts held-out points
    const fitted = lawFromFit(fit);
    expect(fitted.name).toBe("fit:chinchilla");
    expect(fitted.lossAtConvergence(1e9)).toBeCloseTo(law.lossAtConvergence(1e9), 1);
    // five sizes, small noise: well determined, and the true values lie within a few standard errors
    expect(fit.warnings).toEqual([]);
    const p = Object.fromEntries(fit.parameters!.map((q) => [q.name, q]));
    expect(p.E!.atBound).toBe(false);
    expect(Math.abs(p.E!.value - truth.E)).toBeLessThan(6 * p.E!.stdError + 1e-3);
    expect(p.beta!.stdError).toBeGreaterThan(0);
    // the loss range every size was fitted over starts at the lowest of the sizes' highest losses
    const highest = (n: number) => Math.max(...fit.residuals.filter((r) => r.params === n).map((r) => r.loss));
    expect(fitLossCeiling(fit)).toBe(Math.min(...[1e6, 4e6, 1.6e7, 6.4e7, 2.56e8].map(highest)));
    expect(fitLossCeiling({ ...fit, residuals: [] })).toBeNull();
  });

  it("says when a fit is ill-determined: two sizes, or a parameter on its bound", () => {
    const law = chinchillaLaw({ E: 1.8, A: 300, alpha: 0.32, B: 500, beta: 0.3 }, 65536);
    const two: LearningCurve[] = [1e6, 4e6].map((n) => ({
      params: n,
      points: law.curve(
        n,
        Array.from({ length: 30 }, (_, i) => Math.round(200 * 1.15 ** i)),
      ),
    }));
    const fit = fitChinchilla(two);
    expect(fit.warnings!.some((w) => /only 2 model sizes/.test(w))).toBe(true);
    // Curves that keep falling as a pure power law have no floor: E is pushed onto its bound 0.
    const pure: LearningCurve[] = [1e6, 4e6, 1.6e7].map((n) => ({
      params: n,
      points: Array.from({ length: 30 }, (_, i) => {
        const step = Math.round(200 * 1.15 ** i);
        return { step, tokens: step * 65536, loss: 30 * (step * 65536) ** -0.2 + 40 * n ** -0.3 };
      }),
    }));
    const f2 = fitChinchilla(pure);
    const e = f2.parameters!.find((q) => q.name === "E")!;
    expect(e.atBound).toBe(true);
    expect(f2.warnings!.some((w) => /^E ended on its bound/.test(w))).toBe(true);
  });

  it("recovers Kaplan-form constants from noisy synthetic curves", () => {
    const truth = { Nc: 5e13, alphaN: 0.08, Sc: 3e3, alphaS: 0.7 };
    const law = kaplanLaw(truth);
    const noise = gauss(11);
    const curves: LearningCurve[] = [1e6, 1e7, 1e8, 1e9].map((n) => ({
      params: n,
      points: Array.from({ length: 40 }, (_, i) => Math.round(500 * 1.12 ** i)).map((s) => ({
        step: s,
        tokens: s * 5e5,
        loss: law.loss(n, s) * (1 + 0.002 * noise()),
      })),
    }));
    const fit = fitKaplan(curves);
    expect(fit.constants.alphaN).toBeCloseTo(truth.alphaN, 2);
    expect(fit.constants.alphaS).toBeCloseTo(truth.alphaS, 1);
    expect(Math.abs(Math.log(fit.constants.Nc! / truth.Nc))).toBeLessThan(1);
    expect(Math.abs(Math.log(fit.constants.Sc! / truth.Sc))).toBeLessThan(0.3);
    expect(fit.constants.Bstar).toBe(2.1e8);
    expect(fit.rmse).toBeLessThan(0.02);
    // A fit plans like the built-in law.
    const fitted = lawFromFit(JSON.parse(JSON.stringify(fit)));
    expect(constantOp(fitted, 4e8, "width")).toBeGreaterThan(1);
  });

  it("rejects too few points and bad fit files", () => {
    expect(() => fitChinchilla([{ params: 1e6, points: [{ step: 1, tokens: 1, loss: 3 }] }])).toThrow(/at least 6 points/);
    expect(() => lawFromFit({ format: "x" } as never, "f.json")).toThrow(/f.json: not a scaling-law fit/);
    expect(() => lawFromFit({ format: "staged-scaling-fit", form: "kaplan", constants: { Nc: 1 } } as never, "f.json")).toThrow(
      /f.json: constant alphaN is missing/,
    );
  });
});

describe("metrics.jsonl", () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it("parses the trainer's lines and picks the validation loss", () => {
    const text = [
      '{"step":1,"tokens":100,"flops":1000,"loss":5,"lr":0.001}',
      '{"step":2,"tokens":200,"flops":2000,"loss":4.5,"valLoss":4.7,"lr":0.001}',
      "",
      '{"step":3,"tokens":300,"flops":3000,"loss":null,"lr":0.001}',
      '{"step":4,"tokens":400,"flops":4000,"loss":4.1,"valLoss":4.2,"lr":0.001}',
    ].join("\n");
    const lines = parseMetrics(text, "m.jsonl");
    expect(lines).toHaveLength(4);
    expect(curveFromMetrics(lines)).toEqual([
      { step: 2, tokens: 200, compute: 2000, loss: 4.7 },
      { step: 4, tokens: 400, compute: 4000, loss: 4.2 },
    ]);
    expect(curveFromMetrics(lines, { field: "loss" }).map((p) => p.step)).toEqual([1, 2, 4]);
    // After a growth that continues at step 3, only the grown model's lines make its curve.
    const grown = parseMetrics(text + '\n{"step":4,"stage":1,"tokens":500,"flops":9000,"loss":4.0,"valLoss":4.15,"lr":0.001}\n', "m.jsonl");
    expect(curveFromMetrics(grown)).toEqual([{ step: 4, tokens: 500, compute: 9000, loss: 4.15 }]);
    expect(() => parseMetrics('{"step":1}\n', "m.jsonl")).toThrow(/^m.jsonl:1: tokens expected number, received undefined \(a line is/);
    expect(() => parseMetrics("nope\n", "m.jsonl")).toThrow(/m.jsonl:1: not JSON/);
  });

  it("reads the model size from the config.json beside the file, or estimates it", async () => {
    const dir = await mkdtemp(join(tmpdir(), "staged-metrics-"));
    dirs.push(dir);
    await writeFile(join(dir, "metrics.jsonl"), '{"step":10,"tokens":1000,"flops":6e9,"loss":4,"lr":0.1}\n');
    const est = await readLearningCurve(join(dir, "metrics.jsonl"));
    expect(est.estimated).toBe(true);
    expect(est.params).toBeCloseTo(1e6, 6);
    await writeFile(join(dir, "config.json"), JSON.stringify({ model_type: "gpt2", n_layer: 2, n_embd: 64, n_head: 4, n_inner: null }));
    const cur = await readLearningCurve(join(dir, "metrics.jsonl"));
    expect(cur.estimated).toBe(false);
    expect(cur.params).toBe(2 * (4 * 64 * 64 + 2 * 64 * 256));
    // Llama: q and o 64·64, k and v 64·(2 heads × 16), a gated MLP of three 64·96 matrices.
    await writeFile(
      join(dir, "config.json"),
      JSON.stringify({
        model_type: "llama",
        num_hidden_layers: 2,
        hidden_size: 64,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        intermediate_size: 96,
      }),
    );
    expect((await readLearningCurve(join(dir, "metrics.jsonl"))).params).toBe(2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 96));
    expect((await readLearningCurve(join(dir, "metrics.jsonl"), { params: 5e5 })).params).toBe(5e5);
    await expect(readLearningCurve(join(dir, "missing.jsonl"))).rejects.toThrow(/missing.jsonl: cannot read/);
    expect(paramsFromConfig({})).toBeNull();
    expect(parseCurveArg("a/metrics.jsonl=85e6")).toEqual({ path: "a/metrics.jsonl", params: 85e6 });
    expect(parseCurveArg("a/metrics.jsonl")).toEqual({ path: "a/metrics.jsonl" });
  });
});

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createDefaultRegistry, createRegistry, type LrSchedulePlugin, type LrScheduleSpec, type Registry } from "@staged/core";
import { LR_SCHEDULE_KINDS, createLrSchedule, lrScheduleKinds } from "./lr.js";
import { registerScheduler, registeredLaw } from "./registry.js";
import { chinchilla, chinchillaLaw, isChinchillaLaw, isScalingLaw, kaplan } from "./laws.js";
import { lawNames, resolveLaw } from "./resolve-law.js";
import { fitLawToMetrics } from "./fit-files.js";
import { lawFile } from "./fit.js";
import { decideOnCurve, OnlineGrowthDetector } from "./online.js";

const spec = (kind: string, extra: Partial<LrScheduleSpec> = {}): LrScheduleSpec => ({
  kind,
  peakLr: 1e-3,
  warmupSteps: 0,
  totalSteps: 1000,
  restarts: [],
  ...extra,
});

/** Research code's own schedule: the peak halved every `every` steps (no warmup of its own). */
const halving: LrSchedulePlugin = {
  name: "halving",
  create: (s) => {
    const every = typeof s.every === "number" ? s.every : 100;
    return (step) => s.peakLr * 0.5 ** Math.floor(step / every);
  },
};

describe("LR schedules through the registry", () => {
  it("a registered kind is the registry's; restarts apply to it as to every kind; an unknown kind lists the registered ones", () => {
    const registry = registerScheduler(createDefaultRegistry()).register("lrSchedule", halving);
    const f = createLrSchedule(spec("halving", { every: 10 }), registry);
    expect([f(0), f(9), f(10), f(25)]).toEqual([1e-3, 1e-3, 5e-4, 2.5e-4]);
    // A re-warmup after a growth ramps towards the custom schedule's value, as for the built-in kinds.
    const g = createLrSchedule(spec("halving", { every: 10, restarts: [{ step: 20, warmupSteps: 4 }] }), registry);
    expect(g(22)).toBeCloseTo(0.5 * 2.5e-4, 15);
    expect(g(24)).toBe(f(24));
    // The fields every kind shares are checked before the plugin sees the spec.
    expect(() => createLrSchedule({ ...spec("halving"), restarts: undefined as never }, registry)).toThrow(/restarts must be an array/);
    expect(() => createLrSchedule(spec("halving", { peakLr: -1 }), registry)).toThrow(/peakLr must be/);
    expect(lrScheduleKinds(registry)).toEqual([...LR_SCHEDULE_KINDS, "halving"]);
    expect(() => createLrSchedule(spec("step"), registry)).toThrow(
      'unknown LR schedule kind "step" (kinds: constant, linear, cosine, wsd, restart-linear, halving)',
    );
    // Without the registry, the kind is unknown; the built-in kinds are known with any registry.
    expect(() => createLrSchedule(spec("halving"))).toThrow(/unknown LR schedule kind "halving"/);
    expect(createLrSchedule(spec("linear"), createRegistry())(500)).toBe(createLrSchedule(spec("linear"))(500));
    expect(createLrSchedule(spec("wsd", { restarts: [{ step: 100, warmupSteps: 10 }] }), registry)(105)).toBe(
      createLrSchedule(spec("wsd", { restarts: [{ step: 100, warmupSteps: 10 }] }))(105),
    );
  });
});

describe("laws through the registry", () => {
  let dir: string;
  let registry: Registry;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "staged-laws-"));
    registry = registerScheduler(createDefaultRegistry()).register("scheduler", chinchillaLaw({ E: 1.5 }, 4096, "mine"));
  });
  afterAll(() => rm(dir, { recursive: true, force: true }));

  it("tells laws apart from other values", () => {
    expect([isScalingLaw(kaplan), isScalingLaw(chinchilla), isScalingLaw({ name: "x" }), isScalingLaw(null)]).toEqual([true, true, false, false]);
    expect([isChinchillaLaw(kaplan), isChinchillaLaw(chinchilla), isChinchillaLaw({ ...chinchilla, batchTokens: "8" })]).toEqual([
      false,
      true,
      false,
    ]);
    expect(() => registeredLaw(createRegistry().register("scheduler", { name: "odd" }), "odd")).toThrow(
      'the scheduler plugin "odd" is not a scaling law',
    );
  });

  it("resolves a registered law (its tokens per step replaced when asked) or a fit file; an unreadable name says what it is not", async () => {
    expect(lawNames(registry)).toEqual(["kaplan", "chinchilla", "mine"]);
    expect((await resolveLaw("kaplan", registry)).law).toBe(kaplan);
    const mine = (await resolveLaw("mine", registry, 512)).law;
    expect(mine).toMatchObject({ name: "mine", form: "chinchilla", batchTokens: 512, constants: { E: 1.5 } });
    expect((await resolveLaw("kaplan", registry, 512)).law).toBe(kaplan); // Kaplan's law counts no tokens per step
    const fit = join(dir, "fit.json");
    await writeFile(fit, JSON.stringify(lawFile("chinchilla", { E: 1.7, A: 400, B: 400, alpha: 0.3, beta: 0.3 }, 1024)));
    const r = await resolveLaw(fit, registry, 2048);
    expect(r.file).toBe(fit);
    expect(r.law).toMatchObject({ form: "chinchilla", batchTokens: 2048 });
    await expect(resolveLaw(join(dir, "none.json"), registry)).rejects.toThrow(
      /none.json: not kaplan or chinchilla or mine, and the file cannot be read \(ENOENT\)/,
    );
    await writeFile(join(dir, "bad.json"), "{");
    await expect(resolveLaw(join(dir, "bad.json"), registry)).rejects.toThrow(/bad.json: not JSON/);
  });

  it("fits a law to metrics files only with curves of 2 model sizes", async () => {
    const file = join(dir, "metrics.jsonl");
    await writeFile(file, '{"step":10,"tokens":1000,"flops":6e9,"loss":4,"lr":0.1}\n');
    await expect(fitLawToMetrics("kaplan", [`${file}=1e6`, `${file}=1e6`])).rejects.toThrow(
      "fitting a law needs learning curves of at least 2 model sizes",
    );
  });
});

describe("decideOnCurve", () => {
  it("is the online detector fed a curve up to its decision, and finished only when told", () => {
    const points = Array.from({ length: 60 }, (_, i) => {
      const step = 100 * (i + 1);
      return { step, compute: step * 1e9, loss: kaplan.loss(1e8, step * 40) };
    });
    const detector = new OnlineGrowthDetector({ threshold: -0.0475, constantOp: 2 });
    let expected = null;
    for (const p of points) expected ??= detector.push(p);
    expect(expected).not.toBeNull();
    expect(decideOnCurve(points, { threshold: -0.0475, constantOp: 2 })).toEqual(expected);
    const early = points.slice(0, 8);
    expect(decideOnCurve(early, { threshold: -0.0475 })).toBeNull();
    const done = new OnlineGrowthDetector({ threshold: -0.0475 });
    for (const p of early) done.push(p);
    expect(decideOnCurve(early, { threshold: -0.0475, finished: true })).toEqual(done.finish());
  });
});

import { describe, expect, it } from "vitest";
import { createDefaultRegistry, type LrScheduleSpec } from "@staged/core";
import { LR_SCHEDULE_KINDS, createLrSchedule, hasParamLrScales, paramLrScale, withCooldown, withRestart } from "./lr.js";
import { registerScheduler } from "./registry.js";

const spec = (kind: string, extra: Partial<LrScheduleSpec> = {}): LrScheduleSpec => ({
  kind,
  peakLr: 1e-3,
  warmupSteps: 100,
  totalSteps: 1000,
  restarts: [],
  ...extra,
});

describe("createLrSchedule", () => {
  it("constant: linear warmup then the peak", () => {
    const f = createLrSchedule(spec("constant"));
    expect(f(0)).toBe(0);
    expect(f(50)).toBeCloseTo(5e-4, 15);
    expect(f(100)).toBe(1e-3);
    expect(f(5000)).toBe(1e-3);
    expect(createLrSchedule(spec("constant", { warmupSteps: 0 }))(0)).toBe(1e-3);
  });

  it("linear: HF's linear warmup + linear decay, to minLr", () => {
    const f = createLrSchedule(spec("linear"));
    expect(f(0)).toBe(0);
    expect(f(25)).toBeCloseTo(2.5e-4, 15);
    expect(f(100)).toBeCloseTo(1e-3, 15);
    expect(f(550)).toBeCloseTo((1e-3 * (1000 - 550)) / 900, 15);
    expect(f(1000)).toBe(0);
    expect(f(2000)).toBe(0);
    const g = createLrSchedule(spec("linear", { minLr: 1e-4 }));
    expect(g(550)).toBeCloseTo(1e-4 + 9e-4 * (450 / 900), 15);
    expect(g(1000)).toBeCloseTo(1e-4, 15);
    expect(g(3000)).toBeCloseTo(1e-4, 15);
  });

  it("cosine: half a cosine from peak to minLr", () => {
    const f = createLrSchedule(spec("cosine", { minLr: 1e-4 }));
    expect(f(50)).toBeCloseTo(5e-4, 15);
    expect(f(100)).toBeCloseTo(1e-3, 15);
    expect(f(550)).toBeCloseTo(1e-4 + 9e-4 * 0.5, 15);
    expect(f(325)).toBeCloseTo(1e-4 + 9e-4 * 0.5 * (1 + Math.cos(Math.PI * 0.25)), 15);
    expect(f(1000)).toBeCloseTo(1e-4, 15);
    expect(f(1500)).toBeCloseTo(1e-4, 15);
  });

  it("wsd: warmup, stable, then decay over the last decayFraction of the steps", () => {
    const f = createLrSchedule(spec("wsd"));
    expect(f(50)).toBeCloseTo(5e-4, 15);
    expect(f(899)).toBe(1e-3);
    expect(f(900)).toBe(1e-3);
    expect(f(950)).toBeCloseTo(5e-4, 15);
    expect(f(1000)).toBe(0);
    const g = createLrSchedule(spec("wsd", { decayFraction: 0.5, decayShape: "cosine", minLr: 2e-4 }));
    expect(g(499)).toBe(1e-3);
    expect(g(750)).toBeCloseTo(2e-4 + 8e-4 * 0.5, 15);
    const h = createLrSchedule(spec("wsd", { decayFraction: 0.5, decayShape: "sqrt" }));
    expect(h(625)).toBeCloseTo(1e-3 * (1 - Math.sqrt(0.25)), 15);
  });

  it("restart-linear reproduces the seed's get_restart_linear_schedule_with_warmup", () => {
    // The seed's lambda, transcribed with its own formulas.
    const seed = (s: number, w: number, T: number, r: number, rw: number): number => {
      if (r !== 0 && rw !== 0 && s < r + rw && s >= r) {
        if (s < w) return (((s - r) / Math.max(1, rw)) * (r + rw)) / Math.max(1, w);
        return (((s - r) / Math.max(1, rw)) * (T - r - rw)) / Math.max(1, T - w);
      }
      if (s < w) return s / Math.max(1, w);
      return Math.max(0, (T - s) / Math.max(1, T - w));
    };
    const cases = [
      { w: 3000, T: 100000, r: 40000, rw: 500 },
      { w: 3000, T: 100000, r: 1000, rw: 500 }, // a restart inside the warmup
      { w: 0, T: 50, r: 10, rw: 5 },
      { w: 100, T: 1000, r: 0, rw: 50 }, // restart_steps = 0 disables the restart, as in the seed
    ];
    for (const { w, T, r, rw } of cases) {
      const f = createLrSchedule(
        spec("restart-linear", {
          peakLr: 2.1e-3,
          warmupSteps: w,
          totalSteps: T,
          restartSteps: r,
          restartWarmupSteps: rw,
        }),
      );
      for (const s of [
        0, 1, 5, 10, 12, 14, 15, 50, 999, 1000, 1200, 1499, 1500, 2999, 3000, 39999, 40000, 40250, 40499, 40500, 99999, 100000, 120000,
      ]) {
        expect(f(s)).toBeCloseTo(2.1e-3 * seed(s, w, T, r, rw), 14);
      }
    }
    // Hand-computed: in the restart window after the warmup, (s−r)/rw · (T−r−rw)/(T−w).
    const f = createLrSchedule(
      spec("restart-linear", { peakLr: 1, warmupSteps: 3000, totalSteps: 100000, restartSteps: 40000, restartWarmupSteps: 500 }),
    );
    expect(f(40250)).toBeCloseTo((0.5 * 59500) / 97000, 14);
    expect(f(40000)).toBe(0);
    expect(f(40500)).toBeCloseTo(59500 / 97000, 14);
  });

  it("restarts: re-warmup towards the schedule's value at the end of the re-warmup, then continue", () => {
    for (const kind of ["constant", "linear", "cosine", "wsd"]) {
      const base = createLrSchedule(spec(kind));
      const s2 = withRestart(spec(kind), 400, 50);
      const f = createLrSchedule(s2);
      expect(f(399)).toBe(base(399));
      expect(f(400)).toBe(0);
      expect(f(425)).toBeCloseTo(0.5 * base(450), 15);
      expect(f(450)).toBe(base(450));
      expect(f(700)).toBe(base(700));
    }
    // The linear schedule with a restart equals the seed's restart schedule.
    const seedSpec = spec("restart-linear", { restartSteps: 400, restartWarmupSteps: 50 });
    const a = createLrSchedule(withRestart(spec("linear"), 400, 50));
    const b = createLrSchedule(seedSpec);
    for (let s = 0; s <= 1100; s += 7) expect(a(s)).toBeCloseTo(b(s), 15);
    // Two restarts, applied in step order; a zero-length re-warmup changes nothing.
    const two = createLrSchedule(withRestart(withRestart(spec("cosine"), 600, 100), 300, 20));
    expect(two(310)).toBeCloseTo(0.5 * createLrSchedule(spec("cosine"))(320), 15);
    expect(two(650)).toBeCloseTo(0.5 * createLrSchedule(spec("cosine"))(700), 15);
    expect(createLrSchedule(withRestart(spec("linear"), 300, 0))(300)).toBe(createLrSchedule(spec("linear"))(300));
  });

  it("withRestart does not modify its input and validates", () => {
    const s = spec("linear");
    const t = withRestart(s, 10, 5);
    expect(s.restarts).toEqual([]);
    expect(t.restarts).toEqual([{ step: 10, warmupSteps: 5 }]);
    expect(JSON.parse(JSON.stringify(t))).toEqual(t);
    expect(() => withRestart(s, -1, 5)).toThrow(/step must be a non-negative integer/);
    expect(() => withRestart(s, 1, 0.5)).toThrow(/warmupSteps/);
  });

  it("rejects invalid specs with clear errors", () => {
    expect(() => createLrSchedule(spec("step"))).toThrow(/unknown LR schedule kind "step" \(kinds: constant, linear, cosine, wsd, restart-linear\)/);
    expect(() => createLrSchedule(spec("linear", { peakLr: -1 }))).toThrow(/peakLr must be/);
    expect(() => createLrSchedule(spec("linear", { warmupSteps: 2000 }))).toThrow(/warmupSteps \(2000\) exceeds totalSteps/);
    expect(() => createLrSchedule(spec("linear", { minLr: 1 }))).toThrow(/minLr .* exceeds peakLr/);
    expect(() => createLrSchedule(spec("cosine", { totalSteps: 0, warmupSteps: 0 }))).toThrow(/totalSteps must be ≥ 1/);
    expect(() => createLrSchedule(spec("wsd", { decayFraction: 2 }))).toThrow(/decayFraction/);
    expect(() => createLrSchedule(spec("wsd", { decayShape: "exp" }))).toThrow(/decayShape/);
    expect(() => createLrSchedule(spec("wsd", { decayFraction: 0.95 }))).toThrow(/overlaps the warmup/);
    expect(() => createLrSchedule(spec("restart-linear", { minLr: 1e-5 }))).toThrow(/minLr is not supported/);
    expect(() => createLrSchedule({ ...spec("linear"), restarts: undefined as never })).toThrow(/restarts must be an array/);
    expect(() => createLrSchedule(spec("linear", { restarts: [{ step: -3, warmupSteps: 1 }] }))).toThrow(/restarts\[0\]\.step/);
    expect(() => createLrSchedule(spec("linear"))(-1)).toThrow(/step must be a finite number/);
  });

  it("registers every kind as an lrSchedule plugin, and the laws as scheduler plugins", () => {
    const reg = registerScheduler(createDefaultRegistry());
    expect(reg.list("lrSchedule")).toEqual([...LR_SCHEDULE_KINDS].sort());
    expect(reg.list("scheduler")).toEqual(["chinchilla", "kaplan"]);
    const f = (reg.get("lrSchedule", "linear") as unknown as { create(s: LrScheduleSpec): (n: number) => number }).create(spec("linear"));
    expect(f(550)).toBeCloseTo((1e-3 * 450) / 900, 15);
    expect(() => (reg.get("lrSchedule", "cosine") as unknown as { create(s: LrScheduleSpec): unknown }).create(spec("linear"))).toThrow(
      /got a spec of kind "linear"/,
    );
  });
});

describe("paramLrScale", () => {
  it("1 everywhere without factors; a factor applies from its step to its roles, ramping back to 1; factors multiply", () => {
    expect(paramLrScale(spec("constant"))(500, "attn.qkv.weight")).toBe(1);
    expect(hasParamLrScales(spec("constant"))).toBe(false);
    const s = spec("constant", {
      paramScales: [
        { step: 100, scale: 0.5, rampSteps: 200, roles: ["attn.qkv.weight", "mlp.in.weight"] },
        { step: 300, scale: 0.25, rampSteps: 0, roles: null },
      ],
    });
    expect(hasParamLrScales(s)).toBe(true);
    const f = paramLrScale(s);
    expect(f(99, "attn.qkv.weight")).toBe(1);
    expect(f(100, "attn.qkv.weight")).toBe(0.5);
    expect(f(200, "mlp.in.weight")).toBeCloseTo(0.75, 15);
    expect(f(200, "embed.tokens.weight")).toBe(1); // not a named role
    expect(f(299, "attn.qkv.weight")).toBeCloseTo(0.5 + (0.5 * 199) / 200, 15);
    // From 300: the first is back at 1, the second (every role, no ramp) stays at 0.25.
    expect(f(300, "attn.qkv.weight")).toBe(0.25);
    expect(f(10_000, "embed.tokens.weight")).toBe(0.25);
    // A factor of 1 changes nothing.
    expect(hasParamLrScales(spec("constant", { paramScales: [{ step: 0, scale: 1, rampSteps: 0, roles: null }] }))).toBe(false);
  });

  it("is validated with the schedule, with errors naming the entry", () => {
    const bad = (p: unknown) => spec("constant", { paramScales: [p] as never });
    expect(() => createLrSchedule(bad({ step: 1, scale: 0, rampSteps: 0, roles: null }))).toThrow(
      /paramScales\[0\]\.scale must be a number > 0, got 0/,
    );
    expect(() => createLrSchedule(bad({ step: -1, scale: 0.5, rampSteps: 0, roles: null }))).toThrow(/paramScales\[0\]\.step/);
    expect(() => createLrSchedule(bad({ step: 1, scale: 0.5, rampSteps: 1.5, roles: null }))).toThrow(/paramScales\[0\]\.rampSteps/);
    expect(() => paramLrScale(bad({ step: 1, scale: 0.5, rampSteps: 0, roles: "all" }))).toThrow(/paramScales\[0\]\.roles must be null/);
    expect(() => createLrSchedule(spec("constant", { paramScales: {} as never }))).toThrow(/paramScales must be an array/);
  });
});

describe("withCooldown", () => {
  it("decays linearly from the schedule's LR to 0 over the cooldown, keeping the rest; an unfinished re-warmup is dropped", () => {
    const base = spec("constant", {
      restarts: [
        { step: 200, warmupSteps: 50 },
        { step: 980, warmupSteps: 100 },
      ],
      paramScales: [{ step: 200, scale: 0.5, rampSteps: 0, roles: null }],
    });
    const c = withCooldown(base, 1000, 100);
    expect(c).toMatchObject({ kind: "wsd", totalSteps: 1100, minLr: 0, restarts: [{ step: 200, warmupSteps: 50 }], paramScales: base.paramScales });
    const f = createLrSchedule(c);
    expect(f(999)).toBe(1e-3);
    expect(f(1000)).toBeCloseTo(1e-3, 15);
    expect(f(1050)).toBeCloseTo(5e-4, 15);
    expect(f(1100)).toBe(0);
    expect(f(225)).toBeCloseTo(createLrSchedule(base)(225), 15); // the finished re-warmup is kept
    expect(base.kind).toBe("constant");
    expect(() => withCooldown(base, 1000, 0)).toThrow("withCooldown: steps must be an integer ≥ 1, got 0");
  });
});

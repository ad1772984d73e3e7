import { describe, expect, it } from "vitest";
import { createEngine, type Engine } from "./engine.js";
import { closeness, loadFixture, type Fixture } from "./testing/fixture.js";
import { FIXTURE_THREADS } from "./testing/graph-checks.js";

/**
 * Three AdamW steps (clip_grad_norm_ + torch.optim.AdamW, foreach=False) against the PyTorch fixture.
 * Tolerances (float32 engine vs float64 reference): losses rtol 1e-5, gradient norms rtol 1e-5,
 * params and moments |Δ| ≤ atol + 1e-4·|expected| with atol 5e-6 (params: 0.05% of one lr·1 step), 1e-6 (exp_avg)
 * and 1e-9 (exp_avg_sq).
 * eps is 1e-4 in the fixture: Adam divides by √v + eps, so an entry with a near-zero gradient (the k part
 * of c_attn.bias has a mathematically zero one: softmax ignores a per-row shift of the scores) turns
 * float32 rounding noise δg (~4e-9 here) into a step of about lr·δg/eps; with eps = 1e-4 that stays ~2e-6.
 */
const VARIANTS = ["gpt2-tiny", "gpt2-tiny-untied"];

const weightsOf = (fx: Fixture, prefix: string, names: readonly string[]) => new Map(names.map((n) => [n, fx.f32(`${prefix}${n}`)]));
const paramNames = (fx: Fixture) => [...fx.tensors.keys()].filter((k) => k.startsWith("param.")).map((k) => k.slice(6));

async function engineFor(fx: Fixture, microBatch?: number, threads = 1): Promise<Engine> {
  return createEngine("gpt2", fx.config, weightsOf(fx, "param.", paramNames(fx)), undefined, {
    batch: fx.B,
    context: fx.T,
    threads,
    betas: fx.hp.betas,
    eps: fx.hp.eps,
    weightDecay: fx.hp.weight_decay,
    clip: fx.hp.clip,
    ...(microBatch ? { microBatch } : {}),
  });
}

function expectClose(actual: Map<string, Float32Array>, fx: Fixture, prefix: string, rtol: number, atol: number) {
  for (const [n, a] of actual) {
    const c = closeness(a, fx.f32(`${prefix}${n}`), rtol, atol);
    expect(c.worst, `${prefix}${n}: ${JSON.stringify(c)}`).toBeLessThanOrEqual(0);
  }
}

describe.each(VARIANTS)("training step vs PyTorch fixture %s", (variant) => {
  const fx = loadFixture(variant);
  const losses = JSON.parse(fx.meta.losses!) as number[];
  const norms = JSON.parse(fx.meta.grad_norms!) as number[];

  it.each(FIXTURE_THREADS)("3 AdamW steps with clipping: losses, gradient norms, params and moments (%i threads)", async (threads) => {
    const e = await engineFor(fx, undefined, threads);
    for (let s = 0; s < 3; s++) {
      const r = await e.step(fx.ids(s), fx.hp.lrs[s]!, s + 1);
      expect(r.loss).toBeCloseTo(losses[s]!, 4);
      expect(Math.abs(r.gradNorm - norms[s]!) / norms[s]!).toBeLessThan(1e-5);
    }
    expectClose(e.params(), fx, "step3.param.", 1e-4, 5e-6);
    const m = e.moments();
    expectClose(m.expAvg, fx, "step3.exp_avg.", 1e-4, 1e-6);
    expectClose(m.expAvgSq, fx, "step3.exp_avg_sq.", 1e-4, 1e-9);
    await e.release();
  });

  it("gradient accumulation over micro-batches equals the full batch", async () => {
    const full = await engineFor(fx);
    const acc = await engineFor(fx, 1);
    const g1 = await full.gradients(fx.ids(0));
    const g2 = await acc.gradients(fx.ids(0));
    expect(g2.loss).toBeCloseTo(g1.loss, 5);
    for (const [n, g] of g1.grads) {
      const c = closeness(g2.grads.get(n)!, g, 1e-4, 1e-6);
      expect(c.worst, `${n}: ${JSON.stringify(c)}`).toBeLessThanOrEqual(0);
    }
    for (let s = 0; s < 3; s++) {
      const a = await full.step(fx.ids(s), fx.hp.lrs[s]!, s + 1);
      const b = await acc.step(fx.ids(s), fx.hp.lrs[s]!, s + 1);
      expect(b.loss).toBeCloseTo(a.loss, 5);
      expect(b.gradNorm).toBeCloseTo(a.gradNorm, 5);
    }
    expectClose(acc.params(), fx, "step3.param.", 1e-4, 5e-6);
    expectClose(acc.moments().expAvgSq, fx, "step3.exp_avg_sq.", 1e-4, 1e-9);
    await full.release();
    await acc.release();
  });

  it("gradients() match the fixture and evalLoss equals the step's loss", async () => {
    const e = await engineFor(fx);
    const { loss, grads } = await e.gradients(fx.ids(0));
    expect(loss).toBeCloseTo(Number(fx.meta.loss), 5);
    expectClose(grads, fx, "grad.", 1e-4, 1e-6);
    const ev = await e.evalLoss(fx.ids(1));
    const st = await e.step(fx.ids(1), 0, 1);
    expect(ev).toBeCloseTo(st.loss, 6);
    // One row at a time through a lazily compiled eval graph of another batch size.
    const row = await e.evalLoss(fx.ids(1).subarray(0, fx.T));
    expect(Number.isFinite(row)).toBe(true);
    await e.release();
  });
});

describe("AdamW variants: one step against the update computed from the gradients", () => {
  const fx = loadFixture("gpt2-tiny");
  const names = paramNames(fx);
  const w = weightsOf(fx, "param.", names);
  const [b1, b2] = [0.9, 0.95],
    eps = 1e-6,
    wd = 0.1,
    lr = 1e-2;
  // First step from zero moments: m = (1−β1)g, v = (1−β2)g²; p ← p(1 − lr·s·wd) − lr·s · m̂ / (√v̂ + eps).
  const expected = (g: Float32Array, p: Float32Array, scale: number, decays: boolean, correct: boolean) =>
    p.map((x, i) => {
      const m = (1 - b1) * g[i]!,
        v = (1 - b2) * g[i]! * g[i]!;
      const mh = correct ? m / (1 - b1) : m,
        vh = correct ? v / (1 - b2) : v;
      return x * (decays ? 1 - lr * scale * wd : 1) - (lr * scale * mh) / (Math.sqrt(vh) + eps);
    });
  // Without dropout, so that the step's gradients are those gradients() computes.
  const config = { ...fx.config, resid_pdrop: 0, embd_pdrop: 0, attn_pdrop: 0 };
  const check = async (biasCorrection: boolean, scales: number[] | null) => {
    const e = await createEngine("gpt2", config, w, undefined, {
      batch: fx.B,
      context: fx.T,
      threads: 1,
      betas: [b1, b2],
      eps,
      weightDecay: wd,
      clip: null,
      biasCorrection,
      ...(scales ? { perParamLr: true } : {}),
    });
    const { grads } = await e.gradients(fx.ids(0));
    await e.step(fx.ids(0), lr, 1, scales ? { lrScales: scales } : {});
    e.paramNames.forEach((n, i) => {
      const decays = e.optimizer.decay.has(n);
      const c = closeness(e.params().get(n)!, expected(grads.get(n)!, w.get(n)!, scales ? scales[i]! : 1, decays, biasCorrection), 1e-5, 1e-7);
      expect(c.worst, `${n}: ${JSON.stringify(c)}`).toBeLessThanOrEqual(0);
    });
    await e.release();
  };
  it("bias correction on (PyTorch's) and off (the seed code's correct_bias=False)", async () => {
    await check(true, null);
    await check(false, null);
  });
  it("per-parameter LR factors: each parameter's step and decay at lr × its factor", async () => {
    await check(
      true,
      names.map((_, i) => [1, 0.5, 0.25, 0][i % 4]!),
    );
    await check(
      false,
      names.map((_, i) => 0.3 + i / names.length),
    );
  });
  it("refuses factors it was not compiled for, or of the wrong count", async () => {
    const plain = await createEngine("gpt2", fx.config, w, undefined, { batch: fx.B, context: fx.T, threads: 1 });
    await expect(plain.step(fx.ids(0), lr, 1, { lrScales: names.map(() => 1) })).rejects.toThrow("lrScales needs an engine created with perParamLr");
    const scaled = await createEngine("gpt2", fx.config, w, undefined, { batch: fx.B, context: fx.T, threads: 1, perParamLr: true });
    await expect(scaled.step(fx.ids(0), lr, 1, { lrScales: [1] })).rejects.toThrow(`lrScales has 1 factors for ${names.length} parameters`);
    await expect(scaled.step(fx.ids(0), lr, 1, { lrScales: names.map(() => Number.NaN) })).rejects.toThrow(
      /lrScales\[0\] \(transformer.wte.weight\) must be a finite number ≥ 0/,
    );
    await Promise.all([plain.release(), scaled.release()]);
  });
});

describe("engine", () => {
  const fx = loadFixture("gpt2-tiny");
  it("starts from given moments and does not write the caller's arrays", async () => {
    const names = paramNames(fx);
    const w = weightsOf(fx, "param.", names);
    const before = new Map([...w].map(([n, a]) => [n, Float32Array.from(a)]));
    const e = await createEngine(
      "gpt2",
      fx.config,
      w,
      { expAvg: weightsOf(fx, "step3.exp_avg.", names) },
      { batch: fx.B, context: fx.T, threads: 1 },
    );
    expect(e.moments().expAvg.get(names[0]!)).toEqual(fx.f32(`step3.exp_avg.${names[0]!}`));
    expect([...e.moments().expAvgSq.get(names[0]!)!].every((x) => x === 0)).toBe(true);
    await e.step(fx.ids(0), 1e-3, 1);
    for (const [n, a] of w) expect(a).toEqual(before.get(n));
    await e.release();
  });
  it("an eval-only engine evaluates like a training one and refuses to train", async () => {
    const w = weightsOf(fx, "param.", paramNames(fx));
    const full = await createEngine("gpt2", fx.config, w, undefined, { batch: fx.B, context: fx.T, threads: 1 });
    const evalOnly = await createEngine("gpt2", fx.config, w, undefined, { batch: fx.B, context: fx.T, threads: 1, evalOnly: true });
    expect(await evalOnly.evalLoss(fx.ids(0))).toBe(await full.evalLoss(fx.ids(0)));
    await expect(evalOnly.step(fx.ids(0), 1e-3, 1)).rejects.toThrow(/evalOnly/);
    await Promise.all([full.release(), evalOnly.release()]);
  });
  it("rejects bad input clearly", async () => {
    const names = paramNames(fx);
    const w = weightsOf(fx, "param.", names);
    await expect(createEngine("gpt2", fx.config, new Map(), undefined, { batch: 2, context: 8 })).rejects.toThrow(
      /missing parameter transformer.wte.weight/,
    );
    await expect(createEngine("gpt2", fx.config, w, undefined, { batch: 2, context: 8, microBatch: 3 })).rejects.toThrow(/must divide/);
    await expect(createEngine("gpt2", fx.config, w, undefined, { batch: 2, context: 64 })).rejects.toThrow(/exceeds/);
    await expect(createEngine("gpt2", fx.config, w, undefined, { batch: 2, context: 8, device: "cuda" })).rejects.toThrow(
      /^CUDA execution provider is not available: /,
    );
    const e = await createEngine("gpt2", fx.config, w, undefined, { batch: 2, context: 8, threads: 1 });
    await expect(e.step(new Int32Array(16).fill(40), 1e-3, 1)).rejects.toThrow(/outside the vocabulary/);
    await expect(e.step(new Int32Array(15), 1e-3, 1)).rejects.toThrow(/expected 2×8/);
    await e.release();
  });
});

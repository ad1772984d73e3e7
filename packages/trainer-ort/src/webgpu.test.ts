import { describe, expect, it } from "vitest";
import { createEngine, type Engine } from "./engine.js";
import { closeness, loadFixture } from "./testing/fixture.js";

/**
 * Issue 18: the step on onnxruntime-node's bundled WebGPU provider. Where the machine has an adapter (a GPU, with
 * libvulkan1 and its driver's ICD), three AdamW steps of the PyTorch fixture match the CPU's; elsewhere (this
 * project's CI) that test is reported as skipped, and the one-line error a user gets is checked instead.
 */
const fx = loadFixture("gpt2-tiny");
const paramNames = [...fx.tensors.keys()].filter((k) => k.startsWith("param.")).map((k) => k.slice(6));
const engine = (device: "cpu" | "webgpu", resident?: boolean) =>
  createEngine("gpt2", fx.config, new Map(paramNames.map((n) => [n, fx.f32(`param.${n}`)])), undefined, {
    resident,
    batch: fx.B,
    context: fx.T,
    threads: 1,
    betas: fx.hp.betas,
    eps: fx.hp.eps,
    weightDecay: fx.hp.weight_decay,
    clip: fx.hp.clip,
    device,
  });

// Probed when the file is collected, so that the skip is decided before the tests run.
const probe: { gpu: Engine | null; refusal: Error | null } = await engine("webgpu").then(
  (gpu) => ({ gpu, refusal: null }),
  (e: unknown) => ({ gpu: null, refusal: e as Error }),
);
const { gpu, refusal } = probe;

describe("WebGPU", () => {
  it.skipIf(gpu === null)("three AdamW steps with the state resident on the GPU match the CPU's (loss, grad norm, params, moments)", async () => {
    if (!gpu) throw refusal ?? new Error("no engine");
    expect(gpu.resident).toBe(true);
    const cpu = await engine("cpu");
    const host = await engine("webgpu", false); // the state downloaded and uploaded every step
    for (let s = 0; s < 3; s++) {
      const [a, b, h] = [
        await gpu.step(fx.ids(s), fx.hp.lrs[s]!, s + 1),
        await cpu.step(fx.ids(s), fx.hp.lrs[s]!, s + 1),
        await host.step(fx.ids(s), fx.hp.lrs[s]!, s + 1),
      ];
      expect(Math.abs(a.loss - b.loss) / b.loss).toBeLessThan(1e-5);
      expect(Math.abs(a.gradNorm - b.gradNorm) / b.gradNorm).toBeLessThan(1e-4);
      expect(h).toEqual(a); // where the state waits between steps changes nothing
    }
    await gpu.sync();
    const [gp, cp] = [gpu.params(), cpu.params()];
    for (const [n, v] of cp) expect(closeness(gp.get(n)!, v, 1e-4, 5e-6).worst, n).toBeLessThanOrEqual(0);
    const [gm, cm] = [gpu.moments(), cpu.moments()];
    for (const [n, v] of cm.expAvg) expect(closeness(gm.expAvg.get(n)!, v, 1e-4, 5e-6).worst, `exp_avg ${n}`).toBeLessThanOrEqual(0);
    await Promise.all([gpu.release(), cpu.release(), host.release()]);
  });

  it.skipIf(gpu !== null)("without an adapter: one line that says why and what it needs", () => {
    expect(refusal).not.toBeNull();
    expect(refusal!.message).toMatch(
      /^WebGPU execution provider is not available: .+ \(onnxruntime-node's WebGPU runs on Dawn over Vulkan: it needs libvulkan1/,
    );
    expect(refusal!.message).not.toContain("\n");
  });
});

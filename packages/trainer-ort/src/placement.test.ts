import { describe, expect, it } from "vitest";
import { TINY_GPT2, TINY_LLAMA } from "@staged/testing";
import { parsePlacement, placementFallbacks, stepPlacement } from "./placement.js";

const shape = { batch: 2, context: 8, threads: 1 };

describe("parsePlacement", () => {
  it("reads each session's block: all nodes on one provider, or each provider's nodes by operator and name", () => {
    const v = (n: number, text: string) => `2026-12-06 10:00:00.0 [V:onnxruntime:, session_state.cc:${n} VerifyEachNodeIsAssignedToAnEp] ${text}`;
    const log = [
      "Warning: something Dawn printed",
      v(1377, "Node placements"),
      v(1380, " All nodes placed on [CPUExecutionProvider]. Number of nodes: 12"),
      "[I:onnxruntime:, inference_session.cc:2000 Initialize] Session successfully initialized.",
      v(1377, "Node placements"),
      v(1345, " Node(s) placed on [WebGpuExecutionProvider]. Number of nodes: 3"),
      v(1347, "  MatMul (forward/MatMul_1)"),
      v(1347, "  Softmax (forward/Softmax)"),
      v(1347, "  MemcpyFromHost (Memcpy)"),
      v(1345, " Node(s) placed on [CPUExecutionProvider]. Number of nodes: 1"),
      v(1347, "  ScatterND (backward/ScatterND_3)"),
    ].join("\n");
    const sessions = parsePlacement(log);
    expect(sessions).toEqual([
      [{ provider: "CPUExecutionProvider", count: 12, nodes: [] }],
      [
        {
          provider: "WebGpuExecutionProvider",
          count: 3,
          nodes: [
            { op: "MatMul", name: "forward/MatMul_1" },
            { op: "Softmax", name: "forward/Softmax" },
            { op: "MemcpyFromHost", name: "Memcpy" },
          ],
        },
        { provider: "CPUExecutionProvider", count: 1, nodes: [{ op: "ScatterND", name: "backward/ScatterND_3" }] },
      ],
    ]);
    expect(placementFallbacks(sessions, "webgpu")).toEqual([sessions[0]![0], sessions[1]![1]]);
    expect(placementFallbacks(sessions, "cpu")).toEqual([sessions[1]![0]]);
    expect(parsePlacement("nothing here")).toEqual([]);
  });
});

// Where the machine has a WebGPU adapter, no node of the step may fall back to the CPU (the test names them); elsewhere
// the child's one-line refusal comes back.
const probe = await stepPlacement("gpt2", TINY_GPT2, { ...shape, device: "webgpu" }).then(
  (sessions) => ({ sessions, error: null }),
  (e: unknown) => ({ sessions: null, error: e as Error }),
);

describe("stepPlacement", () => {
  it.each([
    ["gpt2", TINY_GPT2],
    ["llama", TINY_LLAMA],
  ])(
    "%s on the CPU: every node of the step's sessions on the CPU provider",
    async (arch, config) => {
      const sessions = await stepPlacement(arch, config, shape);
      expect(sessions.length).toBeGreaterThanOrEqual(1);
      for (const s of sessions) expect(s.reduce((n, p) => n + p.count, 0)).toBeGreaterThan(50);
      expect(placementFallbacks(sessions, "cpu")).toEqual([]);
    },
    60_000,
  );

  it.skipIf(probe.sessions === null)("on WebGPU: no node of the step on another provider", () => {
    expect(placementFallbacks(probe.sessions!, "webgpu")).toEqual([]);
  });
  // The other graphs the engine compiles: Llama's, mixed precision's (float16 products), micro-batches' (a gradient
  // session and an update session), and GPT-2 with dropout (mask inputs).
  it.skipIf(probe.sessions === null).each([
    ["llama", "llama", TINY_LLAMA, {}],
    ["gpt2 mixed", "gpt2", TINY_GPT2, { precision: "mixed" as const }],
    ["llama mixed, micro-batches", "llama", TINY_LLAMA, { precision: "mixed" as const, microBatch: 1 }],
    ["gpt2 dropout, micro-batches", "gpt2", { ...TINY_GPT2, resid_pdrop: 0.1, embd_pdrop: 0.1, attn_pdrop: 0.1 }, { microBatch: 1 }],
  ])(
    "on WebGPU, %s: every node on the WebGPU provider",
    async (_label, arch, config, extra) => {
      const sessions = await stepPlacement(arch, config, { ...shape, device: "webgpu", ...extra });
      expect(sessions.length).toBe("microBatch" in extra ? 2 : 1);
      expect(placementFallbacks(sessions, "webgpu")).toEqual([]);
    },
    120_000,
  );
  it.skipIf(probe.sessions !== null)("without an adapter: the engine's one-line error", () => {
    expect(probe.error!.message).toMatch(/^stepPlacement: the engine could not be made: WebGPU execution provider is not available: /);
  });
});

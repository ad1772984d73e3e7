import { describe, expect, it } from "vitest";
import { createDefaultRegistry, createRegistry } from "./registry.js";

describe("registry", () => {
  it("registers, lists and looks up plugins by kind and name", () => {
    const r = createRegistry();
    const schedule = { name: "flat", create: () => () => 1 };
    r.register("lrSchedule", schedule);
    expect(r.get("lrSchedule", "flat")).toBe(schedule);
    expect(r.list("lrSchedule")).toEqual(["flat"]);
    expect(r.has("lrSchedule", "flat")).toBe(true);
    expect(r.list("growth")).toEqual([]);
  });

  it("names what is registered when a name is unknown", () => {
    const r = createDefaultRegistry();
    expect(() => r.get("architecture", "falcon")).toThrow('unknown architecture "falcon" (registered: gpt2, llama)');
    expect(() => r.get("growth", "width")).toThrow("(registered: none)");
  });

  it("refuses duplicates and nameless plugins; registries are independent", () => {
    const r = createDefaultRegistry();
    expect(() => r.register("architecture", r.get("architecture", "gpt2"))).toThrow(/already registered/);
    const trainer = {
      train: async () => {
        throw new Error("unused");
      },
      evaluate: async () => {
        throw new Error("unused");
      },
    };
    expect(() => r.register("trainer", { name: "", ...trainer })).toThrow(/needs a name/);
    r.register("trainer", { name: "ort", ...trainer });
    expect(createDefaultRegistry().has("trainer", "ort")).toBe(false);
  });

  it("finds the architecture of an HF model_type, or none", () => {
    const r = createDefaultRegistry();
    expect(r.architectureFor("gpt2")?.name).toBe("gpt2");
    expect(r.architectureFor("qwen2")?.name).toBe("llama");
    expect(r.architectureFor("bert")).toBeUndefined();
    expect(r.architectureFor(undefined)).toBeUndefined();
  });
});

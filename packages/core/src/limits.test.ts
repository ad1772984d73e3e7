import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { useTempDir } from "@staged/testing";
import {
  MODEL_LIMITS,
  checkDiskSpace,
  checkMemory,
  checkModelSize,
  checkTensorSizes,
  checkpointBytes,
  formatBytes,
  formatCount,
  freeDiskSpace,
  freeMemory,
  writeAnnouncement,
} from "./limits.js";
import { gpt2 } from "./gpt2.js";
import { initTrainingState } from "./state/init.js";
import type { ModelShape } from "./types.js";

const root = useTempDir("staged-limits-");

const shape = (s: Partial<ModelShape>): ModelShape => ({
  layers: 12,
  dModel: 768,
  heads: 12,
  headDim: 64,
  ffn: 3072,
  vocab: 50257,
  context: 1024,
  ...s,
});

describe("formatting", () => {
  it("writes counts exactly below a million, else in short exponent form", () => {
    expect(formatCount(132864)).toBe("132864");
    expect(formatCount(7.08e14)).toBe("7.1e14");
    expect(formatCount(1e13)).toBe("1e13");
    expect(formatCount(Infinity)).toBe("more than 1e308");
  });

  it("writes bytes in decimal units", () => {
    expect(formatBytes(512)).toBe("512 bytes");
    expect(formatBytes(498e6)).toBe("498 MB");
    expect(formatBytes(12.34e9)).toBe("12.3 GB");
    expect(formatBytes(2.83e15)).toBe("2.8 PB");
  });
});

describe("checkModelSize", () => {
  it("passes every released model's shape, up to a 405B Llama's", () => {
    // Llama 3.1 405B: its sizes as a GPT-2 shape (which, with learned positions, is even larger).
    const llama405 = shape({ layers: 126, dModel: 16384, heads: 128, headDim: 128, ffn: 53248, vocab: 128256, context: 131072 });
    expect(() => checkModelSize("config.json", llama405, 4.1e11)).not.toThrow();
    expect(() => checkModelSize("config.json", shape({ vocab: 262144, context: 10485760 }), 9e9)).not.toThrow();
  });

  it("names the field, the parameter count and its F32 size in one line", () => {
    const huge = shape({ layers: 100_000_000 });
    expect(() => checkModelSize("x/config.json", huge, 7.08e14, { names: { layers: "n_layer" } })).toThrow(
      "x/config.json: n_layer 100000000 gives 7.1e14 parameters (2.8 PB as F32); the limits are n_layer ≤ 10000 and 1e13 parameters",
    );
    expect(() => checkModelSize("x/config.json", shape({ layers: 20_000 }), 1.4e11, { names: { layers: "n_layer" } })).toThrow(
      "x/config.json: n_layer 20000 gives 1.4e11 parameters (560 GB as F32); the limit is n_layer ≤ 10000",
    );
  });

  it("lists the sizes when only the parameter count is over, and a cause before the grown fields", () => {
    const wide = shape({ layers: 1000, dModel: 100_000, ffn: 400_000 });
    expect(() => checkModelSize("", wide, 1.2e14)).toThrow(
      /^layers 1000, d_model 100000, ffn 400000, vocab 50257, context 1024 gives 1\.2e14 parameters \(480 TB as F32\); the limit is 1e13 parameters$/,
    );
    expect(() => checkModelSize("width growth", shape({ dModel: 2_000_000, ffn: 8_000_000 }), 3e15, { cause: "factor 2604" })).toThrow(
      "width growth: factor 2604 gives d_model 2000000, ffn 8000000 and 3e15 parameters (12.0 PB as F32); " +
        "the limits are d_model ≤ 1048576, ffn ≤ 1048576 and 1e13 parameters",
    );
  });

  it("refuses what cannot be compared: NaN and infinite sizes", () => {
    expect(() => checkModelSize("c", shape({ layers: NaN }), 1)).toThrow(/layers NaN/);
    expect(() => checkModelSize("c", shape({}), Infinity)).toThrow(/gives more than 1e308 parameters/);
  });

  it("takes other limits", () => {
    expect(() => checkModelSize("c", shape({}), 1.2e8, { limits: { ...MODEL_LIMITS, parameters: 1e8 } })).toThrow(/the limit is 1e8 parameters/);
  });
});

describe("resources", () => {
  it("counts the bytes a save writes: parameters and moments in their dtypes, and the copied files", () => {
    const s = initTrainingState("gpt2", { model_type: "gpt2", n_layer: 1, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8 }, 1);
    const n = gpt2.parameterCount(s.config);
    expect(checkpointBytes(s)).toBe(4 * n);
    const half = new Map([...s.params].map(([k, t]) => [k, { ...t, dtype: "BF16" as const }]));
    const files = new Map([["tokenizer.json", new Uint8Array(100)]]);
    expect(checkpointBytes({ ...s, files, optimizer: { ...s.optimizer, expAvg: half, expAvgSq: s.params } })).toBe(4 * n + 2 * n + 4 * n + 100);
  });

  it("refuses a tensor larger than one array holds", () => {
    expect(() => checkTensorSizes("out", new Map([["a", { shape: [65536, 65536] }]]))).toThrow(
      "out: tensor a [65536, 65536] has 4.3e9 values; one array holds at most 4294967295",
    );
    expect(() => checkTensorSizes("out", new Map([["a", { shape: [65535, 65536] }]]))).not.toThrow();
  });

  it("refuses more memory than is free, with both numbers", () => {
    expect(freeMemory()).toBeGreaterThan(0);
    expect(() => checkMemory("big: initializing 1.1e12 parameters", 4.3e12, 21.3e9)).toThrow(
      /^big: initializing 1\.1e12 parameters needs 4\.3 TB of memory \(F32\); 21\.3 GB is free \(os\.freemem, of .* in all\)$/,
    );
    expect(() => checkMemory("small", 1e6, 21.3e9)).not.toThrow();
  });

  it("measures free disk space at the nearest existing parent", async () => {
    const free = await freeDiskSpace(join(root(), "a", "b", "c"));
    expect(free.at).toBe(root());
    expect(free.bytes).toBeGreaterThan(0);
    await writeFile(join(root(), "file"), "x");
    expect((await freeDiskSpace(join(root(), "file"))).at).toBe(root());
  });

  it("refuses a write larger than the free space, with both numbers", async () => {
    const space = { bytes: 81.1e9, at: "/work" };
    await expect(checkDiskSpace("runs/big", 5.5e12, "1.4e12 parameters and their moments", space)).rejects.toThrow(
      "runs/big: writing 5.5 TB (1.4e12 parameters and their moments) needs more than the 81.1 GB free on the filesystem of /work",
    );
    await expect(checkDiskSpace("runs/big", 5e9, undefined, space)).resolves.toBeUndefined();
    // The real filesystem: no disk holds 10^20 bytes.
    await expect(checkDiskSpace(join(root(), "out"), 1e20)).rejects.toThrow(/writing 100 EB needs more than the .* free on the filesystem of /);
  });

  it("announces writes above a gigabyte", () => {
    expect(writeAnnouncement("runs/big", 12.34e9)).toBe("writing 12.3 GB to runs/big");
    expect(writeAnnouncement("runs/small", 5e8)).toBeNull();
    expect(writeAnnouncement("runs/small", 5e8, 1e8)).toBe("writing 500 MB to runs/small");
  });
});

// The README's example, run on the fixture.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect, test } from "vitest";
import { PyDict, TorchFile, type TorchTensor, writeTorchFile } from "./index.js";

test("README example", async () => {
  const dir = await mkdtemp(join(tmpdir(), "staged-torch-readme-"));
  try {
    const f = await TorchFile.open(new URL("../../../fixtures/hf-trainer/gpt2/checkpoint-3/optimizer.pt", import.meta.url).pathname);
    const sd = f.value as PyDict;
    const groups = sd.get("param_groups") as PyDict[];
    expect(groups.map((g) => [g.get("lr"), (g.get("params") as bigint[]).slice(0, 2)])).toEqual([
      [0.0022500000000000003, [0n, 1n]],
      [0.0022500000000000003, [10n, 11n]],
    ]);
    const s0 = (sd.get("state") as PyDict).get(0n) as PyDict;
    const m = s0.get("exp_avg") as TorchTensor;
    expect([m.dtype, m.shape]).toEqual(["F32", [256, 64]]);
    expect(Number.isFinite((await m.read()).f32[0])).toBe(true);
    expect((await (s0.get("step") as TorchTensor).read()).f32[0]).toBe(3);
    groups[0]!.set("lr", 1e-4);
    await writeTorchFile(join(dir, "optimizer.pt"), sd);
    await f.close();
    const g = await TorchFile.open(join(dir, "optimizer.pt"));
    expect(((g.value as PyDict).get("param_groups") as PyDict[])[0]!.get("lr")).toBe(1e-4);
    await g.close();
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

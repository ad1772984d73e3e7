// The library defaults across packages cannot lose a checkpoint: growing a loaded state and training the
// result never writes over the checkpoint it came from, and a grown state read after its source was closed
// says to save it first.
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { initTrainingState, loadTrainingState, saveTrainingState } from "@staged/core";
import { growWidth } from "@staged/grow-width";
import { growDepth } from "@staged/grow-depth";
import { train } from "@staged/trainer-ort";

let dir: string, small: string, data: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-nothing-lost-"));
  small = join(dir, "small");
  data = join(dir, "data.txt");
  await writeFile(data, "the cat sat on the mat and the dog ran far away. ".repeat(100));
  await saveTrainingState(
    small,
    initTrainingState("gpt2", { model_type: "gpt2", n_layer: 1, n_embd: 16, n_head: 2, vocab_size: 256, n_positions: 16 }, 1),
  );
});
afterAll(() => rm(dir, { recursive: true, force: true }));

describe("growing a loaded checkpoint", () => {
  it("train(growWidth(loaded)) without a saveDir is refused, and the small checkpoint is untouched", async () => {
    const before = await readFile(join(small, "model.safetensors"));
    for (const grow of [
      (s: Awaited<ReturnType<typeof loadTrainingState>>) => growWidth(s, { factor: 2 }),
      (s: Awaited<ReturnType<typeof loadTrainingState>>) => growDepth(s, { factor: 2 }),
    ]) {
      const loaded = await loadTrainingState(small);
      const grown = grow(loaded);
      expect("source" in grown).toBe(false);
      await expect(train(grown, { data, steps: 1, batch: 2, context: 8, threads: 1 })).rejects.toThrow(/not loaded from a directory .*give saveDir/);
      const { result } = await train(grown, { data, steps: 1, batch: 2, context: 8, threads: 1, saveDir: join(dir, "grown") });
      expect(result.saveDir).toBe(join(dir, "grown"));
      await loaded.close();
      await rm(join(dir, "grown"), { recursive: true });
    }
    expect(await readFile(join(small, "model.safetensors"))).toEqual(before);
  });

  it("a grown state saved after its source was closed fails with a message saying to save first, writing nothing", async () => {
    const loaded = await loadTrainingState(small);
    const grown = growWidth(loaded, { factor: 2 });
    await loaded.close();
    await expect(saveTrainingState(join(dir, "late"), grown)).rejects.toThrow(
      /small\/model.safetensors: closed before tensor .* so save it .* before closing/,
    );
    expect((await readdir(dir)).sort()).toEqual(["data.txt", "small"]);
  });
});

// What every growth operator returns for a loaded input: a new state, not a handle on the input's directory.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { initTrainingState, loadTrainingState, saveTrainingState, type TrainingState } from "@staged/core";
import { growDepth } from "@staged/grow-depth";
import { growWidth } from "@staged/grow-width";

const tiny = { model_type: "gpt2", n_layer: 2, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8 };
const operators: [string, (s: TrainingState) => TrainingState, string, number[]][] = [
  ["width ×2", (s) => growWidth(s, { factor: 2 }), "transformer.wte.weight", [16, 16]],
  ["depth to 3 layers", (s) => growDepth(s, { layers: 3 }), "transformer.h.2.ln_1.weight", [8]],
];

describe.each(operators)("%s", (_label, grow, name, shape) => {
  it("returns a state without the loaded input's source directory and close", async () => {
    const dir = await mkdtemp(join(tmpdir(), "staged-grown-"));
    try {
      await saveTrainingState(join(dir, "small"), initTrainingState("gpt2", tiny, 1));
      const loaded = await loadTrainingState(join(dir, "small"));
      const g = grow(loaded);
      expect(loaded.source).toBeTruthy();
      expect("source" in g).toBe(false);
      expect("close" in g).toBe(false);
      // Its tensors still read from the input until the input is closed.
      expect((await g.params.get(name)!.read()).shape).toEqual(shape);
      await loaded.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

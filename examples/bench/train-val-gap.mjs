// Data repetition, measured: the loss of checkpoints on a sample of Brown's training split (64 pieces of 8 KB
// spread over it) against the validation split, both on 1,024 blocks of 128 tokens. A gap that grows with the
// epochs a model has seen is what repetition costs it.
//
//   node examples/bench/train-val-gap.mjs <checkpoint> [...]
// Not a test.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadTrainingState } from "@staged/core";
import { brownText, evaluate } from "@staged/trainer-ort";
const work = await mkdtemp(join(tmpdir(), "train-val-gap-"));
const sampleFile = join(work, "brown-train-sample.txt");
const train = await brownText("train");
// A sample of the training split spread over it: 64 pieces of 8 KB.
let sample = "";
for (let i = 0; i < 64; i++) {
  const at = Math.floor(((i + 0.5) * train.length) / 64);
  sample += train.slice(at, at + 8192);
}
await writeFile(sampleFile, sample);
for (const dir of process.argv.slice(2)) {
  const s = await loadTrainingState(dir);
  const tr = await evaluate(s, { data: sampleFile, context: 128, maxBlocks: 1024, batch: 16, threads: 1 });
  const va = await evaluate(s, { data: "brown", context: 128, maxBlocks: 1024, batch: 16, threads: 1 });
  console.log(
    dir,
    `tokens seen ${s.progress.tokensSeen} (${(s.progress.tokensSeen / train.length).toFixed(2)} epochs)`,
    "train",
    tr.loss.toFixed(4),
    "val",
    va.loss.toFixed(4),
    "gap",
    (va.loss - tr.loss).toFixed(4),
    tr.blocks,
    va.blocks,
  );
  await s.close();
}
await rm(work, { recursive: true, force: true });

import { resolve } from "node:path";
import { Option, type Command } from "commander";
import { loadTrainingState } from "@staged/core";
import { evaluate, DEFAULT_BATCH, DEVICES, type Device } from "@staged/trainer-ort";
import { createOutput, runAction } from "../output.js";
import { integer } from "../options.js";
import { createProgress } from "../progress.js";
import type { GlobalOptions } from "../main.js";
import { createCliRegistry } from "../registry.js";

interface EvalCliOptions {
  data: string;
  context?: number;
  maxBlocks?: number;
  batch?: number;
  device?: Device;
  threads?: number;
}

export function registerEval(program: Command): void {
  program
    .command("eval <dir>")
    .description("mean next-token loss on consecutive non-overlapping blocks of the data (brown: its validation split)")
    .requiredOption(
      "--data <source>",
      "brown (the Brown validation split), brown:train, a .txt file, or a file of little-endian token ids (.bin uint16, .u32.bin uint32)",
    )
    .option("--context <T>", "tokens per block (default the model's n_positions)", integer("context", 2))
    .option("--max-blocks <K>", "evaluate only the first K blocks", integer("max-blocks", 1))
    .option("--batch <B>", `blocks per evaluation batch (default ${DEFAULT_BATCH})`, integer("batch", 1))
    .addOption(new Option("--device <d>", "execution provider (default cpu)").choices(DEVICES))
    .option("--threads <N>", "CPU threads (default: all cores)", integer("threads", 1))
    .action(async (dir: string, o: EvalCliOptions, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await runAction(Boolean(g.debug), async () => {
        const state = await loadTrainingState(dir, { registry: createCliRegistry() });
        try {
          const t0 = performance.now();
          const progress = createProgress("evaluating", "blocks"); // stderr, also with --json
          const r = await evaluate(state, { ...o, onBatch: progress?.update }).finally(() => progress?.stop());
          const result = {
            ...r,
            perplexity: Math.exp(r.loss),
            step: state.progress.step,
            checkpoint: resolve(dir),
            seconds: (performance.now() - t0) / 1000,
          };
          createOutput(Boolean(g.json)).result(
            result,
            `loss ${r.loss.toFixed(4)} (perplexity ${result.perplexity.toFixed(2)}) on ${r.blocks} blocks of ${r.context} tokens of ${r.data} ` +
              `(${r.tokens} tokens), checkpoint step ${result.step}`,
          );
        } finally {
          await state.close();
        }
      });
    });
}

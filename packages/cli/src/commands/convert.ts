import { resolve } from "node:path";
import { Command, Option } from "commander";
import { STAGED_FORMAT, formatBytes, loadTrainingState } from "@staged/core";
import { HF_TRAINER_FORMAT } from "@staged/hf-trainer";
import { tokenizerOf } from "@staged/trainer-ort";
import { createCliRegistry } from "../registry.js";
import { createOutput, runAction, UsageError } from "../output.js";
import { integer } from "../options.js";
import { PROGRESS_MODES, type ProgressMode } from "../progress.js";
import { checkOutputBesideInput, checkWriteSpace, writeState } from "../write-state.js";
import type { GlobalOptions } from "../main.js";

/** The checkpoint formats `staged convert` writes, and what each is called in its messages. */
const FORMATS: Record<string, string> = {
  [STAGED_FORMAT]: "a staged checkpoint",
  [HF_TRAINER_FORMAT]: "a Hugging Face Trainer checkpoint",
};

interface ConvertOptions {
  to: string;
  force?: boolean;
  maxShardBytes?: number;
  progress?: ProgressMode;
}

export function registerConvert(program: Command): void {
  program
    .command("convert <in> <out>")
    .description("write a checkpoint in another format: staged ↔ Hugging Face Trainer (checkpoint-N/ that Trainer resumes)")
    .addOption(new Option("--to <format>", "the format to write").choices(Object.keys(FORMATS)).makeOptionMandatory())
    .option("--force", "replace an existing output directory")
    .option("--max-shard-bytes <n>", "shard model files above this size", integer("max-shard-bytes", 1))
    .addOption(
      new Option("--progress <mode>", "progress on stderr: a bar on a terminal, else lines (auto), lines, JSON lines, or none")
        .choices([...PROGRESS_MODES])
        .default("auto"),
    )
    .action(async (input: string, output: string, o: ConvertOptions, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await runAction(Boolean(g.debug), async () => {
        await checkOutputBesideInput(input, output, "convert");
        const registry = createCliRegistry();
        const state = await loadTrainingState(input, { registry });
        try {
          const from = state.foreign?.format ?? STAGED_FORMAT;
          if (from === o.to) throw new UsageError(`${input}: already ${FORMATS[o.to]} (nothing to convert)`);
          if (state.tokenizer.kind === "hf") await tokenizerOf(state.tokenizer, state.files, input);
          // The save writes the format asked for (a Trainer checkpoint's own records have no place in a staged one).
          const bytes = await checkWriteSpace(output, state);
          const { seconds } = await writeState(output, state, bytes, {
            registry,
            format: o.to,
            progress: o.progress ?? "auto",
            ...(o.force ? { force: true } : {}),
            ...(o.maxShardBytes !== undefined ? { maxShardBytes: o.maxShardBytes } : {}),
          });
          const result = {
            input: resolve(input),
            output: resolve(output),
            from,
            to: o.to,
            step: state.progress.step,
            hasOptimizerState: Boolean(state.optimizer.expAvg),
            schedule: state.schedule,
            bytes,
            seconds,
          };
          createOutput(Boolean(g.json)).result(
            result,
            [
              `converted ${FORMATS[from] ?? from} → ${FORMATS[o.to]} at step ${result.step}` +
                `${result.hasOptimizerState ? ", with its AdamW moments" : ", without optimizer state"}`,
              `  schedule ${state.schedule ? `${state.schedule.kind} (peak ${state.schedule.peakLr}, warmup ${state.schedule.warmupSteps}, ${state.schedule.totalSteps} steps)` : "none"}`,
              `  wrote ${result.output} (${formatBytes(bytes)}) in ${seconds.toFixed(2)} s`,
            ].join("\n"),
          );
        } finally {
          await state.close();
        }
      });
    });
}

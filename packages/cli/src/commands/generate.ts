import { readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { InvalidArgumentError, Option, type Command } from "commander";
import { loadGenerator, type ExportDType } from "@staged/export";
import { DEVICES, type Device } from "@staged/trainer-ort";
import { createOutput, runAction, UsageError } from "../output.js";
import { integer, number } from "../options.js";
import { createProgress } from "../progress.js";
import type { GlobalOptions } from "../main.js";
import { createCliRegistry } from "../registry.js";

interface GenerateCliOptions {
  prompt: string;
  maxNewTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  seed?: number;
  dtype?: ExportDType;
  threads?: number;
  device?: Device;
}

const probability = (value: string): number => {
  const n = Number(value);
  if (value.trim() === "" || !(n > 0 && n <= 1)) throw new InvalidArgumentError("--top-p must be a number in (0, 1].");
  return n;
};

/**
 * Whether the tokenizer of checkpoint (or export) `dir` adds a start or end token (tokenizer_config.json's
 * add_bos_token / add_eos_token, which the generator encodes with): only then does an empty prompt give a token.
 */
async function addsSpecialTokens(dir: string): Promise<boolean> {
  try {
    const config = JSON.parse(await readFile(join(dir, "tokenizer_config.json"), "utf8")) as Record<string, unknown>;
    return config.add_bos_token === true || config.add_eos_token === true;
  } catch {
    return false;
  }
}

export function registerGenerate(program: Command): void {
  program
    .command("generate <dir>")
    .description(
      "continue a prompt with a checkpoint's model through transformers.js (the ONNX export is made beside the checkpoint when missing or stale), streaming the text",
    )
    .requiredOption("--prompt <text>", "the text to continue")
    .option("--max-new-tokens <N>", "tokens to generate (default 64)", integer("max-new-tokens", 1))
    .option("--temperature <t>", "0 (default): greedy; above 0: sample at this temperature", number("temperature"))
    .option("--top-k <k>", "sample among the k most likely tokens (0: all)", integer("top-k", 0))
    .option("--top-p <p>", "sample among the most likely tokens of total probability p (nucleus sampling)", probability)
    .option("--seed <s>", "seed of the sampler, for reproducible samples", integer("seed", 0))
    .addOption(new Option("--dtype <d>", "the ONNX model to run (default fp32)").choices(["fp32", "fp16"]))
    .option("--threads <N>", "CPU threads (default: all cores)", integer("threads", 1))
    .addOption(new Option("--device <d>", "execution provider (default cpu)").choices(DEVICES))
    .action(async (dir: string, o: GenerateCliOptions, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await runAction(Boolean(g.debug), async () => {
        const out = createOutput(Boolean(g.json));
        // Refused before the export is made: nothing is written for a prompt that cannot be continued.
        if (o.prompt === "" && !(await addsSpecialTokens(dir))) {
          throw new UsageError(`${dir}: --prompt is empty and the checkpoint's tokenizer adds no start token: give some text to continue`);
        }
        let progress: ReturnType<typeof createProgress> | null = null;
        const generator = await loadGenerator(dir, {
          registry: createCliRegistry(),
          dtype: o.dtype ?? "fp32",
          ...(o.threads ? { threads: o.threads } : {}),
          ...(o.device ? { device: o.device } : {}),
          onProgress: (p) => {
            progress ??= createProgress(`exporting ${p.file}`, "MB", 1e6);
            progress.update(p.bytes, p.totalBytes);
          },
        }).finally(() => progress?.stop());
        try {
          if (generator.exported) out.info(`exported the model to ${generator.dir}`);
          const sampling = {
            ...(o.maxNewTokens !== undefined ? { maxNewTokens: o.maxNewTokens } : {}),
            ...(o.temperature !== undefined ? { temperature: o.temperature } : {}),
            ...(o.topK !== undefined ? { topK: o.topK } : {}),
            ...(o.topP !== undefined ? { topP: o.topP } : {}),
            ...(o.seed !== undefined ? { seed: o.seed } : {}),
          };
          if (g.json) {
            const r = await generator.generate(o.prompt, sampling);
            const { timing, ...rest } = r;
            out.result(
              { ...rest, checkpoint: resolve(dir), export: generator.dir, exported: generator.exported, dtype: generator.dtype, ...timing },
              "",
            );
            return;
          }
          // The prompt, then the continuation as it is decoded (nothing on stdout when generation is refused).
          let started = false;
          const write = (text: string) => {
            if (!started) {
              process.stdout.write(o.prompt);
              started = true;
            }
            process.stdout.write(text);
          };
          const r = await generator.generate(o.prompt, { ...sampling, onText: write });
          write("\n");
          const t = r.timing;
          out.info(
            `${r.newIds.length} tokens${r.stoppedAtEos ? " (stopped at the end-of-sequence token)" : ""} in ${t.seconds.toFixed(2)} s: ` +
              `first token ${(t.firstTokenSeconds * 1000).toFixed(0)} ms, then ${t.tokensPerSecond.toFixed(1)} tokens/s`,
          );
        } finally {
          await generator.dispose();
        }
      });
    });
}

import { mkdir, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import {
  F32_BYTES, MODEL_LIMITS, checkDiskSpace, checkMemory, checkModelSize, checkTensorSizes, formatCount, gpt2, gpt2InitConfig, initTrainingState,
  parameterCount, saveTrainingState, writeAnnouncement, type ModelShape,
} from "@staged/core";
import { createOutput, runAction } from "../output.js";
import { integer } from "../options.js";
import type { GlobalOptions } from "../main.js";

export interface InitOptions {
  layers: number; dModel: number; heads: number; ffn?: number; vocab: number; context: number; seed: number; tie: boolean;
}

/** The HF GPT-2 config of `staged init`. */
export const initConfig = (o: InitOptions): Record<string, unknown> => gpt2InitConfig(o);

export function registerInit(program: Command): void {
  program.command("init <dir>")
    .description("create a freshly initialized GPT-2 checkpoint (HF weights N(0, 0.02), no optimizer state)")
    .requiredOption("--layers <L>", "number of transformer blocks", integer("layers", 1))
    .requiredOption("--d-model <D>", "hidden size", integer("d-model", 1))
    .requiredOption("--heads <H>", "attention heads (must divide --d-model)", integer("heads", 1))
    .option("--ffn <F>", "MLP inner size (default 4 × d-model)", integer("ffn", 1))
    .option("--vocab <V>", "vocabulary size (256 fits the byte-level tokenizer)", integer("vocab", 1), 256)
    .option("--context <T>", "n_positions, the longest block the model can take", integer("context", 2), 256)
    .option("--seed <S>", "initialization seed (also the data sampler's seed)", integer("seed", 0), 0)
    .option("--tie", "tie the output layer to the token embedding (default)", true)
    .option("--no-tie", "give the model its own output layer lm_head.weight")
    .action(async (dir: string, o: InitOptions, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await runAction(Boolean(g.debug), async () => {
        if (o.dModel % o.heads !== 0) throw new Error(`--d-model ${o.dModel} is not divisible by --heads ${o.heads}`);
        if (o.seed > 0xffffffff) throw new Error(`--seed must be below 2^32, got ${o.seed}`);
        // Every size and resource is checked before the first tensor is allocated.
        const config = initConfig(o);
        const shape: ModelShape = { layers: o.layers, dModel: o.dModel, heads: o.heads, headDim: o.dModel / o.heads,
          ffn: o.ffn ?? 4 * o.dModel, vocab: o.vocab, context: o.context };
        const count = gpt2.parameterCount(config);
        // Without --ffn the MLP size comes from --d-model, which is then what the message names.
        const derivedFfn = o.ffn === undefined && shape.ffn > MODEL_LIMITS.ffn;
        checkModelSize("", shape, count, { names: { layers: "--layers", dModel: "--d-model", heads: "--heads",
          ffn: o.ffn === undefined ? "ffn" : "--ffn", vocab: "--vocab", context: "--context" }, ...(derivedFfn ? { cause: `--d-model ${o.dModel}` } : {}) });
        checkTensorSizes(dir, new Map(gpt2.params(config).map((p) => [p.name, p])));
        if (await stat(dir).catch(() => null)) throw new Error(`${dir}: already exists (refusing to overwrite)`);
        const bytes = count * F32_BYTES;
        checkMemory(`${dir}: initializing ${formatCount(count)} parameters`, bytes);
        await checkDiskSpace(dir, bytes, `${formatCount(count)} parameters as F32`);
        const announce = writeAnnouncement(dir, bytes);
        if (announce) process.stderr.write(announce + "\n"); // also with --json: stdout keeps the one result
        const state = initTrainingState("gpt2", config, o.seed);
        await mkdir(dirname(resolve(dir)), { recursive: true });
        await saveTrainingState(dir, state);
        const s = state.shape;
        const result = { path: resolve(dir), architecture: state.architecture, ...s, parameters: parameterCount(state), tied: o.tie, seed: o.seed };
        createOutput(Boolean(g.json)).result(result,
          `initialized ${result.path}: GPT-2, ${s.layers} layers, d_model ${s.dModel}, ${s.heads} heads, ffn ${s.ffn}, ` +
          `vocab ${s.vocab}, context ${s.context}, ${result.parameters} parameters${o.tie ? " (tied output layer)" : ""}`);
      });
    });
}

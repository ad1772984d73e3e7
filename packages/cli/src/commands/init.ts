import { mkdir, stat } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { Option, type Command } from "commander";
import {
  F32_BYTES,
  MODEL_LIMITS,
  checkDiskSpace,
  checkMemory,
  checkModelSize,
  checkTensorSizes,
  createDefaultRegistry,
  formatCount,
  initTrainingState,
  parameterCount,
  saveTrainingState,
  writeAnnouncement,
  type ModelShape,
} from "@staged/core";
import { modelConfig, type ModelSpec } from "@staged/run";
import { createOutput, runAction } from "../output.js";
import { integer, probability } from "../options.js";
import type { GlobalOptions } from "../main.js";

/** `staged init`'s options: a run spec's model (arch default gpt2), its context and seed. */
export interface InitOptions extends Omit<ModelSpec, "arch"> {
  arch?: string;
  context: number;
  seed: number;
}

/** The HF config of `staged init`: the architecture's own, tied as the architecture is by default unless told (as a run spec's model). */
export const initConfig = (o: InitOptions): Record<string, unknown> => modelConfig({ ...o, arch: o.arch ?? "gpt2" }, o.context);

const ARCH_NAMES: Record<string, string> = { gpt2: "GPT-2", llama: "Llama" };

export function registerInit(program: Command): void {
  program
    .command("init <dir>")
    .description("create a freshly initialized GPT-2 or Llama checkpoint (HF weights N(0, 0.02), no optimizer state)")
    .addOption(new Option("--arch <name>", "architecture").choices(createDefaultRegistry().list("architecture")).default("gpt2"))
    .requiredOption("--layers <L>", "number of transformer blocks", integer("layers", 1))
    .requiredOption("--d-model <D>", "hidden size", integer("d-model", 1))
    .requiredOption("--heads <H>", "attention heads (must divide --d-model)", integer("heads", 1))
    .option("--kv-heads <K>", "key/value heads of grouped-query attention (llama; must divide --heads; default --heads)", integer("kv-heads", 1))
    .option("--ffn <F>", "MLP inner size (default 4 × d-model)", integer("ffn", 1))
    .option("--vocab <V>", "vocabulary size (256 fits the byte-level tokenizer)", integer("vocab", 1), 256)
    .option("--context <T>", "n_positions, the longest block the model can take", integer("context", 2), 256)
    .option("--seed <S>", "initialization seed (also the data sampler's seed)", integer("seed", 0), 0)
    .option("--tie", "tie the output layer to the token embedding (default for gpt2)")
    .option("--no-tie", "give the model its own output layer lm_head.weight (default for llama)")
    .option(
      "--dropout <p>",
      "dropout probability written into the config (gpt2: embd_pdrop, attn_pdrop, resid_pdrop; llama: attention_dropout), " +
        "which training applies",
      probability("dropout"),
      0,
    )
    .action(async (dir: string, o: InitOptions, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await runAction(Boolean(g.debug), async () => {
        const arch = createDefaultRegistry().get("architecture", o.arch ?? "gpt2");
        if (o.dModel % o.heads !== 0) throw new Error(`--d-model ${o.dModel} is not divisible by --heads ${o.heads}`);
        if (o.kvHeads !== undefined && arch.name === "gpt2" && o.kvHeads !== o.heads)
          throw new Error(`--kv-heads: gpt2 has one key/value head per query head (give --arch llama for grouped-query attention)`);
        if (o.kvHeads !== undefined && o.heads % o.kvHeads !== 0) throw new Error(`--kv-heads ${o.kvHeads} does not divide --heads ${o.heads}`);
        if (o.seed > 0xffffffff) throw new Error(`--seed must be below 2^32, got ${o.seed}`);
        // Every size and resource is checked before the first tensor is allocated.
        const config = initConfig(o);
        const shape: ModelShape = {
          layers: o.layers,
          dModel: o.dModel,
          heads: o.heads,
          headDim: o.dModel / o.heads,
          ffn: o.ffn ?? 4 * o.dModel,
          vocab: o.vocab,
          context: o.context,
        };
        const count = arch.parameterCount(config);
        // Without --ffn the MLP size comes from --d-model, which is then what the message names.
        const derivedFfn = o.ffn === undefined && shape.ffn > MODEL_LIMITS.ffn;
        checkModelSize("", shape, count, {
          names: {
            layers: "--layers",
            dModel: "--d-model",
            heads: "--heads",
            ffn: o.ffn === undefined ? "ffn" : "--ffn",
            vocab: "--vocab",
            context: "--context",
          },
          ...(derivedFfn ? { cause: `--d-model ${o.dModel}` } : {}),
        });
        checkTensorSizes(dir, new Map(arch.params(config).map((p) => [p.name, p])));
        if (await stat(dir).catch(() => null)) throw new Error(`${dir}: already exists (refusing to overwrite)`);
        const bytes = count * F32_BYTES;
        checkMemory(`${dir}: initializing ${formatCount(count)} parameters`, bytes);
        await checkDiskSpace(dir, bytes, `${formatCount(count)} parameters as F32`);
        const announce = writeAnnouncement(dir, bytes);
        if (announce) process.stderr.write(announce + "\n"); // also with --json: stdout keeps the one result
        const state = initTrainingState(arch.name, config, o.seed);
        await mkdir(dirname(resolve(dir)), { recursive: true });
        await saveTrainingState(dir, state);
        const s = state.shape;
        const tied = arch.decoder(config).tiedOutput;
        const result = {
          path: resolve(dir),
          architecture: state.architecture,
          ...s,
          parameters: parameterCount(state),
          tied,
          seed: o.seed,
          dropout: o.dropout ?? 0,
        };
        createOutput(Boolean(g.json)).result(
          result,
          `initialized ${result.path}: ${ARCH_NAMES[arch.name] ?? arch.name}, ${s.layers} layers, d_model ${s.dModel}, ${s.heads} heads` +
            `${s.kvHeads !== undefined && s.kvHeads !== s.heads ? ` (${s.kvHeads} key/value)` : ""}, ffn ${s.ffn}, ` +
            `vocab ${s.vocab}, context ${s.context}, ${result.parameters} parameters${tied ? " (tied output layer)" : ""}` +
            `${result.dropout > 0 ? `, dropout ${result.dropout}` : ""}`,
        );
      });
    });
}

import { resolve } from "node:path";
import { Command, Option } from "commander";
import {
  F32_BYTES,
  checkMemory,
  checkTensorSizes,
  formatBytes,
  formatCount,
  LR_SCALE_PARAMS,
  loadTrainingState,
  parameterCount,
  type GrowthPlugin,
  type LrScaleParams,
  type TrainingState,
} from "@staged/core";
import { evaluate, tokenizerOf } from "@staged/trainer-ort";
import { WIDTH_MOMENTS, WIDTH_SYMMETRIES, WIDTH_UNITS, type WidthOptions } from "@staged/grow-width";
import type { DepthOptions } from "@staged/grow-depth";
import { createCliRegistry } from "../registry.js";
import { createOutput, runAction } from "../output.js";
import { checkOutputBesideInput, checkWriteSpace, writeState } from "../write-state.js";
import { integer, intList, number } from "../options.js";
import { PROGRESS_MODES, type ProgressMode } from "../progress.js";
import type { GlobalOptions } from "../main.js";

interface CommonOptions {
  rewarmup?: number;
  continueAt?: number;
  lrScale?: number;
  lrScaleParams?: LrScaleParams;
  lrRamp?: number;
  force?: boolean;
  maxShardBytes?: number;
  evalData?: string;
  evalContext?: number;
  evalBlocks?: number;
  progress?: ProgressMode;
}

async function grow<O extends object>(input: string, output: string, operator: string, options: O & CommonOptions, cmd: Command): Promise<void> {
  const g = cmd.optsWithGlobals<GlobalOptions>();
  await runAction(Boolean(g.debug), async () => {
    const out = createOutput(Boolean(g.json));
    await checkOutputBesideInput(input, output, "growth");
    const registry = createCliRegistry();
    const plugin = registry.get("growth", operator) as GrowthPlugin<O>;
    const state = await loadTrainingState(input, { registry });
    try {
      // A tokenizer.json that does not load would be carried into the grown checkpoint, unusable there too.
      if (state.tokenizer.kind === "hf") await tokenizerOf(state.tokenizer, state.files, input);
      const { force, maxShardBytes, evalData, evalContext, evalBlocks, progress: progressMode, ...growOptions } = options;
      // The operator checks the grown size against MODEL_LIMITS before building anything per layer.
      const grown: TrainingState = await plugin.grow(state, { ...growOptions, registry } as O);
      // Nothing is computed yet: every resource is checked before the first tensor is.
      const parametersAfter = parameterCount(grown);
      checkTensorSizes(`${operator} growth`, grown.params);
      const bytes = await checkWriteSpace(output, grown);
      // The measurement holds each model's weights in memory as F32, one model at a time.
      if (evalData)
        checkMemory(`${output}: --eval-data on the grown model (${formatCount(parametersAfter)} parameters)`, parametersAfter * F32_BYTES);
      // The loss change the growth causes, measured before anything is written.
      let check: { lossBefore: number; lossAfter: number; lossChange: number; evalTokens: number } | undefined;
      if (evalData) {
        const eo = { data: evalData, context: evalContext, maxBlocks: evalBlocks ?? 16 };
        const before = await evaluate(state, eo),
          after = await evaluate(grown, eo);
        check = { lossBefore: before.loss, lossAfter: after.loss, lossChange: after.loss - before.loss, evalTokens: before.tokens };
      }
      const { seconds } = await writeState(output, grown, bytes, { registry, force, maxShardBytes, progress: progressMode });
      const stage = grown.progress.stages.at(-1)!;
      const result = {
        operator,
        input: resolve(input),
        output: resolve(output),
        before: state.shape,
        after: grown.shape,
        parametersBefore: parameterCount(state),
        parametersAfter,
        bytes,
        options: stage.options,
        step: stage.step,
        continueAt: stage.continueAt,
        lossPreserving: plugin.lossPreserving(options),
        ...check,
        seconds,
      };
      const s = (x: typeof state.shape) => `${x.layers} layer${x.layers === 1 ? "" : "s"} × d${x.dModel} (${x.heads} heads, ffn ${x.ffn})`;
      out.result(
        result,
        [
          `grew ${operator}: ${s(state.shape)} → ${s(grown.shape)}`,
          `  parameters ${result.parametersBefore} → ${result.parametersAfter}, ${result.lossPreserving ? "loss preserved exactly" : "loss NOT preserved by these options"}`,
          ...(check
            ? [
                `  loss on ${check.evalTokens} tokens of ${evalData}: ${check.lossBefore.toFixed(5)} → ${check.lossAfter.toFixed(5)} (change ${check.lossChange >= 0 ? "+" : ""}${check.lossChange.toExponential(2)})`,
              ]
            : []),
          `  wrote ${result.output} (${formatBytes(bytes)}) in ${result.seconds.toFixed(2)} s`,
        ].join("\n"),
      );
    } finally {
      await state.close();
    }
  });
}

const common = (c: Command): Command =>
  c
    .option("--rewarmup <steps>", "LR re-warmup steps after the growth", integer("rewarmup"))
    .option("--continue-at <step>", "the step the grown model continues from", integer("continue-at"))
    .option("--lr-scale <s>", "the grown model's peak LR = the small one's × s (default: width 1/factor, depth 1)", number("lr-scale", "positive"))
    .addOption(
      new Option("--lr-scale-params <which>", "parameters --lr-scale applies to: all, or the matrices whose input dimension grew (fanIn)").choices([
        ...LR_SCALE_PARAMS,
      ]),
    )
    .option("--lr-ramp <steps>", "steps over which the LR scale returns linearly to 1 (default 0: it stays)", integer("lr-ramp"))
    .option("--force", "replace an existing output directory")
    .option("--max-shard-bytes <n>", "shard files above this size", integer("max-shard-bytes", 1))
    .option("--eval-data <data>", "measure the loss before and after the growth on this data (brown|file.txt|file.bin|file.u32.bin)")
    .option("--eval-context <T>", "block size of that measurement (default: the model's context)", integer("eval-context", 2))
    .option("--eval-blocks <K>", "blocks of that measurement (default 16)", integer("eval-blocks", 1))
    .addOption(
      new Option("--progress <mode>", "progress on stderr: a bar on a terminal, else lines (auto), lines, JSON lines, or none")
        .choices([...PROGRESS_MODES])
        .default("auto"),
    );

export function registerGrow(program: Command): void {
  const growCmd = program.command("grow").description("grow a checkpoint's whole training state");
  common(
    growCmd
      .command("width <in> <out>")
      .description("hidden size, heads and FFN × factor (exact for --symmetry none|split, with either --units)")
      .option("--factor <k>", "width factor", integer("factor", 1), 2)
      .option("--ffn-factor <m>", "extra FFN width factor", integer("ffn-factor", 1))
      .addOption(new Option("--moments <mode>", "AdamW moments of the grown model").choices([...WIDTH_MOMENTS]).default("consistent"))
      .addOption(new Option("--symmetry <mode>", "how copies diverge").choices([...WIDTH_SYMMETRIES]).default("none"))
      .addOption(
        new Option("--units <how>", "new heads and FFN units: copies of the old (the paper) or fresh (a new model's init, writing 0 at first)")
          .choices([...WIDTH_UNITS])
          .default("copies"),
      )
      .option("--noise-std <s>", "noise standard deviation for --symmetry noise|antithetic", number("noise-std"))
      .option("--seed <s>", "seed of split/noise", integer("seed"), 0),
  ).action((input: string, output: string, o: WidthOptions & CommonOptions, cmd: Command) => grow(input, output, "width", o, cmd));
  common(
    growCmd
      .command("depth <in> <out>")
      .description("more layers from a layer map (exact with --init identity)")
      .option("--factor <k>", "layers × k", integer("factor", 1))
      .option("--layers <n>", "target layer count", integer("layers", 1))
      .option("--layer-map <i,j,...>", "source layer of each new layer", intList("layer-map"))
      .addOption(new Option("--placement <p>", "layer order").choices(["alternate", "append"]).default("alternate"))
      .addOption(new Option("--init <mode>", "new layers' init").choices(["identity", "copy"]).default("identity"))
      .addOption(
        new Option("--moments <mode>", "new layers' moments: their source's, or zero (originals keep theirs)")
          .choices(["copy", "reset"])
          .default("copy"),
      ),
  ).action((input: string, output: string, o: DepthOptions & CommonOptions, cmd: Command) => grow(input, output, "depth", o, cmd));
}

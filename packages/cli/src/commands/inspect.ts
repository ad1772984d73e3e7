import type { Command } from "commander";
import { STAGED_FORMAT, TORCH_NAMES, loadTrainingState, parameterCount, type LoadedTrainingState } from "@staged/core";
import { trainerSummary } from "@staged/hf-trainer";
import { createOutput, runAction } from "../output.js";
import { createCliRegistry } from "../registry.js";
import type { GlobalOptions } from "../main.js";

/** The facts `staged inspect` reports about a checkpoint. */
export function describe(state: LoadedTrainingState) {
  const dtypes = new Set([...state.params.values()].map((t) => TORCH_NAMES[t.dtype]));
  return {
    path: state.source,
    architecture: state.architecture,
    ...state.shape,
    parameters: parameterCount(state),
    dtype: dtypes.size === 1 ? [...dtypes][0]! : [...dtypes].join("+"),
    tied: state.config.tie_word_embeddings !== false,
    hasOptimizerState: Boolean(state.optimizer.expAvg),
    optimizerStep: state.optimizer.step,
    step: state.progress.step,
    tokensSeen: state.progress.tokensSeen,
    flopsSeen: state.progress.flopsSeen,
    schedule: state.schedule,
    tokenizer: state.tokenizer.kind,
    stages: state.progress.stages,
    format: state.foreign?.format ?? STAGED_FORMAT,
    trainer: trainerSummary(state),
  };
}

/** A Hugging Face Trainer checkpoint's own lines: its format, the LR of the next update, the schedule found, the last losses. */
function trainerLines(t: NonNullable<ReturnType<typeof trainerSummary>>): string[] {
  const s = t.schedule;
  return [
    `  format        Hugging Face Trainer checkpoint: global step ${t.globalStep} of ${t.maxSteps ?? "?"}, next LR ${t.lr ?? "unknown"}`,
    `  trainer LR    ${s ? `${s.kind} schedule (found from trainer_state.json's log): warmup ${s.warmupSteps}, ${s.totalSteps} steps, peak ${s.peakLr}` : "schedule not determined from the logged LRs (LambdaLR saves no lambdas)"}`,
    `  last losses   ${t.lastLosses.length ? t.lastLosses.map((l) => `${l.loss.toFixed(4)}@${l.step}`).join(", ") : "none logged"}`,
  ];
}

const fmt = (n: number): string =>
  n >= 1e9 ? `${(n / 1e9).toFixed(2)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}k` : String(n);

export function registerInspect(program: Command): void {
  program
    .command("inspect <dir>")
    .description("shape, parameter count, dtype, step, tokens and stages of a checkpoint")
    .action(async (dir: string, _opts: unknown, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await runAction(Boolean(g.debug), async () => {
        const state = await loadTrainingState(dir, { registry: createCliRegistry() });
        try {
          const d = describe(state);
          const lines = [
            `${d.path}`,
            `  architecture  ${d.architecture}: ${d.layers} layers, d_model ${d.dModel}, ${d.heads} heads × ${d.headDim}${d.kvHeads !== undefined && d.kvHeads !== d.heads ? ` (${d.kvHeads} key/value)` : ""}, ${d.gatedMlp ? "gated " : ""}ffn ${d.ffn}, vocab ${d.vocab}, context ${d.context}`,
            `  parameters    ${fmt(d.parameters)} (${d.parameters}), ${d.dtype}${d.tied ? ", tied output layer" : ""}`,
            `  optimizer     ${d.hasOptimizerState ? `AdamW moments, step ${d.optimizerStep}` : "no optimizer state"}`,
            `  progress      step ${d.step}, ${fmt(d.tokensSeen)} tokens, ${d.flopsSeen.toExponential(2)} FLOPs`,
            `  schedule      ${d.schedule ? `${d.schedule.kind}, peak lr ${d.schedule.peakLr}, ${d.schedule.restarts.length} restart(s)` : "none"}`,
            ...(d.trainer ? trainerLines(d.trainer) : []),
            `  stages        ${d.stages.length ? d.stages.map((s) => `${s.operator}@${s.step} (${s.before.layers}×${s.before.dModel} → ${s.after.layers}×${s.after.dModel})`).join(", ") : "none"}`,
          ];
          createOutput(Boolean(g.json)).result(d, lines.join("\n"));
        } finally {
          await state.close();
        }
      });
    });
}

import { resolve } from "node:path";
import { InvalidArgumentError, Option, type Command } from "commander";
import { loadTrainingState, PRECISIONS, type Precision } from "@staged/core";
import { train, DEFAULT_BATCH, DEFAULT_CLIP, DEFAULT_EVAL_BLOCKS, DEVICES, type Device, type StepInfo, type TrainOptions } from "@staged/trainer-ort";
import { createReporter, fmtTime, PROGRESS_MODES, type ProgressMode, type Reporter } from "../progress.js";
import { createOutput, runAction, UsageError } from "../output.js";
import { listenForInterrupt, lostSince } from "../interrupt.js";
import { integer, number } from "../options.js";
import type { GlobalOptions } from "../main.js";
import { createCliRegistry } from "../registry.js";
import { trainingProblem } from "@staged/hf-trainer";
import { lrScheduleKinds } from "@staged/scheduler";

const betas = (value: string): [number, number] => {
  const parts = value.split(",").map((v) => Number(v));
  if (parts.length !== 2 || value.split(",").some((v) => v.trim() === "") || !parts.every((b) => Number.isFinite(b) && b >= 0 && b < 1)) {
    throw new InvalidArgumentError("--betas must be two numbers in [0, 1) separated by a comma, e.g. 0.9,0.95.");
  }
  return [parts[0]!, parts[1]!];
};

/** "none" (or 0) disables clipping; commander would turn a parser's null into "", so it is Infinity here. */
const clip = (value: string): number => (value === "none" || value === "0" ? Infinity : number("clip", "positive")(value));

interface TrainCliOptions {
  data?: string;
  steps: number;
  batch?: number;
  microBatch?: number;
  precision?: Precision;
  context?: number;
  lr?: number;
  schedule?: string;
  warmup?: number;
  totalSteps?: number;
  minLr?: number;
  betas?: [number, number];
  eps?: number;
  weightDecay?: number;
  clip?: number;
  biasCorrection?: boolean;
  sampler?: "random" | "sequential";
  seed?: number;
  evalEvery?: number;
  evalBlocks?: number;
  saveEvery?: number;
  keepEvery?: number;
  device?: Device;
  valData?: string;
  tokenizer?: string;
  threads?: number;
  progress?: ProgressMode;
}

const fmtLoss = (x: number | null | undefined): string => (x === null || x === undefined ? "-" : Number.isFinite(x) ? x.toFixed(4) : String(x));

/** What a training progress line says beyond the step count. */
interface TrainDetails {
  step: number | null;
  loss: number | null;
  valLoss: number | null;
  lr: number | null;
  tokensPerSecond: number | null;
}

/**
 * Progress on stderr through the CLI's reporter, from the first step's start (after the setup): a bar on a terminal,
 * else about 20 lines per run (also with --json).
 */
function trainProgress(steps: number, mode: ProgressMode | undefined) {
  let valLoss: number | null = null;
  let reporter: Reporter<TrainDetails> | null = null;
  return {
    start() {
      reporter = createReporter<TrainDetails>({
        label: "training",
        unit: "steps",
        every: { parts: 20 },
        lastLine: "never",
        ...(mode ? { mode } : {}),
        details: { step: null, loss: null, valLoss: null, lr: null, tokensPerSecond: null },
        line: ({ done, total, eta, details: d }) =>
          `step ${d.step ?? "-"} (${done}/${total})  loss ${fmtLoss(d.loss)}  val ${fmtLoss(d.valLoss)}  lr ${d.lr?.toExponential(2) ?? "-"}  ` +
          `${Math.round(d.tokensPerSecond ?? 0)} tok/s  ETA ${fmtTime(eta)}`,
        fields: ({ details }) => ({ ...details }),
        bar: {
          format: "{bar} {value}/{total} | step {step} | loss {loss} | val {val} | lr {lr} | {tps} tok/s | ETA {eta_formatted}",
          values: ({ details: d }) => ({
            step: d.step ?? "-",
            loss: fmtLoss(d.loss),
            val: fmtLoss(d.valLoss),
            lr: d.lr?.toExponential(2) ?? "-",
            tps: d.tokensPerSecond === null ? "-" : Math.round(d.tokensPerSecond),
          }),
        },
      });
      reporter.update(0, steps);
    },
    eval(v: number) {
      valLoss = v;
    },
    step(i: StepInfo) {
      reporter?.update(i.index, i.steps, { step: i.step, loss: i.loss, valLoss, lr: i.lr, tokensPerSecond: i.tokensPerSecond });
    },
    stop() {
      reporter?.stop();
    },
  };
}

export function registerTrain(program: Command): void {
  program
    .command("train <dir>")
    .description("train a checkpoint in place for --steps steps (resumes from its progress; saves atomically; with the dropout its config.json says)")
    .option(
      "--data <source>",
      "brown (the Brown corpus), a .txt file, or a file of little-endian token ids: .bin uint16, .u32.bin uint32 (vocabularies past 65,536), read in pieces at any size (default: the checkpoint's last)",
    )
    .requiredOption("--steps <N>", "steps to run now", integer("steps", 1))
    .option("--batch <B>", `blocks per step (default: the checkpoint's, ${DEFAULT_BATCH} for a fresh one)`, integer("batch", 1))
    .option("--micro-batch <M>", "blocks per micro-batch (gradient accumulation; divides --batch)", integer("micro-batch", 1))
    .addOption(
      new Option(
        "--precision <p>",
        "the step's arithmetic: fp32, or mixed (float16 matrices, float32 weights and moments, dynamic loss scale); default: the checkpoint's, fp32",
      ).choices(PRECISIONS),
    )
    .option("--context <T>", "tokens per block (default the model's n_positions)", integer("context", 2))
    .option("--lr <X>", "peak learning rate (default: the checkpoint's, 1e-3 for a fresh one)", number("lr", "positive"))
    .addOption(
      new Option("--schedule <kind>", "LR schedule (default: the checkpoint's, constant for a fresh one)").choices(
        lrScheduleKinds(createCliRegistry()),
      ),
    )
    .option("--warmup <W>", "linear warmup steps (default 0)", integer("warmup", 0))
    .option("--total-steps <N>", "length of the LR schedule (default: this run's end, or the stored schedule's if longer)", integer("total-steps", 1))
    .option("--min-lr <X>", "final LR of decaying schedules (default 0)", number("min-lr"))
    .option("--betas <b1,b2>", "AdamW betas (default: the checkpoint's, 0.9,0.999 for a fresh one)", betas)
    .option("--eps <E>", "AdamW epsilon (default: the checkpoint's, 1e-8)", number("eps", "positive"))
    .option("--weight-decay <W>", "AdamW decoupled weight decay (default: the checkpoint's, 0.01)", number("weight-decay"))
    .option("--clip <C>", `global gradient-norm clip, "none" to disable (default: the checkpoint's, ${DEFAULT_CLIP})`, clip)
    .option("--bias-correction", "Adam's bias correction (default: the checkpoint's, on for a fresh one)")
    .option("--no-bias-correction", "no bias correction, as the seed code's correct_bias=False (stored in the checkpoint)")
    .addOption(new Option("--sampler <kind>", "batch sampler (default: the checkpoint's, random)").choices(["random", "sequential"]))
    .option("--seed <S>", "sampler seed (default: the checkpoint's)", integer("seed", 0))
    .option("--eval-every <K>", "validation loss every K steps (0: only at the end; default: the checkpoint's)", integer("eval-every", 0))
    .option("--eval-blocks <K>", `validation blocks per evaluation (default: the checkpoint's, ${DEFAULT_EVAL_BLOCKS})`, integer("eval-blocks", 1))
    .option("--save-every <K>", "checkpoint every K steps (0: only at the end)", integer("save-every", 0))
    .option("--keep-every <K>", "also keep a snapshot <dir>.step-<N> every K updates, never replaced", integer("keep-every", 0))
    .addOption(new Option("--device <d>", "execution provider (default cpu)").choices(DEVICES))
    .option("--threads <N>", "CPU threads (default: all cores)", integer("threads", 1))
    .option("--val-data <file>", "validation data (default: Brown's validation split, or the last 5% of --data)")
    .option("--tokenizer <tokenizer.json>", "an HF tokenizer to use and store in the checkpoint (default: the checkpoint's, bytes)")
    .addOption(
      new Option("--progress <mode>", "progress on stderr: a bar on a terminal, else lines (auto), lines, JSON lines, or none")
        .choices([...PROGRESS_MODES])
        .default("auto"),
    )
    .action(async (dir: string, o: TrainCliOptions, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await runAction(Boolean(g.debug), async () => {
        const out = createOutput(Boolean(g.json));
        // The write lock from the start: a second train (or a grow, eval, inspect) of this checkpoint is refused at once.
        const registry = createCliRegistry();
        const state = await loadTrainingState(dir, { lock: "exclusive", registry });
        const scheduleFlags = (["lr", "schedule", "warmup", "totalSteps", "minLr"] as const)
          .filter((k) => o[k] !== undefined)
          .map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);
        const problem = trainingProblem(state, scheduleFlags);
        if (problem) {
          await state.close();
          throw new UsageError(`${dir}: ${problem}`);
        }
        // Progress goes to stderr also with --json (stdout carries only the result).
        const progress = trainProgress(o.steps, o.progress);
        // Ctrl-C: the step in progress finishes and is saved; a second Ctrl-C says what it loses.
        let saved = state.progress.step,
          current = state.progress.step;
        const interrupt = listenForInterrupt("finishing the step in progress and saving", () => lostSince(saved, current, dir));
        try {
          const { progress: _mode, ...flags } = o;
          const options: TrainOptions = { ...flags, clip: o.clip === Infinity ? null : o.clip, saveDir: dir, signal: interrupt.signal, registry };
          const { result } = await train(state, options, {
            onSave: (s) => {
              if (s.dir === dir) saved = s.step;
            },
            onStart: ({ data, schedule, context, batch, setupSeconds }) => {
              out.info(
                `training ${resolve(dir)} from step ${state.progress.step}: ${o.steps} steps of ${batch} × ${context} tokens on ${data.train.name} ` +
                  `(${data.train.tokens.length} tokens), validation ${data.validation.name}; ${schedule.kind} LR ${schedule.peakLr} ` +
                  `over ${schedule.totalSteps} steps; ready in ${setupSeconds.toFixed(1)} s`,
              );
              progress?.start();
            },
            onEval: (e) => {
              progress?.eval(e.valLoss);
            },
            onStep: (i) => {
              current = i.step;
              progress?.step(i);
            },
          });
          progress?.stop();
          if (result.interrupted) {
            process.exitCode = interrupt.status() ?? 130;
            out.info(
              result.losses.length === 0
                ? `interrupted before the first step: ${resolve(dir)} is unchanged (step ${state.progress.step})`
                : `interrupted after ${result.losses.length} of ${o.steps} steps: saved step ${result.step} to ${resolve(dir)}; nothing is lost`,
            );
          }
          const json = {
            step: result.step,
            loss: result.loss,
            losses: result.losses,
            valLoss: result.valLoss,
            tokensPerSecond: result.tokensPerSecond,
            tokens: result.tokens,
            flops: result.flops,
            seconds: result.seconds,
            runTokens: result.runTokens,
            stepSeconds: result.stepSeconds,
            setupSeconds: result.setupSeconds,
            schedule: result.schedule,
            checkpoint: resolve(dir),
            interrupted: result.interrupted,
          };
          out.result(
            json,
            `step ${result.step}: loss ${fmtLoss(result.loss)}, val loss ${fmtLoss(result.valLoss)}, ` +
              `${Math.round(result.tokensPerSecond)} tokens/s, ${result.tokens} tokens, ${result.flops.toExponential(2)} FLOPs seen; ` +
              (result.saveDir ? `saved ${resolve(dir)}` : `${resolve(dir)} unchanged`) +
              ` (${result.seconds.toFixed(1)} s)`,
          );
        } finally {
          interrupt.dispose();
          progress?.stop();
          await state.close();
        }
      });
    });
}

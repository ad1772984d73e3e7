import { z } from "zod";
import { schemaError } from "./schema.js";
import { PRECISIONS, type AdamWState, type Progress, type TokenizerSpec, type TrainingSettings, type TrainingState } from "./types.js";

/**
 * training_state.json: everything of a TrainingState that is not a tensor (the optimizer's settings and step, the
 * LR schedule, the progress counters and growth history, the tokenizer kind, the training settings). Its fields are
 * documented in docs/formats.md; this file is the one place that reads and writes them. Every value is range-checked
 * as the command-line flag that sets it is (a step is a non-negative safe integer, betas lie in [0, 1), eps is
 * positive, ...): a stored value that no flag could have produced is refused with the file and the field named,
 * before anything trains on it or copies it into a grown checkpoint.
 */
export const STATE_FILE = "training_state.json";
export const STATE_FORMAT = "staged-training-state";
export const STATE_VERSION = 1;

const finite = z.number().refine(Number.isFinite, { error: "must be a finite number" });
const positive = finite.refine((v) => v > 0, { error: "must be a positive number" });
const nonNegative = finite.refine((v) => v >= 0, { error: "must be a number ≥ 0" });
const int = (min: number) => z.number().refine((v) => Number.isSafeInteger(v) && v >= min, { error: `must be an integer ≥ ${min} (and below 2^53)` });
const bool = z.boolean({ error: "must be true or false" });
const unit = finite.refine((v) => v >= 0 && v < 1, { error: "must be a number in [0, 1)" });

const shape = z.object({
  layers: int(1),
  dModel: int(1),
  heads: int(1),
  headDim: int(1),
  ffn: int(1),
  vocab: int(1),
  context: int(1),
  kvHeads: int(1).optional(),
  gatedMlp: bool.optional(),
});

const stage = z.object({
  step: int(0),
  operator: z.string().min(1),
  options: z.record(z.string(), z.unknown()),
  before: shape,
  after: shape,
  continueAt: int(0).optional(),
});

const optimizer = z.object({
  name: z.literal("adamw"),
  lr: positive,
  betas: z.tuple([unit, unit]),
  eps: positive,
  weightDecay: nonNegative,
  clip: z.union([z.null(), positive]).optional(),
  noDecay: z.array(z.string()),
  step: int(0),
  biasCorrection: bool.optional(),
  lossScale: z
    .object({
      scale: positive.refine((x) => Number.isInteger(Math.log2(x)), { error: "must be a power of two" }),
      goodSteps: int(0),
    })
    .optional(),
  hasMoments: bool.optional(),
});

const schedule = z.looseObject({
  kind: z.string().min(1),
  peakLr: nonNegative,
  warmupSteps: int(0),
  totalSteps: int(0),
  minLr: nonNegative.optional(),
  restarts: z.array(z.object({ step: int(0), warmupSteps: int(0) })),
  paramScales: z
    .array(
      z.object({
        step: int(0),
        scale: positive,
        rampSteps: int(0),
        roles: z.union([z.null(), z.array(z.string())]),
      }),
    )
    .optional(),
});

const progress = z.object({
  step: int(0),
  tokensSeen: nonNegative,
  flopsSeen: nonNegative,
  samplerSeed: int(0),
  sampler: z.enum(["random", "sequential"]).optional(),
  globalStep: int(0).optional(),
  stages: z.array(stage),
});

const tokenizer = z.union(
  [
    z.object({ kind: z.literal("bytes") }),
    z.object({ kind: z.literal("hf"), file: z.literal("tokenizer.json") }),
    z.object({ kind: z.literal("none") }),
  ],
  { error: 'must be {"kind":"bytes"}, {"kind":"hf","file":"tokenizer.json"} or {"kind":"none"}' },
);

const training = z.object({
  batch: int(1),
  microBatch: int(1).optional(),
  precision: z.enum(PRECISIONS).optional(),
  context: int(2),
  evalEvery: int(0),
  evalBlocks: int(1),
  data: z.string().min(1).optional(),
  valData: z.string().min(1).optional(),
});

const stateFile = z.object({
  format: z.literal(STATE_FORMAT, { error: `must be "${STATE_FORMAT}"` }),
  version: z.literal(STATE_VERSION, { error: `must be ${STATE_VERSION} (the version this reads)` }),
  architecture: z.string().optional(),
  optimizer,
  schedule: z.union([z.null(), schedule]),
  progress,
  tokenizer,
  training: training.optional(),
});

/** What training_state.json holds (the tensors are in the safetensors files beside it). */
export interface SavedState {
  optimizer: AdamWState;
  schedule: TrainingState["schedule"];
  progress: Progress;
  tokenizer: TokenizerSpec;
  training?: TrainingSettings;
}

/** Validate the parsed JSON of a training_state.json (`file` names it in the error). */
export function parseStateFile(raw: unknown, file: string): SavedState {
  const r = stateFile.safeParse(raw);
  if (!r.success) throw schemaError(file, r.error);
  const { hasMoments: _h, ...o } = r.data.optimizer;
  const p = r.data.progress;
  return {
    optimizer: {
      name: "adamw",
      lr: o.lr,
      betas: o.betas,
      eps: o.eps,
      weightDecay: o.weightDecay,
      noDecay: o.noDecay,
      step: o.step,
      ...(o.clip === undefined ? {} : { clip: o.clip }),
      ...(o.biasCorrection === undefined ? {} : { biasCorrection: o.biasCorrection }),
      ...(o.lossScale === undefined ? {} : { lossScale: o.lossScale }),
    },
    schedule: r.data.schedule as TrainingState["schedule"],
    progress: {
      step: p.step,
      tokensSeen: p.tokensSeen,
      flopsSeen: p.flopsSeen,
      samplerSeed: p.samplerSeed,
      stages: p.stages as Progress["stages"],
      ...(p.sampler === undefined ? {} : { sampler: p.sampler }),
      ...(p.globalStep === undefined ? {} : { globalStep: p.globalStep }),
    },
    tokenizer: r.data.tokenizer,
    ...(r.data.training === undefined ? {} : { training: stripUndefined(r.data.training) as TrainingSettings }),
  };
}

const stripUndefined = <T extends object>(o: T): T => Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;

/** The content of training_state.json for `state` (`hasMoments`: whether optimizer files are written beside it). */
export function formatStateFile(state: TrainingState, hasMoments: boolean): string {
  const { expAvg: _a, expAvgSq: _b, ...optimizer } = state.optimizer;
  const meta = {
    format: STATE_FORMAT,
    version: STATE_VERSION,
    architecture: state.architecture,
    optimizer: { ...optimizer, hasMoments },
    schedule: state.schedule,
    progress: state.progress,
    tokenizer: state.tokenizer,
    ...(state.training ? { training: state.training } : {}),
  };
  return JSON.stringify(meta, null, 2) + "\n";
}

import { z } from "zod";
import { parseJsonFile, schemaError, type LrScheduleSpec, type StageRecord } from "@staged/core";

/**
 * trainer_state.json, Trainer's `TrainerState` dataclass as JSON (transformers' trainer_callback.py). The fields read
 * here are checked; every other field is kept as it is and written back (Trainer rebuilds the dataclass from all of
 * them, so none may be added: `TrainerState(**json)` refuses an unknown field).
 */
const count = z.number().int().min(0);
const logEntry = z.looseObject({ step: count.optional() });
export const trainerStateSchema = z.looseObject({
  global_step: count,
  max_steps: count.optional(),
  log_history: z.array(logEntry).default([]),
  total_flos: z.number().min(0).optional(),
  num_input_tokens_seen: z.number().min(0).optional(),
});
export type TrainerStateJson = z.infer<typeof trainerStateSchema>;

/** trainer_state.json checked, with every field as it was (in its order). */
export function parseTrainerState(text: string, file: string): TrainerStateJson {
  const raw = parseJsonFile(text, file);
  const r = trainerStateSchema.safeParse(raw);
  if (!r.success) throw schemaError(file, r.error);
  return { ...(raw as Record<string, unknown>), log_history: r.data.log_history } as TrainerStateJson;
}

/** JSON as Trainer writes trainer_state.json (`json.dumps(..., indent=2, sort_keys=True)`): keys sorted at every level. */
export function formatTrainerState(value: Record<string, unknown>): string {
  const sorted = (v: unknown): unknown =>
    Array.isArray(v)
      ? v.map(sorted)
      : v !== null && typeof v === "object"
        ? Object.fromEntries(
            Object.keys(v)
              .sort()
              .map((k) => [k, sorted((v as Record<string, unknown>)[k])]),
          )
        : v;
  return JSON.stringify(sorted(value), null, 2) + "\n";
}

/**
 * A growth as a log_history entry: `{"step": S, "staged_growth": {...}}`. log_history is the one place of
 * trainer_state.json that takes new keys and that Trainer carries from checkpoint to checkpoint, so a growth recorded
 * there survives Trainer resuming and saving again; tools that read the log look for "loss"/"eval_loss" and skip it.
 */
export const GROWTH_KEY = "staged_growth";
/**
 * The schedule a state converted from the project's format trains with, as a log entry `{"step": S, "staged_schedule":
 * {...}}`: LambdaLR's state cannot say it, and a later read needs it where the logged LRs leave it open.
 */
export const SCHEDULE_KEY = "staged_schedule";

const shape = z.looseObject({
  layers: count,
  dModel: count,
  heads: count,
  headDim: count,
  ffn: count,
  vocab: count,
  context: count,
  kvHeads: count.optional(),
  gatedMlp: z.boolean().optional(),
});
const scheduleSchema = z.object({
  kind: z.string(),
  peakLr: z.number().min(0),
  warmupSteps: count,
  totalSteps: count,
  restarts: z.array(z.object({ step: count, warmupSteps: count })),
});
const growthSchema = z.object({
  operator: z.string(),
  options: z.record(z.string(), z.unknown()),
  before: shape,
  after: shape,
  step: count,
  continueAt: count.optional(),
  /** The schedule Trainer's LRs were found to follow when the growth was written, at the grown model's base LR. */
  schedule: scheduleSchema.nullable().optional(),
});

/** A growth as read from the log: the stage, and the schedule recorded with it. */
export interface LoggedGrowth {
  stage: StageRecord;
  schedule: LrScheduleSpec | null;
  index: number;
}

/** The growths recorded in a log history, in order (see GROWTH_KEY); `file` names it in errors. */
export function loggedGrowths(log: readonly Record<string, unknown>[], file: string): LoggedGrowth[] {
  const out: LoggedGrowth[] = [];
  log.forEach((entry, i) => {
    if (!(GROWTH_KEY in entry)) return;
    const r = growthSchema.safeParse(entry[GROWTH_KEY]);
    if (!r.success) throw schemaError(file, new z.ZodError(r.error.issues.map((x) => ({ ...x, path: ["log_history", i, GROWTH_KEY, ...x.path] }))));
    const { schedule, ...stage } = r.data;
    out.push({ stage: stage as StageRecord, schedule: (schedule ?? null) as LrScheduleSpec | null, index: i });
  });
  return out;
}

/** The last schedule the log records (with a growth or a conversion), or null. */
export function recordedSchedule(log: readonly Record<string, unknown>[], file: string): LrScheduleSpec | null {
  for (let i = log.length - 1; i >= 0; i--) {
    const e = log[i]!;
    const v = GROWTH_KEY in e ? (e[GROWTH_KEY] as Record<string, unknown> | null)?.schedule : e[SCHEDULE_KEY];
    if (v === undefined) continue;
    if (v === null) return null;
    const r = scheduleSchema.safeParse(v);
    if (!r.success)
      throw schemaError(
        file,
        new z.ZodError(r.error.issues.map((x) => ({ ...x, path: ["log_history", i, GROWTH_KEY in e ? GROWTH_KEY : SCHEDULE_KEY, ...x.path] }))),
      );
    return r.data as LrScheduleSpec;
  }
  return null;
}

export const growthsOf = (log: readonly Record<string, unknown>[], file: string): StageRecord[] => loggedGrowths(log, file).map((g) => g.stage);

export const growthEntry = (stage: StageRecord, schedule: LrScheduleSpec | null): Record<string, unknown> => ({
  step: stage.continueAt ?? stage.step,
  [GROWTH_KEY]: { ...stage, schedule },
});

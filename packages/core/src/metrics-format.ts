import { z } from "zod";
import { schemaError } from "./schema.js";

/**
 * metrics.jsonl: the trainer's learning curve inside a checkpoint directory, one JSON object per line, carried
 * through growth (docs/formats.md). This file is the one place that reads and writes its lines; @staged/scheduler
 * re-exports it and reads curves from it.
 */
export const METRICS_FILE = "metrics.jsonl";

/**
 * One line of `metrics.jsonl`: the state after a training step. `step` is the schedule step after the
 * update (progress.step), `tokens` and `flops` the totals seen so far (progress.tokensSeen / flopsSeen),
 * `loss` the step's training loss (null when it diverged: JSON has no NaN), `lr` the learning rate the step
 * used, `valLoss` the validation loss when it was computed after this step, `stage` the number of growths
 * before it (each stage is one model size; a growth may continue at an earlier step), `globalStep` the
 * updates of the whole run so far (never set back, so curves plot in order by it or by `flops`).
 */
export interface MetricsRecord {
  step: number;
  /** Optimizer updates over the whole run (progress.globalStep): monotone across growths, unlike `step`. */
  globalStep?: number;
  stage?: number;
  tokens: number;
  flops: number;
  loss: number | null;
  valLoss?: number | null;
  lr?: number;
}

const count = z.number().refine((v) => Number.isSafeInteger(v) && v >= 0, { error: "must be an integer ≥ 0" });
const amount = z.number().refine((v) => Number.isFinite(v) && v >= 0, { error: "must be a finite number ≥ 0" });
const loss = z.union([z.null(), z.number()]);
const line = z.looseObject({
  step: count,
  globalStep: count.optional(),
  stage: count.optional(),
  tokens: amount,
  flops: amount,
  loss: loss.optional(),
  valLoss: loss.optional(),
  lr: z.number().optional(),
});

/** Parse metrics.jsonl text; blank lines are skipped; a malformed line is an error naming file, line and field. */
export function parseMetrics(text: string, source = METRICS_FILE): MetricsRecord[] {
  const out: MetricsRecord[] = [];
  text.split("\n").forEach((l, i) => {
    if (!l.trim()) return;
    let v: unknown;
    try {
      v = JSON.parse(l);
    } catch {
      throw new Error(`${source}:${i + 1}: not JSON`);
    }
    const r = line.safeParse(v);
    if (!r.success) {
      throw new Error(`${schemaError(`${source}:${i + 1}`, r.error).message} (a line is {"step","tokens","flops","loss","valLoss","lr"})`);
    }
    out.push(v as MetricsRecord); // as written: the keys in their order, so a rewritten log is byte-identical
  });
  return out;
}

/** metrics.jsonl text of records, one JSON object per line. */
export const formatMetrics = (records: readonly MetricsRecord[]): string => records.map((r) => JSON.stringify(r) + "\n").join("");

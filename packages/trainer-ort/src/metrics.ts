import { readFile } from "node:fs/promises";
import { join } from "node:path";

/** The name of the metrics log inside a checkpoint directory. */
export const METRICS_FILE = "metrics.jsonl";

/**
 * One line of `metrics.jsonl`: the state after a training step. `step` is the schedule step after the
 * update (progress.step), `tokens` and `flops` the totals seen so far (progress.tokensSeen / flopsSeen),
 * `loss` the step's training loss, `lr` the learning rate the step used, `valLoss` the validation loss
 * when it was computed after this step.
 */
export interface MetricsRecord {
  step: number;
  tokens: number;
  flops: number;
  loss: number;
  valLoss?: number;
  lr: number;
}

const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/** Parse metrics.jsonl text; blank lines are skipped, a malformed line is an error naming its line. */
export function parseMetrics(text: string, name = METRICS_FILE): MetricsRecord[] {
  const out: MetricsRecord[] = [];
  text.split("\n").forEach((line, i) => {
    if (!line.trim()) return;
    let v: unknown;
    try { v = JSON.parse(line); } catch { throw new Error(`${name}:${i + 1}: not JSON`); }
    const r = v as Record<string, unknown>;
    // loss may be null when a step diverged (JSON has no NaN).
    if (typeof v !== "object" || v === null || !isNum(r.step) || !isNum(r.tokens) || !isNum(r.flops) || !isNum(r.lr)) {
      throw new Error(`${name}:${i + 1}: expected {"step","tokens","flops","loss","lr"}`);
    }
    out.push(v as MetricsRecord);
  });
  return out;
}

/** metrics.jsonl text of records, one JSON object per line. */
export const formatMetrics = (records: readonly MetricsRecord[]): string =>
  records.map((r) => JSON.stringify(r) + "\n").join("");

/** The records of `dir/metrics.jsonl`, or [] when there is none. */
export async function readMetrics(dir: string): Promise<MetricsRecord[]> {
  const file = join(dir, METRICS_FILE);
  let text: string;
  try { text = await readFile(file, "utf8"); } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    throw new Error(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`);
  }
  return parseMetrics(text, file);
}

import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { createDefaultRegistry, readTextInput, type Registry } from "@staged/core";
import { nonEmbeddingParams } from "./flops.js";
import { basename, dirname, join } from "node:path";
import type { LossPoint } from "./slope.js";
import type { LearningCurve } from "./fit.js";

export { METRICS_FILE, parseMetrics, formatMetrics, type MetricsRecord } from "@staged/core";
import { METRICS_FILE, parseMetrics, type MetricsRecord } from "@staged/core";

const isNum = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

/** The records of `dir/metrics.jsonl`, or [] when there is none. */
export async function readMetrics(dir: string): Promise<MetricsRecord[]> {
  const file = join(dir, METRICS_FILE);
  if (!existsSync(file)) return [];
  return parseMetrics(await readTextInput(file, "the metrics"), file);
}

export interface CurveFromMetricsOptions {
  /** Which loss: "valLoss" (lines without one are skipped), "loss" (training loss), or "auto" (default):
   *  valLoss when the file has any, else loss. */
  field?: "valLoss" | "loss" | "auto" | undefined;
}

/**
 * Points {step, tokens, compute = flops, loss} of the chosen loss, in file order, finite positive losses only,
 * of the last stage: the model that config.json beside the log describes (earlier stages were smaller models).
 */
export function curveFromMetrics(lines: readonly MetricsRecord[], options: CurveFromMetricsOptions = {}): (LossPoint & { tokens: number })[] {
  const stage = lines.reduce((m, l) => Math.max(m, l.stage ?? 0), 0);
  const current = lines.filter((l) => (l.stage ?? 0) === stage);
  let field = options.field ?? "auto";
  if (field === "auto") field = current.some((l) => isNum(l.valLoss)) ? "valLoss" : "loss";
  const out: (LossPoint & { tokens: number })[] = [];
  for (const l of current) {
    const loss = l[field];
    if (!isNum(loss) || loss <= 0 || !(l.flops > 0)) continue;
    out.push({ step: l.step, tokens: l.tokens, compute: l.flops, loss });
  }
  return out;
}

/**
 * Non-embedding parameters (Kaplan's N, {@link nonEmbeddingParams}) of the model a config.json describes, read
 * by its architecture plugin (any registered model_type), or null when no plugin reads the config.
 */
export function paramsFromConfig(config: Record<string, unknown>, registry: Registry = createDefaultRegistry()): number | null {
  const arch = registry.architectureFor(config.model_type);
  if (!arch) return null;
  try {
    return nonEmbeddingParams(arch.parseConfig(config).shape);
  } catch {
    return null;
  }
}

/**
 * Read a learning curve from a metrics.jsonl file. The model size comes from, in order: `params` if given;
 * the config.json beside the file; else an estimate flops / (6 · tokens) (which also counts the output layer
 * and attention, so it over-estimates N; `estimated` says so).
 */
export async function readLearningCurve(
  path: string,
  options: CurveFromMetricsOptions & { params?: number | undefined } = {},
): Promise<LearningCurve & { estimated: boolean; points: (LossPoint & { tokens: number })[] }> {
  const text = await readTextInput(path, "the metrics");
  const points = curveFromMetrics(parseMetrics(text, path), options);
  if (points.length === 0) throw new Error(`${path}: no points with a loss`);
  let params = options.params ?? null;
  let estimated = false;
  if (params === null) {
    try {
      const config = JSON.parse(await readFile(join(dirname(path), "config.json"), "utf8")) as Record<string, unknown>;
      params = paramsFromConfig(config);
    } catch {
      /* no readable config beside it */
    }
  }
  if (params === null) {
    const last = points[points.length - 1]!;
    params = last.compute / (6 * last.tokens);
    estimated = true;
  }
  if (!(params > 0)) throw new Error(`${path}: model size must be > 0, got ${params}`);
  return { params, points, source: path, estimated };
}

/** `path` or `path=N` (an explicit non-embedding parameter count, e.g. runs/a/metrics.jsonl=85e6). */
export function parseCurveArg(arg: string): { path: string; params?: number } {
  const m = /^(.*)=([0-9.eE+]+)$/.exec(arg);
  if (!m || basename(m[1]!) === "") return { path: arg };
  const n = Number(m[2]);
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${arg}: the parameter count after "=" must be a number > 0`);
  return { path: m[1]!, params: n };
}

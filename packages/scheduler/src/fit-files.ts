import type { LearningCurve, FitResult } from "./fit.js";
import { fitLaw } from "./fit.js";
import { parseCurveArg, readLearningCurve } from "./metrics.js";

/** A curve `staged plan fit` read, with where its model size came from. */
export type FittedCurve = Awaited<ReturnType<typeof readLearningCurve>>;

/**
 * `staged plan fit`: the learning curves of metrics.jsonl files (each argument `path` or `path=N`, N its non-embedding
 * parameters; see parseCurveArg) and a law of `form` fitted to them. Needs curves of at least 2 model sizes.
 */
export async function fitLawToMetrics(
  form: "kaplan" | "chinchilla",
  args: readonly string[],
  options: { skipFraction?: number | undefined } = {},
): Promise<{ fit: FitResult; curves: FittedCurve[]; paths: string[] }> {
  const parsed = args.map(parseCurveArg);
  const curves: FittedCurve[] = [];
  for (const a of parsed) curves.push(await readLearningCurve(a.path, { params: a.params }));
  if (new Set(curves.map((c: LearningCurve) => c.params)).size < 2) throw new Error("fitting a law needs learning curves of at least 2 model sizes");
  return { fit: fitLaw(form, curves, options), curves, paths: parsed.map((a) => a.path) };
}

import { parseJsonFile, readTextInput, schemaError } from "@staged/core";
import { z } from "zod";
import type { ModelSpec, StageSpec } from "./spec.js";
import type { CurvePoint, FinalEvaluation, GrowthEvent, RunResult } from "./types.js";

/**
 * The files `staged run` writes in a run's directory (`<out>/<run>/`) beside its checkpoints `stage-<k>/`: their
 * names, their schemas, and the one place that reads and writes them. Fields in docs/formats.md. A file that is not
 * what its schema says (a foreign file, a hand edit, another version) is refused with one line naming the file and
 * the field, `<file>: <field> <problem>` (core's schemaError), before anything is computed from it.
 *
 * - run.json: what identifies the run's configuration; a rerun into the directory must match it.
 * - result.json: the finished run (its constant-LR curve, growths, cooled-down points), what `staged report` reads.
 * - growths.json: the growths made so far, read when a run resumes.
 * - frontier.json, cooldown.json: a baseline's cooled-down frontier points done so far and where the common cooldown
 *   began, read when a run resumes inside them.
 */
export const RUN_FILE = "run.json";
export const RESULT_FILE = "result.json";
export const GROWTHS_FILE = "growths.json";
export const FRONTIER_FILE = "frontier.json";
export const COOLDOWN_FILE = "cooldown.json";

export const RUN_FORMAT = "staged-run-entry";
export const RESULT_FORMAT = "staged-run-result";
export const GROWTHS_FORMAT = "staged-run-growths";
/** The version of run.json, result.json and growths.json this package writes and reads. */
export const RUN_FILES_VERSION = 1;

const shown = (v: unknown): string => JSON.stringify(v) ?? "nothing";
/** A finite number; the error quotes what was there (`must be a finite number, got null`). */
const finite = z.number({ error: (iss) => `must be a finite number, got ${shown(iss.input)}` });
const count = z
  .number({ error: (iss) => `must be an integer ≥ 0, got ${shown(iss.input)}` })
  .refine((v) => Number.isSafeInteger(v) && v >= 0, { error: (iss) => `must be an integer ≥ 0, got ${shown(iss.input)}` });
const text = z.string({ error: (iss) => `must be a string, got ${shown(iss.input)}` });
const format = <F extends string>(name: F) => z.literal(name, { error: `must be "${name}"` });
const version = z.literal(RUN_FILES_VERSION, { error: `must be ${RUN_FILES_VERSION} (the version this reads)` });

const curvePoint = z.object({ globalStep: count, step: count, stage: count, flops: finite, tokens: finite, valLoss: finite });

const growthEvent = z.object({
  stage: count,
  operator: text,
  options: z.record(z.string(), z.unknown()),
  flops: finite,
  globalStep: count,
  timing: text,
  valLossBefore: finite,
  valLossAfter: finite,
  paramsBefore: count,
  paramsAfter: count,
});

const finalEvaluation = z.object({ steps: count, flops: finite, valLoss: finite, blocks: count, tokens: count, valLossBefore: finite });

/** Points in increasing FLOPs order (what the report interpolates on). */
const curve = z.array(curvePoint).superRefine((points, ctx) => {
  points.forEach((p, i) => {
    const before = points[i - 1]?.flops;
    if (before !== undefined && p.flops < before) {
      ctx.addIssue({
        code: "custom",
        path: [i, "flops"],
        message: `${p.flops} is below points[${i - 1}].flops ${before} (points must be in increasing FLOPs order)`,
      });
    }
  });
});

/** result.json. Unknown fields are dropped (examples/bench/dynamics-ablation.mjs adds `divergence`). */
const resultFile = z.object({
  format: format(RESULT_FORMAT),
  version,
  name: text,
  group: text,
  seed: count,
  done: z.boolean({ error: "must be true or false" }),
  budgetFlops: finite,
  points: curve,
  growths: z.array(growthEvent),
  final: finalEvaluation.optional(),
  frontier: z.array(finalEvaluation).optional(),
});

const growthsFile = z.object({ format: format(GROWTHS_FORMAT), version, growths: z.array(growthEvent) });

const isObject = (v: unknown): boolean => typeof v === "object" && v !== null && !Array.isArray(v);
/**
 * run.json: the spec's settings shared by its runs and this run's group, seed, model and stages. The spec's parser
 * checked them when the file was written; a rerun compares the file with its own, so what is checked here is its kind.
 */
const runFile = z.looseObject({
  format: format(RUN_FORMAT),
  version,
  group: text,
  seed: count,
  model: z.custom<ModelSpec>(isObject, { error: "must be a JSON object" }),
  stages: z.array(z.custom<StageSpec>(isObject, { error: "must be a JSON object" }), { error: "must be a list" }),
});

const frontierFile = z.array(finalEvaluation);
const cooldownFile = z.object({ step: count, valLossBefore: finite });

/** What run.json holds: the spec's fields but the run's own (name, seeds, comparisons, threads), and the run's group, seed, model and stages. */
export type RunIdentity = z.infer<typeof runFile>;
/** Where the common cooldown began and the loss there before it (cooldown.json). */
export type CooldownStart = z.infer<typeof cooldownFile>;

// The interfaces of types.ts (with their documentation) are the schemas' types: a field changed on one side only
// fails to compile here.
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const same = <A, B>(ok: Same<A, B>): Same<A, B> => ok;
same<z.infer<typeof curvePoint>, CurvePoint>(true);
same<z.infer<typeof growthEvent>, GrowthEvent>(true);
same<z.infer<typeof finalEvaluation>, FinalEvaluation>(true);
same<z.infer<typeof resultFile>, RunResult>(true);

function parse<S extends z.ZodType>(schema: S, raw: unknown, file: string): z.infer<S> {
  const r = schema.safeParse(raw);
  if (!r.success) throw schemaError(file, r.error);
  return r.data;
}

const read = async <S extends z.ZodType>(schema: S, file: string, what: string): Promise<z.infer<S>> =>
  parse(schema, parseJsonFile(await readTextInput(file, what), file), file);

/** Validate the parsed JSON of a result.json (`file` names it in errors). */
export const parseRunResult = (raw: unknown, file: string): RunResult => parse(resultFile, raw, file);
/** Read and validate a result.json. */
export const readRunResult = (file: string): Promise<RunResult> => read(resultFile, file, "the run result");
export const formatRunResult = (r: RunResult): string => JSON.stringify(r) + "\n";

/** Validate the parsed JSON of a run.json. */
export const parseRunIdentity = (raw: unknown, file: string): RunIdentity => parse(runFile, raw, file);
export const readRunIdentity = (file: string): Promise<RunIdentity> => read(runFile, file, "the run's identity");
export const formatRunIdentity = (id: RunIdentity): string => JSON.stringify(id, null, 2) + "\n";

/** Validate the parsed JSON of a growths.json; returns the growths. */
export const parseGrowths = (raw: unknown, file: string): GrowthEvent[] => parse(growthsFile, raw, file).growths;
export const readGrowths = async (file: string): Promise<GrowthEvent[]> => (await read(growthsFile, file, "the growths")).growths;
export const formatGrowths = (growths: readonly GrowthEvent[]): string =>
  JSON.stringify({ format: GROWTHS_FORMAT, version: RUN_FILES_VERSION, growths }, null, 2) + "\n";

export const readFrontier = (file: string): Promise<FinalEvaluation[]> => read(frontierFile, file, "the frontier");
export const formatFrontier = (points: readonly FinalEvaluation[]): string => JSON.stringify(points) + "\n";

export const readCooldownStart = (file: string): Promise<CooldownStart> => read(cooldownFile, file, "the cooldown's start");
export const formatCooldownStart = (c: CooldownStart): string => JSON.stringify(c) + "\n";

import { dirname, join, resolve } from "node:path";
import type { Command } from "commander";
import { createDefaultRegistry } from "@staged/core";
import {
  GROWTH_FACTORS,
  isChinchillaLaw,
  planGrowthInRunUnits,
  THRESHOLDS,
  constantOp,
  decideOnCurve,
  fitLawToMetrics,
  planStages,
  readLearningCurve,
  resolveLaw,
  DEFAULT_BATCH_TOKENS,
  type GrowthOperator,
  type Plan,
  type ScalingLaw,
  type StepGrid,
} from "@staged/scheduler";
import { formatParams, renderPlanSvg, runModelOf } from "@staged/run";
import { writeOutputFile } from "../files.js";
import { createCliRegistry } from "../registry.js";
import { createOutput, runAction, UsageError } from "../output.js";
import type { GlobalOptions } from "../main.js";

interface PlanOptions extends GlobalOptions {
  threshold?: string;
  constantOp?: string;
  finished?: boolean;
  law?: string;
  targetParams?: string;
  grow?: string;
  thresholdGrow?: string;
  thresholdOpt?: string;
  batchTokens?: string;
  steps?: string;
  plot?: string;
  out?: string;
}

function num(name: string, text: string | undefined, check: (v: number) => boolean, what: string): number | undefined {
  if (text === undefined) return undefined;
  const v = Number(text);
  if (text.trim() === "" || !Number.isFinite(v) || !check(v)) throw new UsageError(`${name} must be ${what}, got "${text}"`);
  return v;
}

/** The law --law names: a registered one (kaplan, chinchilla), or a fit file written by `staged plan fit` (@staged/scheduler resolveLaw). */
function lawOption(text: string | undefined, batchTokens: number | undefined): Promise<{ law: ScalingLaw; file?: string }> {
  if (!text) throw new UsageError("--law is required (kaplan, chinchilla, or a fit.json from `staged plan fit`)");
  return resolveLaw(text, createCliRegistry(), batchTokens);
}

function parseOperators(text: string | undefined): GrowthOperator[] {
  if (!text) throw new UsageError("--grow is required (width, depth, or a list such as width,depth)");
  const ops = text
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const op of ops) {
    if (!(op in GROWTH_FACTORS)) throw new UsageError(`--grow: unknown operator "${op}" (operators: ${Object.keys(GROWTH_FACTORS).join(", ")})`);
  }
  if (!ops.length) throw new UsageError("--grow needs at least one operator");
  return ops as GrowthOperator[];
}

function parseThresholds(text: string | undefined, count: number): number[] | undefined {
  if (text === undefined) return undefined;
  const parts = text.split(",");
  if (parts.length !== 1 && parts.length !== count)
    throw new UsageError(`--threshold-grow: give one threshold or one per growth (${count}), got "${text}"`);
  const values = parts.map((p) => num("--threshold-grow", p, (v) => v < 0, "a negative slope such as -0.0475")!);
  return values.length === 1 ? Array(count).fill(values[0]) : values;
}

function parseGrid(text: string | undefined): StepGrid | undefined {
  if (text === undefined) return undefined;
  const parts = text.split(",").map((p) => Number(p));
  if (parts.length !== 3 || !parts.every((v) => Number.isInteger(v) && v > 0) || parts[1]! <= parts[0]!) {
    throw new UsageError(`--steps must be from,to,every with positive integers and from < to, got "${text}"`);
  }
  if ((parts[1]! - parts[0]!) / parts[2]! > 2_000_000) throw new UsageError(`--steps ${text}: more than 2,000,000 points; raise every`);
  return { from: parts[0]!, to: parts[1]!, every: parts[2]! };
}

export { writeOutputFile } from "../files.js";

const sci = (n: number) => n.toExponential(3);
const pct = (f: number) => `${(f * 100).toFixed(1)}%`;

/** The JSON object `staged plan --json` prints. */
export function planJson(plan: Plan, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const stages = plan.stages.map((s) => ({ ...s }));
  const common = {
    law: plan.law,
    targetParams: plan.targetParams,
    grow: plan.stages.map((s) => s.operator),
    thresholdOpt: plan.thresholdOpt,
    optimalityStep: plan.optimalityStep,
    lossAtOptimality: plan.lossAtOptimality,
    computeSaving: plan.computeSaving,
    stagedCompute: plan.stagedCompute,
    scratchCompute: plan.scratchCompute,
    stagedSteps: plan.stagedSteps,
    stages,
    ...extra,
  };
  if (stages.length !== 1) return common;
  const s = stages[0]!;
  return {
    ...common,
    constantOp: s.constantOp,
    growAtStep: s.growAtStep,
    continueAtStep: s.continueAtStep,
    lossAtGrowth: s.lossAtGrowth,
    thresholdGrow: s.threshold,
    paramsBefore: s.paramsBefore,
    paramsAfter: s.paramsAfter,
  };
}

function planText(plan: Plan): string {
  const lines = [`staged plan (${plan.law}) for ${formatParams(plan.targetParams)} non-embedding parameters`];
  plan.stages.forEach((s, i) => {
    lines.push(
      `  stage ${i + 1}  ${formatParams(s.paramsBefore)}: grow ${s.operator} (×${s.factor} parameters) at step ${s.growAtStep}` +
        ` (slope > ${s.threshold}, loss ${s.lossAtGrowth.toFixed(4)}) → ${formatParams(s.paramsAfter)} continues at step ${s.continueAtStep}` +
        ` (constant_op ${s.constantOp.toFixed(3)})`,
    );
  });
  lines.push(
    `  final     ${formatParams(plan.targetParams)}: stop at step ${plan.optimalityStep} (slope > ${plan.thresholdOpt}, loss ${plan.lossAtOptimality.toFixed(4)})`,
  );
  lines.push(`  compute   staged ${sci(plan.stagedCompute)} FLOPs vs ${sci(plan.scratchCompute)} from scratch: saving ${pct(plan.computeSaving)}`);
  return lines.join("\n");
}

export function registerPlan(program: Command): void {
  const plan = program
    .command("plan")
    .description("scaling-law stage planning: when to grow, from which step to continue, the compute saved")
    .option("--law <law>", "kaplan, chinchilla, or a fit.json written by `staged plan fit`")
    .option("--target-params <n>", "non-embedding parameters of the final model, e.g. 3.4e8")
    .option("--grow <ops>", "growth operators in order: width, depth, or width,depth")
    .option(
      "--threshold-grow <t>",
      `slope threshold(s) for growing, one or one per growth (default width ${THRESHOLDS.width}, depth ${THRESHOLDS.depth})`,
    )
    .option("--threshold-opt <t>", `slope threshold for stopping the final model (default ${THRESHOLDS.optimality})`)
    .option("--batch-tokens <n>", `tokens per step for laws that count tokens (Chinchilla; default ${DEFAULT_BATCH_TOKENS})`)
    .option("--steps <from,to,every>", "the simulated curves' optimizer steps, as Python's range (default the seed's 4000,90000,10)")
    .option("--plot <file.svg>", "draw the curves, the growth and optimality points and the staged path")
    .action(async (_opts: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<PlanOptions>();
      await runAction(Boolean(o.debug), async () => {
        const target = num("--target-params", o.targetParams, (v) => v > 0, "a number > 0");
        if (target === undefined) throw new UsageError("--target-params is required (non-embedding parameters of the final model)");
        const operators = parseOperators(o.grow);
        const thresholdGrow = parseThresholds(o.thresholdGrow, operators.length);
        const thresholdOpt = num("--threshold-opt", o.thresholdOpt, (v) => v < 0, "a negative slope such as -0.052");
        const batchTokens = num("--batch-tokens", o.batchTokens, (v) => Number.isInteger(v) && v > 0, "a positive integer");
        if (o.plot !== undefined && !o.plot.trim()) throw new UsageError("--plot needs a file name");
        const grid = parseGrid(o.steps);
        const { law, file } = await lawOption(o.law, batchTokens);
        const result = planStages({ law, targetParams: target, operators, thresholdGrow, thresholdOpt, grid });
        if (o.plot) await writeOutputFile(o.plot, await renderPlanSvg(result), file ? [file] : []);
        const out = createOutput(Boolean(o.json));
        out.result(planJson(result, o.plot ? { plot: o.plot } : {}), planText(result) + (o.plot ? `\n  plot      ${o.plot}` : ""));
      });
    });

  plan
    .command("fit <metrics...>")
    .description("fit a scaling law to learning curves (metrics.jsonl files; append =N to give a file's non-embedding parameters)")
    .option("--law <form>", "the law's form: kaplan or chinchilla")
    .option("--out <fit.json>", "where to write the fit (atomically; never over an input)")
    .option("--skip <fraction>", "leave out the first fraction of each curve's tokens (warmup and the early plateau; default 0)")
    .action(async (metrics: string[], _opts: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<PlanOptions>();
      await runAction(Boolean(o.debug), async () => {
        if (o.law !== "kaplan" && o.law !== "chinchilla")
          throw new UsageError(`--law must be kaplan or chinchilla, got ${o.law === undefined ? "nothing" : `"${o.law}"`}`);
        if (!o.out) throw new UsageError("--out is required (the fit.json to write)");
        const skipFraction = num("--skip", (o as { skip?: string }).skip, (v) => v >= 0 && v < 1, "a fraction in [0, 1)");
        const { fit, curves, paths } = await fitLawToMetrics(o.law, metrics, { skipFraction });
        await writeOutputFile(o.out, JSON.stringify(fit, null, 2) + "\n", paths);
        const estimated = curves.filter((c) => c.estimated).map((c) => c.source!);
        const summary = {
          out: o.out,
          form: fit.form,
          constants: fit.constants,
          observations: fit.observations,
          rmse: fit.rmse,
          maxAbsResidual: fit.maxAbsResidual,
          batchTokens: fit.batchTokens,
          parameters: fit.parameters,
          warnings: fit.warnings ?? [],
          curves: curves.map((c) => ({ source: c.source, params: c.params, points: c.points.length, paramsEstimated: c.estimated })),
        };
        const text = [
          `fitted ${fit.form} to ${fit.observations} points from ${curves.length} curves → ${o.out}`,
          ...Object.entries(fit.constants).map(([k, v]) => `  ${k.padEnd(7)} ${sci(v)}`),
          `  rmse    ${fit.rmse.toExponential(3)} (max |residual| ${fit.maxAbsResidual.toExponential(3)})`,
          ...(fit.warnings ?? []).map((w) => `  warning: ${w}`),
          ...(estimated.length
            ? [`  note: model size estimated from flops/tokens for ${estimated.join(", ")} (no config.json beside it; append =N to set it)`]
            : []),
        ];
        const out = createOutput(Boolean(o.json));
        // The warnings reach stderr also with --json (stdout has the object, which lists them too).
        if (o.json) for (const w of fit.warnings ?? []) process.stderr.write(`staged: warning: ${w}\n`);
        out.result(summary, text.join("\n"));
      });
    });

  plan
    .command("growth")
    .description("when to grow one model into another in the run's own units (steps at its batch, its FLOPs), from a Chinchilla-form fit")
    .option("--small <LxD>", "the model before the growth, layers x width (e.g. 2x64; ffn 4·d, vocab 256)")
    .option("--large <LxD>", "the model after it (e.g. 2x128)")
    .option("--batch <B>", "blocks per step (default 16)")
    .option("--context <T>", "tokens per block (default 128)")
    .option("--vocab <V>", "vocabulary (default 256)")
    .option("--arch <name>", "architecture of both models (default gpt2; llama counts its gated MLP)")
    .action(async (_opts: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<
        PlanOptions & { small?: string; large?: string; batch?: string; context?: string; vocab?: string; arch?: string }
      >();
      await runAction(Boolean(o.debug), async () => {
        const { law, file } = await lawOption(o.law, undefined);
        if (!isChinchillaLaw(law))
          throw new UsageError(`--law ${file ?? o.law}: growth in run units needs a Chinchilla-form law (staged plan fit --law chinchilla)`);
        const intOpt = (name: string, text: string | undefined, dflt: number) =>
          num(name, text, (v) => Number.isInteger(v) && v >= 1, "a positive integer") ?? dflt;
        const batch = intOpt("--batch", o.batch, 16),
          context = intOpt("--context", o.context, 128),
          vocab = intOpt("--vocab", o.vocab, 256);
        const registry = createDefaultRegistry();
        if (o.arch !== undefined && !registry.has("architecture", o.arch))
          throw new UsageError(`--arch must be one of ${registry.list("architecture").join(", ")}, got ${JSON.stringify(o.arch)}`);
        const arch = registry.get("architecture", o.arch ?? "gpt2");
        const model = (name: string, text: string | undefined) => {
          const m = text === undefined ? null : /^(\d+)x(\d+)$/.exec(text.trim());
          if (!m) throw new UsageError(`${name} must be layers x width such as 2x64, got ${JSON.stringify(text ?? "")}`);
          const layers = Number(m[1]),
            d = Number(m[2]);
          if (!(layers >= 1 && d >= 1)) throw new UsageError(`${name}: layers and width must be ≥ 1`);
          // The architecture's own shape (heads do not change these counts): GQA and gated MLPs counted as they are.
          return { label: `${layers}x${d}`, ...runModelOf({ arch: arch.name, layers, dModel: d, heads: 1, vocab, ffn: 4 * d, tie: true }, context) };
        };
        const small = model("--small", o.small),
          large = model("--large", o.large);
        const p = planGrowthInRunUnits(law, small, large, { batchTokens: batch * context });
        const result = { law: file ?? o.law, small, large, batch, context, ...(p ? { grow: true, ...p } : { grow: false }) };
        createOutput(Boolean(o.json)).result(
          result,
          p
            ? `${small.label} → ${large.label} at batch ${batch} × ${context}: grow at step ${p.growAtStep} (${sci(p.flopsAtGrowth)} FLOPs, loss ${p.lossAtGrowth.toFixed(4)}); ` +
                `the ${large.label} model reaches that loss from scratch at step ${p.continueAtStep} (${sci(p.largeFlops)} FLOPs): the law's saving ${pct(p.predictedSaving)} of that`
            : `${small.label} → ${large.label}: under this law the larger model never becomes the better use of compute`,
        );
      });
    });

  plan
    .command("check <run>")
    .description("the online growth decision for a run so far: feed its validation curve (metrics.jsonl) to the detector")
    .option("--grow <op>", "the growth to decide: width or depth")
    .option("--threshold <t>", `slope threshold (default width ${THRESHOLDS.width}, depth ${THRESHOLDS.depth})`)
    .option("--constant-op <c>", "steps of the small model per step of the grown one at equal loss (default: from --law for this model size)")
    .option("--law <law>", "kaplan (default), chinchilla, or a fit.json, for the default constant_op")
    .option("--finished", "the run has ended: also evaluate the last slopes (with the end reflection)")
    .action(async (run: string, _opts: unknown, cmd: Command) => {
      const o = cmd.optsWithGlobals<PlanOptions>();
      await runAction(Boolean(o.debug), async () => {
        const [op, ...more] = parseOperators(o.grow);
        if (more.length) throw new UsageError("--grow: check decides one growth at a time");
        const threshold = num("--threshold", o.threshold, (v) => v < 0, "a negative slope such as -0.0475") ?? THRESHOLDS[op!];
        const file = run.endsWith(".jsonl") ? run : join(run, "metrics.jsonl");
        const curve = await readLearningCurve(file, { field: "valLoss" });
        const given = num("--constant-op", o.constantOp, (v) => v > 0, "a number > 0");
        const c = given ?? constantOp((await lawOption(o.law ?? "kaplan", undefined)).law, curve.params * GROWTH_FACTORS[op!], op!);
        const decision = decideOnCurve(curve.points, { threshold, constantOp: c, finished: Boolean(o.finished) });
        const last = curve.points[curve.points.length - 1]!;
        const result = {
          run: resolve(run),
          operator: op,
          threshold,
          constantOp: c,
          points: curve.points.length,
          lastStep: last.step,
          grow: decision !== null,
          ...(decision
            ? { growAtStep: decision.growAtStep, thresholdStep: decision.point.step, slope: decision.slope, continueAtStep: decision.continueAtStep }
            : {}),
        };
        const text = decision
          ? `grow ${op} now (at step ${decision.growAtStep}, the last point): the validation slope rose above ${threshold} at step ${decision.point.step} ` +
            `(slope ${decision.slope.toFixed(4)}); the grown model continues at step ${decision.continueAtStep} = round(${decision.growAtStep} / constant_op ${c.toFixed(3)}):\n` +
            `  staged grow ${op} ${run.endsWith(".jsonl") ? dirname(run) : run} <out> --continue-at ${decision.continueAtStep} --rewarmup <steps>`
          : `not yet: the slope has not risen above ${threshold} in ${curve.points.length} validation points (last step ${last.step})`;
        createOutput(Boolean(o.json)).result(result, text);
      });
    });
}

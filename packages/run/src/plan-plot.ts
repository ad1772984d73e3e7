/**
 * The picture of a scaling-law stage plan (`staged plan --plot`): each model size's simulated curve, the staged path,
 * the growth and optimality points. A Vega-Lite spec, rendered like the report's (./plot.ts renderVegaLiteSvg).
 */
import type { CurvePoint, Plan } from "@staged/scheduler";
import { renderVegaLiteSvg } from "./plot.js";

/** A row of the plan plot's data. */
export interface PlotRow {
  series: string;
  compute: number;
  loss: number;
  order: number;
}

function thin(points: readonly CurvePoint[], max: number): CurvePoint[] {
  if (points.length <= max) return [...points];
  const out: CurvePoint[] = [];
  const every = (points.length - 1) / (max - 1);
  for (let k = 0; k < max; k++) out.push(points[Math.round(k * every)]!);
  return out;
}

/** A parameter count as the plan's labels write it: 3 significant digits, B or M. */
export function formatParams(n: number): string {
  return n >= 1e9 ? `${+(n / 1e9).toPrecision(3)}B` : n >= 1e6 ? `${+(n / 1e6).toPrecision(3)}M` : `${+n.toPrecision(3)}`;
}

/**
 * The rows of a plan's picture: each model's simulated curve (loss against FLOPs), the staged path (loss
 * against the staged run's cumulative FLOPs), and the growth and optimality points.
 */
export function planPlotRows(plan: Plan, maxPointsPerCurve = 200): { curves: PlotRow[]; marks: (PlotRow & { label: string })[] } {
  const curves: PlotRow[] = [];
  for (const c of plan.curves) {
    thin(c.points, maxPointsPerCurve).forEach((p, i) =>
      curves.push({ series: `${formatParams(c.params)} from scratch`, compute: p.compute, loss: p.loss, order: i }),
    );
  }
  // The staged path: each stage's part of its own curve, shifted to the run's cumulative compute.
  const marks: (PlotRow & { label: string })[] = [];
  let offset = 0;
  let order = 0;
  for (let k = 0; k < plan.curves.length; k++) {
    const pts = plan.curves[k]!.points;
    const startStep = k === 0 ? pts[0]!.step : plan.stages[k - 1]!.continueAtStep;
    const endStep = k < plan.stages.length ? plan.stages[k]!.growAtStep : plan.optimalityStep;
    const part = pts.filter((p) => p.step >= startStep && p.step <= endStep);
    if (!part.length) continue;
    const base = k === 0 ? 0 : part[0]!.compute;
    for (const p of thin(part, maxPointsPerCurve))
      curves.push({ series: "staged path", compute: offset + p.compute - base, loss: p.loss, order: order++ });
    const end = part[part.length - 1]!;
    if (k < plan.stages.length) {
      const s = plan.stages[k]!;
      marks.push({
        series: "growth",
        label: `${s.operator} growth at step ${s.growAtStep} → continue at ${s.continueAtStep}`,
        compute: offset + end.compute - base,
        loss: end.loss,
        order: k,
      });
    } else {
      marks.push({
        series: "optimality",
        label: `optimality at step ${plan.optimalityStep}`,
        compute: offset + end.compute - base,
        loss: end.loss,
        order: k,
      });
      const scratch = pts.find((p) => p.step === plan.optimalityStep);
      if (scratch) marks.push({ series: "optimality", label: "optimality from scratch", compute: scratch.compute, loss: scratch.loss, order: k + 1 });
    }
    offset += end.compute - base;
  }
  return { curves, marks };
}

/**
 * A Vega-Lite (v5/v6) specification of the plan's picture: log-log loss against training FLOPs, one line per
 * model size trained from scratch, the staged path, and the growth and optimality points. Render it with
 * vega-lite + vega (`staged plan --plot` does).
 */
export function planPlotSpec(plan: Plan, options: { title?: string; width?: number; height?: number } = {}): Record<string, unknown> {
  const { curves, marks } = planPlotRows(plan);
  const saving = (plan.computeSaving * 100).toFixed(1);
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: options.title ?? `Staged plan (${plan.law}): ${plan.stages.map((s) => s.operator).join(" → ")}, compute saving ${saving}%`,
    width: options.width ?? 640,
    height: options.height ?? 400,
    background: "white",
    resolve: { legend: { color: "independent", shape: "independent" } },
    layer: [
      {
        data: { values: curves },
        mark: { type: "line", clip: true },
        encoding: {
          x: { field: "compute", type: "quantitative", scale: { type: "log" }, title: "training FLOPs" },
          // Losses span well under a decade: a log axis rounded to powers of ten would flatten them.
          y: { field: "loss", type: "quantitative", scale: { type: "log", nice: false, padding: 8 }, title: "loss" },
          color: { field: "series", type: "nominal", title: "curve" },
          strokeDash: { condition: { test: "datum.series === 'staged path'", value: [6, 3] }, value: [1, 0] },
          order: { field: "order", type: "quantitative" },
        },
      },
      {
        data: { values: marks },
        mark: { type: "point", filled: true, size: 70 },
        encoding: {
          x: { field: "compute", type: "quantitative", scale: { type: "log" } },
          y: { field: "loss", type: "quantitative", scale: { type: "log", nice: false, padding: 8 } },
          shape: { field: "series", type: "nominal", title: "point" },
          color: { value: "black" },
          tooltip: { field: "label", type: "nominal" },
        },
      },
    ],
  };
}

/** Render `planPlotSpec(plan)` to SVG with Vega-Lite + Vega (headless, no browser). */
export function renderPlanSvg(plan: Plan): Promise<string> {
  return renderVegaLiteSvg(planPlotSpec(plan));
}

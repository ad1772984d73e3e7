/**
 * The report's picture: validation loss against training FLOPs of every run, with the growths and the target
 * losses marked; the end of the runs zoomed; each group's saving against the loss. A Vega-Lite spec, rendered
 * headless to SVG (vega) and PNG (resvg). renderVegaLiteSvg renders every plot of the project (also the plan's,
 * plan-plot.ts).
 */
import { createRequire } from "node:module";
import { compareRuns, formatFlops, lossAtFlops, type RunReport } from "./report.js";
import type { RunResult } from "./types.js";

/** Options of `reportSpec`. */
export interface ReportPlotOptions {
  title?: string;
  /** The main panel's plot area in pixels (default 720 × 420); the two panels below share its width, at 3/4 of its height. */
  width?: number;
  height?: number;
}

/** The zoomed panel shows the last ZOOM_FRACTION of the budget. */
const ZOOM_FRACTION = 0.3;
/** The saving panel's loss grid starts at the baseline's mean loss at EARLY_FRACTION of its budget. */
const EARLY_FRACTION = 0.1;
/** The target rules' dashes, one per target (all dashed: a solid line would read as a curve). */
const TARGET_DASHES = [
  [5, 4],
  [2, 2],
  [8, 3, 2, 3],
  [1, 4],
  [10, 4],
  [4, 2, 1, 2],
];
/** Losses on the saving panel's grid. */
const GRID_POINTS = 40;

/** [lo, hi] of some losses padded by 3% of their range (1% of the value, or 0.01, when they are all equal). */
function paddedDomain(losses: readonly number[]): [number, number] {
  let lo = losses.length ? Math.min(...losses) : 0;
  let hi = losses.length ? Math.max(...losses) : 1;
  const pad = (hi - lo) * 0.03 || Math.abs(hi) * 0.01 || 0.01;
  lo -= pad;
  hi += pad;
  return [lo, hi];
}

/** A saving panel row: one group's saving at one loss of the grid (see `savingCurves`). */
export interface SavingPoint {
  group: string;
  loss: number;
  /** 1 − mean FLOPs(group) / mean FLOPs(baseline) to reach `loss` for good, and its per-seed range. */
  saving: number;
  min: number;
  max: number;
}

/**
 * Each non-baseline group's saving against the baseline as a function of the loss (`compareRuns`' `Saving` at
 * each loss of a grid): GRID_POINTS losses evenly spaced from the baseline runs' mean validation loss at
 * EARLY_FRACTION of their budget down to the lowest loss `hi` over all groups, where a group's own curve stops
 * at the highest final loss of its runs and the baseline's (every seed of both reaches every loss on it, so
 * each mean is over all the seeds). Empty without a baseline run, or when no group's range is non-empty.
 */
export function savingCurves(results: readonly RunResult[], baseline: string): SavingPoint[] {
  const bases = results.filter((r) => r.group === baseline);
  const finalOf = (r: RunResult) => r.points.at(-1)?.valLoss ?? Infinity;
  const early = bases.map((r) => lossAtFlops(r.points, EARLY_FRACTION * r.budgetFlops));
  if (!bases.length || early.some((l) => l === null || !Number.isFinite(l))) return [];
  const top = early.reduce((a, b) => a! + b!, 0)! / early.length;
  const baseWorst = Math.max(...bases.map(finalOf));
  const floor = new Map<string, number>();
  for (const r of results) {
    if (r.group !== baseline) floor.set(r.group, Math.max(floor.get(r.group) ?? baseWorst, finalOf(r)));
  }
  const bottom = Math.min(...floor.values());
  if (!(top > bottom) || !Number.isFinite(bottom)) return [];
  const grid = Array.from({ length: GRID_POINTS }, (_, i) => top - ((top - bottom) * i) / (GRID_POINTS - 1));
  const report = compareRuns(results, { baseline, losses: grid });
  const out: SavingPoint[] = [];
  for (const g of report.groups) {
    g.reach.forEach((r) => {
      const s = r.saving;
      if (s?.saving === null || s?.saving === undefined || r.target.loss < floor.get(g.group)!) return;
      out.push({ group: g.group, loss: r.target.loss, saving: s.saving, min: s.min!, max: s.max! });
    });
  }
  return out;
}

/**
 * A Vega-Lite (v5/v6) spec of the runs, three panels:
 *
 * - the main one: validation loss (linear y, not from zero, domain fitted to the data) against training FLOPs
 *   (log x), one line per run coloured by group; a black point at each growth (FLOPs, loss before), shaped by
 *   operator, with a tooltip; and, when a report is given, a dashed horizontal rule at each of its target
 *   losses, told apart by their dash in the legend. Points at zero FLOPs (an evaluation before training) are
 *   left out: the x axis is logarithmic;
 * - below left, the last ZOOM_FRACTION (30%) of the budget (the largest of the runs'), linear x, the y domain
 *   fitted to the losses there;
 * - below right, with a report, each non-baseline group's saving against the loss (`savingCurves`): the mean
 *   as a line, the per-seed range as a band, the loss axis reversed (training goes left to right).
 *
 * No text is drawn in the plot areas (growths, targets and groups are in the legends), so no label can
 * overlap another. White background.
 */
export function reportSpec(results: readonly RunResult[], report?: RunReport, options: ReportPlotOptions = {}): Record<string, unknown> {
  const width = options.width ?? 720;
  const height = options.height ?? 420;
  const curves: { run: string; group: string; seed: number; flops: number; valLoss: number; globalStep: number; stage: number; order: number }[] = [];
  const growths: { run: string; group: string; operator: string; flops: number; valLoss: number; label: string }[] = [];
  const sorted = [...results].sort((a, b) => (a.group === b.group ? a.seed - b.seed : a.group < b.group ? -1 : 1));
  for (const r of sorted) {
    r.points.forEach((p, i) => {
      if (p.flops > 0 && Number.isFinite(p.flops) && Number.isFinite(p.valLoss)) {
        curves.push({
          run: r.name,
          group: r.group,
          seed: r.seed,
          flops: p.flops,
          valLoss: p.valLoss,
          globalStep: p.globalStep,
          stage: p.stage,
          order: i,
        });
      }
    });
    r.growths.forEach((g, k) => {
      if (!(g.flops > 0) || !Number.isFinite(g.valLossBefore)) return;
      const label = `${r.name}: ${g.operator} growth #${k + 1} at ${formatFlops(g.flops)} FLOPs (step ${g.globalStep}), val loss ${g.valLossBefore.toFixed(4)} → ${g.valLossAfter.toFixed(4)}`;
      growths.push({ run: r.name, group: r.group, operator: g.operator, flops: g.flops, valLoss: g.valLossBefore, label });
    });
  }
  const targets = (report?.targets ?? [])
    .filter((t) => Number.isFinite(t.loss))
    .map((t) => ({ loss: t.loss, label: `${t.label} ${t.loss.toFixed(4)}` }));

  const x = { field: "flops", type: "quantitative", scale: { type: "log" }, title: "training FLOPs", axis: { format: "~e" } };
  const yOf = (domain: [number, number]) => ({
    field: "valLoss",
    type: "quantitative",
    scale: { zero: false, nice: false, domain },
    title: "validation loss",
  });
  const y = yOf(paddedDomain([...curves.map((c) => c.valLoss), ...growths.map((g) => g.valLoss), ...targets.map((t) => t.loss)]));

  const groups = [...new Set(sorted.map((r) => r.group))];
  const title =
    options.title ?? `Validation loss against training FLOPs: ${groups.join(", ")} (${results.length} run${results.length === 1 ? "" : "s"})`;
  const subtitle: string[] = [];
  for (const g of report?.groups ?? []) {
    for (const r of g.reach) {
      if (r.saving?.saving !== null && r.saving?.saving !== undefined) {
        subtitle.push(`${g.group}: ${(r.saving.saving * 100).toFixed(1)}% fewer FLOPs than ${report!.baseline} to ${r.target.label}`);
      }
    }
  }

  /** The curves, growths and targets on the given axes (shared by the main and the zoomed panel). */
  const lossLayers = (
    xEnc: Record<string, unknown>,
    yEnc: Record<string, unknown>,
    data: typeof curves,
    grown: typeof growths,
  ): Record<string, unknown>[] => {
    const layer: Record<string, unknown>[] = [
      {
        data: { values: data },
        mark: { type: "line", clip: true, strokeWidth: 1.5, opacity: 0.85 },
        encoding: {
          x: xEnc,
          y: yEnc,
          color: { field: "group", type: "nominal", title: "group" },
          detail: { field: "run", type: "nominal" },
          order: { field: "order", type: "quantitative" },
          tooltip: [
            { field: "run", type: "nominal" },
            { field: "flops", type: "quantitative", format: ".3e" },
            { field: "valLoss", type: "quantitative", format: ".4f", title: "val loss" },
            { field: "globalStep", type: "quantitative", title: "step" },
            { field: "stage", type: "quantitative" },
          ],
        },
      },
    ];
    if (targets.length) {
      layer.push({
        data: { values: targets },
        mark: { type: "rule", color: "#555", strokeWidth: 1, clip: true },
        encoding: {
          y: { ...yEnc, field: "loss" },
          strokeDash: {
            field: "label",
            type: "nominal",
            title: "target loss",
            sort: null,
            scale: { range: TARGET_DASHES },
            legend: { labelLimit: 400 },
          },
          tooltip: { field: "label", type: "nominal" },
        },
      });
    }
    if (grown.length) {
      layer.push({
        data: { values: grown },
        mark: { type: "point", filled: true, size: 60, color: "black", clip: true },
        encoding: { x: xEnc, y: yEnc, shape: { field: "operator", type: "nominal", title: "growth" }, tooltip: { field: "label", type: "nominal" } },
      });
    }
    return layer;
  };

  const below: Record<string, unknown>[] = [];
  const lowerWidth = Math.max(100, Math.round((width - 80) / 2));
  const lowerHeight = Math.round((height * 3) / 4);
  const budgets = results.map((r) => r.budgetFlops).filter((b) => b > 0 && Number.isFinite(b));
  const end = Math.max(...budgets, ...curves.map((c) => c.flops));
  const from = (1 - ZOOM_FRACTION) * (budgets.length ? Math.max(...budgets) : end);
  const zoomed = curves.filter((c) => c.flops >= from);
  if (zoomed.length && end > from) {
    // Each run's last point before the zoom too, so its line enters from the left edge (clipped).
    const entering = sorted.flatMap((r) => curves.filter((c) => c.run === r.name && c.flops < from).slice(-1));
    const zx = {
      ...x,
      scale: { type: "linear", domain: [from, end], nice: false },
      title: `training FLOPs (the last ${ZOOM_FRACTION * 100}% of the budget)`,
    };
    below.push({
      width: lowerWidth,
      height: lowerHeight,
      layer: lossLayers(
        zx,
        yOf(paddedDomain(zoomed.map((c) => c.valLoss))),
        [...entering, ...zoomed],
        growths.filter((g) => g.flops >= from),
      ),
    });
  }
  const savings = report ? savingCurves(results, report.baseline) : [];
  if (savings.length) {
    const savingY = { field: "saving", type: "quantitative", title: `FLOPs saving vs ${report!.baseline}`, axis: { format: ".0%" } };
    const lx = {
      field: "loss",
      type: "quantitative",
      scale: { zero: false, nice: false, reverse: true },
      title: "validation loss reached (for good)",
    };
    below.push({
      width: lowerWidth,
      height: lowerHeight,
      layer: [
        { mark: { type: "rule", color: "#999", strokeWidth: 1 }, encoding: { y: { datum: 0, type: "quantitative" } } },
        {
          data: { values: savings },
          mark: { type: "area", opacity: 0.15 },
          encoding: { x: lx, y: { ...savingY, field: "min" }, y2: { field: "max" }, color: { field: "group", type: "nominal", title: "group" } },
        },
        {
          data: { values: savings },
          mark: { type: "line", strokeWidth: 1.5 },
          encoding: {
            x: lx,
            y: savingY,
            color: { field: "group", type: "nominal", title: "group" },
            tooltip: [
              { field: "group", type: "nominal" },
              { field: "loss", type: "quantitative", format: ".4f" },
              { field: "saving", type: "quantitative", format: ".1%" },
              { field: "min", type: "quantitative", format: ".1%", title: "seed min" },
              { field: "max", type: "quantitative", format: ".1%", title: "seed max" },
            ],
          },
        },
      ],
    });
  }
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: subtitle.length ? { text: title, subtitle } : title,
    background: "white",
    padding: 10,
    vconcat: [{ width, height, layer: lossLayers(x, y, curves, growths) }, ...(below.length ? [{ hconcat: below }] : [])],
    resolve: { scale: { color: "shared" } },
  };
}

/**
 * Render a Vega-Lite spec (reportSpec's, plan-plot.ts planPlotSpec's) to SVG with Vega-Lite + Vega (headless, no
 * browser); the one place the project calls vega.
 */
export async function renderVegaLiteSvg(spec: Record<string, unknown>): Promise<string> {
  const [vega, vl] = await Promise.all([import("vega"), import("vega-lite")]);
  const compiled = vl.compile(spec as never).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Render `reportSpec(results, report)` to SVG with Vega-Lite + Vega (headless, no browser). */
export function renderReportSvg(results: readonly RunResult[], report?: RunReport, options: ReportPlotOptions = {}): Promise<string> {
  return renderVegaLiteSvg(reportSpec(results, report, options));
}

/** Rasterize an SVG to PNG with resvg, `width` pixels wide (default 1200), with the system fonts. */
export function svgToPng(svg: string, width = 1200): Uint8Array {
  if (!Number.isInteger(width) || width <= 0) throw new Error(`svgToPng: width must be a positive integer, got ${width}`);
  // Loaded here, not at the module's top: the native binding is only needed to write a PNG.
  const { Resvg } = createRequire(import.meta.url)("@resvg/resvg-js") as typeof import("@resvg/resvg-js");
  const png = new Resvg(svg, { fitTo: { mode: "width", value: width }, font: { loadSystemFonts: true } }).render().asPng();
  return new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
}

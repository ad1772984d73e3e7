/**
 * The report's picture: validation loss against training FLOPs of every run, with the growths and the target
 * losses marked. A Vega-Lite spec, rendered headless to SVG (vega) and PNG (resvg).
 */
import { createRequire } from "node:module";
import { formatFlops, type RunReport } from "./report.js";
import type { RunResult } from "./types.js";

/** Options of `reportSpec`. */
export interface ReportPlotOptions {
  title?: string;
  /** The plot area's size in pixels (default 720 × 420). */
  width?: number;
  height?: number;
}

/**
 * A Vega-Lite (v5/v6) spec of the runs: validation loss (linear y, not from zero, domain fitted to the data)
 * against training FLOPs (log x), one line per run coloured by group; a point at each growth (FLOPs, loss
 * before), shaped by operator with a tooltip and, once per group and growth, a label; and, when a report is
 * given, a dashed horizontal rule at each of its target losses. Points at zero FLOPs (an evaluation before
 * training) are left out: the x axis is logarithmic. White background.
 */
export function reportSpec(results: readonly RunResult[], report?: RunReport, options: ReportPlotOptions = {}): Record<string, unknown> {
  const width = options.width ?? 720;
  const height = options.height ?? 420;
  const curves: { run: string; group: string; seed: number; flops: number; valLoss: number; globalStep: number; stage: number; order: number }[] = [];
  const growths: { run: string; group: string; operator: string; flops: number; valLoss: number; label: string }[] = [];
  const growthLabels: { flops: number; valLoss: number; text: string }[] = [];
  const labelled = new Set<string>();
  const sorted = [...results].sort((a, b) => (a.group === b.group ? a.seed - b.seed : a.group < b.group ? -1 : 1));
  for (const r of sorted) {
    r.points.forEach((p, i) => {
      if (p.flops > 0 && Number.isFinite(p.flops) && Number.isFinite(p.valLoss)) {
        curves.push({ run: r.name, group: r.group, seed: r.seed, flops: p.flops, valLoss: p.valLoss, globalStep: p.globalStep, stage: p.stage, order: i });
      }
    });
    r.growths.forEach((g, k) => {
      if (!(g.flops > 0) || !Number.isFinite(g.valLossBefore)) return;
      const label = `${r.name}: ${g.operator} growth #${k + 1} at ${formatFlops(g.flops)} FLOPs (step ${g.globalStep}), val loss ${g.valLossBefore.toFixed(4)} → ${g.valLossAfter.toFixed(4)}`;
      growths.push({ run: r.name, group: r.group, operator: g.operator, flops: g.flops, valLoss: g.valLossBefore, label });
      const key = `${r.group}\u0000${k}`;
      if (!labelled.has(key)) {
        labelled.add(key);
        growthLabels.push({ flops: g.flops, valLoss: g.valLossBefore, text: g.operator });
      }
    });
  }
  const targets = (report?.targets ?? []).filter((t) => Number.isFinite(t.loss)).map((t) => ({ loss: t.loss, label: `${t.label} ${t.loss.toFixed(4)}` }));

  const losses = [...curves.map((c) => c.valLoss), ...growths.map((g) => g.valLoss), ...targets.map((t) => t.loss)];
  let lo = losses.length ? Math.min(...losses) : 0;
  let hi = losses.length ? Math.max(...losses) : 1;
  const pad = (hi - lo) * 0.03 || Math.abs(hi) * 0.01 || 0.01;
  lo -= pad;
  hi += pad;
  const x = { field: "flops", type: "quantitative", scale: { type: "log" }, title: "training FLOPs", axis: { format: "~e" } };
  const y = { field: "valLoss", type: "quantitative", scale: { zero: false, nice: false, domain: [lo, hi] }, title: "validation loss" };

  const groups = [...new Set(sorted.map((r) => r.group))];
  const title = options.title ?? `Validation loss against training FLOPs: ${groups.join(", ")} (${results.length} run${results.length === 1 ? "" : "s"})`;
  const subtitle: string[] = [];
  for (const g of report?.groups ?? []) {
    for (const r of g.reach) {
      if (r.saving?.saving !== null && r.saving?.saving !== undefined) {
        subtitle.push(`${g.group}: ${(r.saving.saving * 100).toFixed(1)}% fewer FLOPs than ${report!.baseline} to ${r.target.label}`);
      }
    }
  }

  const layer: Record<string, unknown>[] = [
    {
      data: { values: curves },
      mark: { type: "line", clip: true, strokeWidth: 1.5, opacity: 0.85 },
      encoding: {
        x,
        y,
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
    layer.push(
      {
        data: { values: targets },
        mark: { type: "rule", strokeDash: [5, 4], color: "#555", strokeWidth: 1 },
        encoding: { y: { ...y, field: "loss" }, tooltip: { field: "label", type: "nominal" } },
      },
      {
        data: { values: targets },
        mark: { type: "text", align: "right", baseline: "bottom", dx: -3, dy: -2, fontSize: 10, color: "#555" },
        encoding: { x: { value: width }, y: { ...y, field: "loss" }, text: { field: "label", type: "nominal" } },
      },
    );
  }
  if (growths.length) {
    layer.push(
      {
        data: { values: growths },
        mark: { type: "point", filled: true, size: 60, color: "black", clip: true },
        encoding: { x, y, shape: { field: "operator", type: "nominal", title: "growth" }, tooltip: { field: "label", type: "nominal" } },
      },
      {
        data: { values: growthLabels },
        mark: { type: "text", align: "left", baseline: "bottom", dx: 5, dy: -5, fontSize: 10, clip: true },
        encoding: { x, y, text: { field: "text", type: "nominal" } },
      },
    );
  }
  return {
    $schema: "https://vega.github.io/schema/vega-lite/v5.json",
    title: subtitle.length ? { text: title, subtitle } : title,
    width,
    height,
    background: "white",
    padding: 10,
    layer,
  };
}

/** Render `reportSpec(results, report)` to SVG with Vega-Lite + Vega (headless, no browser). */
export async function renderReportSvg(results: readonly RunResult[], report?: RunReport, options: ReportPlotOptions = {}): Promise<string> {
  const [vega, vl] = await Promise.all([import("vega"), import("vega-lite")]);
  const spec = vl.compile(reportSpec(results, report, options) as never).spec;
  const view = new vega.View(vega.parse(spec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Rasterize an SVG to PNG with resvg, `width` pixels wide (default 1200), with the system fonts. */
export function svgToPng(svg: string, width = 1200): Uint8Array {
  if (!Number.isInteger(width) || width <= 0) throw new Error(`svgToPng: width must be a positive integer, got ${width}`);
  // Loaded here, not at the module's top: the native binding is only needed to write a PNG.
  const { Resvg } = createRequire(import.meta.url)("@resvg/resvg-js") as typeof import("@resvg/resvg-js");
  const png = new Resvg(svg, { fitTo: { mode: "width", value: width }, font: { loadSystemFonts: true } }).render().asPng();
  return new Uint8Array(png.buffer, png.byteOffset, png.byteLength);
}

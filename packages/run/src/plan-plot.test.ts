import { describe, expect, it } from "vitest";
import { kaplan, planStages } from "@staged/scheduler";
import { formatParams, planPlotSpec, renderPlanSvg } from "./plan-plot.js";

describe("planPlotSpec", () => {
  it("has a plot spec with the curves, the staged path and the growth and optimality points", () => {
    const plan = planStages({ law: kaplan, targetParams: 8e8, operators: ["width", "depth"] });
    const spec = planPlotSpec(plan) as { layer: { data: { values: { series: string }[] } }[] };
    const series = new Set(spec.layer[0]!.data.values.map((r) => r.series));
    expect([...series]).toEqual(["100M from scratch", "400M from scratch", "800M from scratch", "staged path"]);
    expect(spec.layer[1]!.data.values.map((r) => r.series)).toEqual(["growth", "growth", "optimality", "optimality"]);
    expect(JSON.parse(JSON.stringify(spec))).toEqual(spec);
  });

  it("renders to SVG through the report's renderer", async () => {
    const svg = await renderPlanSvg(planStages({ law: kaplan, targetParams: 4e8, operators: ["width"] }));
    expect(svg.startsWith("<svg")).toBe(true);
    expect(svg).toContain("staged path");
  });

  it("writes parameter counts with 3 significant digits", () => {
    expect([formatParams(3.4e8), formatParams(1.25e9), formatParams(1234)]).toEqual(["340M", "1.25B", "1230"]);
  });
});

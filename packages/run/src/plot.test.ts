import { describe, expect, it } from "vitest";
import { renderReportSvg, reportSpec, savingCurves, svgToPng } from "./plot.js";
import { compareRuns } from "./report.js";
import type { CurvePoint, RunResult } from "./types.js";

/** A run whose loss falls as 3 + 7/sqrt(1 + i) over `n` evaluations, `scale` × 1e12 FLOPs apart; grows once at `growAt`. */
function run(group: string, seed: number, scale: number, growAt?: number, n = 30): RunResult {
  const points: CurvePoint[] = [];
  for (let i = 0; i <= n; i++) {
    const stage = growAt !== undefined && i > growAt ? 1 : 0;
    const bump = stage && i - growAt! < 3 ? 0.3 / (i - growAt!) : 0;
    points.push({ globalStep: i * 10, step: i * 10, stage, flops: i * 1e12 * scale, tokens: i * 1e4, valLoss: 3 + 7 / Math.sqrt(1 + i) + bump });
  }
  const growths =
    growAt === undefined
      ? []
      : [
          {
            stage: 1,
            operator: "width",
            options: {},
            flops: growAt * 1e12 * scale,
            globalStep: growAt * 10,
            timing: "auto",
            valLossBefore: points[growAt]!.valLoss,
            valLossAfter: points[growAt]!.valLoss + 0.4,
            paramsBefore: 1e6,
            paramsAfter: 4e6,
          },
        ];
  return {
    format: "staged-run-result",
    version: 1,
    name: `${group}-s${seed}`,
    group,
    seed,
    done: true,
    budgetFlops: n * 1e12 * scale,
    points,
    growths,
  };
}

const results = [run("baseline", 0, 1), run("baseline", 1, 1.1), run("staged", 0, 0.8, 12), run("staged", 1, 0.85, 12)];

type Layer = {
  data?: { values: Record<string, unknown>[] };
  mark: { type: string };
  encoding: Record<string, { scale?: { domain?: number[] } } & Record<string, unknown>>;
};
type Spec = { background: string; vconcat: [{ layer: Layer[] }, { hconcat: { layer: Layer[] }[] }?] };

describe("reportSpec", () => {
  it("plots every run's curve (without the zero-FLOPs point), the growths and the report's targets", () => {
    const report = compareRuns(results);
    const spec = reportSpec(results, report) as Spec;
    expect(spec.background).toBe("white");
    const [curves, rule, growths] = spec.vconcat[0].layer;
    expect(curves!.mark.type).toBe("line");
    expect(curves!.data!.values).toHaveLength(4 * 30);
    expect(new Set(curves!.data!.values.map((v) => v.run))).toEqual(new Set(results.map((r) => r.name)));
    expect(rule!.mark.type).toBe("rule");
    expect(rule!.data!.values.map((v) => v.loss)).toEqual(report.targets.map((t) => t.loss));
    expect(growths!.mark.type).toBe("point");
    expect(growths!.data!.values.map((v) => v.flops)).toEqual([12e12 * 0.8, 12e12 * 0.85]);
    expect(growths!.data!.values.map((v) => v.operator)).toEqual(["width", "width"]);
    // Without a report: the curves and growths only, and the zoomed panel.
    const bare = reportSpec(results) as Spec;
    expect(bare.vconcat[0].layer.map((l) => l.mark.type)).toEqual(["line", "point"]);
    expect(bare.vconcat[1]!.hconcat).toHaveLength(1);
  });

  it("draws no text in the plot areas: targets, growths and groups are told apart in the legends", () => {
    const spec = reportSpec(results, compareRuns(results)) as Spec;
    const layers = [...spec.vconcat[0].layer, ...spec.vconcat[1]!.hconcat.flatMap((p) => p.layer)];
    expect(layers.filter((l) => l.mark.type === "text")).toEqual([]);
    const rule = spec.vconcat[0].layer[1]!;
    expect(rule.encoding.strokeDash).toMatchObject({ field: "label", title: "target loss" });
  });

  it("zooms on the last 30% of the budget with the y range fitted to the losses there", () => {
    const spec = reportSpec(results, compareRuns(results)) as Spec;
    const zoom = spec.vconcat[1]!.hconcat[0]!.layer[0]!;
    const budget = 30e12 * 1.1; // the largest budget
    expect(zoom.encoding.x!.scale!.domain).toEqual([0.7 * budget, budget]);
    const inside = zoom.data!.values.filter((v) => (v.flops as number) >= 0.7 * budget).map((v) => v.valLoss as number);
    const [lo, hi] = zoom.encoding.y!.scale!.domain!;
    expect(lo).toBeLessThan(Math.min(...inside));
    expect(hi).toBeGreaterThan(Math.max(...inside));
    expect(hi! - lo!).toBeLessThan((Math.max(...inside) - Math.min(...inside)) * 1.1);
    // each run enters from the left edge: its last point before the zoom is there too
    expect(zoom.data!.values.filter((v) => (v.flops as number) < 0.7 * budget)).toHaveLength(4);
  });

  it("plots each group's saving against the loss, on the losses every seed of the group and the baseline reaches", () => {
    const spec = reportSpec(results, compareRuns(results)) as Spec;
    const panel = spec.vconcat[1]!.hconcat[1]!.layer;
    expect(panel.map((l) => l.mark.type)).toEqual(["rule", "area", "line"]);
    const savings = savingCurves(results, "baseline");
    expect(panel[2]!.data!.values).toEqual(savings);
    expect(new Set(savings.map((s) => s.group))).toEqual(new Set(["staged"]));
    expect(savings).toHaveLength(40);
    // from the baseline's mean loss at 10% of its budget down to the highest final loss of staged and baseline
    const finals = results.map((r) => r.points.at(-1)!.valLoss);
    expect(savings.at(-1)!.loss).toBeCloseTo(Math.max(...finals), 12);
    expect(savings[0]!.loss).toBeCloseTo(3 + 7 / Math.sqrt(1 + 3), 12); // both baselines at evaluation 3 of 30
    // the same saving as compareRuns at that loss
    const at = compareRuns(results, { losses: [savings[10]!.loss] }).groups[1]!.reach[0]!.saving!;
    expect(savings[10]).toMatchObject({ saving: at.saving, min: at.min, max: at.max });
    expect(savings.every((s) => s.min <= s.saving && s.saving <= s.max)).toBe(true);
    expect(savingCurves(results, "nope")).toEqual([]);
  });
});

describe("renderReportSvg and svgToPng", () => {
  it("renders an SVG with one line per run and a PNG of it", async () => {
    const svg = await renderReportSvg(results, compareRuns(results));
    expect(svg.startsWith("<svg")).toBe(true);
    const lines = svg.match(/<g class="mark-line role-mark concat_0_layer_0_marks"[^>]*><path /g) ?? [];
    expect(lines).toHaveLength(results.length);
    expect(svg).toContain("baseline mean final");
    const png = svgToPng(svg, 600);
    expect([...png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(png.length).toBeGreaterThan(5_000);
    expect(png.length).toBeLessThan(2_000_000);
    // IHDR: width and height, big-endian, at bytes 16..24.
    const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
    expect(view.getUint32(16)).toBe(600);
    expect(view.getUint32(20)).toBeGreaterThan(200);
    expect(view.getUint32(20)).toBeLessThan(600);
    expect(() => svgToPng(svg, 0)).toThrow(/positive integer/);
  });
});

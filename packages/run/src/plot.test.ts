import { describe, expect, it } from "vitest";
import { renderReportSvg, reportSpec, svgToPng } from "./plot.js";
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
      : [{ stage: 1, operator: "width", options: {}, flops: growAt * 1e12 * scale, globalStep: growAt * 10, timing: "auto", valLossBefore: points[growAt]!.valLoss, valLossAfter: points[growAt]!.valLoss + 0.4, paramsBefore: 1e6, paramsAfter: 4e6 }];
  return { format: "staged-run-result", version: 1, name: `${group}-s${seed}`, group, seed, done: true, budgetFlops: n * 1e12 * scale, points, growths };
}

const results = [run("baseline", 0, 1), run("baseline", 1, 1.1), run("staged", 0, 0.8, 12), run("staged", 1, 0.85, 12)];

describe("reportSpec", () => {
  it("plots every run's curve (without the zero-FLOPs point), the growths and the report's targets", () => {
    const report = compareRuns(results);
    const spec = reportSpec(results, report) as { background: string; layer: { data: { values: Record<string, unknown>[] }; mark: { type: string } }[] };
    expect(spec.background).toBe("white");
    const [curves, rule, , growths] = spec.layer;
    expect(curves!.mark.type).toBe("line");
    expect(curves!.data.values).toHaveLength(4 * 30);
    expect(new Set(curves!.data.values.map((v) => v.run))).toEqual(new Set(results.map((r) => r.name)));
    expect(rule!.mark.type).toBe("rule");
    expect(rule!.data.values.map((v) => v.loss)).toEqual(report.targets.map((t) => t.loss));
    expect(growths!.mark.type).toBe("point");
    expect(growths!.data.values.map((v) => v.flops)).toEqual([12e12 * 0.8, 12e12 * 0.85]);
    expect(growths!.data.values.map((v) => v.operator)).toEqual(["width", "width"]);
    // Without a report: the curves and growths only.
    expect((reportSpec(results) as { layer: unknown[] }).layer).toHaveLength(3);
  });
});

describe("renderReportSvg and svgToPng", () => {
  it("renders an SVG with one line per run and a PNG of it", async () => {
    const svg = await renderReportSvg(results, compareRuns(results));
    expect(svg.startsWith("<svg")).toBe(true);
    const lines = svg.match(/<g class="mark-line role-mark layer_0_marks"[^>]*><path /g) ?? [];
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

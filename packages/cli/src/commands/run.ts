import { DEVICES, type Device } from "@staged/trainer-ort";
import { existsSync } from "node:fs";
import { readdir } from "node:fs/promises";
import { basename, dirname, extname, join, resolve } from "node:path";
import { Option, type Command } from "commander";
import { parseJsonFile, readTextInput } from "@staged/core";
import {
  checkRunPlugins,
  compareRuns,
  createRunRegistry,
  DEFAULT_DYNAMICS_WINDOWS,
  formatReport,
  parseRunSpec,
  readRunResult,
  renderReportSvg,
  RESULT_FILE,
  RunInterrupted,
  runSpec,
  svgToPng,
  type RunProgress,
  type RunResult,
} from "@staged/run";
import { writeOutputFile } from "../files.js";
import { createReporter, fmtTime, PROGRESS_MODES, type ProgressMode, type Reporter } from "../progress.js";
import { createOutput, runAction, UsageError } from "../output.js";
import { listenForInterrupt } from "../interrupt.js";
import { integer, intList } from "../options.js";
import type { GlobalOptions } from "../main.js";

/** One progress line: where the run is in its budget, its stage, the last validation loss, the rate and the ETA (seconds). */
export function progressLine(p: RunProgress, eta: number): string {
  return (
    `[${p.run}] stage ${p.stage}/${p.stages}  ${((100 * p.flops) / p.budget).toFixed(1)}% of ${p.budget.toExponential(2)} FLOPs  ` +
    `step ${p.globalStep}  val ${p.valLoss === null ? "-" : p.valLoss.toFixed(4)}  ${Math.round(p.tokensPerSecond)} tok/s  ETA ${fmtTime(eta)}`
  );
}

/**
 * The runs' progress through the CLI's reporter, one run after the other (counted in FLOPs of its budget, the ETA at
 * the run's FLOP rate in this invocation): a line every 10 s, and one when a run's budget is spent. Lines also on a
 * terminal, where the run's other lines (growths, resumes) come between them.
 */
function runProgress(mode: ProgressMode | undefined) {
  let current: { run: string; reporter: Reporter<RunProgress> } | null = null;
  const stop = () => {
    current?.reporter.stop();
    current = null;
  };
  return {
    update(p: RunProgress): void {
      if (current?.run !== p.run) {
        stop();
        current = {
          run: p.run,
          reporter: createReporter<RunProgress>({
            label: "training",
            unit: "FLOPs",
            details: p,
            base: p.flops,
            every: { seconds: 10 },
            lastLine: "always",
            ...(mode ? { mode } : {}),
            line: (v) => progressLine(v.details, v.eta),
            fields: ({ details: d }) => ({
              run: d.run,
              stage: d.stage,
              stages: d.stages,
              step: d.step,
              globalStep: d.globalStep,
              valLoss: d.valLoss,
              tokensPerSecond: d.tokensPerSecond,
            }),
          }),
        };
      }
      current.reporter.update(p.flops, p.budget, p);
      if (p.end) stop();
    },
    stop,
  };
}

/** The results under the given paths: a result.json, a run directory holding one, or an output directory of runs. */
export async function readResults(paths: readonly string[]): Promise<RunResult[]> {
  const files: string[] = [];
  for (const p of paths) {
    if (p.endsWith(".json")) {
      files.push(p);
      continue;
    }
    if (!existsSync(p)) throw new UsageError(`${p}: no such file or directory`);
    if (existsSync(join(p, RESULT_FILE))) {
      files.push(join(p, RESULT_FILE));
      continue;
    }
    let names: string[];
    try {
      names = (await readdir(p)).sort();
    } catch {
      throw new UsageError(`${p}: not a run directory or a ${RESULT_FILE}`);
    }
    const found = names.map((n) => join(p, n, RESULT_FILE)).filter((f) => existsSync(f));
    if (!found.length) throw new UsageError(`${p}: no ${RESULT_FILE} in it or in its subdirectories (has \`staged run\` finished a run there?)`);
    files.push(...found);
  }
  const results: RunResult[] = [];
  // Each through its schema (@staged/run run-format.ts): a bad or foreign file is one line naming it and the field.
  for (const f of files) results.push(await readRunResult(f));
  return results;
}

interface RunCliOptions {
  out?: string;
  only?: string;
  seeds?: number[];
  baseline?: number[];
  threads?: number;
  device?: Device;
  progress?: ProgressMode;
}
interface ReportCliOptions {
  loss?: string;
  window?: string;
  baseline: string;
  plot?: string[];
  title?: string;
}

export function registerRun(program: Command): void {
  program
    .command("run <spec.json>")
    .description("a staged run end to end from one spec file (train, decide, grow, continue), with its baseline; rerun the same command to resume")
    .option("--out <dir>", "output directory (default: the spec's path without .json)")
    .option("--seeds <s,...>", "seeds of the staged runs (default: the spec's)", intList("seeds"))
    .option("--baseline <s,...>", "also train the final model from scratch with these seeds (default: the spec's baseline)", intList("baseline"))
    .option("--only <names>", "run only these runs (comma-separated, e.g. baseline-s1,staged-s0)")
    .option("--threads <N>", "CPU threads of the trainer (default: the spec's, else all cores)", integer("threads", 1))
    .addOption(new Option("--device <d>", "execution provider (default: the spec's, else cpu)").choices(DEVICES))
    .addOption(
      new Option("--progress <mode>", "progress on stderr: lines (auto, also on a terminal), lines, JSON lines, or none")
        .choices([...PROGRESS_MODES])
        .default("auto"),
    )
    .action(async (file: string, o: RunCliOptions, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await runAction(Boolean(g.debug), async () => {
        const out = createOutput(Boolean(g.json));
        const raw = parseJsonFile(await readTextInput(file, "the run spec"), file);
        const spec = parseRunSpec(raw, resolve(file));
        checkRunPlugins(spec, createRunRegistry(), file);
        if (o.seeds) spec.seeds = o.seeds;
        if (o.baseline) spec.baseline = { seeds: o.baseline };
        const dir = o.out ?? join(dirname(file), basename(file, extname(file)));
        const only = o.only
          ?.split(",")
          .map((s) => s.trim())
          .filter(Boolean);
        // Ctrl-C: the step in progress finishes and is saved; the same command resumes the run from there.
        const interrupt = listenForInterrupt(
          "finishing the step in progress and saving",
          () => "the steps since the run's last save are lost; run the same command again to resume from it",
        );
        // Progress and decisions on stderr, also with --json.
        let results: Awaited<ReturnType<typeof runSpec>>;
        const progress = runProgress(o.progress);
        try {
          results = await runSpec(spec, dir, {
            only,
            threads: o.threads,
            device: o.device,
            signal: interrupt.signal,
            onStart: (names) =>
              process.stderr.write(`staged run: ${names.length} run${names.length === 1 ? "" : "s"} (${names.join(", ")}) into ${resolve(dir)}\n`),
            onProgress: (p) => progress.update(p),
            onLine: (line) => process.stderr.write(line + "\n"),
          });
        } catch (e) {
          progress.stop(); // its last line before the run's last word
          if (!(e instanceof RunInterrupted)) throw e;
          process.stderr.write(`staged: ${e.message}\n`);
          process.exitCode = interrupt.status() ?? 130;
          return;
        } finally {
          progress.stop();
          interrupt.dispose();
        }
        const hasBaseline = results.some((r) => r.group === "baseline");
        const report = hasBaseline && results.some((r) => r.group !== "baseline") ? compareRuns(results) : null;
        out.result(
          {
            out: resolve(dir),
            runs: results.map((r) => ({
              name: r.name,
              group: r.group,
              seed: r.seed,
              done: r.done,
              finalValLoss: r.points.at(-1)?.valLoss ?? null,
              flops: r.points.at(-1)?.flops ?? 0,
              growths: r.growths,
            })),
            report,
          },
          [
            ...results.map(
              (r) =>
                `${r.name}: final val loss ${r.points.at(-1)?.valLoss.toFixed(4) ?? "-"} after ${(r.points.at(-1)?.flops ?? 0).toExponential(3)} FLOPs, ${r.growths.length} growth${r.growths.length === 1 ? "" : "s"}`,
            ),
            ...(report ? ["", formatReport(report)] : []),
            `results in ${resolve(dir)} (staged report ${dir} --plot curves.svg)`,
          ].join("\n"),
        );
      });
    });
}

export function registerReport(program: Command): void {
  program
    .command("report <runs...>")
    .description(
      "FLOPs each run needed to reach given losses, the saving against the baseline over seeds, growth penalties, the dynamics after each growth against the baseline at equal loss, and the plot",
    )
    .option("--loss <x,...>", "target validation losses (default: the baseline's mean and worst final loss)")
    .option(
      "--window <f,...>",
      `windows W of the dynamics after each growth, as fractions of the run's budget (default: ${DEFAULT_DYNAMICS_WINDOWS.join(",")})`,
    )
    .option("--baseline <group>", "the group the others are compared with", "baseline")
    .option(
      "--plot <file...>",
      "draw validation loss against FLOPs with the growths marked, the end zoomed, and the saving against the loss (.svg or .png; several allowed)",
    )
    .option("--title <text>", "the plot's title")
    .action(async (paths: string[], o: ReportCliOptions, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await runAction(Boolean(g.debug), async () => {
        const losses = o.loss?.split(",").map((v) => {
          const x = Number(v);
          if (v.trim() === "" || !Number.isFinite(x) || x <= 0)
            throw new UsageError(`--loss must be positive numbers separated by commas, got "${o.loss}"`);
          return x;
        });
        const windows = o.window?.split(",").map((v) => {
          const x = Number(v);
          if (v.trim() === "" || !Number.isFinite(x) || x <= 0 || x > 1)
            throw new UsageError(`--window must be fractions of the budget in (0, 1] separated by commas, got "${o.window}"`);
          return x;
        });
        for (const p of o.plot ?? []) {
          if (![".svg", ".png"].includes(extname(p).toLowerCase())) throw new UsageError(`${p}: --plot writes .svg or .png`);
        }
        const results = await readResults(paths);
        const report = compareRuns(results, { baseline: o.baseline, ...(losses ? { losses } : {}), ...(windows ? { windows } : {}) });
        const inputs = paths.map((p) => (p.endsWith(".json") ? p : join(p, RESULT_FILE)));
        if (o.plot?.length) {
          const svg = await renderReportSvg(results, report, o.title ? { title: o.title } : {});
          for (const p of o.plot) await writeOutputFile(p, extname(p).toLowerCase() === ".png" ? svgToPng(svg) : svg, inputs);
        }
        createOutput(Boolean(g.json)).result(
          { report, plots: (o.plot ?? []).map((p) => resolve(p)) },
          formatReport(report) + (o.plot?.length ? `\nplots: ${o.plot.map((p) => resolve(p)).join(", ")}` : ""),
        );
      });
    });
}

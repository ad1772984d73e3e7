import cliProgress from "cli-progress";

/**
 * How progress is shown on stderr: `auto` a bar on a terminal and lines otherwise, `lines` text lines, `jsonl` one JSON
 * object per line (for a program reading stderr while stdout carries --json's result), `none` nothing.
 */
export type ProgressMode = "auto" | "lines" | "jsonl" | "none";
export const PROGRESS_MODES: readonly ProgressMode[] = ["auto", "lines", "jsonl", "none"];

/** Where long work is, as a reporter's line, JSON object and bar show it. */
export interface ProgressView<D> {
  done: number;
  total: number;
  /** Seconds since the reporter was made; the rate of `done` over them (counted from `base`); the seconds left at that rate (Infinity when unknown). */
  seconds: number;
  rate: number;
  eta: number;
  /** Whether this is the line written when the work ended. */
  final: boolean;
  /** What the work's last update said beyond the counts (the step, the loss, ...). */
  details: D;
}

export interface ReporterOptions<D> {
  /** The JSON objects' `progress`: what is being done. */
  label: string;
  /** The unit of `done` and `total` in the JSON objects. */
  unit: string;
  /** The details before the first update. */
  details: D;
  /** `auto`: the bar on a terminal when there is one (not for a command writing other lines between them), else lines. */
  mode?: ProgressMode;
  /** Where it goes (default process.stderr). */
  stream?: { write(s: string): unknown; isTTY?: boolean };
  /**
   * When lines are written: `{ seconds }`, by a timer from the first second on (then a text line every `seconds`, a JSON
   * line every second), so that a long step with no update in between still shows and work that ends within a second
   * shows nothing; or `{ parts }`, as updates come: at the first update past 0, at each `total / parts` of the work and
   * at the last.
   */
  every: { seconds: number } | { parts: number };
  /** The count the rate is counted from (default 0). */
  base?: number;
  /** A text line (without the newline). */
  line(v: ProgressView<D>): string;
  /** The JSON object's fields beside the counts, the rate and the ETA (default none). */
  fields?(v: ProgressView<D>): Record<string, unknown>;
  /** The bar: its cli-progress format (`{bar}`, `{value}`, `{total}`, `{eta_formatted}` and the names of `values`). */
  bar?: { format: string; values(v: ProgressView<D>): Record<string, string | number> };
  /** Whether `stop` writes a last line: `always`, `if-shown` (default: when anything was shown before), `never`. */
  lastLine?: "always" | "if-shown" | "never";
}

export interface Reporter<D> {
  /** The work's counts, and what else it says. */
  update(done: number, total: number, details?: D): void;
  /** The work ended: a last line (see lastLine), and the timer stops. Once. */
  stop(): void;
}

/**
 * The one progress reporter of the CLI: long work on stderr (also with --json: stdout keeps the one result) as a bar on
 * a terminal, text lines, or JSON lines, with the rate and an ETA. The commands differ in what a line says (their
 * `line`, `fields`, `bar`) and when lines come (`every`).
 *   jsonl: {"progress":"writing","done":2104000000,"total":26200000000,"unit":"bytes","seconds":5,"rate":420800000,"etaSeconds":57.3, ...fields}
 */
export function createReporter<D>(o: ReporterOptions<D>): Reporter<D> {
  const stream = o.stream ?? process.stderr;
  const requested = o.mode ?? "auto";
  const barOf = o.bar;
  const mode = requested === "auto" ? (stream.isTTY && barOf ? "bar" : "lines") : requested;
  const t0 = performance.now();
  const base = o.base ?? 0;
  let done = 0,
    total = 0,
    details = o.details,
    shown = false,
    ended = false;
  let bar: cliProgress.SingleBar | null = null;

  const view = (final: boolean): ProgressView<D> => {
    const seconds = (performance.now() - t0) / 1000;
    const rate = seconds > 0 ? (done - base) / seconds : 0;
    return { done, total, seconds, rate, eta: rate > 0 ? Math.max(0, total - done) / rate : Infinity, final, details };
  };

  const report = (final: boolean): void => {
    const v = view(final);
    if (mode === "jsonl") {
      stream.write(
        JSON.stringify({
          progress: o.label,
          done,
          total,
          unit: o.unit,
          seconds: +v.seconds.toFixed(1),
          rate: Math.round(v.rate),
          etaSeconds: Number.isFinite(v.eta) ? +v.eta.toFixed(1) : null,
          ...o.fields?.(v),
          ...(final ? { end: true } : {}),
        }) + "\n",
      );
    } else if (mode === "lines") {
      stream.write(o.line(v) + "\n");
    } else if (mode === "bar" && barOf) {
      if (!bar) {
        bar = new cliProgress.SingleBar(
          { stream: stream as NodeJS.WriteStream, hideCursor: true, clearOnComplete: false, etaBuffer: 20, format: barOf.format },
          cliProgress.Presets.shades_classic,
        );
        bar.start(total, done, barOf.values(v));
      }
      bar.setTotal(total);
      bar.update(done, barOf.values(v));
    }
    shown = true;
  };

  const every = o.every;
  let nextLine = 1;
  const timer =
    mode === "none" || !("seconds" in every)
      ? null
      : setInterval(() => {
          const seconds = (performance.now() - t0) / 1000;
          if (ended || seconds < nextLine - 0.05) return;
          report(false);
          nextLine = Math.floor(seconds) + (mode === "lines" ? every.seconds : 1);
        }, 1000);
  timer?.unref();

  return {
    update(d, t, more) {
      if (ended) return;
      done = d;
      total = t;
      if (more !== undefined) details = more;
      if (mode === "none") return;
      // The bar follows every update (from the start with `parts`, from the first second with `seconds`).
      if (mode === "bar") {
        if (shown || "parts" in every) report(false);
      } else if ("parts" in every) {
        const step = Math.max(1, Math.round(t / every.parts));
        if (d > 0 && (!shown || d % step === 0 || d === t)) report(false);
      }
    },
    stop() {
      if (ended) return;
      ended = true;
      if (timer) clearInterval(timer);
      const last = o.lastLine ?? "if-shown";
      if (mode !== "none" && mode !== "bar" && (last === "always" || (last === "if-shown" && shown))) report(true);
      bar?.stop();
      bar = null;
    },
  };
}

export interface ProgressOptions {
  mode?: ProgressMode;
  /** The unit of the counts themselves, for jsonl (default: `unit`). */
  baseUnit?: string;
  /** Where it goes (default process.stderr). */
  stream?: { write(s: string): unknown; isTTY?: boolean };
  /** Seconds between text lines after the first (default 5); jsonl writes every second. */
  lineEvery?: number;
}

/**
 * Progress of counted work (bytes written, blocks evaluated) through the reporter: nothing for work that ends within a
 * second, then the latest counts at 1 s and every `lineEvery` seconds, and a last line when the work ends. `scale`
 * divides the counts for display (1e6: bytes shown as MB).
 *   text:  `  writing 2104.0 of 26200.0 MB, 420.8 MB/s, ETA 57s`
 */
export function createProgress(label: string, unit: string, scale = 1, options: ProgressOptions = {}) {
  const show = (n: number) => (n / scale).toFixed(scale === 1 ? 0 : 1);
  const reporter = createReporter<null>({
    label,
    unit: options.baseUnit ?? unit,
    details: null,
    every: { seconds: options.lineEvery ?? 5 },
    ...(options.mode ? { mode: options.mode } : {}),
    ...(options.stream ? { stream: options.stream } : {}),
    line: (v) =>
      v.final
        ? `  ${label} ${show(v.done)} of ${show(v.total)} ${unit} in ${fmtTime(v.seconds)}, ${show(v.rate)} ${unit}/s`
        : `  ${label} ${show(v.done)} of ${show(v.total)} ${unit}, ${show(v.rate)} ${unit}/s, ETA ${fmtTime(v.eta)}`,
    bar: {
      format: `${label} {bar} {shown}/{all} ${unit} | {rate} ${unit}/s | ETA {eta_formatted}`,
      values: (v) => ({ shown: show(v.done), all: show(v.total), rate: v.seconds >= 1 ? show(v.rate) : "-" }),
    },
  });
  return { update: (done: number, total: number): void => reporter.update(done, total), stop: (): void => reporter.stop() };
}

/** Seconds as 1h02m, 3m05s or 7s ("-" when not finite): ETAs of progress lines. */
export function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return "-";
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600),
    m = Math.floor((t % 3600) / 60),
    sec = t % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`;
}

import cliProgress from "cli-progress";

/**
 * How progress is shown on stderr: `auto` a bar on a terminal and lines otherwise, `lines` text lines, `jsonl` one JSON
 * object per line (for a program reading stderr while stdout carries --json's result), `none` nothing.
 */
export type ProgressMode = "auto" | "lines" | "jsonl" | "none";
export const PROGRESS_MODES: readonly ProgressMode[] = ["auto", "lines", "jsonl", "none"];

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
 * Progress of long work on stderr from its first second on, also with --json (stdout keeps the one result), with the
 * rate and an ETA: work that ends within a second shows nothing. A timer (which never keeps the process alive) writes
 * the latest counts at 1 s, then a text line every `lineEvery` seconds or a JSON line every second, so a long step
 * with no update in between still shows; a last line when the work ends. `scale` divides the counts for display
 * (1e6: bytes shown as MB).
 *   text:  `  writing 2104.0 of 26200.0 MB, 420.8 MB/s, ETA 57s`
 *   jsonl: {"progress":"writing","done":2104000000,"total":26200000000,"unit":"bytes","seconds":5,"rate":420800000,"etaSeconds":57.3}
 */
export function createProgress(label: string, unit: string, scale = 1, options: ProgressOptions = {}) {
  const stream = options.stream ?? process.stderr;
  const requested = options.mode ?? "auto";
  const mode = requested === "auto" ? (stream.isTTY ? "bar" : "lines") : requested;
  const lineEvery = options.lineEvery ?? 5;
  const t0 = performance.now();
  const show = (n: number) => (n / scale).toFixed(scale === 1 ? 0 : 1);
  let done = 0, total = 0, shown = false, nextLine = 1, ended = false;
  let bar: cliProgress.SingleBar | null = null;

  const report = (final: boolean): void => {
    const seconds = (performance.now() - t0) / 1000;
    const rate = seconds > 0 ? done / seconds : 0;
    const eta = rate > 0 ? (total - done) / rate : Infinity;
    if (mode === "jsonl") {
      stream.write(JSON.stringify({
        progress: label, done, total, unit: options.baseUnit ?? unit, seconds: +seconds.toFixed(1), rate: Math.round(rate),
        etaSeconds: Number.isFinite(eta) ? +eta.toFixed(1) : null, ...(final ? { end: true } : {}),
      }) + "\n");
    } else if (mode === "lines") {
      stream.write(final
        ? `  ${label} ${show(done)} of ${show(total)} ${unit} in ${fmtTime(seconds)}, ${show(rate)} ${unit}/s\n`
        : `  ${label} ${show(done)} of ${show(total)} ${unit}, ${show(rate)} ${unit}/s, ETA ${fmtTime(eta)}\n`);
    } else if (mode === "bar") {
      if (!bar) {
        bar = new cliProgress.SingleBar({ stream: stream as NodeJS.WriteStream, hideCursor: true,
          format: `${label} {bar} {shown}/{all} ${unit} | {rate} ${unit}/s | ETA {eta_formatted}` }, cliProgress.Presets.shades_classic);
        bar.start(total, done, { shown: show(done), all: show(total), rate: "-" });
      }
      bar.setTotal(total);
      bar.update(done, { shown: show(done), all: show(total), rate: show(rate) });
    }
    shown = true;
  };

  const timer = mode === "none" ? null : setInterval(() => {
    const seconds = (performance.now() - t0) / 1000;
    if (ended || seconds < nextLine - 0.05) return;
    report(false);
    nextLine = Math.floor(seconds) + (mode === "lines" ? lineEvery : 1);
  }, 1000);
  timer?.unref();

  return {
    update(d: number, t: number): void {
      done = d;
      total = t;
      if (mode === "bar" && shown) report(false);
    },
    /** The work ended: a last line (when anything was shown), and the timer stops. */
    stop(): void {
      if (ended) return;
      ended = true;
      if (timer) clearInterval(timer);
      if (shown && mode !== "bar") report(true);
      bar?.stop();
      bar = null;
    },
  };
}

/** Seconds as 1h02m, 3m05s or 7s ("-" when not finite): ETAs of progress lines. */
export function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return "-";
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), sec = t % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`;
}

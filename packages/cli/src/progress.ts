import cliProgress from "cli-progress";

/**
 * Progress of long work on stderr, from its first second on: a bar on a terminal, a line about every 10%
 * otherwise, both with the rate and an ETA. `scale` divides the counts for display (1e6: bytes shown as MB).
 */
export function createProgress(label: string, unit: string, scale = 1) {
  const t0 = performance.now();
  const show = (n: number) => (n / scale).toFixed(scale === 1 ? 0 : 1);
  let bar: cliProgress.SingleBar | null = null;
  let nextLine = 0.1;
  return {
    update(done: number, total: number): void {
      const seconds = Math.max((performance.now() - t0) / 1000, 1e-3);
      if (seconds < 1 && !bar) return; // work that finishes within a second needs no progress report
      const rate = done / seconds;
      if (process.stderr.isTTY) {
        if (!bar) {
          bar = new cliProgress.SingleBar({ stream: process.stderr, hideCursor: true,
            format: `${label} {bar} {shown}/{all} ${unit} | {rate} ${unit}/s | ETA {eta_formatted}` }, cliProgress.Presets.shades_classic);
          bar.start(total, 0, { shown: "0", all: show(total), rate: "-" });
        }
        bar.update(done, { shown: show(done), all: show(total), rate: show(rate) });
      } else if (done >= nextLine * total) {
        nextLine = Math.floor((done / total) * 10 + 1) / 10;
        process.stderr.write(`  ${label} ${show(done)} of ${show(total)} ${unit}, ${show(rate)} ${unit}/s, ETA ${((total - done) / rate).toFixed(0)} s\n`);
      }
    },
    stop(): void { bar?.stop(); bar = null; },
  };
}

/** Seconds as 1h02m, 3m05s or 7s ("-" when not finite): ETAs of progress lines. */
export function fmtTime(s: number): string {
  if (!Number.isFinite(s)) return "-";
  const t = Math.max(0, Math.round(s));
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), sec = t % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(sec).padStart(2, "0")}s` : `${sec}s`;
}

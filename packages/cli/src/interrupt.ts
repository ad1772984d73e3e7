/**
 * Ctrl-C (SIGINT) and SIGTERM for commands that write: the first asks the command to stop at its next safe point
 * (train: after the step in progress, saved; run: the same, resumable; grow/export: the write is abandoned and its
 * temporary files removed) and says so; a second aborts at once, with one line saying what is lost. The exit
 * status is the shell's for the signal (130 for SIGINT, 143 for SIGTERM) either way.
 */
export interface Interrupt {
  /** Aborted at the first signal. */
  signal: AbortSignal;
  /** The exit status for the signal received (130 or 143), or null while none came. */
  status(): number | null;
  /** Stop listening (the default behaviour of the signals returns). */
  dispose(): void;
}

const STATUS: Record<string, number> = { SIGINT: 130, SIGTERM: 143 };

/**
 * Listen for SIGINT and SIGTERM. `stopping` is the line said at the first signal (what the command does now);
 * `lost()` says, at a second, what aborting loses (e.g. "steps 21–37 since the last save at step 20").
 */
export function listenForInterrupt(stopping: string, lost: () => string, err: NodeJS.WritableStream = process.stderr): Interrupt {
  const controller = new AbortController();
  let received: string | null = null;
  const handler = (name: NodeJS.Signals): void => {
    if (received === null) {
      received = name;
      err.write(`staged: ${name === "SIGINT" ? "Ctrl-C" : name}: ${stopping} (again to abort at once: ${lost()})\n`);
      controller.abort(name);
      return;
    }
    err.write(`staged: aborted: ${lost()}\n`);
    process.exit(STATUS[received] ?? 130);
  };
  process.on("SIGINT", handler);
  process.on("SIGTERM", handler);
  return {
    signal: controller.signal,
    status: () => (received === null ? null : (STATUS[received] ?? 130)),
    dispose: () => {
      process.off("SIGINT", handler);
      process.off("SIGTERM", handler);
    },
  };
}

/** What stopping now loses of a checkpoint saved at step `saved` whose training reached step `current`. */
export const lostSince = (saved: number, current: number, dir: string): string =>
  current > saved
    ? `${current - saved} step${current - saved === 1 ? " since the last save is" : "s since the last save are"} lost (${dir} keeps step ${saved})`
    : `nothing is lost (${dir} keeps step ${saved})`;

/** A command stopped by a signal: runAction reports it in one line and keeps the signal's exit status. */
export class Interrupted extends Error {}

/**
 * A write that Ctrl-C abandons (grow, export): `write` gets the signal and stops at its next piece, removing its
 * temporary files; ended so, the command fails with "<output>: interrupted: nothing was written" and keeps the
 * signal's exit status. `what` names the write in the first signal's line, `left` what a second one leaves.
 */
export async function abandonOnInterrupt<T>(output: string, what: string, left: string, write: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const interrupt = listenForInterrupt(`abandoning ${what}: nothing is written to ${output}`, () => left);
  try {
    return await write(interrupt.signal);
  } catch (e) {
    const status = interrupt.status();
    if (status === null) throw e;
    process.exitCode = status;
    throw new Interrupted(`${output}: interrupted: nothing was written`);
  } finally {
    interrupt.dispose();
  }
}

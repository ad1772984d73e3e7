import { Interrupted } from "./interrupt.js";
/** How every command reports: human lines on stderr/stdout, or one JSON object with --json. */
export interface Output {
  json: boolean;
  /** A progress or summary line for humans (suppressed with --json). */
  info(line: string): void;
  /** The command's result: one JSON object with --json, else the given human text. */
  result(value: object, human: string): void;
}

export function createOutput(json: boolean, out: NodeJS.WritableStream = process.stdout, err: NodeJS.WritableStream = process.stderr): Output {
  return {
    json,
    info: (line) => {
      if (!json) err.write(line + "\n");
    },
    result: (value, human) => {
      out.write(json ? JSON.stringify(value) + "\n" : human + (human.endsWith("\n") ? "" : "\n"));
    },
  };
}

/** A failure the user caused: reported as one line, exit status 1. */
export class UsageError extends Error {}

/** Run a command body; any error becomes one stderr line and exit status 1 (the stack only with --debug). */
export async function runAction(debug: boolean, body: () => Promise<void>): Promise<void> {
  try {
    await body();
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e));
    process.stderr.write(`staged: ${err.message.split("\n")[0]}\n`);
    if (debug && err.stack) process.stderr.write(err.stack + "\n");
    // Stopped by Ctrl-C or SIGTERM: the status the command set for the signal (130, 143) stays.
    if (!(err instanceof Interrupted && process.exitCode)) process.exitCode = 1;
  }
}

import { isAbsolute, relative, resolve } from "node:path";
import {
  canonicalPath,
  checkDiskSpace,
  checkpointBytes,
  formatCount,
  parameterCount,
  saveTrainingState,
  writeAnnouncement,
  type Registry,
  type TrainingState,
} from "@staged/core";
import { abandonOnInterrupt } from "./interrupt.js";
import { createProgress, type ProgressMode } from "./progress.js";
import { UsageError } from "./output.js";

const inside = (child: string, parent: string): boolean => {
  const r = relative(parent, child);
  return r !== "" && !r.startsWith("..") && !isAbsolute(r);
};

/**
 * Refuse an output that is the input checkpoint, inside it, or holds it (a derived state has no source directory, so
 * the save cannot see these itself). `what` names the command in the message ("growth never overwrites its input").
 */
export async function checkOutputBesideInput(input: string, output: string, what: string): Promise<void> {
  const from = await canonicalPath(input),
    to = await canonicalPath(output);
  if (from === to) throw new UsageError(`${output}: the output is the input checkpoint (${what} never overwrites its input)`);
  if (inside(to, from)) throw new UsageError(`${output}: the output is inside the input checkpoint ${from}`);
  if (inside(from, to)) throw new UsageError(`${output}: the output contains the input checkpoint ${from}`);
}

/** The bytes a state's checkpoint takes, checked against the free space where it goes (before anything is computed). */
export async function checkWriteSpace(output: string, state: TrainingState): Promise<number> {
  const bytes = checkpointBytes(state);
  await checkDiskSpace(output, bytes, `${formatCount(parameterCount(state))} parameters${state.optimizer.expAvg ? " and their moments" : ""}`);
  return bytes;
}

export interface WriteStateOptions {
  registry: Registry;
  /** Replace an existing output. */
  force?: boolean | undefined;
  maxShardBytes?: number | undefined;
  /** The checkpoint format (default: the state's own, see SaveOptions.format). */
  format?: string | undefined;
  progress?: ProgressMode | undefined;
}

/**
 * Write a state computed by a command (grow, convert) to a new checkpoint: the announcement of a large write, the bytes
 * as they are written (a line at 1 s, then every 5 s; a JSON line each second), and on Ctrl-C the write abandoned at
 * its next piece with its temporary files removed, nothing written.
 */
export async function writeState(output: string, state: TrainingState, bytes: number, o: WriteStateOptions): Promise<{ seconds: number }> {
  const announce = writeAnnouncement(output, bytes);
  // Also with --json (stdout keeps the one result); --progress jsonl makes it machine-readable, none silences it.
  if (announce && o.progress !== "none") {
    process.stderr.write(o.progress === "jsonl" ? JSON.stringify({ announce, output: resolve(output), bytes }) + "\n" : announce + "\n");
  }
  const t0 = performance.now();
  const progress = createProgress("writing", "MB", 1e6, { mode: o.progress ?? "auto", baseUnit: "bytes" });
  progress.update(0, bytes - [...(state.files?.values() ?? [])].reduce((n, f) => n + f.byteLength, 0)); // the tensors' bytes
  try {
    await abandonOnInterrupt(
      output,
      "the write",
      `its temporary files are left beside ${output} for the next staged command on it to clear`,
      (signal) =>
        saveTrainingState(output, state, {
          registry: o.registry,
          overwrite: Boolean(o.force),
          signal,
          ...(o.maxShardBytes !== undefined ? { maxShardBytes: o.maxShardBytes } : {}),
          ...(o.format !== undefined ? { format: o.format } : {}),
          onProgress: (p) => progress.update(p.bytes, p.totalBytes),
        }),
    );
  } finally {
    progress.stop();
  }
  return { seconds: (performance.now() - t0) / 1000 };
}

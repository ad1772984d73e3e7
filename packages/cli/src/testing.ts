// Helpers for the end-to-end tests of the built `staged` command (not part of the package's API).
import { spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { initTrainingState, mapValues, saveTrainingState, type TrainingState } from "@staged/core";

const BIN = fileURLToPath(new URL("../dist/bin.js", import.meta.url));

export interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function staged(...args: string[]): Run {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

export function ok(...args: string[]): Run {
  const r = staged(...args);
  if (r.status !== 0) throw new Error(`staged ${args.join(" ")} exited ${r.status}: ${r.stderr}`);
  return r;
}

export const json = (...args: string[]) => JSON.parse(ok("--json", ...args).stdout) as Record<string, unknown>;

/** Hash of every file of a directory and the names in its parent, to show that nothing was written. */
export async function fingerprint(dir: string): Promise<string> {
  const h = createHash("sha256");
  for (const name of (await readdir(dir)).sort()) h.update(name).update(await readFile(join(dir, name)));
  h.update((await readdir(join(dir, ".."))).sort().join("|"));
  return h.digest("hex");
}

export const TEST_CONFIG = { model_type: "gpt2", n_layer: 2, n_embd: 8, n_head: 2, vocab_size: 32, n_positions: 16 };

/** A tiny checkpoint with moments, schedule and progress, in a dtype, optionally sharded, weights × scale. */
export async function testCheckpoint(dir: string, dtype: "F32" | "F16" | "BF16" = "F32", maxShardBytes?: number, scale = 1): Promise<string> {
  const s = initTrainingState("gpt2", TEST_CONFIG, 3);
  const as = (c: number) => mapValues(s.params, (v) => Math.abs(v) * c, dtype);
  const state: TrainingState = {
    ...s,
    params: as(scale),
    optimizer: { ...s.optimizer, step: 5, expAvg: as(0.1), expAvgSq: as(0.01) },
    schedule: { kind: "linear", peakLr: 1e-3, warmupSteps: 2, totalSteps: 40, restarts: [] },
    progress: { ...s.progress, step: 5, tokensSeen: 320 },
  };
  await saveTrainingState(dir, state, { maxShardBytes });
  return dir;
}

#!/usr/bin/env node
/**
 * What a durable save costs (run after `pnpm build`). For a ~1 GB F32 GPT-2-shaped state with moments, in
 * the same run and the same directory:
 *   (a) saveTrainingState as it is: lock, temporary sibling, every file and directory fsynced, two renames;
 *   (b) the same files written by writeCheckpoint alone (no lock, no fsync, no rename), then
 *   (c) fsync of those files and their directory, timed alone: the price of (a)'s durability;
 *   (d) the physical reference: `cp -r` of the written checkpoint, then `sync` of it.
 * Best of --reps runs each, MB/s in 10^6 bytes/s of checkpoint written.
 * Usage: node bench/save-bench.mjs [--json] [--size-mb 1024] [--reps 3] [--dir <parent of the temp dir, default os.tmpdir()>]
 */
import { execFileSync } from "node:child_process";
import { mkdir, mkdtemp, rm, stat, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { initTrainingState, inMemory, saveTrainingState, Tensor } from "../dist/index.js";
import { syncTree } from "../dist/files.js";
import { writeCheckpoint } from "../dist/shards.js";

const args = process.argv.slice(2);
const json = args.includes("--json");
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const sizeMb = opt("--size-mb", 1024);
const reps = opt("--reps", 3);
const parentDir = args.includes("--dir") ? args[args.indexOf("--dir") + 1] : tmpdir();
const log = (...a) => {
  if (!json) console.error(...a);
};

// d_model 512, 8 heads, vocab 8192: pick the layers so that weights + two moments ≈ size.
const perLayer = 12 * 512 * 512 + 13 * 512;
const layers = Math.max(1, Math.round((sizeMb * 1e6) / 12 / perLayer));
const fresh = initTrainingState("gpt2", { n_layer: layers, n_embd: 512, n_head: 8, vocab_size: 8192, n_positions: 512 }, 0);
const moments = new Map([...fresh.params].map(([n, t]) => [n, inMemory(Tensor.zeros("F32", t.shape).scale(0))]));
const state = { ...fresh, optimizer: { ...fresh.optimizer, expAvg: moments, expAvgSq: moments } };
const work = await mkdtemp(join(parentDir, "staged-save-bench-"));

async function dirBytes(dir) {
  let n = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) n += e.isFile() ? (await stat(join(dir, e.name))).size : 0;
  return n;
}
async function best(fn) {
  let min = Infinity;
  for (let i = 0; i < reps; i++) {
    const before = await fn.prepare?.();
    const t = performance.now();
    await fn(before);
    min = Math.min(min, (performance.now() - t) / 1000);
    await fn.cleanup?.();
  }
  return min;
}

try {
  const out = join(work, "ck");
  const save = Object.assign(async () => saveTrainingState(out, state), { cleanup: () => rm(out, { recursive: true, force: true }) });
  const saveSeconds = await best(save);
  await saveTrainingState(out, state);
  const bytes = await dirBytes(out);

  const raw = join(work, "raw");
  const entries = (map, prefix = "") => [...map].map(([name, tensor]) => ({ name: prefix + name, tensor }));
  const write = Object.assign(
    async () => {
      await mkdir(raw);
      await writeCheckpoint(raw, "model", entries(state.params), { metadata: { format: "pt" } });
      await writeCheckpoint(raw, "optimizer", [...entries(moments, "exp_avg."), ...entries(moments, "exp_avg_sq.")], { metadata: { format: "pt" } });
    },
    { prepare: () => rm(raw, { recursive: true, force: true }) },
  );
  const writeSeconds = await best(write);
  // fsync right after writing, as the save does: the page cache still holds the dirty data.
  let syncSeconds = Infinity;
  for (let i = 0; i < reps; i++) {
    await rm(raw, { recursive: true, force: true });
    await write();
    const t = performance.now();
    await syncTree(raw);
    syncSeconds = Math.min(syncSeconds, (performance.now() - t) / 1000);
  }
  const copy = join(work, "copy");
  const cpSeconds = await best(
    Object.assign(
      async () => {
        execFileSync("cp", ["-r", out, copy]);
        execFileSync("sync", ["-f", copy]);
      },
      { cleanup: () => rm(copy, { recursive: true, force: true }) },
    ),
  );

  const mbs = (s) => bytes / 1e6 / s;
  const result = {
    bytes,
    layers,
    reps,
    saveSeconds,
    saveMBps: mbs(saveSeconds),
    writeSeconds,
    writeMBps: mbs(writeSeconds),
    fsyncSeconds: syncSeconds,
    fsyncShare: syncSeconds / saveSeconds,
    cpSyncSeconds: cpSeconds,
    cpSyncMBps: mbs(cpSeconds),
  };
  if (json) console.log(JSON.stringify(result, null, 2));
  else {
    log(`checkpoint ${(bytes / 1e9).toFixed(2)} GB (GPT-2 ${layers} layers × d512, weights + AdamW moments, F32), best of ${reps}, in ${work}`);
    log(`  saveTrainingState (locked, fsynced, atomic) ${saveSeconds.toFixed(2)} s  ${mbs(saveSeconds).toFixed(0)} MB/s`);
    log(`  the same files, written only                ${writeSeconds.toFixed(2)} s  ${mbs(writeSeconds).toFixed(0)} MB/s`);
    log(
      `  fsync of them, alone                        ${syncSeconds.toFixed(2)} s  (${((100 * syncSeconds) / saveSeconds).toFixed(0)}% of the save)`,
    );
    log(`  cp -r + sync (physical reference)           ${cpSeconds.toFixed(2)} s  ${mbs(cpSeconds).toFixed(0)} MB/s`);
  }
} finally {
  await rm(work, { recursive: true, force: true });
}

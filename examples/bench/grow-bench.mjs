// Benchmark of growth at scale: synthetic HF-layout checkpoints (model-0000i-of-0000N.safetensors + index, as
// HF shards them) are grown by depth ×2 and width ×2 in a child process, and compared with a copy of the output
// made in the same run. Not a test: a script that prints a table (and JSON with --json).
//
// Cases (each skipped, with the reason, when the disk cannot hold its input and output):
//   small           ~500 MB F32 GPT-2 (12 layers, d512) with AdamW moments, width ×2 and depth ×2
//   xl-bf16-depth   GPT-2 XL shape (48 layers, d1600, vocab 50257, untied) BF16, depth ×2     3.3 → 6.3 GB
//   xl-bf16-width   the same, width ×2                                                         3.3 → 12.6 GB
//   xl-f32m-depth   GPT-2 XL (tied) F32 with AdamW moments, depth ×2                          18.7 → 37 GB
//   7b-bf16-depth   Llama 7B shape (32 layers, d4096, ffn 11008, vocab 32000) BF16, depth ×2  13.5 → 26.4 GB
//   7b-bf16-width   the same, width ×2                                                        13.5 → 53 GB
//
// "ours" is output bytes / wall time of the child (load, grow, save with its fsyncs). "cp" is `cp -r` of the
// output directory followed by `sync` (the save is durable, so the copy is made durable too), in the same run;
// where the disk cannot hold a second copy of the output, the files are copied in batches that fit, each synced and
// removed before the next, and the times added (said in the table). Each is the best of --reps runs (default 2: this
// machine's disk and page cache make single runs vary by ±30%), and before each timed job the disk is left to go idle
// (writeback and the discards of removed files would slow whichever job comes next). Peak RSS is the child's
// /proc/self/status VmHWM, the highest of the runs; the bound is 2 × the largest output tensor in its stored dtype +
// 300 MB.
//
// --drop-caches (root only) empties the page cache before each timed job and reads the job's input back into it (the
// growth's input, the files cp copies), so that both start from the same cache state; without it, cp copies an
// output the growth has just written (mostly cached) while the growth reads an input its own writes evicted.
//
// Usage: node bench/grow-bench.mjs [--cases small,xl-bf16-depth,...] [--reps 2] [--drop-caches] [--dir <parent of the
//        work dir>] [--margin-gb 3] [--kv-heads 32] [--keep-inputs <dir>] [--buffered] [--json]
//
// --buffered also times each growth with STAGED_DIRECT_IO=0 (every read and write through the page cache, as before
// direct I/O; see the core README), alternating with the default, and adds its columns.
//
// --keep-inputs <dir> keeps the generated inputs in <dir> (and reuses those already there) instead of generating them
// into the work dir and removing them after their last case: for repeated runs.
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, stat, statfs } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DEFAULT_ADAMW, DTYPE_SIZES, Tensor, checkpointBytes, createDefaultRegistry, loadTrainingState, saveTrainingState } from "@staged/core";
import { growWidth } from "@staged/grow-width";
import { growDepth } from "@staged/grow-depth";

const args = process.argv.slice(2);
const arg = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const GB = 1e9,
  MB = 1e6;

/** Peak RSS of this process (VmHWM: its own high-water mark, not inherited from the parent at fork). */
function peakRssBytes() {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (m) return Number(m[1]) * 1024;
  } catch {
    /* not Linux */
  }
  return process.resourceUsage().maxRSS * 1024;
}

const grow = (state, op) => (op === "width" ? growWidth(state, { factor: 2 }) : growDepth(state, { factor: 2 }));

if (args[0] === "--child") {
  // Its own process, so that the peak RSS is the growth's alone.
  const [, op, input, output] = args;
  const t0 = performance.now();
  const state = await loadTrainingState(input);
  const grown = grow(state, op);
  await saveTrainingState(output, grown);
  await state.close();
  const seconds = (performance.now() - t0) / 1000;
  const usage = process.resourceUsage();
  console.log(
    JSON.stringify({ seconds, peakRssBytes: peakRssBytes(), userSeconds: usage.userCPUTime / 1e6, systemSeconds: usage.systemCPUTime / 1e6 }),
  );
  process.exit(0);
}

const MODELS = {
  small: { arch: "gpt2", config: { model_type: "gpt2", n_layer: 12, n_embd: 512, n_head: 8, vocab_size: 8192, n_positions: 1024 } },
  "gpt2-xl": {
    arch: "gpt2",
    config: { model_type: "gpt2", n_layer: 48, n_embd: 1600, n_head: 25, vocab_size: 50257, n_positions: 1024, tie_word_embeddings: false },
  },
  "gpt2-xl-tied": { arch: "gpt2", config: { model_type: "gpt2", n_layer: 48, n_embd: 1600, n_head: 25, vocab_size: 50257, n_positions: 1024 } },
  "llama-7b": {
    arch: "llama",
    config: {
      model_type: "llama",
      num_hidden_layers: 32,
      hidden_size: 4096,
      num_attention_heads: 32,
      num_key_value_heads: Number(arg("kv-heads", 32)),
      intermediate_size: 11008,
      vocab_size: 32000,
      max_position_embeddings: 4096,
      tie_word_embeddings: false,
    },
  },
};
const kvHeads = MODELS["llama-7b"].config.num_key_value_heads;
const kvLabel = kvHeads === 32 ? "32 heads" : `GQA 32/${kvHeads}`;
const CASES = [
  { id: "small-width", group: "small", label: "small F32 + moments, width ×2", model: "small", dtype: "F32", moments: true, op: "width" },
  { id: "small-depth", group: "small", label: "small F32 + moments, depth ×2", model: "small", dtype: "F32", moments: true, op: "depth" },
  { id: "xl-bf16-depth", label: "GPT-2 XL BF16, depth ×2", model: "gpt2-xl", dtype: "BF16", moments: false, op: "depth" },
  { id: "xl-bf16-width", label: "GPT-2 XL BF16, width ×2", model: "gpt2-xl", dtype: "BF16", moments: false, op: "width" },
  { id: "xl-f32m-depth", label: "GPT-2 XL F32 + moments, depth ×2", model: "gpt2-xl-tied", dtype: "F32", moments: true, op: "depth" },
  {
    id: "7b-bf16-depth",
    label: `7B-class Llama (d4096, 32 layers, ${kvLabel}) BF16, depth ×2`,
    model: "llama-7b",
    dtype: "BF16",
    moments: false,
    op: "depth",
  },
  {
    id: "7b-bf16-width",
    label: `7B-class Llama (d4096, 32 layers, ${kvLabel}) BF16, width ×2`,
    model: "llama-7b",
    dtype: "BF16",
    moments: false,
    op: "width",
  },
];
const wanted = arg("cases", CASES.map((c) => c.id).join(","))
  .split(",")
  .map((s) => s.trim())
  .filter(Boolean);
for (const id of wanted) {
  if (!CASES.some((c) => c.id === id || c.group === id)) {
    console.error(`grow-bench: --cases: unknown case ${id} (known: ${CASES.map((c) => c.id).join(", ")})`);
    process.exit(2);
  }
}
const cases = CASES.filter((c) => wanted.includes(c.id) || (c.group !== undefined && wanted.includes(c.group)));
const json = args.includes("--json");
const marginBytes = Number(arg("margin-gb", 3)) * GB;
const reps = Number(arg("reps", 2));
const dropCaches = args.includes("--drop-caches");
const keepInputs = arg("keep-inputs", undefined);
const buffered = args.includes("--buffered");
if (keepInputs) await mkdir(keepInputs, { recursive: true });
const log = (s) => {
  if (!json) console.error(s);
};

/** Deterministic pseudo-random values in ±0.05 (xorshift32), generated on read so the generation streams. */
function synthetic(dtype, shape, seed, kind) {
  return {
    dtype,
    shape,
    read: async () => {
      const n = shape.reduce((a, b) => a * b, 1);
      const out = new Float32Array(n);
      if (kind === "ones") out.fill(1);
      else {
        let s = (seed * 2654435761) >>> 0 || 1;
        const k = kind === "sq" ? 0.0025 : 0.1;
        for (let i = 0; i < n; i++) {
          s ^= s << 13;
          s ^= s >>> 17;
          s ^= s << 5;
          const u = (s >>> 0) * 2.3283064365386963e-10 - 0.5;
          out[i] = kind === "sq" ? u * u * k : u * k;
        }
      }
      return new Tensor(dtype, shape, out);
    },
  };
}

/** A synthetic training state of a model in a dtype (optionally with AdamW moments), without its values in memory. */
function syntheticState(model, dtype, moments) {
  const { arch: archName, config: raw } = MODELS[model];
  const arch = createDefaultRegistry().get("architecture", archName);
  const { config, shape } = arch.parseConfig(raw);
  const specs = arch.params(config);
  const tensors = (kind) =>
    new Map(
      specs.map((p, i) => [
        p.name,
        synthetic(
          dtype,
          p.shape,
          i + 1 + (kind === "avg" ? 7919 : kind === "sq" ? 15887 : 0),
          kind === "w" && /norm.weight$/.test(p.role) ? "ones" : kind,
        ),
      ]),
    );
  return {
    architecture: arch.name,
    config: arch.withShape(config, shape),
    shape,
    params: tensors("w"),
    optimizer: {
      ...DEFAULT_ADAMW,
      betas: [...DEFAULT_ADAMW.betas],
      step: moments ? 100 : 0,
      noDecay: specs.filter((p) => !p.decay).map((p) => p.name),
      ...(moments ? { expAvg: tensors("avg"), expAvgSq: tensors("sq") } : {}),
    },
    schedule: null,
    progress: { step: moments ? 100 : 0, tokensSeen: 0, flopsSeen: 0, samplerSeed: 0, stages: [] },
    tokenizer: { kind: "none" },
  };
}

const dirBytes = async (dir) => {
  let n = 0;
  for (const f of await readdir(dir)) n += (await stat(join(dir, f))).size;
  return n;
};
const freeBytes = async (dir) => {
  const s = await statfs(dir);
  return s.bavail * s.bsize;
};
const tensorBytes = (t) => t.shape.reduce((a, b) => a * b, DTYPE_SIZES[t.dtype]);
const gb = (n) => (n / GB).toFixed(n < 10 * GB ? 2 : 1);

/** The grown state's size and largest tensor, from shapes alone (nothing is computed). */
async function planned(input, op) {
  const state = await loadTrainingState(input);
  try {
    const grown = grow(state, op);
    const all = [grown.params, grown.optimizer.expAvg, grown.optimizer.expAvgSq].flatMap((m) => [...(m?.values() ?? [])]);
    return { bytes: checkpointBytes(grown), largest: Math.max(...all.map(tensorBytes)) };
  } finally {
    await state.close();
  }
}

/** Disk counters of /proc/diskstats (sectors read, written, discarded, I/Os in flight), summed over the disks. */
function diskCounters() {
  try {
    let sum = [0, 0, 0, 0];
    for (const line of readFileSync("/proc/diskstats", "utf8").split("\n")) {
      const f = line.trim().split(/\s+/);
      if (f.length < 14 || /^(loop|ram|sr)/.test(f[2])) continue;
      sum = [sum[0] + Number(f[5]), sum[1] + Number(f[9]), sum[2] + Number(f[16] ?? 0), sum[3] + Number(f[11])];
    }
    return sum.join(",");
  } catch {
    return null;
  }
}

/**
 * Flush, then wait (at most 2 minutes) until the disk has been idle for 2 s: the writeback and the discards of what an
 * earlier step wrote or removed (this filesystem is mounted with discard) otherwise slow whichever job runs next.
 * With --drop-caches (root), the page cache is emptied first and `warm` (the files the next job reads) read into it,
 * so that every job starts from the same cache state: its input cached as far as it fits, nothing else.
 */
async function settle(warm = []) {
  spawnSync("sync");
  if (dropCaches) {
    writeFileSync("/proc/sys/vm/drop_caches", "1\n");
    for (const f of warm) spawnSync("cat", [f], { stdio: ["ignore", "ignore", "ignore"] });
    spawnSync("sync");
  }
  let last = diskCounters(),
    quiet = 0;
  if (last === null) return;
  for (let t = 0; t < 240 && quiet < 4; t++) {
    await new Promise((r) => setTimeout(r, 500));
    const now = diskCounters();
    quiet = now === last && now.endsWith(",0") ? quiet + 1 : 0;
    last = now;
  }
}

function timed(cmd, cmdArgs, env = {}) {
  const t0 = performance.now();
  const r = spawnSync(cmd, cmdArgs, { encoding: "utf8", maxBuffer: 1 << 26, env: { ...process.env, ...env } });
  if (r.status !== 0) throw new Error(`${cmd} ${cmdArgs.join(" ")} failed (${r.status}): ${r.stderr}`);
  return { seconds: (performance.now() - t0) / 1000, stdout: r.stdout };
}

const work = await mkdtemp(join(arg("dir", tmpdir()), "staged-grow-bench-"));
const rows = [];
const skipped = [];
try {
  const inputs = new Map();
  for (const [i, c] of cases.entries()) {
    const key = `${c.model}-${c.dtype}-${c.moments}`;
    let input = inputs.get(key);
    if (!input && keepInputs) {
      const kept = join(keepInputs, key);
      if (
        await stat(join(kept, "training_state.json")).then(
          () => true,
          () => false,
        )
      ) {
        input = kept;
        inputs.set(key, input);
        log(`reusing ${kept}`);
      }
    }
    if (!input) {
      const state = syntheticState(c.model, c.dtype, c.moments);
      const need = checkpointBytes(state);
      if (need + marginBytes > (await freeBytes(work))) {
        skipped.push(`${c.label}: its input (${gb(need)} GB) does not fit the ${gb(await freeBytes(work))} GB free`);
        log(`skipped ${skipped.at(-1)}`);
        continue;
      }
      input = join(keepInputs ?? work, key);
      log(`generating ${c.model} ${c.dtype}${c.moments ? " with moments" : ""}: ${gb(need)} GB ...`);
      const t0 = performance.now();
      await saveTrainingState(input, state);
      log(`  ${gb(await dirBytes(input))} GB in ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      inputs.set(key, input);
    }
    const inBytes = await dirBytes(input);
    const plan = await planned(input, c.op);
    const free = await freeBytes(work);
    if (plan.bytes + marginBytes > free) {
      skipped.push(`${c.label}: its output (${gb(plan.bytes)} GB) does not fit the ${gb(free)} GB free`);
      log(`skipped ${skipped.at(-1)}`);
    } else {
      const output = join(work, `${c.id}-out`);
      log(`${c.label}: growing ${gb(inBytes)} → ${gb(plan.bytes)} GB ...`);
      // Best of `reps` growths, each into a fresh output; with --buffered, also with STAGED_DIRECT_IO=0 (through the
      // page cache, as before direct I/O), alternating with the default.
      const best = { default: null, buffered: null };
      for (let rep = 0; rep < reps; rep++) {
        for (const mode of buffered ? ["default", "buffered"] : ["default"]) {
          await rm(output, { recursive: true, force: true });
          await settle((await readdir(input)).filter((f) => f.endsWith(".safetensors")).map((f) => join(input, f)));
          const child = timed(
            process.execPath,
            [fileURLToPath(import.meta.url), "--child", c.op, input, output],
            mode === "buffered" ? { STAGED_DIRECT_IO: "0" } : {},
          );
          const run = JSON.parse(child.stdout.trim().split("\n").at(-1));
          log(
            `  ours${mode === "buffered" ? " (buffered)" : ""}: ${run.seconds.toFixed(1)} s (user ${run.userSeconds.toFixed(1)} s, system ${run.systemSeconds.toFixed(1)} s), peak RSS ${(run.peakRssBytes / 2 ** 20).toFixed(0)} MiB`,
          );
          const b = best[mode];
          best[mode] =
            !b || run.seconds < b.seconds
              ? { ...run, peakRssBytes: Math.max(run.peakRssBytes, b?.peakRssBytes ?? 0) }
              : { ...b, peakRssBytes: Math.max(b.peakRssBytes, run.peakRssBytes) };
        }
      }
      const r = best.default;
      const outBytes = await dirBytes(output);
      // The reference: a durable copy of the output, best of `reps`. Where the disk cannot hold a second copy, the
      // files are copied in batches that fit, each synced and removed before the next (the times added up).
      const copy = join(work, `${c.id}-copy`);
      const room = (await freeBytes(work)) - marginBytes;
      const files = [];
      for (const f of await readdir(output)) files.push({ f, size: (await stat(join(output, f))).size });
      const batches = [];
      for (const x of files.sort((a, b) => b.size - a.size)) {
        if (x.size > room) throw new Error(`${c.label}: ${x.f} (${gb(x.size)} GB) does not fit the ${gb(room)} GB left for the copy`);
        const b = batches.find((y) => y.size + x.size <= room);
        if (b) {
          b.files.push(x.f);
          b.size += x.size;
        } else batches.push({ files: [x.f], size: x.size });
      }
      let cpSeconds = Infinity;
      for (let rep = 0; rep < reps; rep++) {
        let seconds = 0;
        for (const b of batches) {
          await rm(copy, { recursive: true, force: true });
          await mkdir(copy);
          await settle(b.files.map((f) => join(output, f)));
          seconds += timed("bash", ["-c", `cd "$0" && cp -r "\${@:2}" "$1" && sync`, output, copy, ...b.files]).seconds;
        }
        log(`  cp: ${seconds.toFixed(1)} s${batches.length > 1 ? ` in ${batches.length} batches` : ""}`);
        cpSeconds = Math.min(cpSeconds, seconds);
      }
      const row = {
        id: c.id,
        label: c.label,
        inBytes,
        outBytes,
        seconds: r.seconds,
        userSeconds: r.userSeconds,
        systemSeconds: r.systemSeconds,
        oursMBps: outBytes / MB / r.seconds,
        cpMBps: outBytes / MB / cpSeconds,
        cpBatches: batches.length,
        ...(best.buffered
          ? {
              bufferedSeconds: best.buffered.seconds,
              bufferedMBps: outBytes / MB / best.buffered.seconds,
              bufferedPeakRssBytes: best.buffered.peakRssBytes,
            }
          : {}),
        peakRssBytes: r.peakRssBytes,
        largestTensorBytes: plan.largest,
        boundBytes: 2 * plan.largest + 300 * MB,
      };
      row.ratio = row.oursMBps / row.cpMBps;
      rows.push(row);
      log(
        `  ours ${row.oursMBps.toFixed(0)} MB/s, cp ${row.cpMBps.toFixed(0)} MB/s, ratio ${row.ratio.toFixed(2)}; ` +
          `peak RSS ${(r.peakRssBytes / 2 ** 20).toFixed(0)} MiB, bound ${(row.boundBytes / 2 ** 20).toFixed(0)} MiB`,
      );
      await rm(output, { recursive: true, force: true });
      await rm(copy, { recursive: true, force: true });
    }
    // An input no later case reads is removed now, to leave the disk to the next ones.
    const key2 = `${c.model}-${c.dtype}-${c.moments}`;
    if (!keepInputs && !cases.slice(i + 1).some((n) => `${n.model}-${n.dtype}-${n.moments}` === key2)) {
      await rm(input, { recursive: true, force: true });
      inputs.delete(key2);
    }
  }
} finally {
  await rm(work, { recursive: true, force: true });
}

const mib = (n) => `${(n / 2 ** 20).toFixed(0)} MiB`;
const table = [
  `| case | in → out | ours | cp | ours / cp | peak RSS | bound (2 × largest + 300 MB) |${buffered ? " buffered (STAGED_DIRECT_IO=0) | buffered / cp |" : ""}`,
  `|---|---|---|---|---|---|---|${buffered ? "---|---|" : ""}`,
  ...rows.map(
    (r) =>
      `| ${r.label} | ${gb(r.inBytes)} → ${gb(r.outBytes)} GB | ${r.oursMBps.toFixed(0)} MB/s | ${r.cpMBps.toFixed(0)} MB/s` +
      `${r.cpBatches > 1 ? ` (${r.cpBatches} batches)` : ""} | ${r.ratio.toFixed(2)} | ${mib(r.peakRssBytes)} | ${mib(r.boundBytes)} |` +
      (r.bufferedMBps ? ` ${r.bufferedMBps.toFixed(0)} MB/s | ${(r.bufferedMBps / r.cpMBps).toFixed(2)} |` : ""),
  ),
];
if (json) console.log(JSON.stringify({ rows, skipped, node: process.version }));
else {
  console.log(table.join("\n"));
  for (const s of skipped) console.log(`skipped: ${s}`);
}

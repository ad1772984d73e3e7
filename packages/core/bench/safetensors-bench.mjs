#!/usr/bin/env node
/**
 * safetensors benchmark (run after `pnpm build`): generate a ~1 GB sharded F32 checkpoint in a temp
 * dir, then time
 *   (a) openCheckpoint + writeCheckpoint into another dir, tensor by tensor (read, decode, encode, write),
 *   (b) a plain copy of the same shard files, both with fs.copyFile (kernel copy) and with a
 *       userspace read+write loop (64 MiB buffer),
 * in the same run, and report MB/s (10^6 bytes/s), the ratio, and peak RSS against the largest tensor;
 * then (c) the parse of a ~10 MB valid header (87 000 tensors, about what a sharded 70B checkpoint's
 * index lists), best of --reps.
 * Each timed job runs in a fresh child process (best of --reps runs), so its peak RSS
 * (process.resourceUsage().maxRSS) is that job's alone, Node's own baseline included.
 * Usage: node bench/safetensors-bench.mjs [--json] [--size-mb 1024] [--shards 4] [--reps 5] [--dir <parent of the temp dir, default os.tmpdir()>]
 */
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { copyFile, mkdir, mkdtemp, open, readdir, rm, stat } from "node:fs/promises";
import { fileURLToPath } from "node:url";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Tensor } from "../dist/tensor.js";
import { closeCheckpoint, openCheckpoint, writeCheckpoint } from "../dist/shards.js";
import { parseSafetensorsHeader } from "../dist/safetensors/header.js";

const args = process.argv.slice(2);
const json = args.includes("--json");
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const targetBytes = opt("--size-mb", 1024) * 2 ** 20;
const shardCount = opt("--shards", 4);
const reps = opt("--reps", 5);
const parentDir = args.includes("--dir") ? args[args.indexOf("--dir") + 1] : tmpdir();
const log = (...a) => {
  if (!json) console.error(...a);
};
const MB = 1e6;
const maxRssBytes = () => process.resourceUsage().maxRSS * 1024;
/**
 * Peak RSS of this process image. On Linux, getrusage's maxRSS of a spawned child starts from the
 * parent's RSS at fork time; /proc/self/status VmHWM is the child's own high-water mark.
 */
function peakRssBytes() {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync("/proc/self/status", "utf8"));
    if (m) return Number(m[1]) * 1024;
  } catch {
    /* not Linux */
  }
  return maxRssBytes();
}

/** GPT-2-medium-like F32 tensors: 64 MiB embedding, per layer 12/4/16/16 MiB matrices and small vectors. */
function layout() {
  const d = 1024,
    vocab = 16384,
    ctx = 1024;
  const list = [
    ["wte.weight", [vocab, d]],
    ["wpe.weight", [ctx, d]],
  ];
  let bytes = 4 * (vocab * d + ctx * d);
  const perLayer = 4 * (12 * d * d + 13 * d + 4 * d);
  for (let l = 0; bytes + perLayer <= targetBytes + perLayer / 2; l++) {
    const p = `h.${l}.`;
    list.push(
      [p + "ln_1.weight", [d]],
      [p + "ln_1.bias", [d]],
      [p + "attn.c_attn.weight", [d, 3 * d]],
      [p + "attn.c_attn.bias", [3 * d]],
      [p + "attn.c_proj.weight", [d, d]],
      [p + "attn.c_proj.bias", [d]],
      [p + "ln_2.weight", [d]],
      [p + "ln_2.bias", [d]],
      [p + "mlp.c_fc.weight", [d, 4 * d]],
      [p + "mlp.c_fc.bias", [4 * d]],
      [p + "mlp.c_proj.weight", [4 * d, d]],
      [p + "mlp.c_proj.bias", [d]],
    );
    bytes += perLayer;
  }
  list.push(["ln_f.weight", [d]], ["ln_f.bias", [d]]);
  return list;
}

/** Lazy tensor with cheap deterministic values (generated on read, so generation streams too). */
function synthetic(shape, seed) {
  return {
    dtype: "F32",
    shape,
    read: async () => {
      const n = shape.reduce((a, b) => a * b, 1);
      const out = new Float32Array(n);
      let s = (seed * 2654435761) >>> 0;
      for (let i = 0; i < n; i++) {
        s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
        out[i] = (s >>> 8) * 5.960464477539063e-8 - 0.5;
      }
      return new Tensor("F32", shape, out);
    },
  };
}

async function dirBytes(dir) {
  let total = 0;
  for (const f of await readdir(dir)) total += (await stat(join(dir, f))).size;
  return total;
}

async function sameFiles(a, b) {
  const names = (await readdir(a)).sort();
  if (JSON.stringify(names) !== JSON.stringify((await readdir(b)).sort())) return false;
  const bufA = Buffer.alloc(64 << 20),
    bufB = Buffer.alloc(64 << 20);
  for (const f of names) {
    const [fa, fb] = [await open(join(a, f)), await open(join(b, f))];
    try {
      for (let pos = 0; ; pos += bufA.length) {
        const [{ bytesRead: ra }, { bytesRead: rb }] = [await fa.read(bufA, 0, bufA.length, pos), await fb.read(bufB, 0, bufB.length, pos)];
        if (ra !== rb || !bufA.subarray(0, ra).equals(bufB.subarray(0, rb))) return false;
        if (ra === 0) break;
      }
    } finally {
      await fa.close();
      await fb.close();
    }
  }
  return true;
}

/** Best time to validate a ~10 MB header of mixed-dtype tensors, in milliseconds. */
function headerParse() {
  const dtypes = [
    ["F32", 4],
    ["BF16", 2],
    ["F16", 2],
    ["I64", 8],
  ];
  const parts = [];
  let offset = 0;
  let length = 0;
  for (let i = 0; length < 10e6; i++) {
    const [dtype, size] = dtypes[i % 4];
    const shape = [1 + (i % 97), 64 + (i % 13)];
    const bytes = shape[0] * shape[1] * size;
    const part = `"model.layers.${i}.self_attn.q_proj.weight":{"dtype":"${dtype}","shape":[${shape}],"data_offsets":[${offset},${offset + bytes}]}`;
    offset += bytes;
    length += part.length + 1;
    parts.push(part);
  }
  const header = Buffer.from(`{"__metadata__":{"format":"pt"},${parts.join(",")}}`);
  let best = Infinity;
  for (let rep = 0; rep < Math.max(reps, 3); rep++) {
    const t0 = performance.now();
    parseSafetensorsHeader("bench", header, offset);
    best = Math.min(best, performance.now() - t0);
  }
  return { bytes: header.length, tensors: parts.length, ms: +best.toFixed(1) };
}

async function timed(fn) {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function streamCopy(src, dst) {
  const buf = Buffer.allocUnsafe(64 << 20);
  const [fi, fo] = [await open(src, "r"), await open(dst, "w")];
  try {
    for (;;) {
      const { bytesRead } = await fi.read(buf, 0, buf.length, null);
      if (bytesRead === 0) break;
      let done = 0;
      while (done < bytesRead) done += (await fo.write(buf, done, bytesRead - done)).bytesWritten;
    }
  } finally {
    await fi.close();
    await fo.close();
  }
}

/** One timed job, run in this process as a child: prints {seconds, maxRssBytes}. */
async function child(kind, src, dst, maxShardBytes) {
  const seconds = await timed(async () => {
    if (kind === "ours") {
      const ck = await openCheckpoint(src, "model");
      try {
        const entries = [...ck.tensors].map(([name, t]) => ({ name, tensor: t.lazy }));
        await writeCheckpoint(dst, "model", entries, { maxShardBytes, metadata: ck.metadata ?? undefined });
      } finally {
        await closeCheckpoint(ck);
      }
    } else {
      for (const f of await readdir(src)) {
        if (kind === "copyFile") await copyFile(join(src, f), join(dst, f));
        else await streamCopy(join(src, f), join(dst, f));
      }
    }
  });
  console.log(JSON.stringify({ seconds, peakRssBytes: peakRssBytes(), maxRssBytes: maxRssBytes() }));
}

function existsProcStatus() {
  try {
    readFileSync("/proc/self/status");
    return true;
  } catch {
    return false;
  }
}

/** Flush dirty pages so that one job's writeback does not slow the next (best effort). */
function settle() {
  try {
    execFileSync("sync", { stdio: "ignore" });
  } catch {
    /* no sync command */
  }
}

async function warm(dir) {
  const buf = Buffer.allocUnsafe(16 << 20);
  for (const f of await readdir(dir)) {
    const fh = await open(join(dir, f));
    try {
      while ((await fh.read(buf, 0, buf.length, null)).bytesRead > 0);
    } finally {
      await fh.close();
    }
  }
}

async function main() {
  const root = await mkdtemp(join(parentDir, "staged-bench-"));
  try {
    const tensors = layout();
    const sizes = tensors.map(([, s]) => 4 * s.reduce((a, b) => a * b, 1));
    const totalSize = sizes.reduce((a, b) => a + b, 0);
    const largest = Math.max(...sizes);
    const maxShardBytes = Math.ceil(totalSize / shardCount) + largest; // greedy split lands on ~shardCount shards
    const src = join(root, "src");
    await mkdir(src);
    log(`generating ${tensors.length} tensors, ${(totalSize / MB).toFixed(0)} MB in ${root} ...`);
    const gen = await writeCheckpoint(
      src,
      "model",
      tensors.map(([name, shape], i) => ({ name, tensor: synthetic(shape, i + 1) })),
      { maxShardBytes, metadata: { format: "pt" } },
    );
    const generatorRss = maxRssBytes();
    const bytes = await dirBytes(src);
    await warm(src); // page cache equally warm for every job
    settle();

    const runs = { copyFile: [], streamCopy: [], ours: [] };
    const rss = { copyFile: 0, streamCopy: 0, ours: 0 };
    const rusage = { copyFile: 0, streamCopy: 0, ours: 0 };
    let identical = true;
    for (let rep = 0; rep < reps; rep++) {
      for (const kind of ["copyFile", "streamCopy", "ours"]) {
        const dst = join(root, `${kind}-${rep}`);
        await mkdir(dst);
        const out = execFileSync(process.execPath, [fileURLToPath(import.meta.url), "--child", kind, src, dst, String(maxShardBytes)], {
          encoding: "utf8",
        });
        const { seconds, peakRssBytes: childRss, maxRssBytes: childMaxRss } = JSON.parse(out.trim().split("\n").pop());
        if (kind === "ours" && rep === 0) identical = await sameFiles(src, dst);
        runs[kind].push(+seconds.toFixed(4));
        rss[kind] = Math.max(rss[kind], childRss);
        rusage[kind] = Math.max(rusage[kind], childMaxRss);
        log(
          `  ${kind.padEnd(10)} run ${rep + 1}: ${(bytes / MB / seconds).toFixed(0)} MB/s (${seconds.toFixed(2)} s), peak RSS ${(childRss / MB).toFixed(0)} MB`,
        );
        await rm(dst, { recursive: true, force: true });
        settle();
      }
    }
    const header = headerParse();
    log(`header parse: ${(header.bytes / MB).toFixed(1)} MB, ${header.tensors} tensors in ${header.ms} ms (best of ${Math.max(reps, 3)})`);
    const best = (k) => Math.min(...runs[k]);
    const mbps = (k) => Math.round(bytes / MB / best(k));
    const result = {
      checkpointBytes: bytes,
      tensorBytes: totalSize,
      tensors: tensors.length,
      shards: gen.files.length,
      largestTensorBytes: largest,
      oursMBps: mbps("ours"),
      copyFileMBps: mbps("copyFile"),
      streamCopyMBps: mbps("streamCopy"),
      ratioVsCopyFile: +(best("copyFile") / best("ours")).toFixed(3),
      ratioVsStreamCopy: +(best("streamCopy") / best("ours")).toFixed(3),
      seconds: runs,
      peakRssBytes: rss.ours,
      peakRssMB: +(rss.ours / MB).toFixed(1),
      oursResourceUsageMaxRssMB: +(rusage.ours / MB).toFixed(1),
      peakRssSource: existsProcStatus() ? "/proc/self/status VmHWM of the child process" : "process.resourceUsage().maxRSS of the child process",
      copyPeakRssMB: { copyFile: +(rss.copyFile / MB).toFixed(1), streamCopy: +(rss.streamCopy / MB).toFixed(1) },
      generatorPeakRssMB: +(generatorRss / MB).toFixed(1),
      rssBudgetBytes: largest + 300 * MB,
      rewriteIdentical: identical,
      headerParseMs: header.ms,
      headerParseBytes: header.bytes,
      headerParseTensors: header.tensors,
      throughputTargetMet: best("copyFile") / best("ours") >= 0.5 && best("streamCopy") / best("ours") >= 0.5,
      memoryTargetMet: rss.ours < largest + 300 * MB,
      node: process.version,
    };
    if (json) console.log(JSON.stringify(result));
    else {
      log(
        `checkpoint: ${(bytes / MB).toFixed(0)} MB in ${gen.files.length} shards, ${tensors.length} tensors, largest ${(largest / MB).toFixed(1)} MB; best of ${reps} runs each`,
      );
      log(`ours (openCheckpoint + writeCheckpoint): ${mbps("ours")} MB/s`);
      log(`fs.copyFile per shard:                   ${mbps("copyFile")} MB/s  → ours/copy ${result.ratioVsCopyFile}`);
      log(`read+write loop copy (64 MiB buffer):    ${mbps("streamCopy")} MB/s  → ours/copy ${result.ratioVsStreamCopy}`);
      log(
        `peak RSS of the rewrite ${result.peakRssMB} MB (${result.peakRssSource}; its resourceUsage().maxRSS: ${result.oursResourceUsageMaxRssMB} MB)`,
      );
      log(`budget: largest tensor + 300 MB = ${(result.rssBudgetBytes / MB).toFixed(1)} MB; rewrite byte-identical: ${identical}`);
      console.log(result.throughputTargetMet && result.memoryTargetMet && identical ? "targets met" : "TARGETS MISSED");
    }
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

if (args[0] === "--child") await child(args[1], args[2], args[3], Number(args[4]));
else await main();

// Throughput of a large tensor through torch.save files, against `cp` and `cat` of the same bytes.
// Usage: pnpm run build && node bench/stream-bench.mjs [GiB=1] [dir=os.tmpdir()]
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as zlib from "node:zlib";
import { TorchFile, writeTorchFile } from "../dist/index.js";

const gib = Number(process.argv[2] ?? 1);
const dir = await mkdtemp(join(process.argv[3] ?? tmpdir(), "torch-bench-"));
const bytes = Math.round((gib * 2 ** 30) / 4) * 4;
const piece = new Uint8Array(4 << 20).map((_, i) => (i * 2654435761) >>> 24);
const rate = (n, ms) => `${(n / 2 ** 20 / (ms / 1000)).toFixed(0)} MiB/s`;
const time = async (label, f) => {
  const t0 = performance.now();
  await f();
  const ms = performance.now() - t0;
  console.log(`${label.padEnd(58)} ${(ms / 1000).toFixed(2).padStart(6)} s  ${rate(bytes, ms).padStart(11)}`);
};
const sh = (cmd, ...args) => execFileSync(cmd, args, { stdio: ["ignore", "ignore", "inherit"] });

console.log(`one F32 tensor of ${(bytes / 2 ** 30).toFixed(2)} GiB in ${dir}`);
await time("CRC-32 only (zlib.crc32, 4 MiB pieces)", async () => {
  let c = 0;
  for (let at = 0; at < bytes; at += piece.length) c = zlib.crc32(piece.subarray(0, Math.min(piece.length, bytes - at)), c);
});
const lazy = {
  dtype: "F32",
  shape: [bytes / 4],
  read: () => {
    throw new Error("not read");
  },
  async *streamBytes(buffer) {
    for (let at = 0; at < bytes; at += piece.length) {
      const n = Math.min(piece.length, bytes - at);
      const b = buffer ? buffer(n) : new Uint8Array(n);
      b.set(piece.subarray(0, n));
      yield b;
    }
  },
};
const a = join(dir, "a.pt"),
  b = join(dir, "b.pt"),
  c = join(dir, "c.pt");
await time("write: a streamed LazyTensor → torch.save file (fsync)", () => writeTorchFile(a, { w: lazy }));
await time("cp of that file + sync", async () => {
  sh("cp", a, b);
  sh("sync", b);
});
await time("copy: TorchFile → writeTorchFile (read, CRC, write, fsync)", async () => {
  const f = await TorchFile.open(a);
  await writeTorchFile(c, f.value);
  await f.close();
});
await time("read: the tensor's bytes streamed, fresh pieces (CRC checked)", async () => {
  const f = await TorchFile.open(a);
  for await (const _ of f.tensors[0].streamBytes()) {
    /* drain */
  }
  await f.close();
});
await time("read: streamed into one reused 4 MiB buffer (CRC checked)", async () => {
  const f = await TorchFile.open(a);
  const mem = new Uint8Array(4 << 20);
  for await (const _ of f.tensors[0].streamBytes((n) => mem.subarray(0, n))) {
    /* drain */
  }
  await f.close();
});
await time("cat of the file > /dev/null", async () => {
  sh("sh", "-c", `cat "${a}" > /dev/null`);
});
console.log(`file size ${(await stat(a)).size} bytes (page cache warm for the reads)`);
await rm(dir, { recursive: true, force: true });

import { mkdtemp, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from "vitest";
import { open, readFile } from "node:fs/promises";
import fc from "fast-check";
import { DIRECT_ALIGN, DirectWriter, alignedMemory, alignedRange, isAlignedMemory, openDirect, readAligned, wantDirectIo } from "./direct.js";
import { SafetensorsFile } from "./safetensors/reader.js";
import { writeSafetensors } from "./safetensors/writer.js";
import { Tensor } from "./tensor.js";
import type { FileHandle } from "node:fs/promises";

let dir = "";
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "staged-direct-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});
afterEach(() => {
  vi.unstubAllEnvs();
});

/** Bytes that differ at every position (so a view off by any offset is caught). */
const pattern = (n: number, seed = 1): Uint8Array => {
  const b = new Uint8Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    b[i] = s >>> 24;
  }
  return b;
};

/** The first index at which two byte arrays differ (or the shorter's length), -1 when equal: toEqual on large arrays is slow. */
const firstDifference = (a: Uint8Array, b: Uint8Array): number => {
  if (Buffer.compare(a, b) === 0) return -1;
  let i = 0;
  while (i < a.length && i < b.length && a[i] === b[i]) i++;
  return i;
};

/** Page-aligned memory like a writer's, with room for a piece and its aligned ends (one buffer: each piece is copied
 * out before the next is read). */
const alignedPool = (pieceBytes: number): ((n: number) => Uint8Array) => {
  const memory = alignedMemory(pieceBytes + 2 * DIRECT_ALIGN);
  return (n) => {
    expect(n).toBeLessThanOrEqual(memory.length);
    return memory.subarray(0, n);
  };
};

/** A file of BF16-like tensors at unaligned offsets: odd element counts, one spanning many pieces. */
async function sample(): Promise<{ path: string; tensors: Map<string, Tensor> }> {
  const tensors = new Map<string, Tensor>();
  for (const [name, n] of [
    ["a", 3],
    ["b", 1001],
    ["c", 40_000],
    ["d", 7],
    ["e", 12_345],
  ] as const) {
    const t = Tensor.zeros("F32", [n]);
    const src = pattern(4 * n, n);
    new Uint8Array(t.data.buffer).set(src);
    for (let i = 0; i < n; i++) if (!Number.isFinite(t.data[i]!)) t.data[i] = i; // finite values only
    tensors.set(name, t);
  }
  const path = join(dir, `sample-${Math.random().toString(36).slice(2)}.safetensors`);
  await writeSafetensors(
    path,
    [...tensors].map(([name, tensor]) => ({ name, tensor })),
  );
  return { path, tensors };
}

async function pieces(file: SafetensorsFile, name: string, buffer?: (n: number) => Uint8Array, maxPiece?: number): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  for await (const p of file.streamRaw(name, buffer, maxPiece)) parts.push(p.slice());
  return new Uint8Array(Buffer.concat(parts));
}

describe("direct reads", () => {
  it("aligned memory starts at a page boundary: a direct read into it is accepted, one a byte off is refused (EINVAL)", async () => {
    const path = join(dir, "plain.bin");
    const data = pattern(3 * DIRECT_ALIGN + 100);
    await writeFile(path, data);
    const fh = await openDirect(path);
    expect(fh, `no O_DIRECT on ${dir}'s file system`).not.toBeNull();
    try {
      const b = alignedMemory(4 * DIRECT_ALIGN);
      expect(isAlignedMemory(b)).toBe(true);
      expect(isAlignedMemory(b.subarray(16))).toBe(false);
      expect(isAlignedMemory(new Uint8Array(DIRECT_ALIGN))).toBe(false);
      // A read up to the end of the file stops there.
      expect(await readAligned(fh!, b, 0)).toBe(data.length);
      expect(b.subarray(0, data.length)).toEqual(data);
      expect(await readAligned(fh!, b.subarray(0, DIRECT_ALIGN), 2 * DIRECT_ALIGN)).toBe(DIRECT_ALIGN);
      expect(b.subarray(0, DIRECT_ALIGN)).toEqual(data.subarray(2 * DIRECT_ALIGN, 3 * DIRECT_ALIGN));
      // The fallback in streamRaw relies on the kernel refusing unaligned memory with EINVAL.
      const off = alignedMemory(2 * DIRECT_ALIGN).subarray(1, 1 + DIRECT_ALIGN);
      await expect(readAligned(fh!, off, 0)).rejects.toMatchObject({ code: "EINVAL" });
    } finally {
      await fh!.close();
    }
  });

  it("alignedRange widens a byte range to aligned ends", () => {
    expect(alignedRange(0, 1)).toEqual({ from: 0, span: DIRECT_ALIGN, skew: 0 });
    expect(alignedRange(DIRECT_ALIGN + 5, DIRECT_ALIGN)).toEqual({ from: DIRECT_ALIGN, span: 2 * DIRECT_ALIGN, skew: 5 });
    expect(alignedRange(3 * DIRECT_ALIGN, 2 * DIRECT_ALIGN)).toEqual({ from: 3 * DIRECT_ALIGN, span: 2 * DIRECT_ALIGN, skew: 0 });
  });

  it("which files are read directly: 1 GiB and up by default, STAGED_DIRECT_IO=0|1 decides otherwise", () => {
    expect(wantDirectIo(2 ** 30 - 1)).toBe(false);
    expect(wantDirectIo(2 ** 30)).toBe(true);
    vi.stubEnv("STAGED_DIRECT_IO", "1");
    expect(wantDirectIo(100)).toBe(true);
    vi.stubEnv("STAGED_DIRECT_IO", "0");
    expect(wantDirectIo(2 ** 40)).toBe(false);
  });

  it("streamRaw reads directly into aligned memory and gives exactly each tensor's bytes, in pieces of any size", async () => {
    vi.stubEnv("STAGED_DIRECT_IO", "1");
    const { path } = await sample();
    const file = await SafetensorsFile.open(path);
    try {
      for (const piece of [DIRECT_ALIGN - 3, 5000, 3 * DIRECT_ALIGN, 1 << 20]) {
        for (const name of ["a", "b", "c", "d", "e"]) {
          const before = file.directPieces;
          expect(
            firstDifference(await pieces(file, name, alignedPool(piece), piece), await file.readRaw(name)),
            `${name} in pieces of ${piece}`,
          ).toBe(-1);
          expect(file.directPieces).toBeGreaterThan(before);
        }
      }
    } finally {
      await file.close();
    }
  });

  it("memory that is not aligned, no memory given, or a small file: read through the page cache, the same bytes", async () => {
    const { path } = await sample();
    vi.stubEnv("STAGED_DIRECT_IO", "1");
    const file = await SafetensorsFile.open(path);
    try {
      const memory = alignedMemory(5000 + 2 * DIRECT_ALIGN);
      const unaligned = (n: number): Uint8Array => memory.subarray(16, 16 + n);
      for (const name of ["b", "c", "e"]) {
        expect(firstDifference(await pieces(file, name, unaligned, 5000), await file.readRaw(name))).toBe(-1);
        expect(firstDifference(await pieces(file, name, undefined, 5000), await file.readRaw(name))).toBe(-1);
      }
      expect(file.directPieces).toBe(0);
    } finally {
      await file.close();
    }
    vi.unstubAllEnvs();
    const small = await SafetensorsFile.open(path);
    try {
      expect(firstDifference(await pieces(small, "c", alignedPool(5000), 5000), await small.readRaw("c"))).toBe(-1);
      expect(small.directPieces).toBe(0); // below DIRECT_READ_MIN_FILE_BYTES
    } finally {
      await small.close();
    }
  });

  it("a file truncated while open: the error names it", async () => {
    vi.stubEnv("STAGED_DIRECT_IO", "1");
    const { path } = await sample();
    const file = await SafetensorsFile.open(path);
    try {
      await truncate(path, file.size - 1000);
      await expect(pieces(file, "e", alignedPool(1 << 20), 1 << 20)).rejects.toThrow(`${path}: unexpected end of file`);
    } finally {
      await file.close();
    }
  });

  it("a file copied by the writer from directly read tensors is byte-identical to its source", async () => {
    vi.stubEnv("STAGED_DIRECT_IO", "1");
    const { path, tensors } = await sample();
    const file = await SafetensorsFile.open(path);
    const copy = join(dir, "copy.safetensors");
    try {
      await writeSafetensors(
        copy,
        [...tensors.keys()].map((name) => ({ name, tensor: file.lazy(name) })),
      );
      expect(file.directPieces).toBeGreaterThanOrEqual(tensors.size);
    } finally {
      await file.close();
    }
    expect(firstDifference(await readFile(copy), await readFile(path))).toBe(-1);
  });
});

/** Write `data` as the given segments, in the given order, through a DirectWriter, and read the file back. */
async function writeSegments(
  data: Uint8Array,
  cuts: number[],
  order: number[],
  direct?: FileHandle | null,
): Promise<{ file: Uint8Array; directBytes: number }> {
  const path = join(dir, `segments-${Math.random().toString(36).slice(2)}.bin`);
  const fh = await open(path, "w");
  await fh.truncate(data.length);
  const handle = direct === undefined ? await openDirect(path, "write") : direct;
  const buffered = async (h: FileHandle, bytes: Uint8Array, position: number): Promise<void> => {
    await h.write(bytes, 0, bytes.length, position);
  };
  const w = new DirectWriter(fh, handle, buffered);
  const bounds = [0, ...cuts, data.length];
  for (const i of order) {
    const piece = data.slice(bounds[i]!, bounds[i + 1]!); // its own memory (not aligned)
    await w.write(piece, bounds[i]!);
  }
  await w.close();
  await fh.close();
  const file = new Uint8Array(await readFile(path));
  await rm(path);
  return { file, directBytes: w.directBytes };
}

describe("direct writes", () => {
  it("writes at any positions, lengths and order make exactly the file: whole blocks direct, block ends buffered", async () => {
    const data = pattern(300_000, 7);
    await fc.assert(
      fc.asyncProperty(
        fc.uniqueArray(fc.integer({ min: 1, max: data.length - 1 }), { maxLength: 6 }).map((c) => c.sort((a, b) => a - b)),
        fc.infiniteStream(fc.nat()),
        async (cuts, rand) => {
          const order = [...Array(cuts.length + 1).keys()];
          for (let i = order.length - 1; i > 0; i--) {
            const j = rand.next().value % (i + 1);
            [order[i], order[j]] = [order[j]!, order[i]!];
          }
          const { file } = await writeSegments(data, cuts, order);
          expect(firstDifference(file, data)).toBe(-1);
        },
      ),
      { numRuns: 40 },
    );
    const whole = await writeSegments(data, [], [0]);
    expect(firstDifference(whole.file, data)).toBe(-1);
    expect(whole.directBytes).toBe(Math.floor(data.length / DIRECT_ALIGN) * DIRECT_ALIGN);
  });

  it("a file system that refuses a direct write (EINVAL): the rest goes through the page cache, nothing lost", async () => {
    const data = pattern(200_000, 9);
    let calls = 0;
    const refusing = {
      write: async () => {
        calls++;
        throw Object.assign(new Error("EINVAL: invalid argument, write"), { code: "EINVAL" });
      },
      close: async () => undefined,
    } as unknown as FileHandle;
    const { file, directBytes } = await writeSegments(data, [70_000, 140_000], [1, 0, 2], refusing);
    expect(firstDifference(file, data)).toBe(-1);
    expect(calls).toBe(1);
    expect(directBytes).toBe(0);
  });

  it("another error of a direct write is the write's error", async () => {
    const failing = {
      write: async () => {
        throw Object.assign(new Error("ENOSPC: no space left on device, write"), { code: "ENOSPC" });
      },
      close: async () => undefined,
    } as unknown as FileHandle;
    await expect(writeSegments(pattern(100_000), [], [0], failing)).rejects.toThrow("ENOSPC");
  });

  it("writeSafetensors with direct I/O writes the same bytes as through the page cache (one tensor under several names too)", async () => {
    const big = Tensor.zeros("BF16", [300, 257]);
    const bigBytes = pattern(big.data.length, 3);
    for (let i = 0; i < big.data.length; i++) big.data[i] = (bigBytes[i]! - 128) / 64;
    const entries = [
      { name: "a.bias", tensor: Tensor.zeros("F32", [17]) },
      { name: "b.weight", tensor: big },
      { name: "c.weight", tensor: big },
      { name: "d.weight", tensor: Tensor.zeros("F16", [129, 513]) },
      { name: "e", tensor: Tensor.zeros("F32", [3]) },
    ];
    const files: Uint8Array[] = [];
    for (const mode of ["0", "1"]) {
      vi.stubEnv("STAGED_DIRECT_IO", mode);
      const path = join(dir, `direct-${mode}.safetensors`);
      await writeSafetensors(path, entries);
      files.push(new Uint8Array(await readFile(path)));
    }
    expect(firstDifference(files[1]!, files[0]!)).toBe(-1);
  });
});

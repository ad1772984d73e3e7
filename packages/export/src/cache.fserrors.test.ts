import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";

// A full disk cannot be made on demand in a test: the write lock of the export cache fails on cue, as core's
// lockCheckpoint fails there (its own tests: packages/core/src/state.fserrors.test.ts).
const fail = vi.hoisted(() => ({ code: null as string | null }));
vi.mock("@staged/core", async (importOriginal) => {
  const core = await importOriginal<typeof import("@staged/core")>();
  return {
    ...core,
    lockCheckpoint: async (...a: Parameters<typeof core.lockCheckpoint>) => {
      const [dir, mode] = a;
      if (fail.code && mode === "exclusive" && dir.endsWith(".staged-export")) {
        const cause = Object.assign(new Error(`${fail.code}: simulated`), { code: fail.code });
        throw new Error(`${dir}: cannot write here (${core.systemReason(cause)} creating the lock ${dir}.lock)`, { cause });
      }
      return core.lockCheckpoint(...a);
    },
  };
});
const { saveTrainingState } = await import("@staged/core");
const { ensureExport } = await import("./cache.js");
const { testState } = await import("./testing/reference.js");

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-export-fserr-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});
const gpt2Config = {
  model_type: "gpt2",
  n_layer: 1,
  n_embd: 16,
  n_head: 2,
  vocab_size: 256,
  n_positions: 64,
  bos_token_id: null,
  eos_token_id: null,
};

describe("the export cache on a full disk", () => {
  it.each([
    ["ENOSPC", "no space left on device"],
    ["EDQUOT", "disk quota exceeded"],
  ])("%s: says so in one line (not 'read-only'), writing nothing", async (code, words) => {
    const ckpt = join(root, `ck-${code}`);
    await saveTrainingState(ckpt, await testState("gpt2", gpt2Config, 1));
    fail.code = code;
    try {
      const error = await ensureExport(ckpt).then(
        () => null,
        (e: unknown) => e as Error,
      );
      expect(error?.message).toBe(
        `${ckpt}: cannot write its export cache ${join(root, `.ck-${code}.staged-export`)} (${words} (${code})); ` +
          `export it elsewhere with \`staged export ${ckpt} --out <dir>\` and generate from that directory`,
      );
    } finally {
      fail.code = null;
    }
    expect((await readdir(root)).filter((f) => f.includes(code))).toEqual([`ck-${code}`]);
  });
});

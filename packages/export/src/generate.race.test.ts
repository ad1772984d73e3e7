import { spawn } from "node:child_process";
import { mkdtemp, rename, rm, symlink } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import { processStart, saveTrainingState } from "@staged/core";
import { testState } from "./testing/reference.js";

// What happens between ensureExport and the generator's read, on cue: another process replacing the cache just then.
const between = vi.hoisted(() => ({ hook: null as null | ((cache: string) => Promise<void>) }));
vi.mock("./cache.js", async (importOriginal) => {
  const cache = await importOriginal<typeof import("./cache.js")>();
  return {
    ...cache,
    ensureExport: async (...a: Parameters<typeof cache.ensureExport>) => {
      const r = await cache.ensureExport(...a);
      await between.hook?.(r.dir);
      return r;
    },
  };
});
const { loadGenerator } = await import("./generate.js");

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-export-race-"));
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

describe("loadGenerator", () => {
  it("reads the export's config.json under the cache's read lock: a cache being replaced is waited for, not read half-gone", async () => {
    const ckpt = join(root, "ck");
    await saveTrainingState(ckpt, await testState("gpt2", gpt2Config, 1));
    const writer = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      const pid = writer.pid!;
      // Another generate re-exporting the cache, between its two renames: the cache set aside, the new one not in place.
      between.hook = async (cache) => {
        await symlink(
          JSON.stringify({ pid, host: hostname(), start: processStart(pid), command: "staged generate ck", since: "2026-11-27T12:00:00.000Z" }),
          join(root, "..ck.staged-export.lock"),
        );
        await rename(cache, join(root, `..ck.staged-export.old-${pid}-a`));
      };
      const notices: string[] = [];
      await expect(loadGenerator(ckpt, { threads: 1, waitMs: 300, notice: (l) => notices.push(l) })).rejects.toThrow(
        new RegExp(`^.*\\.ck\\.staged-export: being written by pid ${pid} \\(staged generate ck, since .*\\); try again when it has finished$`),
      );
      expect(notices).toEqual([expect.stringMatching(/^staged: waiting: .*\.ck\.staged-export: being written by pid/)]);
    } finally {
      between.hook = null;
      writer.kill("SIGKILL");
    }
  });
});

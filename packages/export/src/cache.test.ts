import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdir, mkdtemp, readdir, readFile, rename, rm, symlink, writeFile } from "node:fs/promises";
import { hostname, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { loadTrainingState, processStart, saveTrainingState } from "@staged/core";
import { ensureExport, exportCachePath } from "./cache.js";
import { exportModel, readManifest } from "./export.js";
import { loadGenerator } from "./generate.js";
import { testState } from "./testing/reference.js";

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-export-cache-"));
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

async function fingerprint(dir: string): Promise<string> {
  const h = createHash("sha256");
  for (const name of (await readdir(dir)).sort()) h.update(name).update(await readFile(join(dir, name)));
  return h.digest("hex");
}

describe("the export cache beside a checkpoint", () => {
  it("is made on first use, reused while the checkpoint is unchanged, made again when the model, its config or its tokenizer change", async () => {
    const ckpt = join(root, "ckpt");
    await saveTrainingState(ckpt, await testState("gpt2", gpt2Config, 1, 6));
    const before = await fingerprint(ckpt);
    const cache = join(root, ".ckpt.staged-export");
    expect(exportCachePath(ckpt)).toBe(cache);

    const first = await ensureExport(ckpt);
    expect(first).toEqual({ dir: cache, exported: true, direct: false });
    expect(await fingerprint(ckpt)).toBe(before); // nothing written in the checkpoint
    expect((await readdir(root)).sort()).toEqual([".ckpt.staged-export", "ckpt"]);
    expect(await ensureExport(ckpt)).toEqual({ dir: cache, exported: false, direct: false });

    // A save replaces the checkpoint (new weights): the cache is stale.
    const g1 = await loadGenerator(ckpt, { threads: 1 });
    const a = await g1.generate("Hi", { maxNewTokens: 8 });
    await g1.dispose();
    await saveTrainingState(ckpt, await testState("gpt2", gpt2Config, 2, 6), { overwrite: true });
    const g2 = await loadGenerator(ckpt, { threads: 1 });
    expect(g2.exported).toBe(true);
    const b = await g2.generate("Hi", { maxNewTokens: 8 });
    await g2.dispose();
    expect(b.newIds).not.toEqual(a.newIds);

    // Config and tokenizer files count too.
    await writeFile(join(ckpt, "generation_config.json"), '{"eos_token_id": 10}\n');
    expect((await ensureExport(ckpt)).exported).toBe(true);
    expect(JSON.parse(await readFile(join(cache, "generation_config.json"), "utf8"))).toEqual({ eos_token_id: 10 });
    const config = JSON.parse(await readFile(join(ckpt, "config.json"), "utf8")) as Record<string, unknown>;
    await writeFile(join(ckpt, "config.json"), JSON.stringify({ ...config, layer_norm_epsilon: 1e-3 }));
    expect((await ensureExport(ckpt)).exported).toBe(true);
    expect((await ensureExport(ckpt)).exported).toBe(false);
    // The checkpoint still loads as a checkpoint (the cache is not in it).
    const loaded = await loadTrainingState(ckpt);
    expect(loaded.config.layer_norm_epsilon).toBe(1e-3);
    await loaded.close();
  });

  it("fp16 asked of an fp32 cache makes both; an export directory is used as it is, with no cache", async () => {
    const ckpt = join(root, "ckpt16");
    await saveTrainingState(ckpt, await testState("gpt2", gpt2Config, 3));
    await ensureExport(ckpt);
    const cache = exportCachePath(ckpt);
    expect((await readManifest(cache))!.dtypes).toEqual(["fp32"]);
    expect((await ensureExport(ckpt, { dtype: "fp16" })).exported).toBe(true);
    expect((await readManifest(cache))!.dtypes).toEqual(["fp32", "fp16"]);
    expect((await ensureExport(ckpt, { dtype: "fp32" })).exported).toBe(false);

    const out = join(root, "exported");
    await exportModel(ckpt, out);
    expect(await ensureExport(out)).toEqual({ dir: out, exported: false, direct: true });
    await expect(ensureExport(out, { dtype: "fp16" })).rejects.toThrow(
      `${out}: an export without onnx/model_fp16.onnx (export it with --dtype fp16)`,
    );
    expect((await readdir(root)).filter((f) => f.includes("exported"))).toEqual(["exported"]);
  });

  it("a checkpoint between the renames of another process's save is being written, not missing", async () => {
    const ckpt = join(root, "saving");
    await saveTrainingState(ckpt, await testState("gpt2", gpt2Config, 5));
    // What `staged train --save-every 1` leaves for an instant: its write lock, the old checkpoint set aside, the new one not yet in place.
    const writer = spawn("sleep", ["60"], { stdio: "ignore" });
    try {
      const pid = writer.pid!;
      await symlink(
        JSON.stringify({
          pid,
          host: hostname(),
          start: processStart(pid),
          command: "staged train saving --save-every 1",
          since: "2026-11-27T12:00:00.000Z",
        }),
        join(root, ".saving.lock"),
      );
      await rename(ckpt, join(root, `.saving.old-${pid}-a`));
      await mkdir(join(root, `.saving.new-${pid}-b`));
      await expect(ensureExport(ckpt)).rejects.toThrow(
        new RegExp(`^.*saving: being written by pid ${pid} \\(staged train saving --save-every 1, since .*\\); try again when it has finished$`),
      );
      await expect(loadGenerator(ckpt)).rejects.toThrow(/saving: being written by pid/);
      // The writer killed before its new checkpoint was complete: the old one is put back (and said so), then exported.
      await rm(join(root, `.saving.new-${pid}-b`), { recursive: true });
      writer.kill("SIGKILL");
      await new Promise((resolve) => writer.once("exit", resolve));
      const notices: string[] = [];
      expect((await ensureExport(ckpt, { notice: (l) => notices.push(l) })).exported).toBe(true);
      expect(notices).toEqual([
        `${ckpt}: restored the previous checkpoint (step 0) that an interrupted save had set aside (the save itself was incomplete)`,
      ]);
      expect((await readdir(root)).filter((f) => f.includes("saving")).sort()).toEqual([".saving.staged-export", "saving"]);
    } finally {
      writer.kill("SIGKILL");
    }
  });

  it("a missing checkpoint, or one whose parent is missing, is said so in one line", async () => {
    for (const missing of [join(root, "nothing"), join(root, "no-parent", "nothing")]) {
      await expect(ensureExport(missing)).rejects.toThrow(
        new RegExp(`^${missing}: not a checkpoint directory \\(it does not exist or is not a directory\\)$`),
      );
    }
    expect((await readdir(root)).filter((f) => f.includes("nothing") || f.includes("no-parent"))).toEqual([]);
  });

  it("concurrent users export once: in one process they wait for each other, another process's export is waited for", async () => {
    const ckpt = join(root, "shared");
    await saveTrainingState(ckpt, await testState("gpt2", gpt2Config, 4));
    const both = await Promise.all([ensureExport(ckpt), ensureExport(ckpt)]);
    expect(both.map((r) => r.exported).sort()).toEqual([false, true]);

    // Another process holds the cache's write lock for a while (as an export in progress would).
    await writeFile(join(ckpt, "generation_config.json"), "{}\n");
    const core = join(dirname(fileURLToPath(import.meta.url)), "..", "node_modules", "@staged", "core", "dist", "index.js");
    const child = spawn(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `const { lockCheckpoint } = await import(${JSON.stringify(core)});
       const lock = await lockCheckpoint(${JSON.stringify(exportCachePath(ckpt))}, "exclusive");
       console.log("locked"); setTimeout(() => lock.release().then(() => process.exit(0)), 1500);`,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    await new Promise<void>((resolve, reject) => {
      child.stdout.on("data", (d: Buffer) => {
        if (d.toString().includes("locked")) resolve();
      });
      child.on("exit", (code) => reject(new Error(`the locking process exited (${code})`)));
    });
    const notices: string[] = [];
    const t0 = Date.now();
    const r = await ensureExport(ckpt, { notice: (l) => notices.push(l) });
    expect(Date.now() - t0).toBeGreaterThan(500);
    expect(r.exported).toBe(true);
    expect(notices).toHaveLength(1);
    expect(notices[0]).toMatch(/^staged: waiting: .*\.shared\.staged-export: being written by pid \d+/);
  });
});

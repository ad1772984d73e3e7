import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ok, staged } from "../testing.js";

// A checkpoint from elsewhere (issue 22, 3): what it names or holds does not reach into this machine or into new checkpoints.
const SHAPE = ["--layers", "1", "--d-model", "16", "--heads", "2", "--context", "16"];
let root: string, text: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "staged-cli-foreign-"));
  text = join(root, "data.txt");
  await writeFile(text, "the quick brown fox jumps over the lazy dog. ".repeat(40));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("a checkpoint from elsewhere", () => {
  it("cannot pick the file train reads: a stored training.data that --data could not be is refused, naming it", async () => {
    const m = join(root, "m");
    ok("init", m, ...SHAPE);
    ok("train", m, "--data", text, "--steps", "1", "--batch", "2", "--threads", "1");
    const file = join(m, "training_state.json");
    const meta = JSON.parse(await readFile(file, "utf8")) as { training: Record<string, unknown> };
    meta.training.data = "/etc/passwd";
    await writeFile(file, JSON.stringify(meta));
    const r = staged("train", m, "--steps", "1", "--threads", "1");
    expect(r.status).toBe(1);
    expect(r.stderr.trim().split("\n")).toEqual([
      `staged: the checkpoint's training_state.json names training.data "/etc/passwd", which is not brown, a .txt or a .bin file: give the training data yourself to use it`,
    ]);
    // Named on the command line it is the user's choice (and a stored .txt path is used as before).
    meta.training.data = text;
    await writeFile(file, JSON.stringify(meta));
    expect(staged("train", m, "--steps", "1", "--threads", "1", "--batch", "2").status).toBe(0);
  }, 60_000);

  it("grow and export refuse a tokenizer.json that does not load, writing nothing", async () => {
    const m = join(root, "tok", "m");
    ok("init", m, ...SHAPE);
    await writeFile(join(m, "tokenizer.json"), JSON.stringify({ model: { type: "BPE", vocab: 5 } }));
    const meta = JSON.parse(await readFile(join(m, "training_state.json"), "utf8").catch(() => "null")) as Record<string, unknown> | null;
    if (meta) await writeFile(join(m, "training_state.json"), JSON.stringify({ ...meta, tokenizer: { kind: "hf", file: "tokenizer.json" } }));
    const g = staged("grow", "width", m, join(root, "tok", "wide"), "--factor", "2");
    expect(g.status).toBe(1);
    expect(g.stderr.trim().split("\n")).toEqual([expect.stringMatching(/^staged: .*tokenizer\.json: cannot build the tokenizer \(/)]);
    const e = staged("export", m, "--out", join(root, "tok", "onnx"));
    expect(e.status).toBe(1);
    expect(e.stderr.trim().split("\n")).toEqual([expect.stringMatching(/^staged: .*tokenizer\.json: cannot build the tokenizer \(/)]);
    expect((await readdir(join(root, "tok"))).sort()).toEqual(["m"]);
  }, 60_000);
});

import { execFileSync } from "node:child_process";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// The publishable packages must install from their tarballs into a project outside the workspace.
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const packages = ["core", "grow-width", "grow-depth"];
let project: string;

function run(cmd: string, args: string[], cwd: string): string {
  try {
    return execFileSync(cmd, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
  } catch (e) {
    const { stdout, stderr } = e as { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(" ")} failed:\n${stdout ?? ""}${stderr ?? ""}`, { cause: e });
  }
}

const script = `
import { initTrainingState, saveTrainingState, loadTrainingState } from "@staged/core";
import { growWidth } from "@staged/grow-width";
import { growDepth } from "@staged/grow-depth";
const dir = process.argv[2];
const small = initTrainingState("gpt2", { model_type: "gpt2", n_layer: 1, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8 }, 1);
const grown = growDepth(growWidth(small, { factor: 2 }), { factor: 2 });
await saveTrainingState(dir, grown);
const back = await loadTrainingState(dir);
console.log(JSON.stringify(back.shape));
await back.close();
`;

const typed = `
import { initTrainingState, type TrainingState } from "@staged/core";
import { growWidth, type WidthOptions } from "@staged/grow-width";
import { growDepth, type DepthOptions } from "@staged/grow-depth";
const options: WidthOptions = { factor: 2, moments: "paper", symmetry: "split" };
const depth: DepthOptions = { layers: 3, init: "identity" };
const s: TrainingState = growDepth(growWidth(initTrainingState("gpt2", { n_layer: 1, n_embd: 8, n_head: 2 }, 0), options), depth);
export const layers: number = s.shape.layers;
`;

describe("packed tarballs outside the workspace", () => {
  beforeAll(async () => {
    project = await mkdtemp(join(tmpdir(), "staged-outside-"));
    for (const p of packages) run("pnpm", ["pack", "--pack-destination", project], join(root, "packages", p));
    await writeFile(join(project, "package.json"), JSON.stringify({ name: "outside", private: true, type: "module" }));
  }, 120_000);
  afterAll(async () => { await rm(project, { recursive: true, force: true }); });

  it("npm installs, and a plain ESM script and a TypeScript file use them", async () => {
    const tarballs = (await readdir(project)).filter((f) => f.endsWith(".tgz")).map((f) => `./${f}`);
    expect(tarballs).toHaveLength(3);
    run("npm", ["install", "--no-audit", "--no-fund", "--offline", ...tarballs], project);
    await writeFile(join(project, "use.mjs"), script);
    expect(JSON.parse(run("node", ["use.mjs", join(project, "ckpt")], project))).toMatchObject({ layers: 2, dModel: 16, heads: 4 });
    await writeFile(join(project, "use.ts"), typed);
    await writeFile(join(project, "tsconfig.json"), JSON.stringify({ compilerOptions: { module: "NodeNext", moduleResolution: "NodeNext", target: "ES2022", strict: true, noEmit: true, skipLibCheck: false, types: [] }, files: ["use.ts"] }));
    run(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json"], project);
  }, 120_000);
});

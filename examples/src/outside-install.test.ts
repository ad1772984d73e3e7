import { execFileSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

// Every publishable package must install from its `pnpm pack` tarball into a project outside the workspace,
// work from a plain ESM script and the `staged` bin, and type-check in a strict consumer (skipLibCheck off).
//
// What a user (and CI) needs for `npm install`: the npm registry, or an npm cache holding the third-party
// dependencies (this test passes --prefer-offline, so a warm cache is used and only misses are fetched). And
// ONNXRUNTIME_NODE_INSTALL=skip: on linux/x64 onnxruntime-node's install script otherwise downloads the CUDA
// provider libraries from api.nuget.org; the CPU provider is in the npm package itself.
//
// The packages' dist/ must be built first (`pnpm build`): this test packs what is there.
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
// The published packages: the private ones (test fixtures) are never installed from outside.
const isPublished = (name: string): boolean => {
  const file = join(root, "packages", name, "package.json");
  return existsSync(file) && (JSON.parse(readFileSync(file, "utf8")) as { private?: boolean }).private !== true;
};
const packages = readdirSync(join(root, "packages"), { withFileTypes: true })
  .filter((d) => d.isDirectory() && isPublished(d.name))
  .map((d) => d.name)
  .sort();
let project: string;

function run(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): string {
  try {
    return execFileSync(cmd, args, { cwd, env, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20 });
  } catch (e) {
    const { stdout, stderr } = e as { stdout?: string; stderr?: string };
    throw new Error(`${cmd} ${args.join(" ")} failed:\n${stdout ?? ""}${stderr ?? ""}`, { cause: e });
  }
}

// Uses every package: grows a GPT-2 state, trains it a few steps on a few bytes (saving a checkpoint with its
// metrics log), runs a tiny staged run with its baseline through @staged/run down to the report, and exports
// the trained checkpoint to ONNX and generates from it through transformers.js (@staged/export).
const script = `
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { initTrainingState, loadTrainingState } from "@staged/core";
import { growWidth } from "@staged/grow-width";
import { growDepth } from "@staged/grow-depth";
import { flopsPerToken } from "@staged/scheduler";
import { train, readMetrics } from "@staged/trainer-ort";
import { parseRunSpec, runSpec, compareRuns, formatReport } from "@staged/run";
import { exportModel, generate } from "@staged/export";
import { createProgram } from "@staged/cli";
import { TorchFile, writeTorchFile } from "@staged/torch";
import { HF_TRAINER_FORMAT, hfTrainerFormat, trainerSummary } from "@staged/hf-trainer";
import { createDefaultRegistry, saveTrainingState } from "@staged/core";

const dir = process.argv[2];
const small = initTrainingState("gpt2", { model_type: "gpt2", n_layer: 1, n_embd: 8, n_head: 2, vocab_size: 256, n_positions: 16 }, 1);
const grown = growDepth(growWidth(small, { factor: 2 }), { factor: 2 });
const data = join(dir, "data.txt");
await writeFile(data, "the quick brown fox jumps over the lazy dog. ".repeat(40));
const ckpt = join(dir, "ckpt");
const { result } = await train(grown, { data, steps: 3, batch: 2, context: 16, lr: 1e-3, saveDir: ckpt, threads: 1 });
const back = await loadTrainingState(ckpt);
const saved = { shape: back.shape, step: back.progress.step, metrics: (await readMetrics(ckpt)).length };
await back.close();
const spec = parseRunSpec({
  name: "w", data, context: 8, batch: 2, optimizer: { lr: 3e-3 }, schedule: { kind: "constant", warmup: 1 },
  eval: { every: 2, blocks: 2 }, budget: { flops: 1e7 }, model: { layers: 1, dModel: 8, heads: 2 },
  stages: [{ grow: "width", at: { fraction: 0.5 } }], seeds: [0], baseline: { seeds: [0] }, threads: 1,
}, join(dir, "spec.json"));
const results = await runSpec(spec, join(dir, "runs"));
// The trained checkpoint to ONNX, and generation from the export through transformers.js.
const exported = await exportModel(ckpt, join(dir, "exported"));
const generated = await generate(exported.dir, "the quick", { maxNewTokens: 4 });
// A torch.save file of a trained tensor (what torch.load(weights_only=True) reads), and back.
const wte = [...grown.params.values()][0];
await writeTorchFile(join(dir, "wte.pt"), { wte });
const pt = await TorchFile.open(join(dir, "wte.pt"));
const torchShape = pt.value.get("wte").shape;
await pt.close();
// The trained checkpoint as a Hugging Face Trainer checkpoint, read back as one.
const registry = createDefaultRegistry().register("checkpointFormat", hfTrainerFormat);
const fromCkpt = await loadTrainingState(ckpt, { registry });
await saveTrainingState(join(dir, "checkpoint-3"), fromCkpt, { registry, format: HF_TRAINER_FORMAT });
await fromCkpt.close();
const hf = await loadTrainingState(join(dir, "checkpoint-3"), { registry });
const trainer = trainerSummary(hf);
await hf.close();
console.log(JSON.stringify({ torchShape, trainer,
  grown: grown.shape, losses: result.losses, valLoss: result.valLoss, saved,
  flopsPerToken: flopsPerToken(saved.shape, 16),
  runs: results.map((r) => ({ name: r.name, done: r.done, growths: r.growths.length })),
  report: formatReport(compareRuns(results)),
  exported: exported.files, generated: generated.newIds.length,
  program: createProgram().name(),
}));
`;

// The public types of every package, in a strict consumer.
const typed = `
import { initTrainingState, type TrainingState, type ModelShape } from "@staged/core";
import { growWidth, type WidthOptions } from "@staged/grow-width";
import { growDepth, type DepthOptions } from "@staged/grow-depth";
import { chinchillaLaw, flopsPerToken, type ChinchillaLaw, type MetricsRecord } from "@staged/scheduler";
import { GraphBuilder, train, type TrainOptions, type TrainResult, type Value } from "@staged/trainer-ort";
import { compareRuns, parseRunSpec, type RunReport, type RunResult, type RunSpec } from "@staged/run";
import { exportModel, loadGenerator, type ExportResult, type GenerateResult, type Generator } from "@staged/export";
import { createProgram, main } from "@staged/cli";
import { PyDict, TorchFile, writeTorchFile, type TorchTensor, type WriteTorchResult } from "@staged/torch";
import { hfTrainerFormat, trainerSummary, type TrainerSummary } from "@staged/hf-trainer";
import { createDefaultRegistry, loadTrainingState } from "@staged/core";

const options: WidthOptions = { factor: 2, moments: "paper", symmetry: "split" };
const depth: DepthOptions = { layers: 3, init: "identity" };
const s: TrainingState = growDepth(growWidth(initTrainingState("gpt2", { n_layer: 1, n_embd: 8, n_head: 2 }, 0), options), depth);
const shape: ModelShape = s.shape;
export const layers: number = shape.layers;

const law: ChinchillaLaw = chinchillaLaw();
export const loss: number = law.loss(1e6, 1000) + flopsPerToken(shape, 16);
export const record: MetricsRecord = { step: 1, stage: 0, tokens: 16, flops: 1e6, loss: 5.5, lr: 1e-3 };

const b = new GraphBuilder();
const x: Value = b.input("x", "float32", [2]);
b.output(b.add(x, 1), "y");
export const model: Uint8Array = b.serialize();
const trainOptions: TrainOptions = { data: "data.txt", steps: 2, batch: 2, context: 16 };
export const trained: Promise<TrainResult> = train(s, trainOptions).then((r) => r.result);

export const parse: (raw: unknown, file: string) => RunSpec = parseRunSpec;
export const report = (runs: readonly RunResult[]): RunReport => compareRuns(runs);
export const exported: Promise<ExportResult> = exportModel(s, "exported", { dtype: "fp16" });
export const generator: Promise<Generator> = loadGenerator("exported", { threads: 1 });
export const completion: Promise<string> = generator.then((g) => g.generate("the", { maxNewTokens: 4, temperature: 0.8, topP: 0.9 })).then((r: GenerateResult) => r.completion);
export const program: string = createProgram().name();
export const cli: (argv: string[]) => Promise<void> = main;
export const written: Promise<WriteTorchResult> = writeTorchFile("t.pt", { t: [...s.params.values()][0]! });
export const read: Promise<TorchTensor> = TorchFile.open("t.pt").then((f) => (f.value as PyDict).get("t") as TorchTensor);
export const summary: Promise<TrainerSummary | null> = loadTrainingState("checkpoint-3", { registry: createDefaultRegistry().register("checkpointFormat", hfTrainerFormat) }).then(trainerSummary);
`;

describe("packed tarballs of every package outside the workspace", () => {
  beforeAll(async () => {
    expect(packages).toEqual(expect.arrayContaining(["core", "grow-width", "grow-depth", "scheduler", "trainer-ort", "run", "export", "cli"]));
    project = await mkdtemp(join(tmpdir(), "staged-outside-"));
    for (const p of packages) {
      const pkg = JSON.parse(readFileSync(join(root, "packages", p, "package.json"), "utf8")) as { main: string; bin?: Record<string, string> };
      for (const file of [pkg.main, ...Object.values(pkg.bin ?? {})]) {
        if (!existsSync(join(root, "packages", p, file))) throw new Error(`packages/${p}/${file} is missing: build the packages first (pnpm build)`);
      }
      run("pnpm", ["pack", "--pack-destination", project], join(root, "packages", p));
    }
    await writeFile(join(project, "package.json"), JSON.stringify({ name: "outside", private: true, type: "module" }));
    const tarballs = (await readdir(project)).filter((f) => f.endsWith(".tgz")).map((f) => `./${f}`);
    expect(tarballs).toHaveLength(packages.length);
    run("npm", ["install", "--no-audit", "--no-fund", "--prefer-offline", ...tarballs], project, {
      ...process.env,
      ONNXRUNTIME_NODE_INSTALL: "skip",
    });
  }, 300_000);
  afterAll(async () => {
    if (project) await rm(project, { recursive: true, force: true });
  });

  it("the script and the typed file use every package", () => {
    for (const p of packages) {
      expect(script, p).toContain(`from "@staged/${p}"`);
      expect(typed, p).toContain(`from "@staged/${p}"`);
    }
  });

  it("a plain ESM script uses every package, and the staged bin runs and inspects what it trained", async () => {
    await writeFile(join(project, "use.mjs"), script);
    const out = JSON.parse(run("node", ["use.mjs", project], project));
    expect(out.grown).toMatchObject({ layers: 2, dModel: 16, heads: 4 });
    expect(out.losses).toHaveLength(3);
    for (const l of [...out.losses, out.valLoss]) expect(l).toBeGreaterThan(4); // ~ln 256 = 5.5 at the start
    expect(out.saved).toMatchObject({ step: 3, metrics: 3, shape: { layers: 2, dModel: 16 } });
    expect(out.flopsPerToken).toBeGreaterThan(0);
    expect(out.runs).toEqual([
      { name: "w-s0", done: true, growths: 1 },
      { name: "baseline-s0", done: true, growths: 0 },
    ]);
    expect(out.report).toContain("baseline");
    expect(out.program).toBe("staged");
    expect(out.exported).toEqual(
      expect.arrayContaining(["onnx/model.onnx", "config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json"]),
    );
    expect(out.generated).toBe(4);
    expect(out.torchShape).toEqual([256, 16]); // the grown token embedding, through torch.save's format and back
    // The trained checkpoint written as a Trainer checkpoint: step, schedule position and LR read back from it.
    expect(out.trainer).toMatchObject({ globalStep: 3, lr: 1e-3, copiedFiles: [] });

    const help = run("npx", ["--no", "--", "staged", "--help"], project);
    for (const command of ["inspect", "init", "train", "eval", "grow", "plan", "run", "report", "export", "generate"])
      expect(help).toContain(`${command} `);
    const inspected = JSON.parse(run("npx", ["--no", "--", "staged", "inspect", join(project, "ckpt"), "--json"], project));
    expect(inspected).toMatchObject({ architecture: "gpt2", layers: 2, dModel: 16, heads: 4, step: 3, hasOptimizerState: true });
    const generated = JSON.parse(
      run("npx", ["--no", "--", "staged", "generate", join(project, "ckpt"), "--prompt", "the", "--max-new-tokens", "3", "--json"], project),
    );
    expect(generated).toMatchObject({ prompt: "the", promptIds: [116, 104, 101], exported: true });
    expect(generated.newIds).toHaveLength(3);
  }, 120_000);

  it("a strict TypeScript file (skipLibCheck off) compiles against every package's public types", async () => {
    await writeFile(join(project, "use.ts"), typed);
    await writeFile(
      join(project, "tsconfig.json"),
      JSON.stringify({
        compilerOptions: {
          module: "NodeNext",
          moduleResolution: "NodeNext",
          target: "ES2022",
          strict: true,
          noEmit: true,
          skipLibCheck: false,
          types: [],
        },
        files: ["use.ts"],
      }),
    );
    const files = run(process.execPath, [join(root, "node_modules", "typescript", "bin", "tsc"), "-p", "tsconfig.json", "--listFiles"], project);
    for (const p of packages) expect(files).toContain(join(project, "node_modules", "@staged", p, "dist", "index.d.ts"));
    // No public type may reach into onnx-proto (its typings need protobufjs' Long, which consumers lack).
    expect(files).not.toContain("onnx-proto");
  }, 120_000);
});

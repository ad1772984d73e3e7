// Crash and concurrency trials of the real commands: kill -9 at random moments of `staged train` (saving every
// step) and `staged grow` saves, two writers at once, readers racing a writer, Ctrl-C / SIGTERM at random moments
// of `staged train`, and kill -9, Ctrl-C or SIGTERM of a `staged run` with a growth (at random moments, and aimed at
// the growth: as stage 1's first save begins). After each trial a fresh process opens the checkpoint; the trial
// counts as lost or corrupted unless
//   - the checkpoint loads, every tensor is finite, and it has no save leftovers beside it afterwards;
//   - its model, optimizer and training_state.json are byte-identical to an uninterrupted reference run's
//     checkpoint at the same step (so never a mix of two saves), and the step never goes backwards;
//   - with two writers, the steps gained equal the steps of the commands that exited 0 (none lost);
//   - a grow that exited 0 wrote exactly the reference growth of one complete checkpoint; the input is untouched;
//   - after Ctrl-C or SIGTERM, train exited 130 or 143 and its checkpoint holds the last step it finished (the one
//     it says it saved): no step is lost;
//   - a `staged run` stopped any of these ways, rerun, gives the uninterrupted run's result (curve and growths).
//
//   node examples/bench/crash-test.mjs [--trials 300] [--parallel 2] [--json]      (after `pnpm build`)
//
// Not a test: it takes minutes (each trial starts a few processes). Progress lines go to stderr.
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { cp, mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { fileURLToPath } from "node:url";
import { loadTrainingState } from "@staged/core";
import { readRunResult, RESULT_FILE } from "@staged/run";
import { tinyRunSpec } from "@staged/testing";

const { values: a } = parseArgs({
  options: {
    trials: { type: "string", default: "300" },
    parallel: { type: "string", default: "2" },
    json: { type: "boolean", default: false },
    steps: { type: "string", default: "60" },
    keep: { type: "boolean", default: false },
  },
});
const TRIALS = Number(a.trials),
  PARALLEL = Number(a.parallel),
  STEPS = Number(a.steps);
const BIN = fileURLToPath(new URL("../../packages/cli/dist/bin.js", import.meta.url));
const log = (s) => process.stderr.write(s + "\n");

const root = await mkdtemp(join(tmpdir(), "staged-crash-"));
const data = join(root, "data.txt");
await writeFile(data, "the cat sat on the mat and the dog ran far away from the old grey house. ".repeat(400));

function run(args, opts = {}) {
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: "utf8", ...opts });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
function must(args) {
  const r = run(args);
  if (r.status !== 0) throw new Error(`staged ${args.join(" ")}: ${r.stderr}`);
  return r;
}
/** Start a command; resolve with its exit once it ends (or is killed). */
function start(args) {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let stderr = "";
  child.stderr.on("data", (d) => {
    stderr += d;
  });
  child.stdout.resume();
  const done = new Promise((res) => child.on("exit", (code, signal) => res({ code, signal, stderr })));
  return { child, done };
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Weights and moments (runs of other lengths store another schedule length in training_state.json). */
async function hashOf(dir, files = ["model.safetensors", "optimizer.safetensors"]) {
  const h = createHash("sha256");
  for (const f of files) {
    if (existsSync(join(dir, f))) h.update(f).update(await readFile(join(dir, f)));
  }
  return h.digest("hex");
}

// The template (step 1, with moments) and the reference: every step's checkpoint of an uninterrupted run.
const template = join(root, "template");
must(["init", template, "--layers", "1", "--d-model", "16", "--heads", "2", "--context", "16"]);
must(["train", template, "--data", data, "--steps", "1", "--batch", "2", "--threads", "1"]);
const ref = join(root, "ref");
await cp(template, ref, { recursive: true });
const t0 = performance.now();
// One step longer than the trials, so a trial that finished can still resume one step.
must(["train", ref, "--steps", String(STEPS + 1), "--save-every", "1", "--keep-every", "1", "--threads", "1"]);
const trainSeconds = (performance.now() - t0) / 1000;
// Weights and moments at each step, compared with the step training_state.json claims: a checkpoint mixing
// two saves matches no reference.
const refHash = new Map([[1, await hashOf(template)]]);
for (let s = 2; s <= STEPS + 2; s++) refHash.set(s, await hashOf(`${ref}.step-${s}`));
// Reference growths, made on demand per step.
const grownRef = new Map();
async function grownHash(step) {
  if (!grownRef.has(step)) {
    const out = join(root, `ref-grown-${step}`);
    must(["grow", "width", step === 1 ? template : `${ref}.step-${step}`, out, "--factor", "2"]);
    grownRef.set(step, await hashOf(out));
  }
  return grownRef.get(step);
}
// How long the killed commands take uninterrupted: the kills land uniformly within that.
async function timed(args, prepare) {
  await prepare?.();
  const t = performance.now();
  must(args);
  return (performance.now() - t) / 1000;
}
const calib = join(root, "calibrate");
const trialSeconds = await timed(["train", calib, "--steps", String(STEPS), "--save-every", "1", "--threads", "1"], () =>
  cp(template, calib, { recursive: true }),
);
const growSeconds = await timed(["grow", "width", template, join(root, "calibrate-wide"), "--factor", "2"]);
log(
  `reference: ${STEPS + 1} steps saved every step in ${trainSeconds.toFixed(1)} s; a trial's train takes ${trialSeconds.toFixed(2)} s, a grow ${growSeconds.toFixed(2)} s`,
);

// A staged run with one growth, and its uninterrupted result.
const spec = join(root, "spec.json");
await writeFile(spec, JSON.stringify(tinyRunSpec(data, { stages: [{ grow: "width", at: { step: 40 }, rewarmup: 2 }], seeds: [0] })));
const runRef = join(root, "run-ref");
const runSeconds = await timed(["run", spec, "--out", runRef]);
const resultOf = async (dir) => {
  const r = await readRunResult(join(dir, "w-s0", RESULT_FILE));
  return JSON.stringify({ points: r.points, growths: r.growths.map(({ seconds: _s, ...g }) => g) });
};
const runRefResult = await resultOf(runRef);
log(`a staged run with a growth at step 40 takes ${runSeconds.toFixed(2)} s`);

const leftoversOf = async (dir) => {
  const parent = join(dir, ".."),
    name = dir.split("/").pop();
  return (await readdir(parent)).filter((f) => new RegExp(`^\\.${name}\\.(tmp|new|old)-`).test(f));
};

/** Open `dir` in a fresh process (recovering it), then check it completely. Returns its step or a problem. */
async function check(dir) {
  const r = run(["--json", "inspect", dir]);
  if (r.status !== 0) return { problem: `inspect failed: ${r.stderr.trim()}` };
  const recovered = r.stderr.split("\n").filter((l) => /completed an interrupted save|restored the previous|removed/.test(l)).length;
  const left = await leftoversOf(dir);
  if (left.length) return { problem: `leftovers after recovery: ${left.join(", ")}` };
  const s = await loadTrainingState(dir);
  try {
    for (const [n, t] of s.params) if (!(await t.read()).f32.every(Number.isFinite)) return { problem: `non-finite ${n}` };
  } finally {
    await s.close();
  }
  return { step: JSON.parse(r.stdout).step, hash: await hashOf(dir), recovered };
}

const stats = { trials: 0, lost: 0, problems: [], kinds: {} };
const count = (kind, key) => {
  stats.kinds[kind] ??= {};
  stats.kinds[kind][key] = (stats.kinds[kind][key] ?? 0) + 1;
};
const problem = (kind, i, what) => {
  stats.lost++;
  stats.problems.push(`${kind} #${i}: ${what}`);
  count(kind, "lost");
};

const KINDS = {
  /** kill -9 a `train --save-every 1` at a random moment. */
  async killTrain(i, dir) {
    const { child, done } = start(["train", dir, "--steps", String(STEPS), "--save-every", "1", "--threads", "1"]);
    await sleep(Math.random() * trialSeconds * 1000);
    child.kill("SIGKILL");
    const e = await done;
    count("killTrain", e.signal === "SIGKILL" ? "killed" : `exited ${e.code}`);
    const c = await check(dir);
    if (c.problem) return problem("killTrain", i, c.problem);
    if (c.recovered) count("killTrain", "recovered");
    if (refHash.get(c.step) !== c.hash)
      return problem("killTrain", i, `step ${c.step} differs from the reference checkpoint at that step (a mix of saves?)`);
    // Training again resumes from it (the lock of the killed process is stale).
    const again = run(["train", dir, "--steps", "1", "--threads", "1"]);
    if (again.status !== 0) return problem("killTrain", i, `training after the kill failed: ${again.stderr.trim()}`);
    const c2 = await check(dir);
    if (c2.problem || c2.step !== c.step + 1 || refHash.get(c2.step) !== c2.hash)
      problem("killTrain", i, `resumed training is not the reference's step ${c.step + 1}`);
  },
  /** kill -9 a grow at a random moment; the output is absent or the exact reference growth, the input untouched. */
  async killGrow(i, dir) {
    const out = `${dir}-wide`;
    const before = await hashOf(dir);
    const { child, done } = start(["grow", "width", dir, out, "--factor", "2"]);
    await sleep(Math.random() * growSeconds * 1000);
    child.kill("SIGKILL");
    const e = await done;
    count("killGrow", e.signal === "SIGKILL" ? "killed" : `exited ${e.code}`);
    if ((await hashOf(dir)) !== before) return problem("killGrow", i, "the input changed");
    if (!existsSync(out)) {
      if ((await leftoversOf(out)).some((f) => /\.new-/.test(f))) {
        const c = await check(out); // a complete grown copy not yet in place is put there
        if (c.problem || c.hash !== (await grownHash(1))) return problem("killGrow", i, "recovered growth is not the reference growth");
        count("killGrow", "recovered");
      } else {
        count("killGrow", "no output");
      }
      return;
    }
    const c = await check(out);
    if (c.problem) return problem("killGrow", i, c.problem);
    if (c.hash !== (await grownHash(1))) return problem("killGrow", i, "the output is not the reference growth");
    count("killGrow", "complete output");
  },
  /** Ctrl-C or SIGTERM a `train --save-every 7` at a random moment: the checkpoint holds the last step it finished. */
  async signalTrain(i, dir) {
    const sig = Math.random() < 0.5 ? "SIGINT" : "SIGTERM";
    const { child, done } = start(["--json", "train", dir, "--steps", String(STEPS), "--save-every", "7", "--threads", "1"]);
    let stdout = "";
    child.stdout.removeAllListeners("data");
    child.stdout.on("data", (d) => {
      stdout += d;
    });
    await sleep(Math.random() * trialSeconds * 1000);
    child.kill(sig);
    const e = await done;
    count("signalTrain", e.code === 0 ? "finished first" : e.signal ? `ended by ${e.signal}` : `exited ${e.code}`);
    // A signal while the command does not listen ends the process the default way (the shell's status 130/143):
    // before training (Node loading, the checkpoint not yet open) the checkpoint must be the one given; after it
    // (the result printed, the process exiting) the finished run's.
    if (e.signal === sig) {
      const c = await check(dir);
      if (c.problem) return problem("signalTrain", i, c.problem);
      if ((c.step !== 1 && c.step !== STEPS + 1) || c.hash !== refHash.get(c.step))
        return problem("signalTrain", i, `${sig} outside training, yet the checkpoint is at step ${c.step}`);
      count("signalTrain", c.step === 1 ? "ended while starting, nothing trained" : "ended while exiting, all saved");
      return;
    }
    if (e.code !== 0 && e.code !== (sig === "SIGINT" ? 130 : 143))
      return problem("signalTrain", i, `${sig}: exit ${e.code ?? e.signal}: ${e.stderr.trim()}`);
    const c = await check(dir);
    if (c.problem) return problem("signalTrain", i, c.problem);
    if (refHash.get(c.step) !== c.hash) return problem("signalTrain", i, `step ${c.step} differs from the reference checkpoint at that step`);
    const said = stdout.trim() ? JSON.parse(stdout.trim()) : null;
    if (!said) return problem("signalTrain", i, `no result after ${sig}: ${e.stderr.trim()}`);
    if (said.step !== c.step)
      return problem("signalTrain", i, `${sig}: said step ${said.step}, the checkpoint holds ${c.step}: ${said.step - c.step} steps lost`);
    count("signalTrain", said.interrupted ? "stopped, nothing lost" : "finished, saved");
  },
  /** kill -9, Ctrl-C or SIGTERM a `staged run` with a growth (random moment, or as stage 1's first save begins), rerun it. */
  async stopRun(i, dir) {
    const out = join(dir, "..", "run");
    const how = ["SIGKILL", "SIGINT", "SIGTERM"][i % 3];
    const aimed = Math.random() < 0.5;
    const { child, done } = start(["run", spec, "--out", out]);
    if (aimed) {
      // The growth window: stage 0 saved at its growth, stage 1 not yet (its first save is being written).
      const parent = join(out, "w-s0");
      const t = performance.now();
      while (!(existsSync(parent) && (await readdir(parent)).some((f) => /stage-1/.test(f))) && performance.now() - t < runSeconds * 3000)
        await sleep(2);
    } else {
      await sleep(Math.random() * runSeconds * 1000);
    }
    child.kill(how);
    const e = await done;
    count("stopRun", `${how}${aimed ? " at the growth" : ""}: ${e.code === 0 ? "finished first" : (e.signal ?? `exited ${e.code}`)}`);
    // Ended by the signal itself only before the command listens (while starting); the rerun below checks the rest.
    if (how !== "SIGKILL" && e.signal !== how && e.code !== 0 && e.code !== (how === "SIGINT" ? 130 : 143))
      return problem("stopRun", i, `${how}: exit ${e.code ?? e.signal}: ${e.stderr.trim()}`);
    const again = run(["run", spec, "--out", out]);
    if (again.status !== 0) return problem("stopRun", i, `the rerun failed: ${again.stderr.trim()}`);
    if ((await resultOf(out)) !== runRefResult)
      return problem("stopRun", i, `${how}${aimed ? " at the growth" : ""}: the resumed run's result differs from the uninterrupted one's`);
  },
  /** Two `train --steps k` at once: the steps gained are those of the commands that exited 0. */
  async twoWriters(i, dir) {
    const k = 5;
    const runs = [start(["train", dir, "--steps", String(k), "--threads", "1"]), start(["train", dir, "--steps", String(k), "--threads", "1"])];
    const ends = await Promise.all(runs.map((r) => r.done));
    const okRuns = ends.filter((e) => e.code === 0).length;
    const refused = ends.filter((e) => e.code !== 0 && /being (written|read) by pid/.test(e.stderr)).length;
    count("twoWriters", `${okRuns} ok, ${refused} refused`);
    if (okRuns + refused !== 2) return problem("twoWriters", i, `unexpected failure: ${ends.map((e) => e.stderr.trim()).join(" | ")}`);
    const c = await check(dir);
    if (c.problem) return problem("twoWriters", i, c.problem);
    if (c.step !== 1 + k * okRuns)
      return problem("twoWriters", i, `step ${c.step} after ${okRuns} successful runs of ${k} steps from step 1: steps lost`);
    if (refHash.get(c.step) !== c.hash) problem("twoWriters", i, `step ${c.step}'s weights differ from the reference`);
  },
  /** A grow reading while a train saves every step: refused, or the exact growth of one complete checkpoint. */
  async readerVsWriter(i, dir) {
    const out = `${dir}-wide`;
    const writer = start(["train", dir, "--steps", "20", "--save-every", "1", "--threads", "1"]);
    await sleep(Math.random() * trialSeconds * 700);
    const g = await start(["grow", "width", dir, out, "--factor", "2"]).done;
    const w = await writer.done;
    if (w.code !== 0) {
      if (!/being read by pid/.test(w.stderr)) return problem("readerVsWriter", i, `train failed otherwise: ${w.stderr.trim()}`);
      count("readerVsWriter", "train refused (grow was reading)");
    }
    if (g.code !== 0) {
      if (!/being (written|read) by pid/.test(g.stderr)) return problem("readerVsWriter", i, `grow failed otherwise: ${g.stderr.trim()}`);
      count("readerVsWriter", "grow refused");
      if (existsSync(out)) problem("readerVsWriter", i, "a refused grow wrote its output");
      return;
    }
    const meta = JSON.parse(await readFile(join(out, "training_state.json"), "utf8"));
    const step = meta.progress.step;
    if ((await hashOf(out)) !== (await grownHash(step)))
      return problem("readerVsWriter", i, `grown output is not the growth of the step-${step} checkpoint (a mix?)`);
    count("readerVsWriter", "grow of a complete checkpoint");
  },
};

const plan = [];
const ORDER = ["killTrain", "killTrain", "killGrow", "twoWriters", "readerVsWriter", "signalTrain", "signalTrain", "stopRun"];
for (let i = 0; i < TRIALS; i++) plan.push(ORDER[i % ORDER.length]);
let next = 0,
  finished = 0;
const started = performance.now();
async function worker() {
  while (next < plan.length) {
    const i = next++;
    const kind = plan[i];
    const dir = join(root, `t${i}`, "ck");
    await cp(template, dir, { recursive: true });
    try {
      await KINDS[kind](i, dir);
    } catch (e) {
      problem(kind, i, `harness error: ${e.message}`);
    }
    stats.trials++;
    if (!a.keep) await rm(join(root, `t${i}`), { recursive: true, force: true });
    finished++;
    const el = (performance.now() - started) / 1000;
    if (finished % 10 === 0 || finished === plan.length) {
      log(
        `${finished}/${plan.length} trials, ${stats.lost} lost or corrupted, ${(finished / el).toFixed(2)} trials/s, ETA ${Math.round((el / finished) * (plan.length - finished))} s`,
      );
    }
  }
}
await Promise.all(Array.from({ length: PARALLEL }, worker));
const seconds = (performance.now() - started) / 1000;
const result = { ...stats, seconds, trialTrainSeconds: trialSeconds, growSeconds };
if (a.json) console.log(JSON.stringify(result, null, 2));
else {
  console.log(`${stats.trials} trials in ${seconds.toFixed(0)} s: ${stats.lost} lost or corrupted checkpoints`);
  for (const [k, v] of Object.entries(stats.kinds))
    console.log(
      `  ${k}: ${Object.entries(v)
        .map(([x, n]) => `${x} ${n}`)
        .join(", ")}`,
    );
  for (const p of stats.problems.slice(0, 20)) console.log(`  ${p}`);
}
if (!a.keep) await rm(root, { recursive: true, force: true });
process.exit(stats.lost ? 1 : 0);

import { createRequire } from "node:module";
import { Command, CommanderError } from "commander";
import { describeThisProcess } from "@staged/core";
import { registerInspect } from "./commands/inspect.js";
import { registerGrow } from "./commands/grow.js";
import { registerInit } from "./commands/init.js";
import { registerTrain } from "./commands/train.js";
import { registerEval } from "./commands/eval.js";
import { registerPlan } from "./commands/plan.js";
import { registerReport, registerRun } from "./commands/run.js";
import { registerExport } from "./commands/export.js";
import { registerGenerate } from "./commands/generate.js";
import { registerConvert } from "./commands/convert.js";

export interface GlobalOptions {
  json?: boolean;
  debug?: boolean;
}

/** Build the `staged` program; each command lives in its own module under commands/. */
export function createProgram(): Command {
  const program = new Command("staged")
    .description("Staged training of transformer language models: grow the whole training state and keep training.")
    .version((createRequire(import.meta.url)("../package.json") as { version: string }).version)
    .option("--json", "print one machine-readable JSON object on stdout")
    .option("--debug", "print stack traces on errors")
    .exitOverride()
    .configureOutput({ outputError: (text, write) => write(`staged: ${text.replace(/^error: /, "")}`) });
  registerInspect(program);
  registerInit(program);
  registerTrain(program);
  registerEval(program);
  registerGrow(program);
  registerPlan(program);
  registerRun(program);
  registerReport(program);
  registerExport(program);
  registerGenerate(program);
  registerConvert(program);
  return program;
}

export async function main(argv: string[]): Promise<void> {
  const program = createProgram();
  // A checkpoint this command locks names it so to another command that finds it locked.
  describeThisProcess(["staged", ...argv].join(" "));
  try {
    await program.parseAsync(argv, { from: "user" });
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander already printed its message (help and version exit 0).
      process.exitCode = e.exitCode;
      return;
    }
    throw e;
  }
}

// The child process of stepPlacement (placement.ts): creates an engine with onnxruntime's verbose log on stderr, then
// exits. Argument: JSON {architecture, config, options}; errors are one line on stderr and exit 1.
import { initTrainingState } from "@staged/core";
import { createEngine, type EngineOptions } from "./engine.js";

try {
  const { architecture, config, options } = JSON.parse(process.argv[2] ?? "") as {
    architecture: string;
    config: Record<string, unknown>;
    options: EngineOptions;
  };
  const s = initTrainingState(architecture, config, 0);
  const weights = new Map<string, Float32Array>();
  for (const [n, t] of s.params) weights.set(n, (await t.read()).f32);
  const e = await createEngine(architecture, config, weights, undefined, { ...options, verboseLog: true });
  await e.release();
} catch (e) {
  process.stderr.write(`${(e as Error).message.split("\n")[0]}\n`);
  process.exitCode = 1;
}

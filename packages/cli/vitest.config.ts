import { defineConfig } from "vitest/config";

// The CLI tests spawn `staged` and train tiny models end to end: seconds each on 2 free cores, more on a loaded
// machine (each spawned command has its own limit in testing.ts).
export default defineConfig({ test: { testTimeout: 120_000 } });

import { defineConfig } from "vitest/config";

// The export tests build, export and run small models (and load transformers.js): about a second each on 2 cores.
export default defineConfig({ test: { testTimeout: 60_000, hookTimeout: 60_000 } });

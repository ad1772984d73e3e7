import { defineConfig } from "vitest/config";

// The run tests train tiny models end to end (seconds each on 2 cores).
export default defineConfig({ test: { testTimeout: 60_000 } });

export * from "./types.js";
export * from "./run-format.js";
export * from "./spec.js";
export * from "./run.js";
export * from "./timing.js";
export * from "./report.js";
export * from "./plot.js";

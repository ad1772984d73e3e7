export * from "./types.js";
export * from "./spec.js";
export * from "./run.js";
export * from "./timing.js";
export * from "./report.js";
export * from "./plot.js";
export * from "./plan-plot.js";
export * from "./plugins.js";

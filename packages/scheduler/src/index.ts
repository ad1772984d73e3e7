export * from "./lr.js";
export * from "./flops.js";
export * from "./laws.js";
export * from "./registry.js";

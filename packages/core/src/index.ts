export * from "./dtype.js";
export * from "./tensor.js";
export * from "./types.js";
export * from "./plugins.js";
export * from "./registry.js";
export * from "./rng.js";
export { gpt2 } from "./gpt2.js";

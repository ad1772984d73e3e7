export { GraphBuilder, Value, broadcastShapes, OPSET, type DType, type Node, type Attr, type Data } from "./graph/builder.js";
export { gradients } from "./graph/autodiff.js";
export { VJP, unbroadcast, type VjpRule } from "./graph/vjp.js";
export { modelGraph, modelGraphNames, gpt2Graph, geluNew, type ModelGraph } from "./models/index.js";
export {
  names, adamwDefaults, compileTrainStep, compileEval, compileGradient, compileApply,
  type AdamWOptions, type BatchShape, type CompiledGraph,
} from "./step.js";
export { createEngine, type Engine, type EngineOptions } from "./engine.js";

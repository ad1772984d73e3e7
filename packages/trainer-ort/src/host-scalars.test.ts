import { gpt2 } from "@staged/core";
import onnxProto from "onnx-proto";
import { describe, expect, it } from "vitest";
import { modelGraph } from "./models/index.js";
import { adamwDefaults, compileApply, compileTrainStep, names, optimizerScalars } from "./step.js";

/**
 * Issue 18: a GPU provider has no float64 kernels, so the graphs the device runs hold no float64 value: the
 * optimizer's scalar factors come from the host (optimizerScalars), computed in float64 and rounded to float32 once.
 */
const DOUBLE = onnxProto.onnx.TensorProto.DataType.DOUBLE;
const config = gpt2.initConfig({ layers: 1, dModel: 16, heads: 2, vocab: 32, context: 8 }, true);
const specs = modelGraph("gpt2").params(config);

/** Where a model holds a float64 value: its inputs, outputs, initializers, Cast targets and Constant tensors. */
function float64Places(model: Uint8Array): string[] {
  const g = onnxProto.onnx.ModelProto.decode(model).graph!;
  const places: string[] = [];
  for (const v of [...(g.input ?? []), ...(g.output ?? []), ...(g.valueInfo ?? [])]) {
    if (v.type?.tensorType?.elemType === DOUBLE) places.push(`value ${v.name}`);
  }
  for (const t of g.initializer ?? []) if (t.dataType === DOUBLE) places.push(`initializer ${t.name}`);
  for (const n of g.node ?? []) {
    for (const a of n.attribute ?? []) {
      if ((n.opType === "Cast" && a.name === "to" && Number(a.i) === DOUBLE) || a.t?.dataType === DOUBLE) places.push(`node ${n.name} (${n.opType})`);
    }
  }
  return places;
}

describe("host-side optimizer scalars", () => {
  const variants = {
    default: adamwDefaults(specs),
    "per-parameter LR": adamwDefaults(specs, { perParamLr: true }),
    "no bias correction, no decay": adamwDefaults(specs, { biasCorrection: false, weightDecay: 0 }),
  };
  it.each(Object.entries(variants))("%s: no float64 value in the step or apply graph", (_label, opt) => {
    expect(float64Places(compileTrainStep("gpt2", config, { batch: 2, context: 8 }, opt).model)).toEqual([]);
    expect(float64Places(compileApply("gpt2", config, opt).model)).toEqual([]);
  });

  it("a float64 cast is found (the check can fail)", async () => {
    const { GraphBuilder } = await import("./graph/builder.js");
    const { serializeModel } = await import("./graph/onnx.js");
    const b = new GraphBuilder();
    b.output(b.cast(b.input("x", "float32", [2]), "float64"), "y");
    expect(float64Places(serializeModel(b))).not.toEqual([]);
  });

  it("are torch's float64 factors rounded to float32 once; the inputs a graph takes are the ones given", () => {
    const lr = 3e-3,
      t = 7;
    const [b1, b2] = [0.9, 0.999];
    const d = optimizerScalars(specs, variants.default, lr, t);
    expect([...d[names.stepSize]!]).toEqual([Math.fround(lr / (1 - b1 ** t))]);
    expect([...d[names.decayFactor]!]).toEqual([Math.fround(1 - lr * 0.01)]);
    expect([...d[names.bc2Sqrt]!]).toEqual([Math.fround(Math.sqrt(1 - b2 ** t))]);
    const scales = specs.map((_, i) => (i % 2 ? 0.5 : 1));
    const p = optimizerScalars(specs, variants["per-parameter LR"], lr, t, scales);
    expect([...p[names.stepSize]!]).toEqual(scales.map((s) => Math.fround((lr * s) / (1 - b1 ** t))));
    expect([...p[names.decayFactor]!]).toEqual(scales.map((s) => Math.fround(1 - lr * s * 0.01)));
    const plain = optimizerScalars(specs, variants["no bias correction, no decay"], lr, t);
    expect(Object.keys(plain)).toEqual([names.stepSize]);
    expect([...plain[names.stepSize]!]).toEqual([Math.fround(lr)]);
    for (const [label, opt] of Object.entries(variants)) {
      const inputs = onnxProto.onnx.ModelProto.decode(compileTrainStep("gpt2", config, { batch: 2, context: 8 }, opt).model).graph!.input!.map(
        (i) => i.name,
      );
      const fed = Object.keys(optimizerScalars(specs, opt, lr, t));
      expect(
        fed.every((n) => inputs.includes(n)),
        label,
      ).toBe(true);
      expect(inputs.filter((n) => Object.values(names).includes(n as never) && n !== names.ids).sort(), label).toEqual(fed.sort());
    }
  });
});

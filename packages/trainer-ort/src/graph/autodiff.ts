import type { GraphBuilder, Node, Value } from "./builder.js";
import { VJP } from "./vjp.js";

const differentiable = (v: Value) => v.dtype === "float32" || v.dtype === "float64" || v.dtype === "float16";

/**
 * Reverse-mode autodiff: append to `b` the nodes computing d(loss)/d(v) for each v in `wrt`.
 * `seed` is the gradient flowing into `loss` (default: ones, so a scalar loss gets its plain gradient).
 * Only nodes on a path from `wrt` to `loss` are differentiated (a detached node cuts the path); a value used several times gets the sum
 * of its contributions. A `wrt` value the loss does not depend on gets zeros.
 */
export function gradients(b: GraphBuilder, loss: Value, wrt: readonly Value[], seed?: Value): Value[] {
  const nodes = b.nodes.slice();
  const section = b.section;
  b.section = "backward";
  const fromWrt = new Set<Value>(wrt);
  for (const n of nodes) {
    if (!b.isDetached(n) && n.inputs.some((v) => v && fromWrt.has(v))) for (const o of n.outputs) if (differentiable(o)) fromWrt.add(o);
  }
  const contributions = new Map<Value, Value[]>();
  const add = (v: Value, g: Value) => {
    if (g.dtype !== v.dtype || g.shape.length !== v.shape.length || g.shape.some((d, i) => d !== v.shape[i])) {
      throw new Error(`gradient of ${v.name} has ${g.dtype}[${g.shape}], expected ${v.dtype}[${v.shape}]`);
    }
    const list = contributions.get(v);
    if (list) list.push(g);
    else contributions.set(v, [g]);
  };
  // Sum the contributions once, when the value's producer is reached (all its consumers come later). A scatter-add into
  // zeros that writes each element at most once (one index along its axis: GatherElements' gradient, as in the loss)
  // adds its updates into the sum of the others instead: the same sums bit for bit (0 + u = u), one pass over the
  // value less (the loss's [B·T, V] logits), and the unused scatter is dropped as dead code. An embedding's scatter,
  // with repeated rows, is left as it is: folding it would change the order of its additions.
  const scatterIntoZeros = (g: Value) => {
    const n = g.producer;
    if (n?.op !== "ScatterElements" || n.attrs.reduction !== "add" || !b.isZeros(n.inputs[0]!)) return false;
    return n.inputs[1]!.shape[n.attrs.axis as number] === 1;
  };
  const total = (v: Value): Value | null => {
    const list = contributions.get(v);
    if (!list) return null;
    const dense = list.filter((g) => !scatterIntoZeros(g));
    let s = b.sum(dense.length > 0 ? dense : list);
    if (dense.length > 0)
      for (const g of list.filter(scatterIntoZeros)) {
        const n = g.producer!;
        s = b.scatterElements(s, n.inputs[1]!, n.inputs[2]!, n.attrs.axis as number, "add");
      }
    contributions.set(v, [s]);
    return s;
  };
  add(loss, seed ?? b.expand(b.scalar(1, loss.dtype), loss.shape));

  for (let i = nodes.length - 1; i >= 0; i--) {
    const n: Node = nodes[i]!;
    const gOut = n.outputs.map(total);
    if (gOut.every((g) => g === null)) continue;
    const needs = n.inputs.map((v) => v !== null && fromWrt.has(v) && differentiable(v));
    if (!needs.some(Boolean)) continue;
    const rule = VJP[n.op];
    if (!rule) throw new Error(`autodiff: no VJP rule for ${n.op}`);
    const gIn = rule(b, n, gOut, needs);
    n.inputs.forEach((v, j) => {
      const g = gIn[j];
      if (v && needs[j] && g) add(v, g);
    });
  }
  const grads = wrt.map((v) => total(v) ?? b.zeros(v.shape, v.dtype));
  b.section = section;
  return grads;
}

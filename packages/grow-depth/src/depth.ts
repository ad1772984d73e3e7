import { checkModelSize, checkStageOptions, createDefaultRegistry, grownState, zerosTensor } from "@staged/core";
import type { LazyTensor, ParamSpec, Registry, StageOptions, TrainingState } from "@staged/core";

export type DepthPlacement = "alternate" | "append";
export type DepthInit = "identity" | "copy";
export type DepthMoments = "copy" | "reset";

export interface DepthOptions extends StageOptions {
  /** Layers × factor (default 2 when neither `layers` nor `layerMap` is given). */
  factor?: number;
  /** Target layer count. */
  layers?: number;
  /** Explicit source layer of each new layer. */
  layerMap?: number[];
  /** alternate: 0,0,1,1,...; append: 0..L−1,0..L−1 (default alternate). */
  placement?: DepthPlacement;
  /** identity: new layers add nothing to the residual stream (exact); copy: plain stacking (default identity). */
  init?: DepthInit;
  /** New layers' AdamW moments: copy their source's, or reset them to zero (default copy). Original layers keep theirs. */
  moments?: DepthMoments;
  registry?: Registry;
}

/** The grown model's layer count, from the options (checked as {@link layerMap} does, without building the map). */
export function targetLayers(sourceLayers: number, o: Pick<DepthOptions, "factor" | "layers" | "layerMap">): number {
  const L = sourceLayers;
  const given = [o.factor, o.layers, o.layerMap].filter((v) => v !== undefined).length;
  if (given > 1) throw new Error("give only one of factor, layers and layerMap");
  if (o.layerMap) return o.layerMap.length;
  if (o.layers !== undefined) {
    const N = o.layers;
    if (!Number.isInteger(N) || N <= L) throw new Error(`layers must be an integer above the current ${L}, got ${N}`);
    return N;
  }
  const k = o.factor ?? 2;
  if (!Number.isInteger(k) || k < 2) throw new Error(`factor must be an integer ≥ 2, got ${k}`);
  return k * L;
}

/** The layer map: which source layer each of the grown model's layers comes from. */
export function layerMap(sourceLayers: number, o: Pick<DepthOptions, "factor" | "layers" | "layerMap" | "placement">): number[] {
  const L = sourceLayers;
  const N = targetLayers(L, o);
  if (o.layerMap) {
    const map = o.layerMap;
    for (const i of map) {
      if (!Number.isInteger(i) || i < 0 || i >= L) throw new Error(`layer map names layer ${i}, but the model has layers 0..${L - 1}`);
    }
    const named = new Set(map);
    for (let i = 0; i < L; i++) if (!named.has(i)) throw new Error(`layer map omits layer ${i}: depth growth never removes layers`);
    if (map.length <= L) throw new Error(`layer map has ${map.length} layers: growth needs more than ${L}`);
    return [...map];
  }
  const placement = o.placement ?? "alternate";
  if (placement === "alternate") return Array.from({ length: N }, (_, n) => Math.floor((n * L) / N));
  if (placement === "append") return Array.from({ length: N }, (_, n) => n % L);
  throw new Error(`placement must be alternate or append, got ${placement}`);
}

/** For each position of a layer map, whether it is a later occurrence of its source layer (a new layer). */
const newLayers = (map: readonly number[]): boolean[] => {
  const seen = new Set<number>();
  return map.map((l) => seen.has(l) || (seen.add(l), false));
};

/** Identity init is exact when the original layers keep their order; copy init never is. */
export function depthLossPreserving(map: readonly number[], init: DepthInit): boolean {
  if (init !== "identity") return false;
  const isNew = newLayers(map);
  const firsts = map.filter((_, n) => !isNew[n]);
  return firsts.every((l, i) => l === i);
}

/** Zeros in the dtype of `t` (the tensors an identity-initialized layer zeroes, and reset moments): stored bytes or values. */
const zerosLike = (t: LazyTensor, shape: readonly number[]): LazyTensor => zerosTensor(t.dtype, shape);

/**
 * Depth growth: each new layer comes from a source layer (the layer map). The first occurrence of a source
 * layer is the original; later ones are new, initialized as `copy` (stacking) or `identity` (a copy whose
 * attention and MLP output projections, weights and biases, are zero, so the block adds nothing and the loss
 * is exact). New layers' moments are copied from their source or reset to zero (always zero for the
 * zeroed projections); the original layers keep theirs, and the optimizer step goes on.
 */
export function growDepth(state: TrainingState, options: DepthOptions = {}): TrainingState {
  const init = options.init ?? "identity";
  const moments = options.moments ?? "copy";
  if (init !== "identity" && init !== "copy") throw new Error(`init must be identity or copy, got ${init}`);
  if (moments !== "copy" && moments !== "reset") throw new Error(`moments must be copy or reset, got ${moments}`);
  checkStageOptions(options, state);
  const arch = (options.registry ?? createDefaultRegistry()).get("architecture", state.architecture);
  // The size is checked before the layer map or any list of the grown parameters is built.
  const shape = { ...state.shape, layers: targetLayers(state.shape.layers, options) };
  const config = arch.withShape(state.config, shape);
  const cause =
    options.layers !== undefined
      ? undefined
      : options.layerMap
        ? `a layer map of ${options.layerMap.length} layers`
        : `factor ${options.factor ?? 2}`;
  checkModelSize("depth growth", shape, arch.parameterCount(config), { ...(cause ? { cause } : {}) });
  const map = layerMap(state.shape.layers, options);

  const sourceSpecs = arch.params(state.config);
  const grouped = (specs: ParamSpec[]): Map<number | null, ParamSpec[]> => {
    const m = new Map<number | null, ParamSpec[]>();
    for (const p of specs) {
      const list = m.get(p.layer);
      if (list) list.push(p);
      else m.set(p.layer, [p]);
    }
    return m;
  };
  const sourceByLayer = grouped(sourceSpecs);
  const byLayer = (specs: Map<number | null, ParamSpec[]>, layer: number | null): ParamSpec[] => specs.get(layer) ?? [];
  const { expAvg, expAvgSq } = state.optimizer;
  const hasMoments = expAvg !== undefined && expAvgSq !== undefined;
  const noDecay = new Set(state.optimizer.noDecay);

  const params = new Map<string, LazyTensor>();
  const avg = new Map<string, LazyTensor>();
  const avgSq = new Map<string, LazyTensor>();
  const newNoDecay: string[] = [];
  const targetByLayer = grouped(arch.params(config));
  const sourceByName = new Map(sourceSpecs.map((p) => [p.name, p]));
  const place = (target: ParamSpec, source: ParamSpec, zeroed: boolean, isNew: boolean): void => {
    const get = (m: Map<string, LazyTensor> | undefined, what: string): LazyTensor => {
      const t = m?.get(source.name);
      if (!t) throw new Error(`depth growth: ${what} ${source.name} is missing`);
      return t;
    };
    const p = get(state.params, "parameter");
    params.set(target.name, zeroed ? zerosLike(p, target.shape) : p);
    if (noDecay.has(source.name)) newNoDecay.push(target.name);
    if (!hasMoments) return;
    const m1 = get(expAvg, "exp_avg of"),
      m2 = get(expAvgSq, "exp_avg_sq of");
    const zeroMoments = zeroed || (isNew && moments === "reset");
    avg.set(target.name, zeroMoments ? zerosLike(m1, target.shape) : m1);
    avgSq.set(target.name, zeroMoments ? zerosLike(m2, target.shape) : m2);
  };
  for (const target of byLayer(targetByLayer, null)) {
    const source = sourceByName.get(target.name);
    if (!source) throw new Error(`depth growth: no source for ${target.name}`);
    place(target, source, false, false);
  }
  const isNewLayer = newLayers(map);
  map.forEach((src, n) => {
    const isNew = isNewLayer[n]!;
    const sources = byLayer(sourceByLayer, src);
    byLayer(targetByLayer, n).forEach((target, i) => {
      const source = sources[i];
      if (source?.role !== target.role)
        throw new Error(`depth growth: layer ${n} parameter ${i} is ${target.role}, source is ${source?.role ?? "missing"}`);
      place(target, source, isNew && init === "identity" && target.writesResidual === true, isNew);
    });
  });
  return grownState(state, {
    operator: "depth",
    options: { layerMap: map, init, moments },
    config,
    shape,
    params,
    ...(hasMoments ? { expAvg: avg, expAvgSq: avgSq } : {}),
    resetMoments: !hasMoments,
    stage: options,
    noDecay: newNoDecay,
  });
}

import type { GrowthPlugin } from "@staged/core";
import { depthLossPreserving, growDepth, type DepthOptions } from "./depth.js";

export {
  depthLossPreserving,
  growDepth,
  layerMap,
  targetLayers,
  type DepthOptions,
  type DepthInit,
  type DepthMoments,
  type DepthPlacement,
} from "./depth.js";

/** The `depth` growth plugin for a registry. */
export const depthGrowth: GrowthPlugin<DepthOptions> = {
  name: "depth",
  grow: growDepth,
  // factor and layers place the originals in order; only an explicit map can reorder them.
  lossPreserving: (o) => (o.init ?? "identity") === "identity" && (!o.layerMap || depthLossPreserving(o.layerMap, "identity")),
};

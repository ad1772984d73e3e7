import type { GrowthPlugin } from "@staged/core";
import { growWidth, widthLossPreserving, type WidthOptions } from "./width.js";

export {
  WIDTH_MOMENTS,
  WIDTH_SYMMETRIES,
  WIDTH_UNITS,
  growWidth,
  widthLossPreserving,
  type WidthOptions,
  type WidthMoments,
  type WidthSymmetry,
  type WidthUnits,
} from "./width.js";

/** The `width` growth plugin for a registry. */
export const widthGrowth: GrowthPlugin<WidthOptions> = { name: "width", grow: growWidth, lossPreserving: widthLossPreserving };

import type { GrowthTimingContext, GrowthTimingPlugin, TimingPoint } from "@staged/core";
import { MarginalGrowthDetector, isChinchillaLaw, localPowerLaw, planGrowthInRunUnits, type ChinchillaLaw } from "@staged/scheduler";

/** The spec's law, which the run has loaded for a rule with needsLaw (a Chinchilla-form fit). */
const lawOf = (c: GrowthTimingContext): ChinchillaLaw => {
  if (!isChinchillaLaw(c.law)) throw new Error(`growth timing at stage ${c.stage}: the rule needs the spec's law (Chinchilla-form)`);
  return c.law;
};

/** "auto": online, the marginal-efficiency rule of @staged/scheduler on the run's own validation curve. */
export const autoTiming: GrowthTimingPlugin = {
  name: "auto",
  needsLaw: true,
  create(c) {
    const { small, large, batchTokens, maxLoss } = c;
    const detector = new MarginalGrowthDetector({ law: lawOf(c), small, large, units: { batchTokens }, ...(maxLoss === null ? {} : { maxLoss }) });
    return { push: (p: TimingPoint) => detector.push({ step: p.step, compute: p.flops, loss: p.valLoss }) !== null };
  },
};

/**
 * "plan": ahead of time, the same rule on the law's simulated curve. The first model grows at the law's step; a grown
 * model, which the law cannot place on its own curve, when its smoothed validation loss reaches the law's loss at growth.
 */
export const planTiming: GrowthTimingPlugin = {
  name: "plan",
  needsLaw: true,
  create(c) {
    const plan = planGrowthInRunUnits(lawOf(c), c.small, c.large, { batchTokens: c.batchTokens });
    if (!plan) return { flops: Infinity };
    if (c.stage === 0) return { steps: plan.growAtStep };
    const pts: TimingPoint[] = [];
    return {
      push(p) {
        pts.push(p);
        return (
          pts.length >= 8 &&
          localPowerLaw(
            pts.slice(-8).map((q) => ({ step: q.step, compute: q.flops, loss: q.valLoss })),
            p.flops,
          ).loss <= plan.lossAtGrowth
        );
      },
    };
  },
};

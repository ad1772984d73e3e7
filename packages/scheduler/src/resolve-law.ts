import { readFile } from "node:fs/promises";
import type { Registry } from "@staged/core";
import { chinchillaLaw, isChinchillaLaw, type ScalingLaw } from "./laws.js";
import { lawFromFit, type FitResult } from "./fit.js";
import { registeredLaw } from "./registry.js";

/** The laws a registry names, the built-in ones (kaplan, chinchilla) first, as `staged plan --law` lists them. */
export function lawNames(registry: Registry): string[] {
  const builtIn = ["kaplan", "chinchilla"].filter((n) => registry.has("scheduler", n));
  return [...builtIn, ...registry.list("scheduler").filter((n) => !builtIn.includes(n))];
}

/**
 * The law `source` names: a law registered under "scheduler" (kaplan, chinchilla, research code's own), else a fit
 * file written by `staged plan fit` (`file` is then set). `batchTokens`, given, replaces the tokens per step of a
 * Chinchilla-form law (the registered one's constants kept) or of the fit. Errors name `source`.
 */
export async function resolveLaw(source: string, registry: Registry, batchTokens?: number): Promise<{ law: ScalingLaw; file?: string }> {
  if (registry.has("scheduler", source)) {
    const law = registeredLaw(registry, source);
    return { law: batchTokens !== undefined && isChinchillaLaw(law) ? chinchillaLaw(law.constants, batchTokens, law.name) : law };
  }
  let text: string;
  try {
    text = await readFile(source, "utf8");
  } catch (e) {
    const code = e instanceof Error && "code" in e && typeof e.code === "string" ? e.code : String(e);
    throw new Error(`${source}: not ${lawNames(registry).join(" or ") || "a registered law"}, and the file cannot be read (${code})`, { cause: e });
  }
  let fit: FitResult;
  try {
    fit = JSON.parse(text) as FitResult;
  } catch (e) {
    throw new Error(`${source}: not JSON`, { cause: e });
  }
  if (batchTokens !== undefined && fit && typeof fit === "object") fit = { ...fit, batchTokens };
  return { law: lawFromFit(fit, source), file: source };
}

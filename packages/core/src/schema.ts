import type { z } from "zod";

/**
 * The first problem zod found in a parsed value, as one line naming where: `<file>: <field> <problem>`
 * (`progress.stages[0].step must be an integer ≥ 0`). The JSON formats' schemas (state-format.ts, metrics-format.ts) report through it.
 */
export function schemaError(file: string, error: z.ZodError): Error {
  const issue = error.issues[0];
  const path =
    issue?.path
      .map((p) => (typeof p === "number" ? `[${p}]` : `.${String(p)}`))
      .join("")
      .replace(/^\./, "") ?? "";
  const message = (issue?.message ?? "invalid").replace(/^Invalid input: /, "");
  return new Error(`${file}: ${path ? `${path} ` : ""}${message}`);
}

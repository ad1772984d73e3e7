import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { parseJsonFile, schemaError, systemReason } from "@staged/core";
import { z } from "zod";
import type { ExportDType } from "./graph.js";

/**
 * staged-export.json: the manifest every export carries (HF tools ignore it), which marks a directory as an export
 * of staged (so that it may be replaced) and records what the export cache compares. This file is the one place
 * that reads and writes it; its fields are in docs/formats.md. A manifest that is there but is not one (a foreign
 * file, a hand edit) is refused with one line naming the file and the field.
 */
export const MANIFEST = "staged-export.json";
export const MANIFEST_FORMAT = "staged-export";
/** Bumped when the export's graph or files change, so that caches made by an older version are remade. */
export const EXPORT_VERSION = 2;

const manifest = z.object({
  format: z.literal(MANIFEST_FORMAT, { error: `must be "${MANIFEST_FORMAT}"` }),
  /** The exporter's version (EXPORT_VERSION when written): any is read, and the export cache remakes other versions. */
  version: z.number().refine((v) => Number.isSafeInteger(v) && v >= 1, { error: "must be an integer ≥ 1" }),
  /** `@staged/export <package version>`. */
  exporter: z.string({ error: "must be a string" }),
  /** The architecture plugin's name (gpt2, llama). */
  architecture: z.string({ error: "must be a string" }).min(1, { error: "must not be empty" }),
  /** The dtypes exported, each with its ONNX file (ONNX_FILES in export.ts). */
  dtypes: z.array(z.enum(["fp32", "fp16"], { error: 'must be "fp32" or "fp16"' }), { error: "must be a list" }),
  /** Files holding external data, by ONNX file. */
  externalData: z.record(z.string(), z.string({ error: "must be a file name" }), { error: "must be an object of file names" }),
  /** The fingerprint of the checkpoint exported (sourceFingerprint in export.ts), or null for an in-memory state. */
  source: z.union([z.null(), z.string()], { error: "must be a string or null" }),
});

/** What staged-export.json holds. */
export type ExportManifest = z.infer<typeof manifest>;

// The dtypes the schema reads are the ones the graph exports (graph.ts).
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
const sameDTypes: Same<ExportManifest["dtypes"][number], ExportDType> = true;
void sameDTypes;

/** Validate the parsed JSON of a manifest (`file` names it in errors). */
export function parseManifest(raw: unknown, file: string): ExportManifest {
  const r = manifest.safeParse(raw);
  if (!r.success) throw schemaError(file, r.error);
  return r.data;
}

/**
 * The manifest of an export directory, or null when it has none (no directory, or no manifest in it); a manifest
 * that cannot be read or is not one is an error naming it.
 */
export async function readManifest(dir: string): Promise<ExportManifest | null> {
  const file = join(dir, MANIFEST);
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return null;
    throw new Error(`${file}: cannot read the export's manifest (${systemReason(e)})`, { cause: e });
  }
  return parseManifest(parseJsonFile(text, file), file);
}

/** The content of staged-export.json. */
export const formatManifest = (m: ExportManifest): string => JSON.stringify(m, null, 2) + "\n";

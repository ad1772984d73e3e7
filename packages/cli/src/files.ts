import { canonicalPath, writeFileAtomic } from "@staged/core";
import { UsageError } from "./output.js";

/**
 * Write an output file atomically (a flushed temporary sibling renamed into place), refusing to overwrite any input.
 * A failure is writeFileAtomic's one line: "x.svg: cannot write (no such file (ENOENT))".
 */
export async function writeOutputFile(path: string, data: string | Uint8Array, inputs: readonly string[]): Promise<void> {
  for (const input of inputs) {
    if ((await canonicalPath(path)) === (await canonicalPath(input))) throw new UsageError(`${path}: refusing to overwrite an input`);
  }
  await writeFileAtomic(path, data);
}

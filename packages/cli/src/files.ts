import { canonicalPath, writeFileAtomic } from "@staged/core";
import { UsageError } from "./output.js";

/** Write an output file atomically (a flushed temporary sibling renamed into place), refusing to overwrite any input. */
export async function writeOutputFile(path: string, data: string | Uint8Array, inputs: readonly string[]): Promise<void> {
  for (const input of inputs) {
    if ((await canonicalPath(path)) === (await canonicalPath(input))) throw new UsageError(`${path}: refusing to overwrite an input`);
  }
  try {
    await writeFileAtomic(path, data);
  } catch (e) {
    throw new Error(`${path}: cannot write (${(e as NodeJS.ErrnoException).code ?? String(e)})`, { cause: e });
  }
}

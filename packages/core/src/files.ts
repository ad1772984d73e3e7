import { readFile } from "node:fs/promises";

/**
 * Read a file the user named (`what`: "the data", "the tokenizer", ...); a failure becomes one line
 * naming the file and why ("no such file", "a directory", ...), with the system error as its cause.
 */
export async function readInput(path: string, what = "the file"): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const why = code === "ENOENT" ? "no such file" : code === "EISDIR" ? "a directory" : code === "EACCES" ? "permission denied" : code ?? String(e);
    throw new Error(`${path}: cannot read ${what} (${why})`, { cause: e });
  }
}

/** Parse JSON text from `path`; invalid JSON becomes one line naming the file. */
export function parseJsonFile(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: invalid JSON (${(e as Error).message})`, { cause: e });
  }
}

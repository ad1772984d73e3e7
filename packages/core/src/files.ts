import { open, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/**
 * Read a file the user named (`what`: "the data", "the tokenizer", ...); a failure becomes one line
 * naming the file and why ("no such file", "a directory", ...), with the system error as its cause.
 */
export async function readInput(path: string, what = "the file"): Promise<Uint8Array> {
  try {
    return await readFile(path);
  } catch (e) {
    throw inputError(path, what, e);
  }
}

/** The one-line error of a file the user named that cannot be read. */
function inputError(path: string, what: string, e: unknown): Error {
  const code = (e as NodeJS.ErrnoException).code;
  return new Error(`${path}: cannot read ${what} (${(code && REASONS[code]) ?? systemReason(e)})`, { cause: e });
}

const REASONS: Record<string, string> = {
  ENOENT: "no such file", EISDIR: "a directory", ENOTDIR: "a path component is not a directory", EACCES: "permission denied",
  EPERM: "operation not permitted", EROFS: "read-only file system", ENOSPC: "no space left on device", EDQUOT: "disk quota exceeded",
  EEXIST: "already exists", EMFILE: "too many open files", ENAMETOOLONG: "name too long", EIO: "input/output error",
};

/** Why a system call failed, in words (with the code): "no space left on device (ENOSPC)". */
export function systemReason(e: unknown): string {
  const code = (e as NodeJS.ErrnoException).code;
  if (code === undefined) return e instanceof Error ? e.message : String(e);
  const words = REASONS[code];
  return words ? `${words} (${code})` : code;
}

/** fsync a directory, so that the renames and creations in it survive a power loss. */
export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, "r");
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** fsync every file under `dir`, then each directory (children before parents). */
export async function syncTree(dir: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) await syncTree(p);
    else if (entry.isFile()) await syncDir(p);
  }
  await syncDir(dir);
}

/**
 * Check, without reading it, that a file the user named is there and is a file, with readInput's errors:
 * for commands that must refuse bad input before they write anything but read the file only later.
 */
export async function checkInput(path: string, what = "the file"): Promise<void> {
  let isFile: boolean;
  try {
    isFile = (await stat(path)).isFile();
  } catch (e) {
    throw inputError(path, what, e);
  }
  if (!isFile) throw inputError(path, what, Object.assign(new Error("not a file"), { code: "EISDIR" }));
}

/** The file as UTF-8 text, with readInput's errors. */
export const readTextInput = async (path: string, what?: string): Promise<string> =>
  new TextDecoder().decode(await readInput(path, what));

/** Parse JSON text read from `path`; invalid JSON becomes one line naming the file. */
export function parseJsonFile(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: invalid JSON (${(e as Error).message})`, { cause: e });
  }
}

/**
 * Write a file atomically: the bytes go to a temporary sibling, are flushed to disk, and the sibling is
 * renamed over `path`, so a reader sees the old file or the new one, never a part.
 */
export async function writeFileAtomic(path: string, data: string | Uint8Array): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.tmp-${process.pid}-${Math.random().toString(36).slice(2, 10)}`);
  try {
    const fh = await open(tmp, "wx");
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, path);
    await syncDir(dirname(path));
  } catch (e) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw new Error(`${path}: cannot write (${systemReason(e)})`, { cause: e });
  }
}

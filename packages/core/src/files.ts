import { readlinkSync } from "node:fs";
import { lstat, open, readdir, readFile, realpath, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, isAbsolute, join, relative } from "node:path";

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

/** The one-line error of a file the user named that cannot be read: "x.bin: cannot read the data (input/output error)". */
export function inputError(path: string, what: string, e: unknown): Error {
  const code = systemCode(e);
  return new Error(`${path}: cannot read ${what} (${(code && REASONS[code]) ?? systemReason(e)})`, { cause: e });
}

const REASONS: Record<string, string> = {
  ENOENT: "no such file",
  EISDIR: "a directory",
  ENOTDIR: "a path component is not a directory",
  EACCES: "permission denied",
  EPERM: "operation not permitted",
  EROFS: "read-only file system",
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  EEXIST: "already exists",
  EMFILE: "too many open files",
  ENAMETOOLONG: "name too long",
  EIO: "input/output error",
  ERR_FS_FILE_TOO_LARGE: "over 2 GiB, more than one read holds",
};

/**
 * The code of a failed system call ("ENOENT", "ENOSPC", Node's "ERR_FS_FILE_TOO_LARGE"), or undefined for any other
 * error, including one whose own `code` names a kind of problem (SafetensorsError's "InvalidOffset", ...).
 */
export function systemCode(e: unknown): string | undefined {
  const code = (e as NodeJS.ErrnoException | null)?.code;
  return typeof code === "string" && /^(E[A-Z0-9]+|ERR_[A-Z0-9_]+)$/.test(code) ? code : undefined;
}

/** Why a system call failed, in words (with the code): "no space left on device (ENOSPC)". */
export function systemReason(e: unknown): string {
  const code = systemCode(e);
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
export const readTextInput = async (path: string, what?: string): Promise<string> => new TextDecoder().decode(await readInput(path, what));

/**
 * Parse JSON text read from `path`; invalid JSON becomes one line naming the file. The parser's message
 * quotes the text where it failed: control characters (and the U+FFFD a binary file decodes to) in it are
 * written as \uXXXX escapes, so a binary file's bytes never reach the terminal.
 */
export function parseJsonFile(text: string, path: string): unknown {
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new Error(`${path}: invalid JSON (${printable((e as Error).message)})`, { cause: e });
  }
}

/** `text` with control characters, line separators and U+FFFD written as \uXXXX: safe on one line of a terminal. */
export const printable = (text: string): string =>
  // eslint-disable-next-line no-control-regex
  text.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufffd]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);

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

/**
 * Check a file a checkpoint directory holds before it is read: absent → false; a regular file, or a symlink that
 * stays inside the directory → true. A symlink that leaves the directory is refused (a checkpoint from elsewhere
 * must not make a command read, copy or export a file of this machine), with one exception that is said here: the
 * Hugging Face hub cache, whose `<repo>/snapshots/<revision>/<file>` are symlinks to `<repo>/blobs/<hash>`
 * (docs/formats.md, "Files a checkpoint may hold"). Anything else than a regular file (a directory, a device, a
 * FIFO) is refused too. `root` is the directory's canonical path; `display` names the file in messages.
 */
export async function checkCheckpointFile(root: string, name: string, display: string): Promise<boolean> {
  const path = join(root, name);
  const link = await lstat(path).catch((e: NodeJS.ErrnoException) => {
    if (e.code === "ENOENT" || e.code === "ENOTDIR") return null;
    throw inputError(display, "the file", e);
  });
  if (!link) return false;
  if (link.isSymbolicLink()) {
    const target = await realpath(path).catch((e: unknown) => {
      throw new Error(`${display}: a symlink to ${JSON.stringify(readlinkOr(path))} that cannot be followed (${systemReason(e)})`, { cause: e });
    });
    if (!isInside(target, root) && !hubBlob(target, root)) {
      throw new Error(`${display}: a symlink to ${target}, outside the checkpoint directory (refused: copy the file into the checkpoint)`);
    }
  }
  // What the path is: lstat's answer, or for a symlink its target's.
  const s = link.isSymbolicLink()
    ? await stat(path).catch((e: unknown) => {
        throw inputError(display, "the file", e);
      })
    : link;
  if (!s.isFile()) throw new Error(`${display}: not a regular file`);
  return true;
}

/** Whether path `child` lies strictly inside directory `parent` (both resolved the same way). */
export const isInside = (child: string, parent: string): boolean => {
  const r = relative(parent, child);
  return r !== "" && !r.startsWith("..") && !isAbsolute(r);
};

/** A file of the hub cache's blob store, seen from one of its snapshots: `<repo>/snapshots/<rev>` → `<repo>/blobs/<file>`. */
const hubBlob = (target: string, root: string): boolean =>
  basename(dirname(root)) === "snapshots" && dirname(target) === join(dirname(dirname(root)), "blobs");

function readlinkOr(path: string): string {
  try {
    return readlinkSync(path);
  } catch {
    return path;
  }
}

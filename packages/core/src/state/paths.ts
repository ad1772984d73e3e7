/** Where a checkpoint directory really is, and whether an output path can be written. */
import { lstat, readlink, realpath, stat } from "node:fs/promises";
import { basename, dirname, join, resolve } from "node:path";

/** The absolute path with symlinks resolved, for the part of it that exists: a checkpoint is known by where it really is. */
export async function canonicalPath(p: string): Promise<string> {
  const abs = resolve(p);
  try {
    return await realpath(abs);
  } catch {
    const parent = dirname(abs);
    return parent === abs ? abs : join(await canonicalPath(parent), basename(abs));
  }
}

/**
 * Refuse an output path that is, or lies under, a symlink to nothing: writing there would fail with a misleading
 * system error (ENOTDIR, EEXIST). Says which symlink and where it points, as written.
 */
export async function checkOutputPath(dir: string): Promise<void> {
  const abs = resolve(dir);
  for (let p = abs; ; p = dirname(p)) {
    if ((await lstat(p).catch(() => null))?.isSymbolicLink()) {
      const missing = await stat(p).then(
        () => false,
        (e: NodeJS.ErrnoException) => e.code === "ENOENT" || e.code === "ENOTDIR",
      );
      if (missing) throw new Error(`${p === abs ? dir : p}: a symlink to ${await readlink(p).catch(() => "?")}, which does not exist`);
    }
    if (dirname(p) === p) return;
  }
}

/**
 * Checkpoint locks between processes (docs: packages/core/README.md, "Locks and crash recovery").
 *
 * A checkpoint directory `<parent>/<name>` has one writer lock, the symlink `<parent>/.<name>.lock`, and any
 * number of reader locks, `<parent>/.<name>.reader-<pid>-<random>`. A symlink is created atomically with
 * its content (its target text: who holds it), so a lock is never seen half-written. A writer creates the
 * writer link and then looks for live readers; a reader creates its link and then looks for a live writer;
 * whichever comes second sees the first and backs off, so a writer and a reader never both hold the lock.
 * A lock whose holder is dead (its pid is gone, or now belongs to a process started at another time) is
 * stale and is removed by the next process that finds it (a reader clears stale reader locks too). Locks live
 * beside the directory, not in it, because a save replaces the directory. Where a reader's lock cannot be made
 * it reads without one: on a read-only parent, and on a full disk unless a live writer holds the lock.
 *
 * Locks are between processes: within one process, a writer ignores the process's own readers (a command
 * that loaded a checkpoint may save over it), and two writers of one directory in one process are refused.
 */
import { readFileSync } from "node:fs";
import { readdir, readlink, rename, symlink, unlink } from "node:fs/promises";
import { hostname } from "node:os";
import { basename, dirname, join } from "node:path";
import { systemReason } from "./files.js";

export type LockMode = "exclusive" | "shared";

/** Who holds a lock (the text of the lock's symlink). */
export interface LockHolder {
  pid: number;
  host: string;
  /** The process's start time (Linux: /proc/<pid>/stat field 22), to tell a reused pid from the holder. */
  start: string | null;
  /** The holder's command line, shortened. */
  command: string;
  /** ISO time the lock was taken. */
  since: string;
}

export interface CheckpointLock {
  /** The directory locked. */
  readonly path: string;
  readonly mode: LockMode;
  /**
   * Whether the lock is really held: false for a reader where the directory's parent is read-only (nobody can write
   * there) or its disk or quota is full (a reader's lock cannot be made, nor a writer's).
   */
  readonly held: boolean;
  /** For an exclusive lock: throws if another process has taken it over (it was wrongly judged stale). */
  verify(): Promise<void>;
  release(): Promise<void>;
}

/** The directory is locked by another live process; `holder` says by whom. */
export class LockedError extends Error {
  constructor(
    readonly path: string,
    readonly holder: LockHolder,
    readonly holderMode: LockMode,
  ) {
    super(`${path}: ${holderMode === "exclusive" ? "being written" : "being read"} by ${describeHolder(holder)}; try again when it has finished`);
    this.name = "LockedError";
  }
}

export const describeHolder = (h: LockHolder): string =>
  `pid ${h.pid}${h.host !== hostname() ? ` on ${h.host}` : ""} (${h.command || "unknown command"}, since ${h.since})`;

/** Start time of a process, or null where it cannot be read (not Linux, or no such process). */
export function processStart(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name (which may contain spaces and parentheses) start at field 3.
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

/** Whether the process that wrote `h` may still be running (a holder on another host always may). */
export function holderAlive(h: Pick<LockHolder, "pid" | "host" | "start">): boolean {
  if (h.host !== hostname()) return true;
  if (h.pid === process.pid) return h.start === null || h.start === ownStart();
  try {
    process.kill(h.pid, 0);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ESRCH") return false;
  }
  if (h.start !== null) {
    const now = processStart(h.pid);
    if (now !== null && now !== h.start) return false;
  }
  return true;
}

/** Whether a process id (from a temporary file's name) may still be running on this host. */
export const pidAlive = (pid: number): boolean => holderAlive({ pid, host: hostname(), start: null });

let startOfThis: string | null | undefined;
const ownStart = (): string | null => (startOfThis === undefined ? (startOfThis = processStart(process.pid)) : startOfThis);

let described: string | null = null;
/** How this process's locks describe it to others (a CLI: `staged train runs/a --steps 100`); default its argv. */
export function describeThisProcess(command: string): void {
  described = command;
}

function me(): LockHolder {
  const args =
    described ??
    process.argv
      .slice(1)
      .map((a) => basename(a))
      .join(" ");
  return {
    pid: process.pid,
    host: hostname(),
    start: ownStart(),
    command: args.length > 120 ? `${args.slice(0, 117)}...` : args,
    since: new Date().toISOString(),
  };
}

function parseHolder(text: string): LockHolder | null {
  try {
    const v = JSON.parse(text) as Partial<LockHolder>;
    if (typeof v.pid !== "number" || typeof v.host !== "string") return null;
    return {
      pid: v.pid,
      host: v.host,
      start: typeof v.start === "string" ? v.start : null,
      command: String(v.command ?? ""),
      since: String(v.since ?? ""),
    };
  } catch {
    return null;
  }
}

const writerPath = (dir: string): string => join(dirname(dir), `.${basename(dir)}.lock`);
const readerPrefix = (dir: string): string => `.${basename(dir)}.reader-`;
const random = (): string => Math.random().toString(36).slice(2, 10);
const code = (e: unknown): string | undefined => (e as NodeJS.ErrnoException).code;
/** Errors that mean the parent cannot be written: a read-only checkpoint can still be read. */
const READ_ONLY = new Set(["EACCES", "EPERM", "EROFS"]);
/** Errors that mean the lock's link cannot be made for want of space: the disk (or the user's quota) is full. */
const NO_SPACE = new Set(["ENOSPC", "EDQUOT"]);

async function readHolder(link: string): Promise<LockHolder | "gone" | "unreadable"> {
  try {
    return parseHolder(await readlink(link)) ?? "unreadable";
  } catch (e) {
    if (code(e) === "ENOENT") return "gone";
    throw e;
  }
}

/**
 * Remove a stale lock link whose text was `text`: move it aside, and delete it only if what was moved is
 * still that text; if a live lock was moved instead (taken between the read and the move), put it back.
 */
async function breakStale(link: string, text: string): Promise<void> {
  const aside = `${link}.stale-${process.pid}-${random()}`;
  try {
    await rename(link, aside);
  } catch (e) {
    if (code(e) === "ENOENT") return;
    throw e;
  }
  const moved = await readlink(aside);
  if (moved !== text) await symlink(moved, link).catch(() => undefined);
  await unlink(aside).catch(() => undefined);
}

/** Writers of a directory held by this process (a second writer in the same process is refused). */
const ownWriters = new Set<string>();

/** Whether this process holds the write lock of `dir`. */
export const ownsWriteLock = (dir: string): boolean => ownWriters.has(dir);

async function liveReaders(dir: string): Promise<LockHolder | null> {
  const parent = dirname(dir),
    prefix = readerPrefix(dir);
  let found: LockHolder | null = null;
  for (const f of await readdir(parent)) {
    if (!f.startsWith(prefix)) continue;
    const link = join(parent, f);
    let text: string;
    try {
      text = await readlink(link);
    } catch {
      continue;
    }
    const h = parseHolder(text);
    if (h && h.pid === process.pid && h.host === hostname()) continue;
    if (h && holderAlive(h)) found ??= h;
    else if (h) await unlink(link).catch(() => undefined);
  }
  return found;
}

/** Remove the reader locks of dead processes beside `dir` (best effort: a read never fails for this). */
const clearDeadReaders = (dir: string): Promise<unknown> => liveReaders(dir).catch(() => null);

/** Throws a LockedError if a live process (not this one) holds the writer lock of `dir`; breaks a stale one. */
async function noLiveWriter(dir: string, writer: string): Promise<void> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const h = await readHolder(writer);
    if (h === "gone") return;
    if (h !== "unreadable" && h.pid === process.pid && h.host === hostname()) return;
    if (h !== "unreadable" && holderAlive(h)) throw new LockedError(dir, h, "exclusive");
    await breakStale(writer, await readlink(writer).catch(() => ""));
  }
}

/**
 * Lock checkpoint directory `dir` (an absolute, canonical path: see canonicalPath) for writing
 * ("exclusive") or for reading one consistent checkpoint ("shared"). Fails at once with a LockedError
 * naming the holder when another live process holds a conflicting lock. The parent directory must exist.
 */
export async function lockCheckpoint(dir: string, mode: LockMode): Promise<CheckpointLock> {
  const self = me();
  const text = JSON.stringify(self);
  const writer = writerPath(dir);
  if (mode === "exclusive") {
    if (ownWriters.has(dir)) throw new Error(`${dir}: already being written by this process`);
    for (let attempt = 0; ; attempt++) {
      try {
        await symlink(text, writer);
        break;
      } catch (e) {
        if (READ_ONLY.has(code(e) ?? "")) throw new Error(`${dir}: cannot write here (${code(e)} creating the lock ${writer})`, { cause: e });
        if (NO_SPACE.has(code(e) ?? "")) throw new Error(`${dir}: cannot write here (${systemReason(e)} creating the lock ${writer})`, { cause: e });
        if (code(e) !== "EEXIST" || attempt > 20) throw e;
      }
      const h = await readHolder(writer);
      if (h === "gone") continue;
      if (h !== "unreadable" && holderAlive(h)) throw new LockedError(dir, h, "exclusive");
      await breakStale(writer, await readlink(writer).catch(() => ""));
    }
    const reader = await liveReaders(dir).catch(async (e) => {
      await unlink(writer).catch(() => undefined);
      throw e;
    });
    if (reader) {
      await unlink(writer).catch(() => undefined);
      throw new LockedError(dir, reader, "shared");
    }
    ownWriters.add(dir);
    let released = false;
    return {
      path: dir,
      mode,
      held: true,
      async verify() {
        const now = await readlink(writer).catch(() => null);
        if (now !== text) throw new Error(`${dir}: lost the write lock ${writer} to another process; nothing was replaced`);
      },
      async release() {
        if (released) return;
        released = true;
        ownWriters.delete(dir);
        if ((await readlink(writer).catch(() => null)) === text) await unlink(writer).catch(() => undefined);
      },
    };
  }

  const link = join(dirname(dir), `${readerPrefix(dir)}${process.pid}-${random()}`);
  const unlocked: CheckpointLock = { path: dir, mode, held: false, verify: async () => undefined, release: async () => undefined };
  try {
    await symlink(text, link);
  } catch (e) {
    if (READ_ONLY.has(code(e) ?? "")) return unlocked;
    // A full disk: read without a lock, as on a read-only directory (a writer cannot make its lock either), but
    // not while a live writer holds one taken before the disk filled.
    if (NO_SPACE.has(code(e) ?? "")) {
      await noLiveWriter(dir, writer);
      await clearDeadReaders(dir);
      return unlocked;
    }
    throw e;
  }
  try {
    await noLiveWriter(dir, writer);
  } catch (e) {
    await unlink(link).catch(() => undefined);
    throw e;
  }
  // Readers killed before releasing leave their links: each reader clears them, not only the next writer.
  await clearDeadReaders(dir);
  let released = false;
  return {
    path: dir,
    mode,
    held: true,
    verify: async () => undefined,
    async release() {
      if (released) return;
      released = true;
      await unlink(link).catch(() => undefined);
    },
  };
}

/** Run `fn` holding a lock on `dir`, released however `fn` ends. */
export async function withCheckpointLock<T>(dir: string, mode: LockMode, fn: (lock: CheckpointLock) => Promise<T>): Promise<T> {
  const lock = await lockCheckpoint(dir, mode);
  try {
    return await fn(lock);
  } finally {
    await lock.release();
  }
}

/**
 * Crash recovery of checkpoint saves (docs: packages/core/README.md, "Locks and crash recovery").
 *
 * A save of `<parent>/<name>` writes `.<name>.tmp-<pid>-<r>` (incomplete until renamed), fsyncs it, renames
 * it to `.<name>.new-<pid>-<r>` (complete), then moves the current checkpoint to `.<name>.old-<pid>-<r>`,
 * the new one to `<name>`, and deletes the old one. A kill -9 at any point leaves, besides `<name>` or not,
 * some of these siblings; the pid in each name says whose they are. Holding the directory's write lock,
 * `recoverCheckpoint` settles the leftovers of dead owners so that `<name>` is the newest complete checkpoint:
 * an incomplete `.tmp-` goes; a complete `.new-` becomes `<name>` (the previous one set aside); with no
 * `<name>` and no `.new-`, the newest `.old-` comes back; an `.old-` superseded by a complete `<name>` goes.
 * A complete checkpoint is deleted only when a newer complete one stands in its place.
 */
import { readdir, readFile, rename, rm, stat } from "node:fs/promises";
import { basename, dirname, join } from "node:path";
import { syncDir } from "./files.js";
import { pidAlive } from "./lock.js";
import { STATE_FILE } from "./state-format.js";

export type LeftoverKind = "tmp" | "new" | "old";

export interface Leftover {
  path: string;
  kind: LeftoverKind;
  /** The owner's pid; null for names of versions before locks (their owners are gone). */
  pid: number | null;
}

const escapeRe = (s: string): string => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const random = (): string => Math.random().toString(36).slice(2, 10);

/** The sibling a save of `target` by this process writes to, or moves things to. */
export const siblingPath = (target: string, kind: LeftoverKind): string =>
  join(dirname(target), `.${basename(target)}.${kind}-${process.pid}-${random()}`);

/** Every save leftover beside `target`, whoever owns it. */
export async function leftovers(target: string): Promise<Leftover[]> {
  const base = escapeRe(basename(target));
  const current = new RegExp(`^\\.${base}\\.(tmp|new|old)-(\\d+)-[a-z0-9]+$`);
  // Names written before locks existed: `.<name>.tmp-XXXXXX` and, during the swap, `<that>.old`.
  const legacy = new RegExp(`^\\.${base}\\.tmp-[A-Za-z0-9]{6}(\\.old)?$`);
  let names: string[];
  try {
    names = await readdir(dirname(target));
  } catch {
    return [];
  }
  const found: Leftover[] = [];
  for (const f of names) {
    const m = current.exec(f);
    if (m) found.push({ path: join(dirname(target), f), kind: m[1] as LeftoverKind, pid: Number(m[2]) });
    else if (legacy.test(f)) found.push({ path: join(dirname(target), f), kind: f.endsWith(".old") ? "old" : "tmp", pid: null });
  }
  return found;
}

/** Leftovers of this process's saves in progress; any other with this process's pid was orphaned by a failed save. */
const active = new Set<string>();

/** A save of this process writes `path` (a sibling from siblingPath): recovery leaves it alone until `done()`. */
export function claimSibling(path: string): { path: string; done(): void } {
  active.add(path);
  return {
    path,
    done: () => {
      active.delete(path);
    },
  };
}

const deadOwner = (l: Leftover): boolean => l.pid === null || (l.pid === process.pid ? !active.has(l.path) : !pidAlive(l.pid));

/** Whether `target` has leftovers of dead owners to settle (cheap: one readdir). */
export async function needsRecovery(target: string): Promise<boolean> {
  return (await leftovers(target)).some(deadOwner);
}

async function stepOf(dir: string): Promise<string> {
  try {
    const meta = JSON.parse(await readFile(join(dir, STATE_FILE), "utf8")) as { progress?: { step?: unknown } };
    return typeof meta.progress?.step === "number" ? ` (step ${meta.progress.step})` : "";
  } catch {
    return "";
  }
}

const mtime = async (p: string): Promise<number> => (await stat(p).catch(() => null))?.mtimeMs ?? 0;
const exists = async (p: string): Promise<boolean> => (await stat(p).catch(() => null)) !== null;

/**
 * Settle the save leftovers of dead owners beside `target` (the caller holds its write lock). Returns one
 * line per thing done, for the caller to show.
 */
export async function recoverCheckpoint(target: string): Promise<string[]> {
  const dead = (await leftovers(target)).filter(deadOwner);
  if (!dead.length) return [];
  const notes: string[] = [];
  const owner = (l: Leftover) =>
    l.pid === null ? "an earlier version" : l.pid === process.pid ? "a failed save of this process" : `pid ${l.pid}, no longer running`;
  for (const l of dead.filter((x) => x.kind === "tmp")) {
    await rm(l.path, { recursive: true, force: true });
    notes.push(`${target}: removed the incomplete save ${basename(l.path)} (${owner(l)})`);
  }
  const byAge = async (kind: LeftoverKind) => {
    const list = dead.filter((x) => x.kind === kind);
    const times = await Promise.all(list.map((l) => mtime(l.path)));
    return list
      .map((l, i) => ({ l, t: times[i]! }))
      .sort((a, b) => b.t - a.t)
      .map((x) => x.l);
  };
  const news = await byAge("new");
  const olds = (await byAge("old")).map((l) => l.path);
  let present = await exists(target);
  const newest = news[0];
  if (newest) {
    if (present) {
      const aside = siblingPath(target, "old");
      await rename(target, aside);
      olds.unshift(aside);
    }
    await rename(newest.path, target);
    await syncDir(dirname(target));
    present = true;
    notes.push(`${target}: completed an interrupted save (${owner(newest)}): the checkpoint it had written${await stepOf(target)} is now in place`);
    // An older complete save that was never put in place is superseded like an old checkpoint.
    olds.push(...news.slice(1).map((l) => l.path));
  }
  if (!present) {
    const back = olds.shift();
    if (back) {
      await rename(back, target);
      await syncDir(dirname(target));
      present = true;
      notes.push(
        `${target}: restored the previous checkpoint${await stepOf(target)} that an interrupted save had set aside (the save itself was incomplete)`,
      );
    }
  }
  if (present) {
    for (const p of olds) {
      await rm(p, { recursive: true, force: true });
      notes.push(`${target}: removed ${basename(p)}, a superseded copy left by an interrupted save`);
    }
    if (olds.length) await syncDir(dirname(target));
  }
  return notes;
}

import type { Stats } from "node:fs";
import { open, type FileHandle } from "node:fs/promises";
import { inputError } from "./files.js";

/** A size limit on a file the user names, checked before it is read. */
export interface InputLimit {
  /** The most bytes the file may hold. */
  maxBytes: number;
  /** What the file must be, for the message: "a tokenizer.json". */
  kind: string;
  /** Why the limit, or what to do instead, appended to the message. */
  why?: string;
}

/** What openInput gives to read a file in pieces (a node:fs FileHandle; typed here so the public types need no @types/node). */
export interface InputHandle {
  read(buffer: Uint8Array, offset: number, length: number, position: number): Promise<{ bytesRead: number }>;
  close(): Promise<void>;
}
/** The open file's kind and size. */
export interface InputStats {
  size: number;
  isFile(): boolean;
  isDirectory(): boolean;
}

/**
 * Open a file the user named for reading in pieces, with readInput's errors (a directory is refused here,
 * not at the first read); `stats` of the open file. The caller closes the handle.
 */
export const openInput = (path: string, what = "the file"): Promise<{ handle: InputHandle; stats: InputStats }> => openFile(path, what);

async function openFile(path: string, what: string): Promise<{ handle: FileHandle; stats: Stats }> {
  let handle: FileHandle;
  try {
    handle = await open(path, "r");
  } catch (e) {
    throw inputError(path, what, e);
  }
  try {
    const stats = await handle.stat();
    if (stats.isDirectory()) throw Object.assign(new Error("a directory"), { code: "EISDIR" });
    return { handle, stats };
  } catch (e) {
    await handle.close().catch(() => undefined);
    throw inputError(path, what, e);
  }
}

/**
 * readInput with a size limit: a file above `limit` is refused from its size, before any of it is read
 * (a pipe or device, which has no size beforehand, once read):
 *   big.json: 3000000000 bytes is too large for a tokenizer.json (limit 268435456 bytes)
 */
export async function readInputWithin(path: string, what: string, limit: InputLimit): Promise<Uint8Array> {
  const { handle, stats } = await openFile(path, what);
  try {
    if (stats.isFile()) checkInputSize(path, stats.size, limit);
    let bytes: Uint8Array;
    try {
      bytes = await handle.readFile();
    } catch (e) {
      throw inputError(path, what, e);
    }
    checkInputSize(path, bytes.byteLength, limit);
    return bytes;
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** Throw when `size` bytes are above the limit. */
export function checkInputSize(path: string, size: number, limit: InputLimit): void {
  if (size > limit.maxBytes) {
    throw new Error(`${path}: ${size} bytes is too large for ${limit.kind} (limit ${limit.maxBytes} bytes${limit.why ? `; ${limit.why}` : ""})`);
  }
}

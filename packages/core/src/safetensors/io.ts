/** Positioned reads and writes of whole buffers, in chunks the OS accepts. */
import type { FileHandle } from "node:fs/promises";
import { SafetensorsError } from "./errors.js";

/** Largest single read/write handed to the OS (Linux transfers at most ~2 GiB per call). */
const IO_CHUNK = 1 << 30;

/** Read exactly `buf.length` bytes at `position`, in chunks the OS accepts. */
export async function readFully(path: string, fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const want = Math.min(IO_CHUNK, buf.length - done);
    const { bytesRead } = await fh.read(buf, done, want, position + done);
    if (bytesRead === 0)
      throw new SafetensorsError(path, "IoError", `unexpected end of file at byte ${position + done} (file truncated while open?)`);
    done += bytesRead;
  }
}

/** Write all of `buf` at `position`. */
export async function writeFully(fh: FileHandle, buf: Uint8Array, position: number): Promise<void> {
  let done = 0;
  while (done < buf.length) {
    const want = Math.min(IO_CHUNK, buf.length - done);
    const { bytesWritten } = await fh.write(buf, done, want, position + done);
    if (bytesWritten <= 0) throw new Error("write made no progress");
    done += bytesWritten;
  }
}

// Test helper (not built): a torch.save archive from a hand-written pickle and raw storages.
import { open } from "node:fs/promises";
import { ZipWriter } from "./zip.js";

export interface RawRecord {
  name: string;
  bytes: Uint8Array;
}

/**
 * Write records (names relative to the archive folder) as torch's writer lays them out; `startAt` leaves a hole of that
 * many bytes before the first (a sparse file whose offsets need ZIP64), `forceZip64` gives every entry ZIP64 fields.
 */
export async function writeRawArchive(
  path: string,
  archive: string,
  records: readonly RawRecord[],
  startAt = 0,
  forceZip64 = false,
): Promise<number> {
  const fh = await open(path, "w");
  try {
    const zip = new ZipWriter(fh, path, forceZip64);
    zip.position = startAt;
    for (const r of records) await zip.add(`${archive}/${r.name}`, r.bytes.length, [r.bytes]);
    return await zip.finish();
  } finally {
    await fh.close();
  }
}

export const f32Bytes = (values: readonly number[]): Uint8Array => new Uint8Array(new Float32Array(values).buffer);

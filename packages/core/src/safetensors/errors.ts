/**
 * What went wrong with a safetensors file (or a checkpoint's index), for callers that react to a kind of problem
 * rather than to a message. Where the reference reader or writer (https://github.com/huggingface/safetensors,
 * `SafeTensorError` in safetensors/src/tensor.rs) has a kind for the problem, the code is its name.
 */
export type SafetensorsErrorCode =
  /** The file is shorter than the 8-byte header length. */
  | "HeaderTooSmall"
  /** The header length is above `MAX_HEADER_SIZE` (read), or the header a write would need is. */
  | "HeaderTooLarge"
  /** The header length runs past the end of the file. */
  | "InvalidHeaderLength"
  /** The header is not UTF-8. */
  | "InvalidHeader"
  /**
   * The header is not JSON as serde_json reads it, or not what serde's types take: not an object, a tensor entry
   * missing a field or holding one twice, an unknown dtype, a shape or offsets that are not non-negative integers,
   * `__metadata__` twice or not an object of strings.
   */
  | "InvalidHeaderDeserialization"
  /** A tensor name the format cannot hold: a NUL character, a lone UTF-16 surrogate, `__metadata__`, not a string. */
  | "InvalidTensorName"
  /** A `__metadata__` key or value the format cannot hold: a NUL character, a lone surrogate, not a string. */
  | "InvalidMetadata"
  /** Sorted by offsets, the tensors leave a gap or overlap, or a tensor ends before it begins. */
  | "InvalidOffset"
  /** A shape's element count, or its size in bits, overflows 64 bits. */
  | "ValidationOverflow"
  /** A tensor of a sub-byte dtype (F4, F6_*) that is not a whole number of bytes. */
  | "MisalignedSlice"
  /** A tensor's offsets span another number of bytes than its shape and dtype need, or the shape is not a shape. */
  | "TensorInvalidInfo"
  /** The tensors do not cover the file's byte buffer exactly (bytes left over, or the file is truncated). */
  | "MetadataIncompleteBuffer"
  /** No tensor of that name in the file. */
  | "TensorNotFound"
  /** A tensor given to the writer gave other bytes than its dtype and shape say (another dtype or shape, too many, too few). */
  | "InvalidTensorView"
  /** The file system refused (open, read, write), or the file changed under the reader. */
  | "IoError"
  /** Stricter than the reference: a name written twice (two tensors of one name, a `__metadata__` key, an index's key). */
  | "DuplicateKey"
  /** Stricter than the reference: an integer above 2^53 − 1, the largest a JavaScript number holds exactly. */
  | "IntegerTooLarge"
  /** A dtype with no in-memory form (F8_*, F4, F6_*, C64: read their bytes with `readRaw`), or none at all, given to decode or write. */
  | "UnsupportedDType"
  /** A tensor read after its file was closed. */
  | "Closed"
  /** A sharded checkpoint's `*.safetensors.index.json` that does not describe its shards. */
  | "InvalidIndex";

/**
 * A malformed or unreadable safetensors file (or checkpoint index), in one line that starts with the path:
 * "<file>: <problem>". `code` says which kind of problem it is.
 */
export class SafetensorsError extends Error {
  constructor(
    readonly path: string,
    readonly code: SafetensorsErrorCode,
    readonly problem: string,
  ) {
    super(`${path}: ${problem}`);
    this.name = "SafetensorsError";
  }
}

/** A value as JSON for a message, cut at about 80 characters. */
export const describe = (v: unknown): string => {
  const s = JSON.stringify(v);
  return s === undefined ? String(v) : s.length > 80 ? `${s.slice(0, 77)}...` : s;
};

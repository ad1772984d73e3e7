/** What went wrong, for callers that react to a kind of problem rather than to a message. */
export type TorchFormatErrorCode =
  /** A pickle global outside torch.load(weights_only=True)'s allow-list (or in a module it blocks). */
  | "refused-global"
  /** A pickle opcode this reader does not execute (protocol 0/1 text opcodes, out-of-band buffers, unknown bytes). */
  | "unsupported-opcode"
  /** The pickle or the zip ends before a structure it announces. */
  | "truncated"
  /** Bytes that parse but make no valid pickle or torch checkpoint (stack underflow, a SETITEMS on a list, ...). */
  | "malformed"
  /** Not a zip archive, or a zip this reader cannot use (multi-disk, encrypted, compressed storage). */
  | "zip"
  /** Valid, but outside what this package reads or writes (big-endian storages, complex or quantized dtypes). */
  | "unsupported"
  /** A record the checkpoint needs (data.pkl, a storage) is missing from the archive. */
  | "missing-record"
  /** A storage's bytes do not match the CRC-32 its archive records. */
  | "crc-mismatch"
  /** A tensor given to the writer whose bytes do not match its dtype and shape, or a value with no pickle form. */
  | "bad-value"
  /** The file system refused (open, read, write, rename). */
  | "io";

/**
 * A torch.save file that cannot be read or written, in one line that starts with the file: "<file>: <problem>"
 * (the style of core's SafetensorsError). `code` says which kind of problem it is.
 */
export class TorchFormatError extends Error {
  constructor(
    readonly path: string,
    readonly code: TorchFormatErrorCode,
    readonly problem: string,
    options?: { cause?: unknown },
  ) {
    super(`${path}: ${problem}`, options);
    this.name = "TorchFormatError";
  }
}

/** A pickle global that torch.load(weights_only=True) would not load; `global` is its dotted name ("os.system"). */
export class RefusedGlobalError extends TorchFormatError {
  constructor(
    path: string,
    readonly global: string,
  ) {
    super(path, "refused-global", `refused global ${printableName(global)} (torch.load(weights_only=True) refuses it too)`);
    this.name = "RefusedGlobalError";
  }
}

/** A name from a file, safe on one terminal line: control characters written as \uXXXX, cut at 200 characters. */
export function printableName(s: string): string {
  // eslint-disable-next-line no-control-regex
  const t = s.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufffd]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
  return t.length > 200 ? `${t.slice(0, 197)}...` : t;
}

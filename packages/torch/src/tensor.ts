/**
 * Storages and tensors of a torch.save file, read lazily: the pickle gives each tensor's dtype, shape, strides and
 * storage offset; the bytes stay in the file until asked for, and come in pieces of at most PIECE_BYTES.
 */
import { type DType, DTYPE_SIZES, type LazyTensor, PIECE_BYTES, type Tensor, TORCH_NAMES, decodeTensor } from "@staged/core";
import { TorchFormatError } from "./errors.js";
import { crc32 } from "./zip.js";

/** The dtypes this package reads and writes: core's in-memory ones (DType), named as core's TORCH_NAMES says. */
const DTYPES = Object.keys(DTYPE_SIZES) as DType[];

/** core dtype → torch dtype name. */
export const DTYPE_TO_TORCH: Readonly<Record<DType, string>> = Object.fromEntries(DTYPES.map((d) => [d, TORCH_NAMES[d]])) as Record<DType, string>;

/** torch dtype name → core dtype, for the dtypes this package reads. */
export const TORCH_TO_DTYPE: Readonly<Record<string, DType>> = Object.fromEntries(DTYPES.map((d) => [TORCH_NAMES[d], d]));

/** Where a storage's bytes are: a stored zip entry of an open file. */
export interface StorageSource {
  readonly path: string;
  /** The zip entry name ("optimizer/data/3"). */
  readonly entry: string;
  readonly dataOffset: number;
  readonly crc32: number;
  /** Fill `buf` from absolute file position `position` (a TorchFormatError when the file is closed or short). */
  read(buf: Uint8Array, position: number): Promise<void>;
}

/** A storage: one `data/<key>` record, the bytes one or more tensors view. */
export class TorchStorage {
  constructor(
    /** The record's key ("3" for `<archive>/data/3`). */
    readonly key: string,
    /** The storage's dtype by torch's name ("float32"; "uint8" for an UntypedStorage). */
    readonly torchDtype: string,
    /** The device it was saved from ("cpu", "cuda:0"): torch.load puts it back there unless told otherwise. */
    readonly location: string,
    /** Elements of `torchDtype`. */
    readonly numel: number,
    readonly byteLength: number,
    readonly source: StorageSource,
  ) {}

  /**
   * Bytes [from, to) in order, in pieces of at most `maxPieceBytes`, each read into fresh memory or into the memory
   * `buffer(n)` gives (see core's LazyTensor.streamBytes). Reading the whole storage checks its CRC-32 at the end.
   */
  async *stream(from = 0, to = this.byteLength, buffer?: (bytes: number) => Uint8Array, maxPieceBytes = PIECE_BYTES): AsyncGenerator<Uint8Array> {
    if (!(from >= 0 && from <= to && to <= this.byteLength)) throw new RangeError(`bytes [${from}, ${to}) of a storage of ${this.byteLength}`);
    const whole = from === 0 && to === this.byteLength;
    let crc = 0;
    for (let at = from; at < to; at += maxPieceBytes) {
      const n = Math.min(maxPieceBytes, to - at);
      // Fresh memory is not zeroed first: the read overwrites every byte (and a short read is an error).
      const buf = buffer?.(n).subarray(0, n) ?? new Uint8Array(Buffer.allocUnsafeSlow(n).buffer, 0, n);
      await this.source.read(buf, this.source.dataOffset + at);
      if (whole) crc = crc32(buf, crc);
      yield buf;
    }
    if (whole && crc !== this.source.crc32) {
      throw new TorchFormatError(this.source.path, "crc-mismatch", `${this.source.entry} does not match its CRC-32 (the file is damaged)`);
    }
  }

  /** Bytes [from, to) in one fresh buffer. */
  async read(from = 0, to = this.byteLength): Promise<Uint8Array> {
    const out = new Uint8Array(Buffer.allocUnsafeSlow(to - from).buffer, 0, to - from);
    let at = 0;
    // Each piece is read straight into its place in `out`.
    for await (const p of this.stream(from, to, (n) => out.subarray(at, at + n))) at += p.length;
    return out;
  }
}

const shapeText = (s: readonly number[]): string => `[${s.join(", ")}]`;

/**
 * A tensor of a torch.save file (`torch._utils._rebuild_tensor_v2` and kin): a view of `storage` with a shape, strides
 * and an offset, read on demand. It is a core LazyTensor, so a TrainingState can hold it as it holds a safetensors
 * tensor: `read` decodes (F16/BF16 widened to float32), `readBytes`/`streamBytes` give the stored little-endian bytes.
 * A non-contiguous view (strides other than row-major) reads nothing: those calls fail naming its strides, and
 * `contiguous` says so beforehand. Written back (writeTorchFile), it copies its whole storage and keeps its view.
 */
export class TorchTensor implements LazyTensor {
  readonly numel: number;
  /** Whether the strides are row-major for the shape (dimensions of size 1 aside, as torch's is_contiguous). */
  readonly contiguous: boolean;

  constructor(
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly stride: readonly number[],
    /** In elements of `dtype`. */
    readonly storageOffset: number,
    readonly storage: TorchStorage,
    readonly requiresGrad: boolean,
  ) {
    this.numel = shape.reduce((a, b) => a * b, 1);
    let expected = 1;
    let contiguous = true;
    for (let i = shape.length - 1; i >= 0; i--) {
      if (shape[i] !== 1 && stride[i] !== expected) contiguous = false;
      expected *= shape[i]!;
    }
    this.contiguous = contiguous || this.numel === 0;
  }

  /** The dtype by torch's name ("float32"). */
  get torchDtype(): string {
    return DTYPE_TO_TORCH[this.dtype];
  }
  get byteLength(): number {
    return this.numel * DTYPE_SIZES[this.dtype];
  }

  private range(): [number, number] {
    if (!this.contiguous) {
      throw new TorchFormatError(
        this.storage.source.path,
        "unsupported",
        `tensor of shape ${shapeText(this.shape)} in ${this.storage.source.entry} is not contiguous (strides ${shapeText(this.stride)}); its bytes are not read`,
      );
    }
    const start = this.storageOffset * DTYPE_SIZES[this.dtype];
    return [start, start + this.byteLength];
  }

  async readBytes(): Promise<Uint8Array> {
    const [a, b] = this.range();
    return this.storage.read(a, b);
  }

  streamBytes(buffer?: (bytes: number) => Uint8Array): AsyncIterable<Uint8Array> {
    const [a, b] = this.range();
    return this.storage.stream(a, b, buffer);
  }

  async read(): Promise<Tensor> {
    return decodeTensor(this.dtype, this.shape, await this.readBytes());
  }
}

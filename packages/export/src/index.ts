export {
  exportModel,
  readManifest,
  sourceFingerprint,
  EXPORT_VERSION,
  EXTERNAL_DATA_BYTES,
  MANIFEST,
  MANIFEST_FORMAT,
  ONNX_FILES,
  type ExportDType,
  type ExportManifest,
  type ExportOptions,
  type ExportProgress,
  type ExportResult,
} from "./export.js";
export { ensureExport, exportCachePath, isExportDir, CACHE_SUFFIX, type EnsureExportOptions, type EnsuredExport } from "./cache.js";
export {
  generate,
  loadGenerator,
  checkSamplingOptions,
  filterTopKTopP,
  type GenerateOptions,
  type GenerateResult,
  type GenerateTiming,
  type Generator,
  type GeneratorOptions,
  type SamplingOptions,
} from "./generate.js";
export { rotaryTables } from "@staged/core";
export { decoderGraph, IO, AXES, type DecoderGraph, type DecoderGraphOptions } from "./graph.js";
// The ONNX layer is @staged/trainer-ort's (GraphBuilder, one opset, one writer); its names as the export has given them.
export {
  writeOnnxModel,
  decodeOnnxModel,
  OPSET as EXPORT_OPSET,
  IR_VERSION as EXPORT_IR_VERSION,
  ONNX_TYPE as ELEM_TYPE,
  type DType as ElemType,
  type Dim,
  type Initializer,
  type WriteOptions,
} from "@staged/trainer-ort";

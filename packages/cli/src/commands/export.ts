import { existsSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { Option, type Command } from "commander";
import { formatBytes } from "@staged/core";
import { exportModel, type ExportDType } from "@staged/export";
import { loadHfTokenizer } from "@staged/trainer-ort";
import { createOutput, runAction } from "../output.js";
import { abandonOnInterrupt, Interrupted } from "../interrupt.js";
import { createProgress } from "../progress.js";
import type { GlobalOptions } from "../main.js";
import { createCliRegistry } from "../registry.js";

interface ExportCliOptions {
  out?: string;
  dtype?: ExportDType;
}

/** Where `staged export <dir>` writes without --out: the sibling `<dir>-onnx`. */
export const defaultExportDir = (dir: string): string => join(dirname(resolve(dir)), `${basename(resolve(dir))}-onnx`);

export function registerExport(program: Command): void {
  program
    .command("export <dir>")
    .description(
      "export a checkpoint to ONNX with a KV cache, in a directory transformers.js (@huggingface/transformers) loads: onnx/model.onnx, config, tokenizer",
    )
    .option("--out <dir>", "the export directory (default: <dir>-onnx beside the checkpoint); an earlier export there is replaced")
    .addOption(new Option("--dtype <d>", "fp32 (default): onnx/model.onnx; fp16: onnx/model_fp16.onnx as well").choices(["fp32", "fp16"]))
    .action(async (dir: string, o: ExportCliOptions, cmd: Command) => {
      const g = cmd.optsWithGlobals<GlobalOptions>();
      await runAction(Boolean(g.debug), async () => {
        const out = o.out ?? defaultExportDir(dir);
        const t0 = performance.now();
        // A tokenizer.json that does not load would make an export transformers.js cannot load: refused before writing.
        if (existsSync(join(dir, "tokenizer.json"))) await loadHfTokenizer(join(dir, "tokenizer.json"));
        let progress: ReturnType<typeof createProgress> | null = null,
          file = "";
        // Ctrl-C: the export is abandoned at the next piece written and its temporary directory removed.
        const r = await abandonOnInterrupt(
          out,
          "the export",
          `its temporary directory is left beside ${out} for the next export to clear`,
          (signal) =>
            exportModel(dir, out, {
              registry: createCliRegistry(),
              dtype: o.dtype ?? "fp32",
              // Progress on stderr (also with --json) for exports that take more than a second.
              onProgress: (p) => {
                if (signal.aborted) throw new Interrupted(`${out}: interrupted: nothing was written`);
                if (p.file !== file) {
                  progress?.stop();
                  file = p.file;
                  progress = createProgress(`writing ${p.file}`, "MB", 1e6);
                }
                progress?.update(p.bytes, p.totalBytes);
              },
            }),
        ).finally(() => progress?.stop());
        const result = {
          checkpoint: resolve(dir),
          out: r.dir,
          files: r.files,
          bytes: r.bytes,
          dtypes: r.manifest.dtypes,
          externalData: Object.keys(r.manifest.externalData).length > 0,
          architecture: r.manifest.architecture,
          seconds: (performance.now() - t0) / 1000,
        };
        createOutput(Boolean(g.json)).result(
          result,
          `exported ${dir} (${r.manifest.architecture}) to ${r.dir}: ${r.files.filter((f) => f.startsWith("onnx/")).join(", ")}, ${formatBytes(r.bytes)}\n` +
            `load it with transformers.js: pipeline("text-generation", ${JSON.stringify(r.dir)}), or run staged generate ${r.dir} --prompt "..."`,
        );
      });
    });
}

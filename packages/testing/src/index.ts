/**
 * Fixtures shared by the tests and benchmarks of several packages, so each tiny model or run spec is written once.
 * A leaf: it depends on no staged package (core's own tests use it), only on Node and vitest.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll } from "vitest";

/** A tiny GPT-2 config.json (2 layers, width 8, 2 heads): growth and the CLI in milliseconds. */
export const TINY_GPT2 = { model_type: "gpt2", n_layer: 2, n_embd: 8, n_head: 2, vocab_size: 16, n_positions: 8 } as const;

/** A tiny Llama config.json with grouped-query attention (4 query heads over 2 key/value heads), untied. */
export const TINY_LLAMA = {
  model_type: "llama",
  hidden_size: 16,
  intermediate_size: 24,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  num_key_value_heads: 2,
  vocab_size: 40,
  max_position_embeddings: 32,
} as const;

/** One tiny config per built-in architecture, with its name: a test that loops over them covers each family. */
export const TINY_CONFIGS = [
  ["gpt2", TINY_GPT2],
  ["llama", TINY_LLAMA],
] as const;

/**
 * The JSON of a tiny `staged run` spec over the text file `data`: a 1-layer width-16 GPT-2 that grows in width at 40%
 * of a 6e8-FLOP budget, evaluated every 4 steps, on one thread; `over` replaces fields. Seconds on 2 cores.
 */
export function tinyRunSpec(data: string, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    name: "w",
    data,
    context: 16,
    batch: 4,
    optimizer: { lr: 3e-3 },
    schedule: { kind: "constant", warmup: 2 },
    eval: { every: 4, blocks: 4 },
    budget: { flops: 6e8 },
    model: { layers: 1, dModel: 16, heads: 2 },
    stages: [{ grow: "width", at: { fraction: 0.4 }, rewarmup: 2 }],
    threads: 1,
    ...over,
  };
}

/**
 * A fresh directory under the system's temporary one for the test file that calls this (made before its tests, removed
 * after them): the returned function gives its path.
 */
export function useTempDir(prefix: string): () => string {
  let dir: string | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), prefix));
  });
  afterAll(() => (dir ? rm(dir, { recursive: true, force: true }) : undefined));
  return () => {
    if (!dir) throw new Error(`the temporary directory ${prefix}… is made before the tests (beforeAll): ask for it inside one`);
    return dir;
  };
}

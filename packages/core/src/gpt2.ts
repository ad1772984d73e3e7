import { Rng, deriveSeed } from "./rng.js";
import { Tensor } from "./tensor.js";
import {
  dropoutProbability,
  initWeights,
  type ArchitecturePlugin,
  type AxisSpace,
  type DecoderSpec,
  type InitShape,
  type ParamSpec,
} from "./plugins.js";
import { checkModelSize, type ShapeNames } from "./limits.js";
import type { ModelShape } from "./types.js";

/** HF GPT2Config defaults (transformers/models/gpt2/configuration_gpt2.py). */
const DEFAULTS: Record<string, unknown> = {
  vocab_size: 50257,
  n_positions: 1024,
  n_embd: 768,
  n_layer: 12,
  n_head: 12,
  n_inner: null,
  activation_function: "gelu_new",
  resid_pdrop: 0.1,
  embd_pdrop: 0.1,
  attn_pdrop: 0.1,
  layer_norm_epsilon: 1e-5,
  initializer_range: 0.02,
  scale_attn_weights: true,
  scale_attn_by_inverse_layer_idx: false,
  reorder_and_upcast_attn: false,
  bos_token_id: 50256,
  eos_token_id: 50256,
  tie_word_embeddings: true,
};

/** What a fresh GPT-2 needs: the shape, plus whether the output layer is tied to the token embedding. */
export interface Gpt2InitOptions {
  layers: number;
  dModel: number;
  heads: number;
  ffn?: number;
  vocab: number;
  context: number;
  tie: boolean;
}

/** The HF GPT-2 config.json of a freshly initialized model (`staged init`, `staged run`). */
export function gpt2InitConfig(o: Gpt2InitOptions): Record<string, unknown> {
  return initConfig(o, o.tie);
}

function initConfig(o: InitShape, tie: boolean): Record<string, unknown> {
  if (o.kvHeads !== undefined && o.kvHeads !== o.heads)
    throw new Error(`gpt2 has one key/value head per query head: kv-heads ${o.kvHeads} ≠ heads ${o.heads}`);
  const p = dropoutProbability(o.dropout ?? 0, "dropout");
  return {
    model_type: "gpt2",
    architectures: ["GPT2LMHeadModel"],
    n_layer: o.layers,
    n_embd: o.dModel,
    n_head: o.heads,
    n_inner: o.ffn ?? null,
    vocab_size: o.vocab,
    n_positions: o.context,
    tie_word_embeddings: tie,
    // GPT-2's 50256 is outside a small vocabulary; the byte-level tokenizer has no special tokens.
    bos_token_id: null,
    eos_token_id: null,
    // Written even when 0 (HF's default is 0.1), so transformers trains it the way the trainer does.
    resid_pdrop: p,
    embd_pdrop: p,
    attn_pdrop: p,
  };
}

/** GPT-2's dropout fields (HF GPT2Config), in the order DecoderSpec.dropout names them. */
const DROPOUT_FIELDS = ["embd_pdrop", "attn_pdrop", "resid_pdrop"] as const;

const positiveInt = (config: Record<string, unknown>, key: string, file: string): number => {
  const v = config[key];
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1) {
    throw new Error(`${file}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
};

/** The config's keys for each shape field, for size messages. */
const NAMES: ShapeNames = { layers: "n_layer", dModel: "n_embd", heads: "n_head", ffn: "n_inner", vocab: "vocab_size", context: "n_positions" };

/** Distinct trainable values, by arithmetic: the tied output layer once, the causal-mask buffers never. */
function countParams(s: ModelShape, tied: boolean): number {
  const d = s.dModel;
  // ln_1, c_attn, c_proj, ln_2, c_fc, mlp.c_proj: weights and biases.
  const block = 2 * d + (3 * d * d + 3 * d) + (d * d + d) + 2 * d + (d * s.ffn + s.ffn) + (s.ffn * d + d);
  return (s.vocab + s.context) * d + s.layers * block + 2 * d + (tied ? 0 : s.vocab * d);
}

/** The config with HF's defaults and its shape, checked field by field but not for size. */
function readConfig(raw: Record<string, unknown>, file: string) {
  if (raw.model_type !== undefined && raw.model_type !== "gpt2") {
    throw new Error(`${file}: model_type "${String(raw.model_type)}" is not gpt2`);
  }
  const config: Record<string, unknown> = { ...DEFAULTS, ...raw };
  const layers = positiveInt(config, "n_layer", file);
  const dModel = positiveInt(config, "n_embd", file);
  const heads = positiveInt(config, "n_head", file);
  const vocab = positiveInt(config, "vocab_size", file);
  const context = positiveInt(config, "n_positions", file);
  const ffn = config.n_inner === null ? 4 * dModel : positiveInt(config, "n_inner", file);
  if (dModel % heads !== 0) throw new Error(`${file}: n_embd ${dModel} is not divisible by n_head ${heads}`);
  const eps = config.layer_norm_epsilon;
  if (typeof eps !== "number" || !(eps > 0)) throw new Error(`${file}: "layer_norm_epsilon" must be a positive number`);
  if (typeof config.tie_word_embeddings !== "boolean") throw new Error(`${file}: "tie_word_embeddings" must be a boolean`);
  for (const key of DROPOUT_FIELDS) dropoutProbability(config[key], `${file}: "${key}"`);
  const shape: ModelShape = { layers, dModel, heads, headDim: dModel / heads, ffn, vocab, context };
  return { config, shape };
}

/** Also checks the size against MODEL_LIMITS, before anything builds a list per layer. */
function parseConfig(raw: Record<string, unknown>, file = "config.json") {
  const parsed = readConfig(raw, file);
  const names = parsed.config.n_inner === null ? { ...NAMES, ffn: "ffn" } : NAMES;
  checkModelSize(file, parsed.shape, countParams(parsed.shape, parsed.config.tie_word_embeddings !== false), { names });
  return parsed;
}

function parameterCount(config: Record<string, unknown>): number {
  const { config: c, shape } = readConfig(config, "config");
  return countParams(shape, c.tie_word_embeddings !== false);
}

function withShape(base: Record<string, unknown>, s: ModelShape): Record<string, unknown> {
  if (s.heads * s.headDim !== s.dModel) throw new Error(`shape: heads ${s.heads} × headDim ${s.headDim} ≠ dModel ${s.dModel}`);
  return {
    ...DEFAULTS,
    ...base,
    model_type: "gpt2",
    architectures: ["GPT2LMHeadModel"],
    n_layer: s.layers,
    n_embd: s.dModel,
    n_head: s.heads,
    n_inner: s.ffn === 4 * s.dModel ? null : s.ffn,
    vocab_size: s.vocab,
    n_positions: s.context,
  };
}

function params(config: Record<string, unknown>): ParamSpec[] {
  const { shape: s } = parseConfig(config);
  const d = s.dModel;
  type Extra = Partial<Pick<ParamSpec, "fused" | "writesResidual" | "feedsOutput">>;
  const vec = (name: string, role: ParamSpec["role"], layer: number | null, n: number, space: AxisSpace, extra: Extra = {}): ParamSpec => ({
    name,
    role,
    layer,
    shape: [n],
    layout: "vector",
    axes: [space],
    decay: false,
    ...extra,
  });
  // Conv1D [in, out]: y = x W + b.
  const conv = (
    name: string,
    role: ParamSpec["role"],
    layer: number,
    rows: number,
    cols: number,
    axes: [AxisSpace, AxisSpace],
    extra: Extra = {},
  ): ParamSpec => ({ name, role, layer, shape: [rows, cols], layout: "conv1d", axes, decay: true, ...extra });
  const qkv = { fused: ["q", "k", "v"] as const };
  const list: ParamSpec[] = [
    {
      name: "transformer.wte.weight",
      role: "embed.tokens",
      layer: null,
      shape: [s.vocab, d],
      layout: "embedding",
      axes: ["vocab", "model"],
      decay: true,
    },
    {
      name: "transformer.wpe.weight",
      role: "embed.positions",
      layer: null,
      shape: [s.context, d],
      layout: "embedding",
      axes: ["positions", "model"],
      decay: true,
    },
  ];
  for (let i = 0; i < s.layers; i++) {
    const p = `transformer.h.${i}.`;
    list.push(
      vec(`${p}ln_1.weight`, "attn.norm.weight", i, d, "model"),
      vec(`${p}ln_1.bias`, "attn.norm.bias", i, d, "model"),
      conv(`${p}attn.c_attn.weight`, "attn.qkv.weight", i, d, 3 * d, ["model", "qkv"], qkv),
      vec(`${p}attn.c_attn.bias`, "attn.qkv.bias", i, 3 * d, "qkv", qkv),
      conv(`${p}attn.c_proj.weight`, "attn.out.weight", i, d, d, ["heads", "model"], { writesResidual: true }),
      vec(`${p}attn.c_proj.bias`, "attn.out.bias", i, d, "model", { writesResidual: true }),
      vec(`${p}ln_2.weight`, "mlp.norm.weight", i, d, "model"),
      vec(`${p}ln_2.bias`, "mlp.norm.bias", i, d, "model"),
      conv(`${p}mlp.c_fc.weight`, "mlp.in.weight", i, d, s.ffn, ["model", "ffn"]),
      vec(`${p}mlp.c_fc.bias`, "mlp.in.bias", i, s.ffn, "ffn"),
      conv(`${p}mlp.c_proj.weight`, "mlp.out.weight", i, s.ffn, d, ["ffn", "model"], { writesResidual: true }),
      vec(`${p}mlp.c_proj.bias`, "mlp.out.bias", i, d, "model", { writesResidual: true }),
    );
  }
  list.push(
    vec("transformer.ln_f.weight", "final_norm.weight", null, d, "model", { feedsOutput: true }),
    vec("transformer.ln_f.bias", "final_norm.bias", null, d, "model", { feedsOutput: true }),
  );
  if (config.tie_word_embeddings === false) {
    list.push({
      name: "lm_head.weight",
      role: "lm_head.weight",
      layer: null,
      shape: [s.vocab, d],
      layout: "linear",
      axes: ["vocab", "model"],
      decay: true,
    });
  }
  return list;
}

/** GPT2Model checkpoints lack the `transformer.` prefix; the causal-mask buffers are not parameters. */
function canonicalName(name: string): string | null {
  if (/(^|\.)attn\.(bias|masked_bias)$/.test(name)) return null;
  if (name === "lm_head.weight" || name.startsWith("transformer.")) return name;
  return `transformer.${name}`;
}

/** HF GPT2PreTrainedModel._init_weights for one parameter: N(0, σ) weights, c_proj weights N(0, σ/√(2L)), LN 1/0, biases 0. */
function initParam(config: Record<string, unknown>, p: ParamSpec, seed: number): Tensor {
  const { shape } = parseConfig(config);
  const sigma = typeof config.initializer_range === "number" ? config.initializer_range : 0.02;
  const t = Tensor.zeros("F32", p.shape);
  if (p.role.endsWith("norm.weight")) t.f32.fill(1);
  else if (p.layout !== "vector") {
    const std = p.name.endsWith("c_proj.weight") ? sigma / Math.sqrt(2 * shape.layers) : sigma;
    new Rng(deriveSeed(seed, p.name)).fillNormal(t.f32, 0, std);
  }
  return t;
}

/** HF activations equal to 0.5x(1 + tanh(√(2/π)(x + 0.044715x³))). */
const TANH_GELUS = new Set(["gelu_new", "gelu_pytorch_tanh", "gelu_fast"]);

/**
 * GPT2LMHeadModel's forward pass, as the trainer builds it; dropout where modeling_gpt2.py applies it:
 * embd_pdrop on wte + wpe, attn_pdrop on the attention probabilities, resid_pdrop on the attention's and the
 * MLP's c_proj outputs.
 */
function decoder(raw: Record<string, unknown>): DecoderSpec {
  const { config: c, shape } = parseConfig(raw);
  const act = String(c.activation_function);
  if (!TANH_GELUS.has(act)) throw new Error(`gpt2: activation_function "${act}" is not supported (supported: ${[...TANH_GELUS].join(", ")})`);
  if (c.reorder_and_upcast_attn === true) throw new Error("gpt2: reorder_and_upcast_attn is not supported");
  return {
    norm: { kind: "layernorm", eps: c.layer_norm_epsilon as number },
    positions: { kind: "learned" },
    // HF: scores / √d_head (scale_attn_weights), and / (layer + 1) with scale_attn_by_inverse_layer_idx.
    attention: {
      scale: c.scale_attn_weights === false ? 1 : 1 / Math.sqrt(shape.headDim),
      scaleByInverseLayer: c.scale_attn_by_inverse_layer_idx === true,
    },
    mlp: { kind: "gelu_tanh" },
    tiedOutput: c.tie_word_embeddings !== false,
    dropout: { embedding: c.embd_pdrop as number, attention: c.attn_pdrop as number, residual: c.resid_pdrop as number },
  };
}

export const gpt2: ArchitecturePlugin = {
  name: "gpt2",
  modelTypes: ["gpt2"],
  parseConfig,
  withShape,
  parameterCount,
  params,
  canonicalName,
  initParam,
  init: (config, seed) => initWeights(params(config), (p) => initParam(config, p, seed)),
  decoder,
  initConfig,
  tiedByDefault: true,
};

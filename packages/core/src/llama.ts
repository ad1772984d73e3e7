/**
 * The Llama family: HF LlamaForCausalLM (model_type llama), MistralForCausalLM (mistral) and
 * Qwen2ForCausalLM (qwen2). One pre-norm decoder: RMSNorm, rotary embeddings (HF's rotate-half), grouped-query
 * attention with separate q/k/v projections (biases on q/k/v for qwen2 or `attention_bias`), SwiGLU MLP
 * (gate, up, down), untied output layer by default. Defaults are HF's (transformers/models/<name>/configuration_<name>.py).
 */
import { Rng, deriveSeed } from "./rng.js";
import { Tensor } from "./tensor.js";
import { checkModelSize, type ShapeNames } from "./limits.js";
import {
  dropoutProbability,
  initWeights,
  type ArchitecturePlugin,
  type AxisSpace,
  type DecoderSpec,
  type InitShape,
  type ParamRole,
  type ParamSpec,
} from "./plugins.js";
import type { ModelShape } from "./types.js";

const COMMON: Record<string, unknown> = {
  hidden_act: "silu",
  initializer_range: 0.02,
  rms_norm_eps: 1e-6,
  use_cache: true,
  tie_word_embeddings: false,
  rope_theta: 10000.0,
  rope_scaling: null,
  attention_dropout: 0.0,
  num_key_value_heads: null,
  head_dim: null,
};

/** HF's defaults per model_type. */
const DEFAULTS: Record<string, Record<string, unknown>> = {
  llama: {
    ...COMMON,
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 11008,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    max_position_embeddings: 2048,
    attention_bias: false,
    mlp_bias: false,
    bos_token_id: 1,
    eos_token_id: 2,
    pretraining_tp: 1,
  },
  mistral: {
    ...COMMON,
    vocab_size: 32000,
    hidden_size: 4096,
    intermediate_size: 14336,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 8,
    max_position_embeddings: 4096 * 32,
    sliding_window: 4096,
    bos_token_id: 1,
    eos_token_id: 2,
  },
  qwen2: {
    ...COMMON,
    vocab_size: 151936,
    hidden_size: 4096,
    intermediate_size: 22016,
    num_hidden_layers: 32,
    num_attention_heads: 32,
    num_key_value_heads: 32,
    max_position_embeddings: 32768,
    use_sliding_window: false,
    sliding_window: 4096,
    max_window_layers: 28,
  },
};

const CAUSAL_LM: Record<string, string> = { llama: "LlamaForCausalLM", mistral: "MistralForCausalLM", qwen2: "Qwen2ForCausalLM" };

const NAMES: ShapeNames = {
  layers: "num_hidden_layers",
  dModel: "hidden_size",
  heads: "num_attention_heads",
  ffn: "intermediate_size",
  vocab: "vocab_size",
  context: "max_position_embeddings",
  kvHeads: "num_key_value_heads",
  headDim: "head_dim",
};

const positiveInt = (config: Record<string, unknown>, key: string, file: string): number => {
  const v = config[key];
  if (typeof v !== "number" || !Number.isInteger(v) || v < 1)
    throw new Error(`${file}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  return v;
};

/** Which projections have biases: qwen2's q/k/v always; llama's and mistral's per `attention_bias` / `mlp_bias`. */
function biases(config: Record<string, unknown>): { qkv: boolean; out: boolean; mlp: boolean } {
  if (config.model_type === "qwen2") return { qkv: true, out: false, mlp: false };
  const attn = config.attention_bias === true;
  return { qkv: attn, out: attn, mlp: config.mlp_bias === true };
}

function readConfig(raw: Record<string, unknown>, file: string) {
  const type = String(raw.model_type ?? "llama");
  const defaults = DEFAULTS[type];
  if (!defaults) throw new Error(`${file}: model_type "${type}" is not one of the Llama family (${Object.keys(DEFAULTS).join(", ")})`);
  const config: Record<string, unknown> = { ...defaults, ...raw, model_type: type };
  const layers = positiveInt(config, "num_hidden_layers", file);
  const dModel = positiveInt(config, "hidden_size", file);
  const heads = positiveInt(config, "num_attention_heads", file);
  const kvHeads = config.num_key_value_heads === null ? heads : positiveInt(config, "num_key_value_heads", file);
  const headDim = config.head_dim === null ? dModel / heads : positiveInt(config, "head_dim", file);
  if (!Number.isInteger(headDim))
    throw new Error(`${file}: hidden_size ${dModel} is not divisible by num_attention_heads ${heads} (and no head_dim is given)`);
  if (heads % kvHeads !== 0) throw new Error(`${file}: num_attention_heads ${heads} is not a multiple of num_key_value_heads ${kvHeads}`);
  if (headDim % 2 !== 0) throw new Error(`${file}: head_dim ${headDim} must be even for rotary embeddings`);
  const ffn = positiveInt(config, "intermediate_size", file);
  const vocab = positiveInt(config, "vocab_size", file);
  const context = positiveInt(config, "max_position_embeddings", file);
  for (const key of ["rms_norm_eps", "rope_theta"]) {
    const v = config[key];
    if (typeof v !== "number" || !(v > 0)) throw new Error(`${file}: "${key}" must be a positive number, got ${JSON.stringify(v)}`);
  }
  if (typeof config.tie_word_embeddings !== "boolean") throw new Error(`${file}: "tie_word_embeddings" must be a boolean`);
  dropoutProbability(config.attention_dropout, `${file}: "attention_dropout"`);
  const shape: ModelShape = { layers, dModel, heads, headDim, ffn, vocab, context, kvHeads, gatedMlp: true };
  return { config, shape };
}

/** Distinct trainable values, by arithmetic (the tied output layer once; rotary buffers are not parameters). */
function countParams(s: ModelShape, config: Record<string, unknown>): number {
  const d = s.dModel,
    q = s.heads * s.headDim,
    kv = (s.kvHeads ?? s.heads) * s.headDim;
  const b = biases(config);
  const attn = d * q + 2 * d * kv + q * d + (b.qkv ? q + 2 * kv : 0) + (b.out ? d : 0);
  const mlp = 3 * d * s.ffn + (b.mlp ? 2 * s.ffn + d : 0);
  return s.vocab * d + s.layers * (2 * d + attn + mlp) + d + (config.tie_word_embeddings === true ? 0 : s.vocab * d);
}

function parseConfig(raw: Record<string, unknown>, file = "config.json") {
  const parsed = readConfig(raw, file);
  checkModelSize(file, parsed.shape, countParams(parsed.shape, parsed.config), { names: NAMES });
  return parsed;
}

function parameterCount(config: Record<string, unknown>): number {
  const { config: c, shape } = readConfig(config, "config");
  return countParams(shape, c);
}

function withShape(base: Record<string, unknown>, s: ModelShape): Record<string, unknown> {
  const type = String(base.model_type ?? "llama");
  const defaults = DEFAULTS[type] ?? DEFAULTS.llama!;
  const kvHeads = s.kvHeads ?? s.heads;
  const { head_dim: _h, ...rest } = { ...defaults, ...base };
  // head_dim is written only where it is not hidden_size / heads (older transformers versions lack it).
  const headDim = s.headDim * s.heads === s.dModel && (base.head_dim ?? null) === null ? {} : { head_dim: s.headDim };
  return {
    ...rest,
    ...headDim,
    model_type: type,
    architectures: [CAUSAL_LM[type] ?? "LlamaForCausalLM"],
    num_hidden_layers: s.layers,
    hidden_size: s.dModel,
    num_attention_heads: s.heads,
    num_key_value_heads: kvHeads,
    intermediate_size: s.ffn,
    vocab_size: s.vocab,
    max_position_embeddings: s.context,
  };
}

function params(config: Record<string, unknown>): ParamSpec[] {
  const { config: c, shape: s } = parseConfig(config);
  const d = s.dModel,
    q = s.heads * s.headDim,
    kv = (s.kvHeads ?? s.heads) * s.headDim;
  const b = biases(c);
  type Extra = Partial<Pick<ParamSpec, "writesResidual" | "feedsOutput">>;
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
  // torch.nn.Linear [out, in]: y = x Wᵀ + b.
  const linear = (
    name: string,
    role: ParamSpec["role"],
    layer: number,
    out: number,
    inp: number,
    axes: [AxisSpace, AxisSpace],
    extra: Extra = {},
  ): ParamSpec => ({ name, role, layer, shape: [out, inp], layout: "linear", axes, decay: true, ...extra });
  const list: ParamSpec[] = [
    {
      name: "model.embed_tokens.weight",
      role: "embed.tokens",
      layer: null,
      shape: [s.vocab, d],
      layout: "embedding",
      axes: ["vocab", "model"],
      decay: true,
    },
  ];
  for (let i = 0; i < s.layers; i++) {
    const p = `model.layers.${i}.`;
    list.push(vec(`${p}input_layernorm.weight`, "attn.norm.weight", i, d, "model"));
    for (const [part, n, space] of [
      ["q", q, "heads"],
      ["k", kv, "kvHeads"],
      ["v", kv, "kvHeads"],
    ] as const) {
      list.push(linear(`${p}self_attn.${part}_proj.weight`, `attn.${part}.weight`, i, n, d, [space, "model"]));
      if (b.qkv) list.push(vec(`${p}self_attn.${part}_proj.bias`, `attn.${part}.bias`, i, n, space));
    }
    list.push(linear(`${p}self_attn.o_proj.weight`, "attn.out.weight", i, d, q, ["model", "heads"], { writesResidual: true }));
    if (b.out) list.push(vec(`${p}self_attn.o_proj.bias`, "attn.out.bias", i, d, "model", { writesResidual: true }));
    list.push(vec(`${p}post_attention_layernorm.weight`, "mlp.norm.weight", i, d, "model"));
    list.push(linear(`${p}mlp.gate_proj.weight`, "mlp.gate.weight", i, s.ffn, d, ["ffn", "model"]));
    if (b.mlp) list.push(vec(`${p}mlp.gate_proj.bias`, "mlp.gate.bias", i, s.ffn, "ffn"));
    list.push(linear(`${p}mlp.up_proj.weight`, "mlp.in.weight", i, s.ffn, d, ["ffn", "model"]));
    if (b.mlp) list.push(vec(`${p}mlp.up_proj.bias`, "mlp.in.bias", i, s.ffn, "ffn"));
    list.push(linear(`${p}mlp.down_proj.weight`, "mlp.out.weight", i, d, s.ffn, ["model", "ffn"], { writesResidual: true }));
    if (b.mlp) list.push(vec(`${p}mlp.down_proj.bias`, "mlp.out.bias", i, d, "model", { writesResidual: true }));
  }
  list.push(vec("model.norm.weight", "final_norm.weight", null, d, "model", { feedsOutput: true }));
  if (c.tie_word_embeddings !== true) {
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

/** LlamaModel checkpoints lack the `model.` prefix; rotary inverse frequencies are buffers, not parameters. */
function canonicalName(name: string): string | null {
  if (/(^|\.)rotary_emb\.inv_freq$/.test(name)) return null;
  if (name === "lm_head.weight" || name.startsWith("model.")) return name;
  return `model.${name}`;
}

/** HF LlamaPreTrainedModel._init_weights for one parameter: Linear and Embedding N(0, initializer_range), biases 0, RMSNorm 1. */
function initParam(config: Record<string, unknown>, p: ParamSpec, seed: number): Tensor {
  const sigma = typeof config.initializer_range === "number" ? config.initializer_range : 0.02;
  const t = Tensor.zeros("F32", p.shape);
  if (p.role.endsWith("norm.weight")) t.f32.fill(1);
  else if (p.layout !== "vector") new Rng(deriveSeed(seed, p.name)).fillNormal(t.f32, 0, sigma);
  return t;
}

/**
 * rope_scaling types the trainer implements: none (null, or rope_type "default"). Dropout: attention_dropout on
 * the attention probabilities, the only one HF's Llama, Mistral and Qwen2 have.
 */
function decoder(raw: Record<string, unknown>): DecoderSpec {
  const { config: c, shape } = parseConfig(raw);
  if (c.hidden_act !== "silu") throw new Error(`${String(c.model_type)}: hidden_act "${String(c.hidden_act)}" is not supported (supported: silu)`);
  const scaling = c.rope_scaling as { rope_type?: string; type?: string } | null | undefined;
  const ropeType = scaling ? (scaling.rope_type ?? scaling.type ?? "unknown") : "default";
  if (ropeType !== "default") throw new Error(`${String(c.model_type)}: rope_scaling of type "${ropeType}" is not supported (supported: none)`);
  const window =
    c.model_type === "mistral" || (c.model_type === "qwen2" && c.use_sliding_window === true)
      ? typeof c.sliding_window === "number"
        ? c.sliding_window
        : null
      : null;
  return {
    norm: { kind: "rmsnorm", eps: c.rms_norm_eps as number },
    positions: { kind: "rope", theta: c.rope_theta as number },
    attention: { scale: 1 / Math.sqrt(shape.headDim), slidingWindow: window },
    mlp: { kind: "swiglu" },
    tiedOutput: c.tie_word_embeddings === true,
    dropout: { embedding: 0, attention: c.attention_dropout as number, residual: 0 },
  };
}

/** A fresh Llama's config.json: attention_dropout `o.dropout` (default 0), no special tokens (a byte-level vocabulary has none). */
function initConfig(o: InitShape, tie: boolean): Record<string, unknown> {
  const p = dropoutProbability(o.dropout ?? 0, "dropout");
  return {
    model_type: "llama",
    architectures: ["LlamaForCausalLM"],
    num_hidden_layers: o.layers,
    hidden_size: o.dModel,
    num_attention_heads: o.heads,
    num_key_value_heads: o.kvHeads ?? o.heads,
    intermediate_size: o.ffn ?? 4 * o.dModel,
    vocab_size: o.vocab,
    max_position_embeddings: o.context,
    tie_word_embeddings: tie,
    rms_norm_eps: 1e-6,
    rope_theta: 10000.0,
    hidden_act: "silu",
    attention_bias: false,
    mlp_bias: false,
    attention_dropout: p,
    bos_token_id: null,
    eos_token_id: null,
    pad_token_id: null,
  };
}

/**
 * LlamaDecoderLayer defines self_attn, mlp, input_layernorm, post_attention_layernorm, in that order, so its
 * named_parameters() has the norms last (fixtures/hf-trainer/facts.json); params() puts each norm before its part.
 */
const BLOCK_MODULE_ORDER: Partial<Record<ParamRole, number>> = {
  "mlp.gate.weight": 1,
  "mlp.gate.bias": 1,
  "mlp.in.weight": 1,
  "mlp.in.bias": 1,
  "mlp.out.weight": 1,
  "mlp.out.bias": 1,
  "attn.norm.weight": 2,
  "mlp.norm.weight": 3,
};

export const llama: ArchitecturePlugin = {
  name: "llama",
  modelTypes: ["llama", "mistral", "qwen2"],
  parseConfig,
  withShape,
  parameterCount,
  params,
  blockModuleOrder: BLOCK_MODULE_ORDER,
  canonicalName,
  initParam,
  init: (config, seed) => initWeights(params(config), (p) => initParam(config, p, seed)),
  decoder,
  initConfig,
  tiedByDefault: false,
};

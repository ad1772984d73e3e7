import type { ArchitecturePlugin, DecoderSpec, ParamRole, ParamSpec } from "./plugins.js";
import type { ModelShape } from "./types.js";

/** Projections, by the role prefix of their weight (and bias, where the architecture has one). */
export type Projection = "attn.qkv" | "attn.q" | "attn.k" | "attn.v" | "attn.out" | "mlp.in" | "mlp.gate" | "mlp.out";
/** Norms, by the role prefix of their weight (and bias, for LayerNorm). */
export type Norm = "attn.norm" | "mlp.norm" | "final_norm";

/** A parameter used as a matrix of x·W: `transB` for torch Linear and embedding layouts ([out, in]), not for Conv1D ([in, out]). */
export interface MatrixParam {
  spec: ParamSpec;
  transB: boolean;
}

/**
 * A decoder resolved once from its architecture plugin, for every graph that runs it (the training graph of
 * @staged/trainer-ort, the KV-cache export of @staged/export): the parsed config, the shape, the DecoderSpec, the
 * parameters by (role, layer), and the checks of what the decoder cannot run, as one-line errors naming the
 * model type. No graph in it.
 */
export interface ResolvedDecoder {
  /** The config as the plugin parses it (HF defaults filled in). */
  config: Record<string, unknown>;
  shape: ModelShape;
  spec: DecoderSpec;
  /** The model type errors name (config.model_type, else the plugin's name). */
  type: string;
  /** Key/value heads (grouped-query attention), and query heads per key/value head. */
  kvHeads: number;
  groups: number;
  params: ParamSpec[];
  find(role: ParamRole, layer: number | null): ParamSpec | undefined;
  /** The parameter, or the one-line error `<type>: no parameter with role <role> [in layer <l>]`. */
  need(role: ParamRole, layer: number | null): ParamSpec;
  /** A projection's weight as a matrix and its bias, if any. */
  projection(part: Projection, layer: number): { weight: MatrixParam; bias: ParamSpec | undefined };
  /** A norm's weight and bias (RMSNorm has none: a bias parameter is refused). */
  norm(part: Norm, layer: number | null): { weight: ParamSpec; bias: ParamSpec | undefined };
  /** Whether block `layer` projects q|k|v with one fused matrix (refused unless its parts are q, k, v and KV = H). */
  fusedQkv(layer: number): boolean;
  /** The output layer's matrix: the token embedding when tied, else lm_head. */
  output(): MatrixParam;
  /** Refuses a context of T tokens that a causal mask without a window or the learned positions cannot run. */
  checkContext(T: number): void;
}

const key = (role: ParamRole, layer: number | null) => `${role}@${layer ?? ""}`;

/** x·W (+ bias): Conv1D weights [in, out] as they are, torch Linear weights and embeddings [out, in] transposed. */
function matrix(type: string, s: ParamSpec): MatrixParam {
  if (s.layout !== "conv1d" && s.layout !== "linear" && s.layout !== "embedding")
    throw new Error(`${type}: ${s.name} has layout ${s.layout}, not a matrix`);
  return { spec: s, transB: s.layout !== "conv1d" };
}

/** The decoder of a config (`config` as the plugin parses it); throws what the decoder cannot run. */
export function resolveDecoder(plugin: ArchitecturePlugin, raw: Record<string, unknown>): ResolvedDecoder {
  const { config, shape } = plugin.parseConfig(raw);
  const spec = plugin.decoder(config);
  const params = plugin.params(config);
  const byRole = new Map<string, ParamSpec>(params.map((s) => [key(s.role, s.layer), s]));
  const type = String(config.model_type ?? plugin.name);
  const H = shape.heads,
    KV = shape.kvHeads ?? H;
  if (H % KV !== 0) throw new Error(`${type}: ${H} query heads are not a multiple of ${KV} key/value heads`);
  if (spec.positions.kind === "rope" && shape.headDim % 2 !== 0)
    throw new Error(`${type}: head_dim ${shape.headDim} must be even for rotary embeddings`);

  const find = (role: ParamRole, layer: number | null) => byRole.get(key(role, layer));
  const need = (role: ParamRole, layer: number | null): ParamSpec => {
    const s = find(role, layer);
    if (!s) throw new Error(`${type}: no parameter with role ${role}${layer === null ? "" : ` in layer ${layer}`}`);
    return s;
  };
  return {
    config,
    shape,
    spec,
    type,
    kvHeads: KV,
    groups: H / KV,
    params,
    find,
    need,
    projection: (part, layer) => ({ weight: matrix(type, need(`${part}.weight`, layer)), bias: find(`${part}.bias`, layer) }),
    norm(part, layer) {
      const weight = need(`${part}.weight`, layer),
        bias = find(`${part}.bias`, layer);
      if (bias && spec.norm.kind === "rmsnorm") throw new Error(`${type}: RMSNorm has no bias, but ${part}.bias is a parameter`);
      return { weight, bias };
    },
    fusedQkv(layer) {
      const w = find("attn.qkv.weight", layer);
      if (w && (KV !== H || (w.fused ?? []).join() !== "q,k,v"))
        throw new Error(`${type}: a fused q|k|v projection needs the parts q, k, v and one key/value head per query head`);
      return w !== undefined;
    },
    output: () => matrix(type, need(spec.tiedOutput ? "embed.tokens" : "lm_head.weight", null)),
    checkContext(T) {
      const window = spec.attention.slidingWindow ?? null;
      if (window !== null && T > window) throw new Error(`${type}: context ${T} exceeds sliding_window ${window}`);
      if (spec.positions.kind === "learned") {
        const table = need("embed.positions", null);
        if (T > table.shape[0]!) throw new Error(`${type}: context ${T} exceeds the model's ${table.shape[0]} positions`);
      }
    },
  };
}

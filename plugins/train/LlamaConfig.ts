/**
 * The hyperparameters of a Llama decoder, read from and written to a Hugging
 * Face `config.json` (LlamaConfig field names). Written with a fixed key
 * order so the same model always gives the same bytes.
 */

export interface LlamaConfig {
  readonly dim: number
  readonly hiddenDim: number
  readonly nLayers: number
  readonly nHeads: number
  readonly nKvHeads: number
  readonly vocabSize: number
  readonly maxSeqLen: number
  readonly normEps: number
  readonly ropeTheta: number
  readonly tiedEmbeddings: boolean
  readonly bosId: number
  readonly eosId: number
}

export const headDim = (c: LlamaConfig): number => c.dim / c.nHeads

export class ConfigError extends Error {
  override readonly name = "ConfigError"
}

const int = (json: Record<string, unknown>, key: string, where: string, fallback?: number): number => {
  const v = json[key] ?? fallback
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0)
    throw new ConfigError(`${where}: ${key} must be a positive integer, got ${JSON.stringify(json[key])}`)
  return v
}

/** Reads a Hugging Face LlamaConfig object; fails on anything this decoder does not implement. */
export const configFromHf = (json: Record<string, unknown>, where = "config.json"): LlamaConfig => {
  if (json.model_type !== undefined && json.model_type !== "llama")
    throw new ConfigError(
      `${where}: model_type ${JSON.stringify(json.model_type)} is not "llama", the one the tfjs decoder runs (the torch backend runs it)`,
    )
  if (json.hidden_act !== undefined && json.hidden_act !== "silu")
    throw new ConfigError(`${where}: hidden_act ${JSON.stringify(json.hidden_act)} is not "silu"`)
  if (json.rope_scaling !== undefined && json.rope_scaling !== null)
    throw new ConfigError(
      `${where}: rope_scaling is not supported by the tfjs decoder (the torch backend runs it)`,
    )
  // transformers 5 writes the RoPE settings as rope_parameters.
  const rope = (
    typeof json.rope_parameters === "object" && json.rope_parameters !== null ? json.rope_parameters : {}
  ) as Record<string, unknown>
  if (rope.rope_type !== undefined && rope.rope_type !== "default")
    throw new ConfigError(
      `${where}: rope_parameters.rope_type ${JSON.stringify(rope.rope_type)} is not supported by the tfjs decoder (the torch backend runs it)`,
    )
  const nHeads = int(json, "num_attention_heads", where)
  const dim = int(json, "hidden_size", where)
  const c: LlamaConfig = {
    dim,
    hiddenDim: int(json, "intermediate_size", where),
    nLayers: int(json, "num_hidden_layers", where),
    nHeads,
    nKvHeads: int(json, "num_key_value_heads", where, nHeads),
    vocabSize: int(json, "vocab_size", where),
    maxSeqLen: int(json, "max_position_embeddings", where, 2048),
    normEps: typeof json.rms_norm_eps === "number" ? json.rms_norm_eps : 1e-6,
    ropeTheta:
      typeof json.rope_theta === "number"
        ? json.rope_theta
        : typeof rope.rope_theta === "number"
          ? rope.rope_theta
          : 10000,
    tiedEmbeddings: json.tie_word_embeddings === true,
    bosId: typeof json.bos_token_id === "number" ? json.bos_token_id : 1,
    eosId: typeof json.eos_token_id === "number" ? json.eos_token_id : 2,
  }
  if (dim % nHeads !== 0)
    throw new ConfigError(`${where}: hidden_size ${dim} is not divisible by ${nHeads} heads`)
  if (nHeads % c.nKvHeads !== 0)
    throw new ConfigError(`${where}: ${nHeads} heads are not a multiple of ${c.nKvHeads} key/value heads`)
  if (typeof json.head_dim === "number" && json.head_dim !== dim / nHeads)
    throw new ConfigError(`${where}: head_dim ${json.head_dim} differs from hidden_size / heads`)
  if ((dim / nHeads) % 2 !== 0)
    throw new ConfigError(`${where}: head size ${dim / nHeads} must be even for RoPE`)
  return c
}

/** The config.json a Hugging Face `LlamaForCausalLM` loads (keys in sorted order). */
export const configToHf = (c: LlamaConfig): Record<string, unknown> => ({
  architectures: ["LlamaForCausalLM"],
  attention_bias: false,
  attention_dropout: 0,
  bos_token_id: c.bosId,
  eos_token_id: c.eosId,
  head_dim: headDim(c),
  hidden_act: "silu",
  hidden_size: c.dim,
  initializer_range: 0.02,
  intermediate_size: c.hiddenDim,
  max_position_embeddings: c.maxSeqLen,
  mlp_bias: false,
  model_type: "llama",
  num_attention_heads: c.nHeads,
  num_hidden_layers: c.nLayers,
  num_key_value_heads: c.nKvHeads,
  pretraining_tp: 1,
  rms_norm_eps: c.normEps,
  rope_scaling: null,
  rope_theta: c.ropeTheta,
  tie_word_embeddings: c.tiedEmbeddings,
  torch_dtype: "float32",
  use_cache: true,
  vocab_size: c.vocabSize,
})

/** Hugging Face tensor names of one decoder layer's weights. */
export const layerNames = (i: number) => ({
  attnNorm: `model.layers.${i}.input_layernorm.weight`,
  q: `model.layers.${i}.self_attn.q_proj.weight`,
  k: `model.layers.${i}.self_attn.k_proj.weight`,
  v: `model.layers.${i}.self_attn.v_proj.weight`,
  o: `model.layers.${i}.self_attn.o_proj.weight`,
  ffnNorm: `model.layers.${i}.post_attention_layernorm.weight`,
  gate: `model.layers.${i}.mlp.gate_proj.weight`,
  up: `model.layers.${i}.mlp.up_proj.weight`,
  down: `model.layers.${i}.mlp.down_proj.weight`,
})

export const EMBED = "model.embed_tokens.weight"
export const FINAL_NORM = "model.norm.weight"
export const LM_HEAD = "lm_head.weight"

/** The shape every weight of a model with this config must have, by Hugging Face name. */
export const expectedShapes = (c: LlamaConfig): Map<string, number[]> => {
  const hd = headDim(c)
  const m = new Map<string, number[]>([[EMBED, [c.vocabSize, c.dim]]])
  for (let i = 0; i < c.nLayers; i++) {
    const n = layerNames(i)
    m.set(n.attnNorm, [c.dim])
    m.set(n.q, [c.nHeads * hd, c.dim])
    m.set(n.k, [c.nKvHeads * hd, c.dim])
    m.set(n.v, [c.nKvHeads * hd, c.dim])
    m.set(n.o, [c.dim, c.nHeads * hd])
    m.set(n.ffnNorm, [c.dim])
    m.set(n.gate, [c.hiddenDim, c.dim])
    m.set(n.up, [c.hiddenDim, c.dim])
    m.set(n.down, [c.dim, c.hiddenDim])
  }
  m.set(FINAL_NORM, [c.dim])
  if (!c.tiedEmbeddings) m.set(LM_HEAD, [c.vocabSize, c.dim])
  return m
}

/**
 * The hyperparameters of a Llama-family decoder, read from and written to a
 * Hugging Face `config.json`. One decoder runs four model_types; what they
 * add to Llama 2 is all here, with the equations Llama.ts computes
 * (x a row [dim], h a head [hd], p a position):
 *
 *   RMSNorm     norm(x) = x / sqrt(mean(x²) + eps) ⊙ w
 *   attention   q = x Wq^T (+ bq), k = x Wk^T (+ bk), v = x Wv^T (+ bv), each split into
 *               heads of hd = head_dim (default hidden_size / num_attention_heads)
 *   q/k norm    q_h = norm(q_h) with w_q [hd], k_h = norm(k_h) with w_k [hd],
 *               per head, before RoPE (Qwen3)
 *   RoPE        for i < hd/2: θ_i = p · f_i, (h_i, h_{i+hd/2}) rotated by θ_i, with
 *               default   f_i = 1 / base^(2i / hd)
 *               llama3    wavelength λ_i = 2π / f_i, L = original_max_position_embeddings,
 *                         λ_lo = L / low_freq_factor, λ_hi = L / high_freq_factor:
 *                           λ_i < λ_hi         f_i
 *                           λ_i > λ_lo         f_i / factor
 *                           otherwise          (1 - s) f_i / factor + s f_i,
 *                                              s = (L / λ_i - low_freq_factor) / (high_freq_factor - low_freq_factor)
 *               computed in float32, as transformers' _compute_llama3_parameters does
 *   GQA         query head j reads key/value head j / (heads / kv_heads);
 *               softmax(q_h k^T / √hd + causal mask) v, concatenated, then · Wo^T (+ bo)
 *   MLP         down(silu(gate(x)) ⊙ up(x))
 *   head        logits = norm(x) · E^T when tie_word_embeddings, else · W_lm^T
 *
 * The families, as transformers builds them:
 *   llama    attention_bias biases q, k, v and o; rope_type default or llama3 (Llama 3.x);
 *            SmolLM2 is plain llama with tied embeddings
 *   mistral  no biases; sliding_window W: a query sees the last W keys. Up to W tokens that
 *            is plain causal attention, so the tfjs decoder runs Mistral for contexts of at
 *            most W tokens and refuses longer ones
 *   qwen2    q, k and v always biased, o never (Qwen2 / Qwen2.5)
 *   qwen3    q/k norm; an explicit head_dim (often ≠ hidden / heads); attention_bias on all four
 *
 * A config this decoder cannot compute exactly fails here, naming the file,
 * the field and its value; the torch backend (transformers itself) runs it.
 * Written back with the source's own fields kept and a fixed key order, so
 * the same model always gives the same bytes and transformers loads a
 * fine-tuned export as the family it came from.
 */

export const MODEL_TYPES = ["llama", "mistral", "qwen2", "qwen3"] as const
export type ModelType = (typeof MODEL_TYPES)[number]

/** Llama 3.x's RoPE frequency scaling (rope_type "llama3"). */
export interface Llama3Rope {
  readonly type: "llama3"
  readonly factor: number
  readonly lowFreqFactor: number
  readonly highFreqFactor: number
  readonly originalMaxPositions: number
}

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
  /** The first end-of-sequence id (eosIds holds them all when config.json lists several). */
  readonly eosId: number
  /** Default "llama". */
  readonly modelType?: ModelType
  /** Per-head size; default dim / nHeads. */
  readonly headDim?: number
  readonly ropeScaling?: Llama3Rope
  /** Biases on q_proj, k_proj and v_proj. */
  readonly qkvBias?: boolean
  /** A bias on o_proj. */
  readonly oBias?: boolean
  /** Per-head RMSNorm of queries and keys before RoPE (q_norm, k_norm). */
  readonly qkNorm?: boolean
  /** Mistral's sliding_window: the longest context the tfjs decoder runs this model for. */
  readonly slidingWindow?: number
  /** Every end-of-sequence id, when config.json gives a list (written back as a list). */
  readonly eosIds?: ReadonlyArray<number>
  /** The config.json this was read from; written back with only what tunegraph knows updated. */
  readonly source?: Readonly<Record<string, unknown>>
}

export const headDim = (c: LlamaConfig): number => c.headDim ?? c.dim / c.nHeads

/** Every id that ends a sequence: eos_token_id's one id or all of its list. */
export const eosIds = (c: LlamaConfig): ReadonlyArray<number> => c.eosIds ?? [c.eosId]

const TORCH = `set backend: "torch" (the torch backend runs it with transformers)`

export class ConfigError extends Error {
  override readonly name = "ConfigError"
  constructor(
    message: string,
    readonly file?: string,
    readonly field?: string,
  ) {
    super(message)
  }
}

type Json = Record<string, unknown>

const unsupported = (where: string, field: string, value: unknown, what: string): ConfigError =>
  new ConfigError(
    `${where}: ${field} ${JSON.stringify(value)} ${what}, which the tfjs decoder does not implement; ${TORCH}`,
    where,
    field,
  )

const int = (json: Json, key: string, where: string, fallback?: number): number => {
  const v = json[key] ?? fallback
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0)
    throw new ConfigError(
      `${where}: ${key} must be a positive integer, got ${JSON.stringify(json[key])}`,
      where,
      key,
    )
  return v
}

const obj = (v: unknown): Json | undefined =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Json) : undefined

/** The RoPE settings: transformers 5's rope_parameters, else the older rope_theta and rope_scaling. */
const readRope = (json: Json, where: string): { theta: number; scaling?: Llama3Rope } => {
  const params = obj(json.rope_parameters)
  const scaling = obj(json.rope_scaling)
  if (json.rope_scaling !== undefined && json.rope_scaling !== null && scaling === undefined)
    throw new ConfigError(
      `${where}: rope_scaling must be an object or null, got ${JSON.stringify(json.rope_scaling)}`,
      where,
      "rope_scaling",
    )
  const [r, field] = params !== undefined ? [params, "rope_parameters"] : [scaling ?? {}, "rope_scaling"]
  const type = r.rope_type ?? r.type ?? "default"
  const theta =
    typeof r.rope_theta === "number"
      ? r.rope_theta
      : typeof json.rope_theta === "number"
        ? json.rope_theta
        : 10000
  if (!(theta > 0))
    throw new ConfigError(`${where}: rope_theta must be positive, got ${theta}`, where, "rope_theta")
  const partial = r.partial_rotary_factor ?? json.partial_rotary_factor
  if (partial !== undefined && partial !== null && partial !== 1)
    throw unsupported(where, "partial_rotary_factor", partial, "rotates part of each head")
  if (type === "default") return { theta }
  if (type !== "llama3")
    throw unsupported(where, `${field}.rope_type`, type, `is a RoPE scaling other than "default" or "llama3"`)
  const num = (key: string, fallback?: unknown): number => {
    const v = r[key] ?? fallback
    if (typeof v !== "number" || !(v > 0))
      throw new ConfigError(
        `${where}: ${field}.${key} must be a positive number for rope_type "llama3", got ${JSON.stringify(r[key])}`,
        where,
        `${field}.${key}`,
      )
    return v
  }
  const scalingOut: Llama3Rope = {
    type: "llama3",
    factor: num("factor"),
    lowFreqFactor: num("low_freq_factor"),
    highFreqFactor: num("high_freq_factor"),
    originalMaxPositions: num("original_max_position_embeddings", json.max_position_embeddings),
  }
  if (scalingOut.highFreqFactor <= scalingOut.lowFreqFactor)
    throw new ConfigError(
      `${where}: ${field}.high_freq_factor ${scalingOut.highFreqFactor} must exceed low_freq_factor ${scalingOut.lowFreqFactor}`,
      where,
      `${field}.high_freq_factor`,
    )
  return { theta, scaling: scalingOut }
}

const readEos = (json: Json, where: string): { eosId: number; eosIds?: number[] } => {
  const v = json.eos_token_id
  if (v === undefined || v === null) return { eosId: 2 }
  if (typeof v === "number" && Number.isInteger(v) && v >= 0) return { eosId: v }
  if (
    Array.isArray(v) &&
    v.length > 0 &&
    v.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 0)
  )
    return { eosId: v[0] as number, eosIds: [...(v as number[])] }
  throw new ConfigError(
    `${where}: eos_token_id must be a token id or a non-empty list of ids, got ${JSON.stringify(v)}`,
    where,
    "eos_token_id",
  )
}

const bool = (json: Json, key: string, where: string): boolean => {
  const v = json[key]
  if (v === undefined || v === null) return false
  if (typeof v !== "boolean")
    throw new ConfigError(`${where}: ${key} must be true or false, got ${JSON.stringify(v)}`, where, key)
  return v
}

/** Reads a Hugging Face config of a llama, mistral, qwen2 or qwen3 model; fails on anything this decoder does not implement. */
export const configFromHf = (json: Json, where = "config.json"): LlamaConfig => {
  const type = json.model_type ?? "llama"
  if (!(MODEL_TYPES as ReadonlyArray<unknown>).includes(type))
    throw unsupported(where, "model_type", type, `is not one of ${MODEL_TYPES.join(", ")}`)
  const modelType = type as ModelType
  const act = json.hidden_act ?? json.hidden_activation
  if (act !== undefined && act !== "silu") throw unsupported(where, "hidden_act", act, `is not "silu"`)
  if (bool(json, "mlp_bias", where)) throw unsupported(where, "mlp_bias", true, "biases the MLP")
  if (bool(json, "use_sliding_window", where))
    throw unsupported(where, "use_sliding_window", true, "turns on sliding-window attention")
  if (Array.isArray(json.layer_types)) {
    const other = json.layer_types.find((t) => t !== "full_attention")
    if (other !== undefined)
      throw unsupported(where, "layer_types", other, "is a layer other than full attention")
  }
  const tp = json.pretraining_tp
  if (tp !== undefined && tp !== null && tp !== 1)
    throw unsupported(where, "pretraining_tp", tp, "splits the projections")
  const rope = readRope(json, where)
  const nHeads = int(json, "num_attention_heads", where)
  const dim = int(json, "hidden_size", where)
  const nKvHeads = int(json, "num_key_value_heads", where, nHeads)
  // transformers derives head_dim from hidden_size when config.json has none (or null).
  const hd = json.head_dim === undefined || json.head_dim === null ? undefined : int(json, "head_dim", where)
  if (hd === undefined && dim % nHeads !== 0)
    throw new ConfigError(
      `${where}: hidden_size ${dim} is not divisible by ${nHeads} heads and there is no head_dim`,
      where,
      "hidden_size",
    )
  if (nHeads % nKvHeads !== 0)
    throw new ConfigError(
      `${where}: num_attention_heads ${nHeads} is not a multiple of num_key_value_heads ${nKvHeads}`,
      where,
      "num_key_value_heads",
    )
  const size = hd ?? dim / nHeads
  if (size % 2 !== 0)
    throw new ConfigError(`${where}: head size ${size} must be even for RoPE`, where, "head_dim")
  const attentionBias =
    modelType === "llama" || modelType === "qwen3" ? bool(json, "attention_bias", where) : false
  let slidingWindow: number | undefined
  if (modelType === "mistral" && json.sliding_window !== undefined && json.sliding_window !== null)
    slidingWindow = int(json, "sliding_window", where)
  const eos = readEos(json, where)
  const bos = json.bos_token_id
  if (bos !== undefined && bos !== null && (typeof bos !== "number" || !Number.isInteger(bos) || bos < 0))
    throw new ConfigError(
      `${where}: bos_token_id must be a token id, got ${JSON.stringify(bos)}`,
      where,
      "bos_token_id",
    )
  const eps = json.rms_norm_eps
  if (eps !== undefined && (typeof eps !== "number" || !(eps > 0)))
    throw new ConfigError(
      `${where}: rms_norm_eps must be a positive number, got ${JSON.stringify(eps)}`,
      where,
      "rms_norm_eps",
    )
  return {
    dim,
    hiddenDim: int(json, "intermediate_size", where),
    nLayers: int(json, "num_hidden_layers", where),
    nHeads,
    nKvHeads,
    vocabSize: int(json, "vocab_size", where),
    maxSeqLen: int(json, "max_position_embeddings", where, 2048),
    normEps: typeof eps === "number" ? eps : 1e-6,
    ropeTheta: rope.theta,
    tiedEmbeddings: json.tie_word_embeddings === true,
    bosId: typeof bos === "number" ? bos : 1,
    eosId: eos.eosId,
    ...(eos.eosIds === undefined ? {} : { eosIds: eos.eosIds }),
    ...(modelType === "llama" ? {} : { modelType }),
    ...(hd === undefined || hd === dim / nHeads ? {} : { headDim: hd }),
    ...(rope.scaling === undefined ? {} : { ropeScaling: rope.scaling }),
    ...(modelType === "qwen2" || attentionBias ? { qkvBias: true } : {}),
    ...(attentionBias ? { oBias: true } : {}),
    ...(modelType === "qwen3" ? { qkNorm: true } : {}),
    ...(slidingWindow === undefined ? {} : { slidingWindow }),
    source: json,
  }
}

/**
 * Refuses a context longer than the model's sliding window (Mistral), where
 * its attention would differ from the plain causal attention computed here.
 */
export const checkContext = (c: LlamaConfig, tokens: number, where: string): void => {
  if (c.slidingWindow !== undefined && tokens > c.slidingWindow)
    throw new ConfigError(
      `${where}: a context of ${tokens} tokens exceeds config.json's sliding_window ${c.slidingWindow}; the tfjs decoder runs ${c.modelType ?? "llama"} only up to its window: cut sequences to ${c.slidingWindow} tokens (maxSeqLen) or ${TORCH}`,
      where,
      "sliding_window",
    )
}

/**
 * RoPE's inverse frequencies f_i [hd/2] in float32, each step rounded as
 * transformers computes them in torch.float32 (default and llama3 rules
 * above).
 */
export const ropeInvFreq = (c: LlamaConfig): Float32Array => {
  const f = Math.fround
  const hd = headDim(c)
  const out = new Float32Array(hd / 2)
  const s = c.ropeScaling
  for (let i = 0; i < hd / 2; i++) {
    const base = f(1 / f(c.ropeTheta ** f((2 * i) / hd)))
    if (s === undefined) {
      out[i] = base
      continue
    }
    const lowWavelen = s.originalMaxPositions / s.lowFreqFactor
    const highWavelen = s.originalMaxPositions / s.highFreqFactor
    const wavelen = f(f(2 * Math.PI) / base)
    let v = wavelen > lowWavelen ? f(base / f(s.factor)) : base
    if (!(wavelen < highWavelen) && !(wavelen > lowWavelen)) {
      const smooth = f(
        f(f(s.originalMaxPositions / wavelen) - s.lowFreqFactor) / f(s.highFreqFactor - s.lowFreqFactor),
      )
      v = f(f(f(1 - smooth) * v) / f(s.factor) + f(smooth * v))
    }
    out[i] = v
  }
  return out
}

const ARCHITECTURES: Record<ModelType, string> = {
  llama: "LlamaForCausalLM",
  mistral: "MistralForCausalLM",
  qwen2: "Qwen2ForCausalLM",
  qwen3: "Qwen3ForCausalLM",
}

const sortKeys = (o: Json): Json =>
  Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))

/**
 * The config.json transformers loads as this family's `*ForCausalLM` (keys
 * in sorted order): the source config.json's own fields, with what this
 * config says written over them. `dtype` is the weights' dtype on disk.
 */
export const configToHf = (c: LlamaConfig, dtype = "float32"): Record<string, unknown> => {
  const type = c.modelType ?? "llama"
  const src: Json = c.source ?? {}
  const rs = c.ropeScaling
  const scaling =
    rs === undefined
      ? null
      : {
          factor: rs.factor,
          high_freq_factor: rs.highFreqFactor,
          low_freq_factor: rs.lowFreqFactor,
          original_max_position_embeddings: rs.originalMaxPositions,
          rope_type: "llama3",
        }
  // RoPE as the source wrote it: transformers 5's rope_parameters, else rope_theta and rope_scaling.
  const rope: Json =
    obj(src.rope_parameters) !== undefined
      ? {
          rope_parameters: sortKeys({
            ...(src.rope_parameters as Json),
            ...(scaling ?? { rope_type: "default" }),
            rope_theta: c.ropeTheta,
          }),
        }
      : { rope_scaling: scaling, rope_theta: c.ropeTheta }
  const attentionBias = c.qkvBias === true && c.oBias === true
  const family: Json =
    type === "llama"
      ? { attention_bias: attentionBias, head_dim: headDim(c), mlp_bias: false, pretraining_tp: 1 }
      : type === "mistral"
        ? { head_dim: headDim(c), sliding_window: c.slidingWindow ?? null }
        : type === "qwen2"
          ? {
              max_window_layers: src.max_window_layers ?? c.nLayers,
              sliding_window: null,
              use_sliding_window: false,
            }
          : {
              attention_bias: attentionBias,
              head_dim: headDim(c),
              max_window_layers: src.max_window_layers ?? c.nLayers,
              sliding_window: null,
              use_sliding_window: false,
            }
  return sortKeys({
    attention_dropout: 0,
    hidden_act: "silu",
    initializer_range: 0.02,
    use_cache: true,
    ...src,
    ...family,
    ...rope,
    architectures: [ARCHITECTURES[type]],
    // An id config.json leaves null stays null (the defaults here only stand in for it).
    bos_token_id: src.bos_token_id === null ? null : c.bosId,
    eos_token_id: src.eos_token_id === null ? null : c.eosIds === undefined ? c.eosId : [...c.eosIds],
    hidden_size: c.dim,
    intermediate_size: c.hiddenDim,
    max_position_embeddings: c.maxSeqLen,
    model_type: type,
    num_attention_heads: c.nHeads,
    num_hidden_layers: c.nLayers,
    num_key_value_heads: c.nKvHeads,
    rms_norm_eps: c.normEps,
    tie_word_embeddings: c.tiedEmbeddings,
    // transformers 5 writes dtype, older versions torch_dtype.
    ...("dtype" in src ? { dtype } : {}),
    ...("dtype" in src && !("torch_dtype" in src) ? {} : { torch_dtype: dtype }),
    vocab_size: c.vocabSize,
  })
}

/** Hugging Face tensor names of one decoder layer's weights. */
export const layerNames = (i: number) => ({
  attnNorm: `model.layers.${i}.input_layernorm.weight`,
  q: `model.layers.${i}.self_attn.q_proj.weight`,
  k: `model.layers.${i}.self_attn.k_proj.weight`,
  v: `model.layers.${i}.self_attn.v_proj.weight`,
  o: `model.layers.${i}.self_attn.o_proj.weight`,
  qNorm: `model.layers.${i}.self_attn.q_norm.weight`,
  kNorm: `model.layers.${i}.self_attn.k_norm.weight`,
  ffnNorm: `model.layers.${i}.post_attention_layernorm.weight`,
  gate: `model.layers.${i}.mlp.gate_proj.weight`,
  up: `model.layers.${i}.mlp.up_proj.weight`,
  down: `model.layers.${i}.mlp.down_proj.weight`,
})

/** A linear weight's bias: q_proj.weight → q_proj.bias. */
export const biasName = (weight: string): string => weight.replace(/\.weight$/, ".bias")

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
    if (c.qkvBias === true) {
      m.set(biasName(n.q), [c.nHeads * hd])
      m.set(biasName(n.k), [c.nKvHeads * hd])
      m.set(biasName(n.v), [c.nKvHeads * hd])
    }
    if (c.oBias === true) m.set(biasName(n.o), [c.dim])
    if (c.qkNorm === true) {
      m.set(n.qNorm, [hd])
      m.set(n.kNorm, [hd])
    }
    m.set(n.ffnNorm, [c.dim])
    m.set(n.gate, [c.hiddenDim, c.dim])
    m.set(n.up, [c.hiddenDim, c.dim])
    m.set(n.down, [c.dim, c.hiddenDim])
  }
  m.set(FINAL_NORM, [c.dim])
  if (!c.tiedEmbeddings) m.set(LM_HEAD, [c.vocabSize, c.dim])
  return m
}

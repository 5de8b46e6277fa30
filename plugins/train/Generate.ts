/**
 * Autoregressive generation with a key/value cache, sampling as llama2.c's
 * run.c does (argmax at temperature 0; otherwise softmax(logits / T) with
 * top-p and its xorshift generator), plus the log-likelihood an eval step
 * needs.
 */
import * as tf from "@tensorflow/tfjs-core"
import { type KvCache, LlamaModel, type TokenBatch } from "./Llama.ts"
import { eosIds } from "./LlamaConfig.ts"
import { checkAdapter, type HostAdapter, mergeAdapter } from "./Lora.ts"
import type { HostModel } from "./ModelIO.ts"

export { mergeAdapter }

export interface GenerateOptions {
  /** A loaded host model, or a ready LlamaModel (frozen). */
  readonly model: HostModel | LlamaModel
  readonly adapter?: HostAdapter
  /** Prompt ids, BOS first as llama2.c feeds them. */
  readonly promptIds: ReadonlyArray<number>
  /** Tokens to generate at most (llama2.c's steps, less the prompt after BOS). */
  readonly maxTokens: number
  readonly temperature?: number
  readonly topP?: number
  readonly seed?: number
  /** Ids that end generation without being emitted (default: BOS, as run.c, and every EOS id). */
  readonly stopIds?: ReadonlyArray<number>
  /** Called with each generated id as soon as it is chosen. */
  readonly onToken?: (id: number) => void
}

/** llama2.c's xorshift64* generator, so a seed samples the same tokens as run.c given equal logits. */
export class XorShift {
  private state: bigint
  constructor(seed: number) {
    this.state = BigInt.asUintN(64, BigInt(seed))
  }
  u32(): number {
    let s = this.state
    s ^= s >> 12n
    s = BigInt.asUintN(64, s ^ (s << 25n))
    s ^= s >> 27n
    this.state = s
    return Number(BigInt.asUintN(64, s * 0x2545f4914f6cdd1dn) >> 32n)
  }
  f32(): number {
    return (this.u32() >>> 8) / 16777216
  }
}

export const argmax = (x: ArrayLike<number>): number => {
  let best = 0
  for (let i = 1; i < x.length; i++) if ((x[i] as number) > (x[best] as number)) best = i
  return best
}

/** run.c's `sample`: temperature, softmax, then multinomial or top-p. */
export const sample = (logits: Float32Array, temperature: number, topP: number, rng: XorShift): number => {
  if (temperature === 0) return argmax(logits)
  const n = logits.length
  const p = new Float32Array(n)
  let max = Number.NEGATIVE_INFINITY
  for (let i = 0; i < n; i++) {
    p[i] = (logits[i] as number) / temperature
    max = Math.max(max, p[i] as number)
  }
  let sum = 0
  for (let i = 0; i < n; i++) {
    p[i] = Math.exp((p[i] as number) - max)
    sum += p[i] as number
  }
  for (let i = 0; i < n; i++) p[i] = (p[i] as number) / sum
  const coin = rng.f32()
  if (topP <= 0 || topP >= 1) {
    let cdf = 0
    for (let i = 0; i < n; i++) {
      cdf += p[i] as number
      if (coin < cdf) return i
    }
    return n - 1
  }
  const cutoff = (1 - topP) / (n - 1)
  const idx: number[] = []
  for (let i = 0; i < n; i++) if ((p[i] as number) >= cutoff) idx.push(i)
  idx.sort((a, b) => (p[b] as number) - (p[a] as number) || a - b)
  let cumulative = 0
  let last = idx.length - 1
  for (let i = 0; i < idx.length; i++) {
    cumulative += p[idx[i] as number] as number
    if (cumulative > topP) {
      last = i
      break
    }
  }
  const r = coin * cumulative
  let cdf = 0
  for (let i = 0; i <= last; i++) {
    cdf += p[idx[i] as number] as number
    if (r < cdf) return idx[i] as number
  }
  return idx[last] as number
}

/** A frozen model for inference, with the adapter merged into its weights. */
export const inferenceModel = (model: HostModel, adapter?: HostAdapter): LlamaModel => {
  if (adapter !== undefined) checkAdapter(model.config, model, adapter)
  const host = adapter === undefined ? model : mergeAdapter(model, adapter)
  return new LlamaModel(host.config, host.weights, { mode: "frozen" })
}

/** Generates up to maxTokens ids after the prompt; returns them (stop ids excluded). */
export const generate = async (options: GenerateOptions): Promise<number[]> => {
  const owned = !(options.model instanceof LlamaModel)
  const model =
    options.model instanceof LlamaModel ? options.model : inferenceModel(options.model, options.adapter)
  const prompt = options.promptIds.length > 0 ? [...options.promptIds] : [model.config.bosId]
  const stop = new Set(options.stopIds ?? [model.config.bosId, ...eosIds(model.config)])
  const rng = new XorShift(options.seed ?? 0)
  const cache: KvCache = { keys: [], values: [], length: 0 }
  const out: number[] = []
  const limit = Math.min(options.maxTokens, model.config.maxSeqLen - prompt.length + 1)
  try {
    let input: number[] = prompt
    while (out.length < limit) {
      const batch: TokenBatch = { ids: Int32Array.from(input), batch: 1, seq: input.length }
      const last = tf.tidy(() => {
        const logits = model.logits(batch, { cache })
        return tf.slice(logits, [input.length - 1, 0], [1, -1])
      })
      const row = (await last.data()) as Float32Array
      last.dispose()
      const next = sample(row, options.temperature ?? 0, options.topP ?? 0.9, rng)
      if (stop.has(next)) break
      out.push(next)
      options.onToken?.(next)
      input = [next]
    }
  } finally {
    for (const t of [...cache.keys, ...cache.values]) t.dispose()
    if (owned) model.dispose()
  }
  return out
}

/**
 * Log-likelihood of labelled tokens, for evaluation: for each sequence the
 * summed log-probability of tokens[t+1] at position t where labels[t+1] is
 * not -100, and how many such tokens there were. Perplexity is
 * exp(-sum / count) over a data set.
 */
export const logLikelihood = (
  model: LlamaModel,
  tokens: ReadonlyArray<number> | Int32Array | Uint32Array,
  labels?: ReadonlyArray<number> | Int32Array,
): { sum: number; count: number } => {
  const n = tokens.length
  if (n < 2) return { sum: 0, count: 0 }
  const targets = new Int32Array(n).fill(-1)
  for (let t = 0; t + 1 < n; t++) {
    const label = labels === undefined ? (tokens[t + 1] as number) : (labels[t + 1] as number)
    targets[t] = label === -100 ? -1 : label
  }
  const batch: TokenBatch = { ids: Int32Array.from(tokens as ArrayLike<number>), batch: 1, seq: n }
  const sum = tf.tidy(() => model.lossSum(batch, targets))
  const value = sum.dataSync()[0] as number
  sum.dispose()
  let count = 0
  for (const t of targets) if (t >= 0) count++
  return { sum: -value, count }
}

/** Logits [seq, vocab] of one sequence, for callers that score tokens themselves. */
export const sequenceLogits = (model: LlamaModel, ids: ReadonlyArray<number>): Float32Array => {
  const t = tf.tidy(() => model.logits({ ids: Int32Array.from(ids), batch: 1, seq: ids.length }))
  const out = t.dataSync() as Float32Array
  t.dispose()
  return out
}

export interface SampleLoopOptions {
  /** Prompt ids, BOS first; empty starts from BOS. */
  readonly promptIds: ReadonlyArray<number>
  readonly maxTokens: number
  /** The model's context length and BOS id. */
  readonly maxSeqLen: number
  readonly bosId: number
  /** The model's end-of-sequence ids, all of them (config.json may list several). */
  readonly eosIds?: ReadonlyArray<number>
  readonly temperature?: number
  readonly topP?: number
  readonly seed?: number
  /** Ids that end generation without being emitted (default: BOS and every EOS). */
  readonly stopIds?: ReadonlyArray<number>
  readonly onToken?: (id: number) => void
}

/**
 * `generate`'s loop over a model that runs elsewhere (the torch backend's
 * worker): `next` feeds ids after those fed before (`first` starts afresh)
 * and gives the logits of the last position; sampling, stops and the limit
 * are `generate`'s.
 */
export const sampleLoop = async (
  next: (ids: number[], first: boolean) => Promise<Float32Array>,
  options: SampleLoopOptions,
): Promise<number[]> => {
  const prompt = options.promptIds.length > 0 ? [...options.promptIds] : [options.bosId]
  const stop = new Set(options.stopIds ?? [options.bosId, ...(options.eosIds ?? [])])
  const rng = new XorShift(options.seed ?? 0)
  const out: number[] = []
  const limit = Math.min(options.maxTokens, options.maxSeqLen - prompt.length + 1)
  let input: number[] = prompt
  while (out.length < limit) {
    const row = await next(input, out.length === 0)
    const id = sample(row, options.temperature ?? 0, options.topP ?? 0.9, rng)
    if (stop.has(id)) break
    out.push(id)
    options.onToken?.(id)
    input = [id]
  }
  return out
}

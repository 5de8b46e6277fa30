/**
 * Loss on the test split: the mean negative log-likelihood of every token
 * whose label is not -100 (labels are unshifted: position t predicts label
 * t + 1), over all sequences, and its exponential, the perplexity. A packed
 * sequence is scored example by example, so attention never crosses an
 * example boundary, as in training.
 */
import type { TokensData } from "../tokenize/TokensFile.ts"
import { logLikelihood } from "../train/Generate.ts"
import type { LlamaModel } from "../train/Llama.ts"

export interface LossResult {
  /** Summed negative log-likelihood (nats). */
  readonly nll: number
  /** Tokens in the loss. */
  readonly tokens: number
  readonly sequences: number
  /** Sequences cut to the model's context length. */
  readonly truncated: number
}

/** Mean NLL and perplexity; null without any labelled token. */
export const lossScores = (r: LossResult): { loss: number | null; perplexity: number | null } =>
  r.tokens === 0
    ? { loss: null, perplexity: null }
    : { loss: r.nll / r.tokens, perplexity: Math.exp(r.nll / r.tokens) }

/** The pieces of sequence i that are scored on their own: the sequence, or each packed example. */
export const scoredPieces = (
  data: TokensData,
  i: number,
): Array<{ tokens: Uint32Array; labels: Int32Array }> => {
  const s = data.sequence(i)
  if (s.segments === undefined) return [{ tokens: s.tokens, labels: s.labels }]
  const out: Array<{ tokens: Uint32Array; labels: Int32Array }> = []
  let start = 0
  for (let t = 1; t <= s.tokens.length; t++)
    if (t === s.tokens.length || s.segments[t] !== s.segments[start]) {
      out.push({ tokens: s.tokens.subarray(start, t), labels: s.labels.subarray(start, t) })
      start = t
    }
  return out
}

export interface LossOptions {
  /** Sequences to score, from the first; 0 means all. */
  readonly limit: number
  readonly signal?: AbortSignal
  readonly onSequence?: (done: number, total: number) => void
}

/** Scores the test split with one model. */
export const testLoss = (model: LlamaModel, data: TokensData, o: LossOptions): LossResult => {
  const total = o.limit > 0 ? Math.min(o.limit, data.meta.count) : data.meta.count
  const maxLen = model.config.maxSeqLen
  let nll = 0
  let tokens = 0
  let truncated = 0
  for (let i = 0; i < total; i++) {
    if (o.signal?.aborted) throw new Error("eval was interrupted")
    for (const piece of scoredPieces(data, i)) {
      const n = Math.min(piece.tokens.length, maxLen)
      if (n < piece.tokens.length) truncated++
      const r = logLikelihood(model, piece.tokens.subarray(0, n), piece.labels.subarray(0, n))
      nll -= r.sum
      tokens += r.count
    }
    o.onSequence?.(i + 1, total)
  }
  return { nll, tokens, sequences: total, truncated }
}

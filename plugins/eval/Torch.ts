/**
 * The eval step's model work on the torch backend: the test loss and the
 * greedy answers computed by the torch worker (plugins/train/torch/Session.ts),
 * counted and cut exactly as Loss.ts and Greedy.ts do on tfjs.
 */
import type { TorchSession } from "../train/torch/Session.ts"
import type { GreedyOptions } from "./Greedy.ts"
import type { LossOptions, LossResult } from "./Loss.ts"

/** Sequences per loss request: the step reports progress and checks for interruption between them. */
const LOSS_CHUNK = 32

const interrupted = (signal: AbortSignal | undefined, e: unknown): Error =>
  signal?.aborted ? new Error("eval was interrupted") : (e as Error)

/**
 * Loss.ts's testLoss on the worker: sequences from the first (`limit`, 0 for
 * all), each packed example scored on its own, pieces cut to maxLen.
 */
export const torchTestLoss = async (
  session: TorchSession,
  id: string,
  tokensDir: string,
  count: number,
  maxLen: number,
  o: LossOptions,
): Promise<LossResult> => {
  const total = o.limit > 0 ? Math.min(o.limit, count) : count
  let nll = 0
  let tokens = 0
  let truncated = 0
  for (let start = 0; start < total; start += LOSS_CHUNK) {
    if (o.signal?.aborted) throw new Error("eval was interrupted")
    const end = Math.min(total, start + LOSS_CHUNK)
    const r = await session.loss(id, tokensDir, { start, end, maxLen }).catch((e: unknown) => {
      throw interrupted(o.signal, e)
    })
    nll += r.nll
    tokens += r.tokens
    truncated += r.truncated
    o.onSequence?.(end, total)
  }
  return { nll, tokens, sequences: total, truncated }
}

/**
 * Greedy.ts's greedy on the worker. The worker decodes up to the limit or a
 * stop id; the answer then ends at the first prefix `done` accepts, the
 * token at which Greedy.ts's check after each token would have stopped.
 */
export const torchGreedy = async (
  session: TorchSession,
  id: string,
  maxSeqLen: number,
  promptIds: ReadonlyArray<number>,
  o: GreedyOptions,
): Promise<number[]> => {
  if (o.signal?.aborted) throw new Error("eval was interrupted")
  const limit = Math.min(o.maxTokens, maxSeqLen - promptIds.length + 1)
  if (limit <= 0) return []
  const ids = await session.greedy(id, promptIds, limit, o.stopIds).catch((e: unknown) => {
    throw interrupted(o.signal, e)
  })
  if (o.done === undefined) return ids
  for (let k = 1; k <= ids.length; k++) {
    const prefix = ids.slice(0, k)
    if (await o.done(prefix)) return prefix
  }
  return ids
}

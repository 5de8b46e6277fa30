/**
 * Greedy decoding for evaluation: plugins/train/Generate.ts's loop at
 * temperature 0 (argmax, key/value cache, stop ids), plus a test after each
 * token so an answer ends as soon as it holds a stop string, and the step's
 * interruption signal. Without these, every answer would run to maxNewTokens.
 */
import * as tf from "@tensorflow/tfjs-core"
import { argmax } from "../train/Generate.ts"
import type { KvCache, LlamaModel } from "../train/Llama.ts"

export interface GreedyOptions {
  readonly maxTokens: number
  /** Ids that end the answer without being part of it (EOS). */
  readonly stopIds: ReadonlyArray<number>
  /** Called with the answer so far after each token; true ends it. */
  readonly done?: (ids: ReadonlyArray<number>) => boolean | Promise<boolean>
  readonly signal?: AbortSignal
}

/** Up to maxTokens ids after the prompt (stop ids excluded). */
export const greedy = async (
  model: LlamaModel,
  promptIds: ReadonlyArray<number>,
  o: GreedyOptions,
): Promise<number[]> => {
  const stop = new Set(o.stopIds)
  const cache: KvCache = { keys: [], values: [], length: 0 }
  const out: number[] = []
  const limit = Math.min(o.maxTokens, model.config.maxSeqLen - promptIds.length + 1)
  try {
    let input = [...promptIds]
    while (out.length < limit) {
      if (o.signal?.aborted) throw new Error("eval was interrupted")
      const last = tf.tidy(() => {
        const logits = model.logits({ ids: Int32Array.from(input), batch: 1, seq: input.length }, { cache })
        return tf.slice(logits, [input.length - 1, 0], [1, -1])
      })
      const row = (await last.data()) as Float32Array
      last.dispose()
      const next = argmax(row)
      if (stop.has(next)) break
      out.push(next)
      if (o.done !== undefined && (await o.done(out))) break
      input = [next]
    }
  } finally {
    for (const t of [...cache.keys, ...cache.values]) t.dispose()
  }
  return out
}

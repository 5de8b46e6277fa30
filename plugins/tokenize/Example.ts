/**
 * One training example from a record's tokenized parts: ids, and labels that
 * are -100 wherever the loss ignores the token. Labels are not shifted (label
 * i is token i; the trainer predicts it from position i - 1), so the first
 * token of every example is -100: nothing inside the example predicts it,
 * which also keeps packed examples from learning across their boundary.
 */
import type { Part } from "./Template.ts"

export const IGNORE = -100

export interface Example {
  readonly ids: number[]
  readonly labels: number[]
}

export interface ExampleOptions {
  /** Prepended (never in the loss) when defined, unless the text already starts with it (a template that writes BOS). */
  readonly bosId: number | undefined
  /**
   * Appended and kept in the loss when defined, unless the text already ends with it or the last reply already
   * holds one of `endIds` (a chat template's end of turn, such as <|im_end|> followed by a newline).
   */
  readonly eosId: number | undefined
  /** Every id that ends a reply (the tokenizer's EOS ids). */
  readonly endIds?: ReadonlyArray<number>
  readonly trainOnInputs: boolean
}

export const buildExample = (
  parts: ReadonlyArray<Part>,
  partIds: ReadonlyArray<ReadonlyArray<number>>,
  o: ExampleOptions,
): Example => {
  const ids: number[] = []
  const labels: number[] = []
  const firstId = partIds.find((p) => p.length > 0)?.[0]
  if (o.bosId !== undefined && firstId !== o.bosId) {
    ids.push(o.bosId)
    labels.push(IGNORE)
  }
  parts.forEach((part, i) => {
    const train = part.train || o.trainOnInputs
    for (const id of partIds[i]!) {
      ids.push(id)
      labels.push(train ? id : IGNORE)
    }
  })
  let lastReply = parts.length - 1
  while (lastReply >= 0 && !parts[lastReply]!.train) lastReply--
  const ends = new Set([...(o.endIds ?? []), ...(o.eosId === undefined ? [] : [o.eosId])])
  const replyEnds = lastReply >= 0 && partIds[lastReply]!.some((id) => ends.has(id))
  if (o.eosId !== undefined && ids[ids.length - 1] !== o.eosId && !replyEnds) {
    ids.push(o.eosId)
    labels.push(o.eosId)
  }
  if (labels.length > 0) labels[0] = IGNORE
  return { ids, labels }
}

/** Whether any token of the example is in the loss. */
export const hasTarget = (labels: ReadonlyArray<number>): boolean => labels.some((l) => l !== IGNORE)

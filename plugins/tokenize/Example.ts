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
  /** Prepended (never in the loss) when defined. */
  readonly bosId: number | undefined
  /** Appended and kept in the loss when defined, unless the text already ends with it. */
  readonly eosId: number | undefined
  readonly trainOnInputs: boolean
}

export const buildExample = (
  parts: ReadonlyArray<Part>,
  partIds: ReadonlyArray<ReadonlyArray<number>>,
  o: ExampleOptions,
): Example => {
  const ids: number[] = []
  const labels: number[] = []
  if (o.bosId !== undefined) {
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
  if (o.eosId !== undefined && ids[ids.length - 1] !== o.eosId) {
    ids.push(o.eosId)
    labels.push(o.eosId)
  }
  if (labels.length > 0) labels[0] = IGNORE
  return { ids, labels }
}

/** Whether any token of the example is in the loss. */
export const hasTarget = (labels: ReadonlyArray<number>): boolean => labels.some((l) => l !== IGNORE)

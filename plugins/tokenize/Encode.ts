/**
 * A chunk's encoded examples, written straight into growable typed arrays:
 * per record its line and example length (or NO_REPLY), and the ids and
 * labels of every example back to back. Each example is built from its
 * parts' ranges in the tokenizer's own id arrays (PartIds), with the rules of
 * buildExample (Example.ts), so no per-part or per-example array is made.
 */
import { type ExampleOptions, IGNORE } from "./Example.ts"
import type { Part } from "./Template.ts"

/**
 * The ids of a batch of texts, without a copy per text: text i's ids are
 * `sequences[sequenceOf[i]]` from `starts[i]` to `ends[i]`. A sequence holds
 * the ids of one text, or of a text and the continued ones after it.
 */
export interface PartIds {
  readonly sequences: ReadonlyArray<ReadonlyArray<number>>
  readonly sequenceOf: Uint32Array
  readonly starts: Uint32Array
  readonly ends: Uint32Array
  /** Ids in all sequences. */
  readonly tokens: number
}

/** PartIds over one id array per text. */
export const partIdsOf = (perText: ReadonlyArray<ReadonlyArray<number>>): PartIds => {
  const n = perText.length
  const sequenceOf = new Uint32Array(n)
  const starts = new Uint32Array(n)
  const ends = new Uint32Array(n)
  let tokens = 0
  for (let i = 0; i < n; i++) {
    sequenceOf[i] = i
    ends[i] = perText[i]!.length
    tokens += perText[i]!.length
  }
  return { sequences: perText, sequenceOf, starts, ends, tokens }
}

/** Each text's ids as its own array. */
export const splitPartIds = (p: PartIds): number[][] => {
  const out: number[][] = []
  for (let i = 0; i < p.sequenceOf.length; i++) {
    out.push(p.sequences[p.sequenceOf[i]!]!.slice(p.starts[i]!, p.ends[i]!) as number[])
  }
  return out
}

/** Marks a record of the chunk that has no reply to train on, in place of its example's length. */
export const NO_REPLY = 0xffffffff

export interface ChunkArrays {
  readonly items: Uint32Array
  readonly ids: Uint32Array
  readonly labels: Int32Array
}

const grown = <T extends Uint32Array | Int32Array>(a: T, need: number, make: (n: number) => T): T => {
  if (need <= a.length) return a
  let n = a.length * 2
  while (n < need) n *= 2
  const b = make(n)
  b.set(a)
  return b
}

export class ChunkBuilder {
  private items = new Uint32Array(1024)
  private ids = new Uint32Array(64 * 1024)
  private labels = new Int32Array(64 * 1024)
  private nItems = 0
  private nIds = 0
  private readonly bosId: number
  private readonly eosId: number
  private readonly hasBos: boolean
  private readonly hasEos: boolean
  private readonly trainOnInputs: boolean
  /** The ids that end a reply (endIds and eosId); `ends.size === 1` compares with `end` alone. */
  private readonly endSet: ReadonlySet<number>
  private readonly end: number

  constructor(o: ExampleOptions) {
    this.hasBos = o.bosId !== undefined
    this.bosId = o.bosId ?? 0
    this.hasEos = o.eosId !== undefined
    this.eosId = o.eosId ?? 0
    this.trainOnInputs = o.trainOnInputs
    this.endSet = new Set([...(o.endIds ?? []), ...(o.eosId === undefined ? [] : [o.eosId])])
    this.end = this.endSet.size === 1 ? [...this.endSet][0]! : -1
  }

  private item(line: number, value: number): void {
    if (this.nItems + 2 > this.items.length)
      this.items = grown(this.items, this.nItems + 2, (n) => new Uint32Array(n))
    this.items[this.nItems++] = line
    this.items[this.nItems++] = value
  }

  noReply(line: number): void {
    this.item(line, NO_REPLY)
  }

  /** Whether ids[start, end) holds an id that ends a reply. */
  private endsReply(ids: ReadonlyArray<number>, start: number, end: number): boolean {
    const size = this.endSet.size
    if (size === 0) return false
    if (size === 1) {
      const e = this.end
      for (let t = start; t < end; t++) if (ids[t] === e) return true
      return false
    }
    for (let t = start; t < end; t++) if (this.endSet.has(ids[t]!)) return true
    return false
  }

  /** The example of a record whose parts are texts `first`.. of `p`; the same ids and labels as buildExample. */
  example(line: number, parts: ReadonlyArray<Part>, p: PartIds, first: number): void {
    const n = parts.length
    let total = 2 // room for BOS and EOS
    let firstId = -1
    for (let i = 0; i < n; i++) {
      const len = p.ends[first + i]! - p.starts[first + i]!
      if (firstId < 0 && len > 0) firstId = p.sequences[p.sequenceOf[first + i]!]![p.starts[first + i]!]!
      total += len
    }
    if (this.nIds + total > this.ids.length) {
      this.ids = grown(this.ids, this.nIds + total, (k) => new Uint32Array(k))
      this.labels = grown(this.labels, this.nIds + total, (k) => new Int32Array(k))
    }
    const ids = this.ids
    const labels = this.labels
    const begin = this.nIds
    let at = begin
    if (this.hasBos && firstId !== this.bosId) {
      ids[at] = this.bosId
      labels[at] = IGNORE
      at++
    }
    let lastReply = -1
    for (let i = 0; i < n; i++) {
      const seq = p.sequences[p.sequenceOf[first + i]!]!
      const start = p.starts[first + i]!
      const end = p.ends[first + i]!
      const train = parts[i]!.train
      if (train) lastReply = i
      if (train || this.trainOnInputs) {
        for (let t = start; t < end; t++) {
          const id = seq[t]!
          ids[at] = id
          labels[at] = id
          at++
        }
      } else {
        for (let t = start; t < end; t++) {
          ids[at] = seq[t]!
          labels[at] = IGNORE
          at++
        }
      }
    }
    if (this.hasEos && (at === begin || ids[at - 1] !== this.eosId)) {
      const replyEnds =
        lastReply >= 0 &&
        this.endsReply(
          p.sequences[p.sequenceOf[first + lastReply]!]!,
          p.starts[first + lastReply]!,
          p.ends[first + lastReply]!,
        )
      if (!replyEnds) {
        ids[at] = this.eosId
        labels[at] = this.eosId
        at++
      }
    }
    if (at > begin) labels[begin] = IGNORE
    this.nIds = at
    this.item(line, at - begin)
  }

  /** The arrays written so far, as views. */
  arrays(): ChunkArrays {
    return {
      items: this.items.subarray(0, this.nItems),
      ids: this.ids.subarray(0, this.nIds),
      labels: this.labels.subarray(0, this.nIds),
    }
  }
}

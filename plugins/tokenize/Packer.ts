/**
 * Packs short examples into sequences of at most `capacity` tokens. Streaming
 * best fit: an example goes into the open sequence it fills most tightly;
 * when none has room and `maxOpen` are open, the fullest one is emitted.
 * Deterministic, and memory stays at `maxOpen` sequences.
 */
import type { Example } from "./Example.ts"

export interface PackedSequence {
  readonly examples: ReadonlyArray<Example>
  readonly length: number
}

interface Bin {
  readonly examples: Example[]
  length: number
}

export class Packer {
  private open: Bin[] = []

  constructor(
    private readonly capacity: number,
    private emit: (sequence: PackedSequence) => void,
    private readonly maxOpen = 64,
  ) {}

  /** Where the sequences it closes from now on go. */
  emitTo(emit: (sequence: PackedSequence) => void): void {
    this.emit = emit
  }

  /**
   * The open sequences, as bytes: what a chunked step carries from one chunk
   * to the next (equal bytes, equal packing from there on). Per sequence its
   * example count, then per example its length, ids and labels (uint32/int32 LE).
   */
  state(): Uint8Array {
    let words = 1
    for (const b of this.open) words += 1 + b.examples.length + 2 * b.length
    const out = new Int32Array(words)
    let at = 0
    out[at++] = this.open.length
    for (const b of this.open) {
      out[at++] = b.examples.length
      for (const e of b.examples) {
        const n = e.ids.length
        out[at++] = n
        for (let i = 0; i < n; i++) out[at + i] = e.ids[i]!
        for (let i = 0; i < n; i++) out[at + n + i] = e.labels[i]!
        at += 2 * n
      }
    }
    return new Uint8Array(out.buffer)
  }

  /** Takes up the open sequences `state` holds (from `state()`), in place of its own. */
  restore(state: Uint8Array): void {
    const w = new Int32Array(state.buffer, state.byteOffset, state.byteLength / 4)
    let at = 0
    const bins = w[at++]!
    this.open = []
    for (let k = 0; k < bins; k++) {
      const count = w[at++]!
      const bin: Bin = { examples: [], length: 0 }
      for (let j = 0; j < count; j++) {
        const n = w[at++]!
        const ids = Array.from(w.subarray(at, at + n))
        const labels = Array.from(w.subarray(at + n, at + 2 * n))
        at += 2 * n
        bin.examples.push({ ids, labels })
        bin.length += n
      }
      this.open.push(bin)
    }
  }

  add(example: Example): void {
    const len = example.ids.length
    if (len > this.capacity)
      throw new RangeError(`example of ${len} tokens exceeds the packing capacity ${this.capacity}`)
    let best = -1
    for (let i = 0; i < this.open.length; i++) {
      const room = this.capacity - this.open[i]!.length
      if (room >= len && (best < 0 || room < this.capacity - this.open[best]!.length)) best = i
    }
    if (best >= 0) {
      const bin = this.open[best]!
      bin.examples.push(example)
      bin.length += len
      if (bin.length === this.capacity) this.close(best)
      return
    }
    if (this.open.length >= this.maxOpen) {
      let fullest = 0
      for (let i = 1; i < this.open.length; i++)
        if (this.open[i]!.length > this.open[fullest]!.length) fullest = i
      this.close(fullest)
    }
    this.open.push({ examples: [example], length: len })
    if (len === this.capacity) this.close(this.open.length - 1)
  }

  /** Emits every open sequence, oldest first. */
  finish(): void {
    while (this.open.length > 0) this.close(0)
  }

  private close(i: number): void {
    const [bin] = this.open.splice(i, 1)
    this.emit(bin!)
  }
}

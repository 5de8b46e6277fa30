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
    private readonly emit: (sequence: PackedSequence) => void,
    private readonly maxOpen = 64,
  ) {}

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

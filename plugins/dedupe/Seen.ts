/**
 * A set of 16-byte fingerprints, each with the index of the record that
 * first had it: open addressing over typed arrays, 20 bytes a slot, at most
 * half full. A million records take about 40 MB.
 */
export class Seen {
  private keys: Uint32Array
  private values: Int32Array
  private mask: number
  private last = -1
  private found = -1
  size = 0

  constructor(capacity = 1 << 16) {
    let cap = 16
    while (cap < capacity) cap <<= 1
    this.keys = new Uint32Array(cap * 4)
    this.values = new Int32Array(cap).fill(-1)
    this.mask = cap - 1
  }

  /** The index stored with fingerprint fp[at, at + 4), or -1 after storing `index` with it. */
  addOrGet(fp: Uint32Array, at: number, index: number): number {
    if ((this.size + 1) * 2 > this.values.length) this.grow()
    const a = fp[at]!
    const b = fp[at + 1]!
    const c = fp[at + 2]!
    const d = fp[at + 3]!
    const keys = this.keys
    let slot = (a ^ Math.imul(c, 0x9e3779b1)) & this.mask
    for (;;) {
      const v = this.values[slot]!
      if (v < 0) {
        keys[slot * 4] = a
        keys[slot * 4 + 1] = b
        keys[slot * 4 + 2] = c
        keys[slot * 4 + 3] = d
        this.values[slot] = index
        this.last = slot
        this.size++
        return -1
      }
      const k = slot * 4
      if (keys[k] === a && keys[k + 1] === b && keys[k + 2] === c && keys[k + 3] === d) {
        this.found = slot
        return v
      }
      slot = (slot + 1) & this.mask
    }
  }

  /** Changes the index stored by the last addOrGet that stored one. */
  relabelLast(index: number): void {
    if (this.last >= 0) this.values[this.last] = index
  }

  /** Changes the index stored with the fingerprint the last addOrGet found. */
  setFound(index: number): void {
    if (this.found >= 0) this.values[this.found] = index
  }

  /** Its arrays and count, to keep (a chunked step's state between chunks). */
  save(): { keys: Uint32Array; values: Int32Array; size: number } {
    return { keys: this.keys, values: this.values, size: this.size }
  }

  /** Takes up a state `save` gave: the same slots, so the same answers in the same order. */
  load(state: { keys: Uint32Array; values: Int32Array; size: number }): void {
    this.keys = state.keys
    this.values = state.values
    this.mask = state.values.length - 1
    this.size = state.size
    this.last = -1
    this.found = -1
  }

  /** Bytes held, for the report. */
  get bytes(): number {
    return this.keys.byteLength + this.values.byteLength
  }

  private grow(): void {
    const oldKeys = this.keys
    const oldValues = this.values
    const cap = oldValues.length * 2
    this.keys = new Uint32Array(cap * 4)
    this.values = new Int32Array(cap).fill(-1)
    this.mask = cap - 1
    this.size = 0
    for (let i = 0; i < oldValues.length; i++)
      if (oldValues[i]! >= 0) this.addOrGet(oldKeys, i * 4, oldValues[i]!)
    this.last = -1
    this.found = -1
  }
}

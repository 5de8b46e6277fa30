/**
 * Locality-sensitive hashing over MinHash signatures: the signature is cut
 * into `bands` bands of `rows` values; two records whose signatures agree on
 * every value of some band become candidates. With Jaccard similarity s the
 * chance of that is 1 - (1 - s^rows)^bands, an S-curve whose midpoint sits
 * near (1/bands)^(1/rows).
 *
 * Each band's values hash to 32 bits; one open-addressing table maps
 * (band, hash) to a chain of the records that had it, all in typed arrays
 * (about 20 bytes per record and band).
 */
export class Lsh {
  private keys: Uint32Array
  private heads: Int32Array
  private mask: number
  private used = 0
  private entryRecord = new Int32Array(1 << 12)
  private entryNext = new Int32Array(1 << 12)
  private entries = 0
  /** Records seen per query, to visit each candidate once. */
  private stamp = new Int32Array(1 << 12)
  private query = 0

  constructor(
    readonly bands: number,
    readonly rows: number,
  ) {
    this.keys = new Uint32Array(1 << 12)
    this.heads = new Int32Array(1 << 12).fill(-1)
    this.mask = (1 << 12) - 1
  }

  /** The probability that a pair with Jaccard similarity s becomes a candidate. */
  static candidateProbability(s: number, bands: number, rows: number): number {
    return 1 - (1 - s ** rows) ** bands
  }

  /** Band keys of a signature into `out` (length bands). */
  keysOf(sig: Uint32Array, out: Uint32Array): void {
    for (let band = 0; band < this.bands; band++) {
      let h = Math.imul(band + 1, 0x9e3779b1)
      const base = band * this.rows
      for (let r = 0; r < this.rows; r++) {
        h = Math.imul(h ^ sig[base + r]!, 0x01000193)
        h ^= h >>> 15
      }
      h = Math.imul(h ^ (h >>> 16), 0x85ebca6b)
      out[band] = (h ^ (h >>> 13)) >>> 0
    }
  }

  /** Calls `visit` once for each earlier record sharing a band key; stops when it returns true. */
  candidates(keys: Uint32Array, visit: (record: number) => boolean): boolean {
    const q = ++this.query
    for (let band = 0; band < keys.length; band++) {
      let e = this.find(keys[band]!)
      e = e < 0 ? -1 : this.heads[e]!
      while (e >= 0) {
        const rec = this.entryRecord[e]!
        if (this.stamp[rec] !== q) {
          this.stamp[rec] = q
          if (visit(rec)) return true
        }
        e = this.entryNext[e]!
      }
    }
    return false
  }

  /** Adds record `record` (numbered 0, 1, 2... in insertion order) under its band keys. */
  add(record: number, keys: Uint32Array): void {
    if (record >= this.stamp.length) this.stamp = grow(this.stamp, record + 1)
    for (let band = 0; band < keys.length; band++) {
      if ((this.used + 1) * 2 > this.heads.length) this.rehash()
      const key = keys[band]!
      let slot = this.find(key)
      if (slot < 0) {
        slot = this.emptySlot(key)
        this.keys[slot] = key
        this.used++
      }
      if (this.entries === this.entryRecord.length) {
        this.entryRecord = grow(this.entryRecord, this.entries + 1)
        this.entryNext = grow(this.entryNext, this.entries + 1)
      }
      this.entryRecord[this.entries] = record
      this.entryNext[this.entries] = this.heads[slot]!
      this.heads[slot] = this.entries++
    }
  }

  get bytes(): number {
    return (
      this.keys.byteLength + this.heads.byteLength + this.entryRecord.byteLength * 2 + this.stamp.byteLength
    )
  }

  private find(key: number): number {
    let slot = (Math.imul(key, 0x9e3779b1) >>> 0) & this.mask
    for (;;) {
      if (this.heads[slot]! < 0) return -1
      if (this.keys[slot] === key) return slot
      slot = (slot + 1) & this.mask
    }
  }

  private emptySlot(key: number): number {
    let slot = (Math.imul(key, 0x9e3779b1) >>> 0) & this.mask
    while (this.heads[slot]! >= 0) slot = (slot + 1) & this.mask
    return slot
  }

  private rehash(): void {
    const oldKeys = this.keys
    const oldHeads = this.heads
    const cap = oldHeads.length * 2
    this.keys = new Uint32Array(cap)
    this.heads = new Int32Array(cap).fill(-1)
    this.mask = cap - 1
    for (let i = 0; i < oldHeads.length; i++) {
      if (oldHeads[i]! < 0) continue
      const slot = this.emptySlot(oldKeys[i]!)
      this.keys[slot] = oldKeys[i]!
      this.heads[slot] = oldHeads[i]!
    }
  }
}

const grow = <T extends Int32Array>(a: T, min: number): T => {
  let n = a.length * 2
  while (n < min) n *= 2
  const b = new Int32Array(n) as T
  b.set(a)
  return b
}

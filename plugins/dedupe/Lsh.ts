/**
 * Locality-sensitive hashing over MinHash signatures: the signature is cut
 * into `bands` bands of `rows` values; two records whose signatures agree on
 * every value of some band become candidates. With Jaccard similarity s the
 * chance of that is 1 - (1 - s^rows)^bands, an S-curve whose midpoint sits
 * near (1/bands)^(1/rows).
 *
 * Each band's values hash to 32 bits (the band number mixed in). One
 * open-addressing table holds a (key, record) pair per slot, repeated keys
 * included, so a lookup walks the probe run collecting the records whose key
 * matches: 8 bytes per pair, at most 70% full (about 12-23 bytes per record
 * and band).
 */
export class Lsh {
  private keys: Uint32Array
  private records: Int32Array
  private mask: number
  private used = 0
  /** The query that last visited each record, to visit each candidate once per query. */
  private stamp = new Int32Array(1 << 12)
  private query = 0

  constructor(
    readonly bands: number,
    readonly rows: number,
  ) {
    this.keys = new Uint32Array(1 << 12)
    this.records = new Int32Array(1 << 12).fill(-1)
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
      const key = keys[band]!
      let slot = this.home(key)
      for (;;) {
        const rec = this.records[slot]!
        if (rec < 0) break
        if (this.keys[slot] === key && this.stamp[rec] !== q) {
          this.stamp[rec] = q
          if (visit(rec)) return true
        }
        slot = (slot + 1) & this.mask
      }
    }
    return false
  }

  /** Adds record `record` (numbered 0, 1, 2... in insertion order) under its band keys. */
  add(record: number, keys: Uint32Array): void {
    if (record >= this.stamp.length) {
      const bigger = new Int32Array(Math.max(record + 1, this.stamp.length * 2))
      bigger.set(this.stamp)
      this.stamp = bigger
    }
    for (let band = 0; band < keys.length; band++) {
      if ((this.used + 1) * 10 > this.records.length * 7) this.rehash()
      this.put(keys[band]!, record)
      this.used++
    }
  }

  /** Its table, to keep (a chunked step's state between chunks); `stamp` is scratch, only its size counts. */
  save(): { keys: Uint32Array; records: Int32Array; used: number; stamps: number } {
    return { keys: this.keys, records: this.records, used: this.used, stamps: this.stamp.length }
  }

  /** Takes up a table `save` gave: the same slots, so candidates come in the same order. */
  load(state: { keys: Uint32Array; records: Int32Array; used: number; stamps: number }): void {
    this.keys = state.keys
    this.records = state.records
    this.mask = state.records.length - 1
    this.used = state.used
    this.stamp = new Int32Array(state.stamps)
    this.query = 0
  }

  get bytes(): number {
    return this.keys.byteLength + this.records.byteLength + this.stamp.byteLength
  }

  private home(key: number): number {
    return (Math.imul(key, 0x9e3779b1) >>> 0) & this.mask
  }

  private put(key: number, record: number): void {
    let slot = this.home(key)
    while (this.records[slot]! >= 0) slot = (slot + 1) & this.mask
    this.keys[slot] = key
    this.records[slot] = record
  }

  private rehash(): void {
    const oldKeys = this.keys
    const oldRecords = this.records
    const cap = oldRecords.length * 2
    this.keys = new Uint32Array(cap)
    this.records = new Int32Array(cap).fill(-1)
    this.mask = cap - 1
    for (let i = 0; i < oldRecords.length; i++) if (oldRecords[i]! >= 0) this.put(oldKeys[i]!, oldRecords[i]!)
  }
}

/**
 * Exact length distributions over a stream: a count per length, so
 * percentiles are exact and memory grows with the longest example only.
 */
export interface Distribution {
  readonly count: number
  readonly min: number
  readonly max: number
  readonly mean: number
  readonly p50: number
  readonly p90: number
  readonly p95: number
  readonly p99: number
}

export interface Bucket {
  /** Lengths in (from, to]. */
  readonly from: number
  readonly to: number | null
  readonly count: number
}

export class LengthStats {
  private counts = new Float64Array(1024)
  private n = 0
  private sum = 0
  private maxSeen = 0

  add(length: number): void {
    if (length >= this.counts.length) {
      const bigger = new Float64Array(Math.max(length + 1, this.counts.length * 2))
      bigger.set(this.counts)
      this.counts = bigger
    }
    this.counts[length]!++
    this.n++
    this.sum += length
    if (length > this.maxSeen) this.maxSeen = length
  }

  get count(): number {
    return this.n
  }

  /** The smallest length with at least q of all lengths at or below it. */
  quantile(q: number): number {
    if (this.n === 0) return 0
    const target = Math.max(1, Math.ceil(q * this.n))
    let seen = 0
    for (let len = 0; len <= this.maxSeen; len++) {
      seen += this.counts[len]!
      if (seen >= target) return len
    }
    return this.maxSeen
  }

  summary(): Distribution {
    let min = 0
    while (this.n > 0 && this.counts[min] === 0) min++
    return {
      count: this.n,
      min,
      max: this.maxSeen,
      mean: this.n === 0 ? 0 : Math.round((this.sum / this.n) * 10) / 10,
      p50: this.quantile(0.5),
      p90: this.quantile(0.9),
      p95: this.quantile(0.95),
      p99: this.quantile(0.99),
    }
  }

  /** The counts as [length, count] pairs (what a chunk keeps, to merge later). */
  entries(): Array<[number, number]> {
    const out: Array<[number, number]> = []
    for (let len = 0; len <= this.maxSeen; len++)
      if (this.counts[len]! > 0) out.push([len, this.counts[len]!])
    return out
  }

  /** Adds counts kept by `entries`. */
  merge(entries: ReadonlyArray<readonly [number, number]>): void {
    for (const [len, c] of entries) {
      if (len >= this.counts.length) {
        const bigger = new Float64Array(Math.max(len + 1, this.counts.length * 2))
        bigger.set(this.counts)
        this.counts = bigger
      }
      this.counts[len]! += c
      this.n += c
      this.sum += len * c
      if (len > this.maxSeen && c > 0) this.maxSeen = len
    }
  }

  /** Counts in (from, to] for the given upper edges, and one open bucket past the last. */
  histogram(edges: ReadonlyArray<number>): Bucket[] {
    const out: Bucket[] = []
    let from = -1
    for (const to of [...edges, Number.POSITIVE_INFINITY]) {
      let c = 0
      for (let len = from + 1; len <= Math.min(to, this.maxSeen); len++) c += this.counts[len]!
      out.push({ from: Math.max(from, 0), to: Number.isFinite(to) ? to : null, count: c })
      from = to
    }
    return out
  }
}

/** Eight even buckets up to maxLength, then 2x and 4x past it. */
export const lengthEdges = (maxLength: number): number[] => [
  ...Array.from({ length: 8 }, (_, i) => Math.round(((i + 1) * maxLength) / 8)),
  2 * maxLength,
  4 * maxLength,
]

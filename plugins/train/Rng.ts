/**
 * Seeded random numbers that do not depend on the backend: shuffles,
 * dropout masks and initial LoRA weights are functions of (seed, key...), so
 * a resumed run draws exactly what an uninterrupted one would.
 */

/** Mixes integers into one 32-bit seed (murmur3's finaliser over each word). */
export const mixSeed = (...words: number[]): number => {
  let h = 0x9e3779b9
  for (const w of words) {
    let k = Math.imul(w | 0, 0xcc9e2d51)
    k = (k << 15) | (k >>> 17)
    h ^= Math.imul(k, 0x1b873593)
    h = (h << 13) | (h >>> 19)
    h = (Math.imul(h, 5) + 0xe6546b64) | 0
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

/** mulberry32: small, fast, and good enough for shuffles and masks. */
export class Rng {
  private state: number
  constructor(seed: number) {
    this.state = seed >>> 0
  }
  nextU32(): number {
    this.state = (this.state + 0x6d2b79f5) | 0
    let t = this.state
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return (t ^ (t >>> 14)) >>> 0
  }
  /** Uniform in [0, 1). */
  next(): number {
    return this.nextU32() / 4294967296
  }
  /** Fisher–Yates permutation of 0..n-1. */
  permutation(n: number): Uint32Array {
    const p = new Uint32Array(n)
    for (let i = 0; i < n; i++) p[i] = i
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1))
      const t = p[i] as number
      p[i] = p[j] as number
      p[j] = t
    }
    return p
  }
}

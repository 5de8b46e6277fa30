/**
 * MinHash signatures of word n-gram shingles. Words are runs of letters and
 * digits after NFKC and lower-casing (everything else separates words), each
 * hashed to 32 bits; a shingle is the hash of n consecutive word hashes (a
 * text shorter than n words is one shingle). Permutation i maps a shingle
 * hash x to (a_i * x + b_i) mod 2^32 with a_i odd: a bijection of well-mixed
 * 32-bit values, cheap with Math.imul. ASCII text is tokenised straight from
 * its bytes; other text is normalised as a string first.
 */
import type { CanonicalRecord } from "../ingest/Records.ts"
import { type SimdMinHash, simdMinHash } from "./Simd.ts"
import { Field, recordFields, TextFields, type TextScope } from "./TextFields.ts"

const fmix = (h: number): number => {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  return (h ^ (h >>> 16)) >>> 0
}

const P = 0x01000193

/** Per byte: 0 for a separator, else the byte lower-cased (bytes of non-ASCII characters are word bytes). */
const WORD_BYTE = new Uint8Array(256)
for (let c = 0; c < 256; c++)
  WORD_BYTE[c] =
    c >= 128 || (c >= 97 && c <= 122) || (c >= 48 && c <= 57) ? c : c >= 65 && c <= 90 ? c + 32 : 0

// non-ASCII characters that are not letters, digits or marks (the byte loop splits ASCII itself)
// biome-ignore lint/suspicious/noControlCharactersInRegex: the range excludes all of ASCII
const NOT_WORD = /[^\p{L}\p{N}\p{M}\x00-\x7f]+/gu

/** Text as the tokeniser sees it: NFKC, lower case, non-ASCII non-word characters as spaces. */
export const wordText = (s: string): string => {
  const t = s.normalize("NFKC").toLowerCase()
  return NOT_WORD.test(t) ? t.replace(NOT_WORD, " ") : t
}

/** splitmix32: reproducible coefficients from a seed. */
export const splitmix = (seed: number) => {
  let s = seed >>> 0
  return (): number => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return (z ^ (z >>> 16)) >>> 0
  }
}

export interface MinHashOptions {
  readonly permutations: number
  readonly ngram: number
  readonly seed: number
  readonly scope: TextScope
  /** Use the WebAssembly SIMD kernel where available (default); false: JavaScript only. */
  readonly simd?: boolean
}

export class MinHasher {
  readonly a: Uint32Array
  readonly b: Uint32Array
  /** The shingles of the last text, in text order, repeats included (count of them in `count`). */
  shingles = new Uint32Array(1024)
  count = 0
  private readonly simd: SimdMinHash | undefined
  private readonly window: Uint32Array
  private words = 0
  private rolling = 0
  private ringAt = 0
  /** P^(n-1) mod 2^32, to take the oldest word out of the rolling hash. */
  private readonly topPower: number
  private readonly fields: TextFields
  private readonly sink = (f: Field, buf: Buffer, s: number, e: number, ascii: boolean) => {
    if (f === Field.Role) return
    const n = this.fields.unescape(buf, s, e)
    const data = this.fields.scratch
    if (ascii) this.tokens(data, n)
    else {
      const b = Buffer.from(wordText(data.toString("utf8", 0, n)))
      this.tokens(b, b.length)
    }
  }

  constructor(private readonly options: MinHashOptions) {
    const next = splitmix(options.seed)
    this.a = new Uint32Array(options.permutations)
    this.b = new Uint32Array(options.permutations)
    for (let i = 0; i < options.permutations; i++) {
      this.a[i] = next() | 1
      this.b[i] = next()
    }
    this.simd = options.simd === false ? undefined : simdMinHash(this.a, this.b)
    this.window = new Uint32Array(options.ngram)
    let power = 1
    for (let i = 1; i < options.ngram; i++) power = Math.imul(power, P)
    this.topPower = power
    this.fields = new TextFields(options.scope)
  }

  /** Shingles of the canonical line buf[start, end) into `shingles[0, count)`. */
  shingleLine(buf: Buffer, start: number, end: number): number {
    this.begin()
    if (!this.fields.scan(buf, start, end, this.sink)) {
      this.begin()
      this.shingleRecord(JSON.parse(buf.toString("utf8", start, end)) as CanonicalRecord)
      return this.count
    }
    return this.end()
  }

  /** Shingles of a record (the general path, equal to shingleLine on its canonical line). */
  shingleRecord(r: CanonicalRecord): number {
    this.begin()
    for (const [f, text] of recordFields(r, this.options.scope)) {
      if (f === Field.Role) continue
      const b = Buffer.from(wordText(text))
      this.tokens(b, b.length)
    }
    return this.end()
  }

  /** The signature of the current shingles into sig (length = permutations). */
  signature(sig: Uint32Array): void {
    if (this.simd !== undefined) {
      this.simd.signature(this.shingles, this.count, sig)
      return
    }
    sig.fill(0xffffffff)
    const a = this.a
    const b = this.b
    const n = a.length
    const sh = this.shingles
    for (let s = 0; s < this.count; s++) {
      const x = sh[s]!
      for (let i = 0; i < n; i++) {
        const v = (Math.imul(a[i]!, x) + b[i]!) >>> 0
        if (v < sig[i]!) sig[i] = v
      }
    }
  }

  /** The current shingles, sorted and distinct (for exact Jaccard): a copy. */
  sortedSet(): Uint32Array {
    const s = this.shingles.slice(0, this.count).sort()
    let n = s.length > 0 ? 1 : 0
    for (let i = 1; i < s.length; i++) if (s[i] !== s[n - 1]) s[n++] = s[i]!
    return s.subarray(0, n)
  }

  private begin(): void {
    this.count = 0
    this.words = 0
    this.rolling = 0
    this.ringAt = 0
  }

  private end(): number {
    // a text shorter than n words is one shingle
    if (this.words > 0 && this.words < this.options.ngram) this.push(this.shingleOf(this.words))
    // repeated shingles are left in: they do not change a minimum, and are rare
    return this.count
  }

  private tokens(data: Uint8Array, n: number): void {
    let h = 0x811c9dc5
    let inWord = false
    for (let i = 0; i < n; i++) {
      const m = WORD_BYTE[data[i]!]!
      if (m !== 0) {
        h = Math.imul(h ^ m, 0x01000193)
        inWord = true
      } else if (inWord) {
        this.word(fmix(h))
        h = 0x811c9dc5
        inWord = false
      }
    }
    // a field ends a word
    if (inWord) this.word(fmix(h))
  }

  /**
   * Shingle hashes roll: H = sum of w_j * P^(n-1-j) over the last n words
   * (mod 2^32), updated in O(1) per word, then mixed.
   */
  private word(w: number): void {
    const k = this.options.ngram
    const ring = this.window
    let at = this.ringAt
    if (this.words >= k) this.rolling = (this.rolling - Math.imul(ring[at]!, this.topPower)) | 0
    this.rolling = (Math.imul(this.rolling, P) + w) | 0
    ring[at] = w
    at++
    this.ringAt = at === k ? 0 : at
    this.words++
    if (this.words >= k) this.push(fmix(this.rolling ^ k))
  }

  /** The shingle of a text shorter than n words: all its words. */
  private shingleOf(m: number): number {
    return fmix(this.rolling ^ m)
  }

  private push(x: number): void {
    if (this.count === this.shingles.length) {
      const bigger = new Uint32Array(this.shingles.length * 2)
      bigger.set(this.shingles)
      this.shingles = bigger
    }
    this.shingles[this.count++] = x
  }
}

/** |A ∩ B| / |A ∪ B| of two sorted distinct sets. */
export const jaccard = (x: Uint32Array, y: Uint32Array): number => {
  let i = 0
  let j = 0
  let both = 0
  while (i < x.length && j < y.length) {
    if (x[i] === y[j]) {
      both++
      i++
      j++
    } else if (x[i]! < y[j]!) i++
    else j++
  }
  const union = x.length + y.length - both
  return union === 0 ? 1 : both / union
}

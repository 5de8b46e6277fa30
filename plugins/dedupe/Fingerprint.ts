/**
 * The 16-byte fingerprint of a record's normalised text, for exact
 * duplicates. Normalisation: Unicode NFKC, optional case folding, runs of
 * whitespace collapsed to one space, each field trimmed. ASCII text needs
 * no NFKC, so it is normalised straight from its bytes; other text is
 * normalised as a string first, then goes through the same byte loop.
 *
 * The hash is MurmurHash3 x86_128 of the normalised bytes (field tags and
 * separators included): not cryptographic, but collisions between different
 * texts are as unlikely as 2^-64 per pair, and texts are not adversarial.
 */
import type { CanonicalRecord } from "../ingest/Records.ts"
import { type Field, recordFields, TextFields, type TextScope } from "./TextFields.ts"

const ASCII = /^[\x20-\x7e\t\n\r]*$/
const WS = /\s+/g
// whitespace that NFKC leaves as it is (it maps the other Unicode spaces to U+0020)
const OTHER_WS = /[\u1680\u2028\u2029\ufeff]/g

/** The normalised form of a text: what two texts must share to be exact duplicates (the reference). */
export const normalizeText = (s: string, caseFold: boolean): string => {
  let t = ASCII.test(s) ? s : s.normalize("NFKC")
  if (caseFold) t = t.toLowerCase()
  return t.replace(WS, " ").trim()
}

/**
 * Whether UTF-8 text is left as it is by NFKC and holds no non-ASCII
 * whitespace, judged conservatively from the blocks of its characters: the
 * common ones (Latin-1 and Latin Extended-A letters, Greek and Cyrillic, dashes and
 * quotes, kana, CJK ideographs, Hangul syllables, emoji) have no
 * compatibility mapping and compose with nothing that follows them. Such
 * text skips the string round trip.
 */
export const nfkcStable = (buf: Uint8Array, s: number, e: number): boolean => {
  for (let i = s; i < e; i++) {
    const b = buf[i]!
    if (b < 0x80) continue
    let cp: number
    if (b < 0xe0) {
      cp = ((b & 0x1f) << 6) | (buf[i + 1]! & 0x3f)
      i += 1
    } else if (b < 0xf0) {
      cp = ((b & 0x0f) << 12) | ((buf[i + 1]! & 0x3f) << 6) | (buf[i + 2]! & 0x3f)
      i += 2
    } else {
      cp =
        ((b & 0x07) << 18) | ((buf[i + 1]! & 0x3f) << 12) | ((buf[i + 2]! & 0x3f) << 6) | (buf[i + 3]! & 0x3f)
      i += 3
    }
    if (cp >= 0xc0 && cp <= 0x17f) {
      if (cp === 0x132 || cp === 0x133 || cp === 0x13f || cp === 0x140 || cp === 0x149 || cp === 0x17f)
        return false
    } else if (
      !(
        cp === 0x386 ||
        (cp >= 0x388 && cp <= 0x3ce) ||
        (cp >= 0x400 && cp <= 0x4ff) ||
        cp === 0x2010 ||
        (cp >= 0x2012 && cp <= 0x2022) ||
        (cp >= 0x3041 && cp <= 0x3096) ||
        (cp >= 0x30a1 && cp <= 0x30fa) ||
        (cp >= 0x4e00 && cp <= 0x9fff) ||
        (cp >= 0xac00 && cp <= 0xd7a3) ||
        (cp >= 0x1f300 && cp <= 0x1faff)
      )
    )
      return false
  }
  return true
}

/** Non-ASCII text made ready for the byte loop, which collapses ASCII whitespace itself. */
const prepare = (s: string, caseFold: boolean): string => {
  let t = s.normalize("NFKC")
  if (OTHER_WS.test(t)) t = t.replace(OTHER_WS, " ")
  return caseFold ? t.toLowerCase() : t
}

export class Fingerprinter {
  /** The normalised byte stream of the current record, 4-byte aligned for hashing. */
  private norm = new Uint8Array(new ArrayBuffer(1 << 16))
  private words = new Uint32Array(this.norm.buffer)
  private n = 0
  private readonly fields: TextFields
  private readonly sink = (field: Field, buf: Buffer, s: number, e: number, ascii: boolean) => {
    if (!this.caseFold && (ascii || nfkcStable(buf, s, e))) return this.asciiField(field, buf, s, e)
    const n = this.fields.unescape(buf, s, e)
    const data = this.fields.scratch
    if (ascii) this.field(field, data, n)
    else {
      const b = Buffer.from(prepare(data.toString("utf8", 0, n), this.caseFold))
      this.field(field, b, b.length)
    }
  }

  constructor(
    private readonly scope: TextScope,
    private readonly caseFold: boolean,
    private readonly seed = 0x9747b28c,
  ) {
    this.fields = new TextFields(scope)
  }

  /** Fingerprint of the canonical line buf[start, end) into out[at, at + 4). */
  line(buf: Buffer, start: number, end: number, out: Uint32Array, at: number): void {
    this.n = 0
    if (!this.fields.scan(buf, start, end, this.sink)) {
      this.n = 0
      this.record(JSON.parse(buf.toString("utf8", start, end)) as CanonicalRecord)
    }
    murmur128(this.norm, this.words, this.n, this.seed, out, at)
  }

  /** Fingerprint of a record: the general path, equal to line() on its canonical line. */
  of(r: CanonicalRecord, out: Uint32Array, at: number): void {
    this.n = 0
    this.record(r)
    murmur128(this.norm, this.words, this.n, this.seed, out, at)
  }

  private record(r: CanonicalRecord): void {
    for (const [f, text] of recordFields(r, this.scope)) {
      const b = Buffer.from(normalizeText(text, this.caseFold))
      this.field(f, b, b.length)
    }
  }

  /**
   * field() for ASCII text still in its JSON form: raw runs hold no control
   * characters (JSON escapes them), so their only whitespace is spaces, and
   * the only work per byte is a copy and a test for a space.
   */
  private asciiField(f: Field, buf: Buffer, s: number, e: number): void {
    this.reserve(e - s + 3)
    // buf is a view of one line (TextFields.scan): the next backslash in it is searched once
    if (buf !== this.viewed) {
      this.viewed = buf
      this.backslash = -2
    }
    const out = this.norm
    let o = this.n
    out[o++] = 0x1e
    out[o++] = 48 + f
    const first = o
    let p = s
    while (p < e) {
      if (this.backslash !== -1 && this.backslash < p) this.backslash = buf.indexOf(92, p)
      const b = this.backslash < 0 || this.backslash > e ? e : this.backslash
      // a space is dropped at the start and after a space (including escaped whitespace):
      // every byte is written, the position advances unless it repeats a space (no branch to mispredict)
      let prev = o === first ? 32 : out[o - 1]!
      for (let i = p; i < b; i++) {
        const c = buf[i]!
        out[o] = c
        o += ((c ^ 32) | (prev ^ 32)) === 0 ? 0 : 1
        prev = c
      }
      if (b >= e) break
      const x = buf[b + 1]!
      p = b + 2
      let c: number
      switch (x) {
        case 110:
          c = 10
          break
        case 116:
          c = 9
          break
        case 114:
          c = 13
          break
        case 98:
          c = 8
          break
        case 102:
          c = 12
          break
        case 117:
          c = Number.parseInt(buf.toString("latin1", p, p + 4), 16)
          p += 4
          break
        default:
          c = x
      }
      if (c === 32 || (c >= 9 && c <= 13)) {
        if (o > first && out[o - 1] !== 32) out[o++] = 32
      } else out[o++] = c
    }
    if (o > first && out[o - 1] === 32) o--
    out[o++] = 0x1f
    this.n = o
  }

  private viewed: Buffer | undefined
  private backslash = -2

  private reserve(extra: number): void {
    if (this.norm.length >= this.n + extra) return
    const bigger = new Uint8Array(new ArrayBuffer((2 * (this.n + extra) + 16) & ~15))
    bigger.set(this.norm.subarray(0, this.n))
    this.norm = bigger
    this.words = new Uint32Array(bigger.buffer)
  }

  /** One field: a tag (which also tells record kinds apart), the text with whitespace collapsed and trimmed, a separator. */
  private field(f: Field, data: Uint8Array, length: number): void {
    this.reserve(length + 3)
    const out = this.norm
    let o = this.n
    out[o++] = 0x1e
    out[o++] = 48 + f
    const fold = this.caseFold
    let started = false
    let space = false
    for (let i = 0; i < length; i++) {
      let c = data[i]!
      if (c === 32 || (c >= 9 && c <= 13)) {
        if (started) space = true
        continue
      }
      if (space) {
        out[o++] = 32
        space = false
      }
      if (fold && c >= 65 && c <= 90) c += 32
      out[o++] = c
      started = true
    }
    out[o++] = 0x1f
    this.n = o
  }
}

const rotl = (x: number, r: number): number => (x << r) | (x >>> (32 - r))

const fmix = (h: number): number => {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  return h ^ (h >>> 16)
}

const C1 = 0x239b961b
const C2 = 0xab0e9789
const C3 = 0x38b34ae5
const C4 = 0xa1e38b93

/** MurmurHash3 x86_128 of bytes[0, n) (words: the same memory as little-endian 32-bit words). */
export const murmur128 = (
  bytes: Uint8Array,
  words: Uint32Array,
  n: number,
  seed: number,
  out: Uint32Array,
  at: number,
): void => {
  let h1 = seed
  let h2 = seed
  let h3 = seed
  let h4 = seed
  const blocks = n >>> 4
  for (let i = 0; i < blocks; i++) {
    const w = i << 2
    let k1 = words[w]!
    let k2 = words[w + 1]!
    let k3 = words[w + 2]!
    let k4 = words[w + 3]!
    k1 = Math.imul(rotl(Math.imul(k1, C1), 15), C2)
    h1 ^= k1
    h1 = rotl(h1, 19) + h2
    h1 = (Math.imul(h1, 5) + 0x561ccd1b) | 0
    k2 = Math.imul(rotl(Math.imul(k2, C2), 16), C3)
    h2 ^= k2
    h2 = rotl(h2, 17) + h3
    h2 = (Math.imul(h2, 5) + 0x0bcaa747) | 0
    k3 = Math.imul(rotl(Math.imul(k3, C3), 17), C4)
    h3 ^= k3
    h3 = rotl(h3, 15) + h4
    h3 = (Math.imul(h3, 5) + 0x96cd1c35) | 0
    k4 = Math.imul(rotl(Math.imul(k4, C4), 18), C1)
    h4 ^= k4
    h4 = rotl(h4, 13) + h1
    h4 = (Math.imul(h4, 5) + 0x32ac3b17) | 0
  }
  const tail = blocks << 4
  let k1 = 0
  let k2 = 0
  let k3 = 0
  let k4 = 0
  for (let i = n - 1; i >= tail; i--) {
    const b = bytes[i]!
    const j = i - tail
    if (j >= 12) k4 |= b << ((j - 12) << 3)
    else if (j >= 8) k3 |= b << ((j - 8) << 3)
    else if (j >= 4) k2 |= b << ((j - 4) << 3)
    else k1 |= b << (j << 3)
  }
  if (n - tail > 12) h4 ^= Math.imul(rotl(Math.imul(k4, C4), 18), C1)
  if (n - tail > 8) h3 ^= Math.imul(rotl(Math.imul(k3, C3), 17), C4)
  if (n - tail > 4) h2 ^= Math.imul(rotl(Math.imul(k2, C2), 16), C3)
  if (n - tail > 0) h1 ^= Math.imul(rotl(Math.imul(k1, C1), 15), C2)
  h1 ^= n
  h2 ^= n
  h3 ^= n
  h4 ^= n
  h1 = (h1 + h2 + h3 + h4) | 0
  h2 = (h2 + h1) | 0
  h3 = (h3 + h1) | 0
  h4 = (h4 + h1) | 0
  h1 = fmix(h1)
  h2 = fmix(h2)
  h3 = fmix(h3)
  h4 = fmix(h4)
  h1 = (h1 + h2 + h3 + h4) | 0
  h2 = (h2 + h1) | 0
  h3 = (h3 + h1) | 0
  h4 = (h4 + h1) | 0
  out[at] = h1
  out[at + 1] = h2
  out[at + 2] = h3
  out[at + 3] = h4
}

/**
 * The fast path of JSONL ingest: a flat JSON object whose mapped fields are
 * strings is transcoded byte for byte into its canonical line, without
 * decoding it to a JavaScript string, parsing it into objects and encoding
 * it again (which costs several times more than the rest of ingest).
 *
 * It accepts only what it fully understands and says "no" (returns -1)
 * otherwise; the caller then takes the general path (JSON.parse and
 * Mapping.ts), which is the reference: both give the same bytes, and the
 * general path writes the error messages. Escapes are rewritten the way
 * JSON.stringify writes them (\u00e9 becomes é, \/ becomes /, lone
 * surrogates stay escaped in lower case), and CR or CRLF becomes LF, as
 * Mapping.ts does.
 */
import type { RecordKind } from "./Records.ts"

export interface FastOptions {
  readonly kind: RecordKind
  readonly rename: Readonly<Record<string, string>>
  readonly keep: ReadonlyArray<string>
}

interface Slot {
  readonly source: string
  /** `"instruction":` and the like, as bytes. */
  readonly key: Buffer
  readonly dropEmpty: boolean
}

const HEX = "0123456789abcdef"

const hexValue = (c: number): number =>
  c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1

const isWs = (c: number): boolean => c === 32 || c === 9 || c === 13 || c === 10

export class FastJsonl {
  private readonly index = new Map<string, number>()
  private readonly fields: Slot[] = []
  private readonly metaSlots: Slot[] = []
  /** Position of meta among the fields (canonical key order). */
  private readonly metaAt: number
  private readonly starts: Int32Array
  private readonly ends: Int32Array
  private readonly escaped: Uint8Array
  private out = Buffer.allocUnsafe(1 << 16)

  private constructor(kind: "instruction" | "completion", options: FastOptions) {
    const sourceOf = (name: string) =>
      Object.entries(options.rename).find(([, to]) => to === name)?.[0] ?? name
    const names = kind === "instruction" ? ["input", "instruction", "output"] : ["completion", "prompt"]
    this.metaAt = kind === "instruction" ? 2 : 1
    for (const name of names)
      this.fields.push({
        source: sourceOf(name),
        key: Buffer.from(`"${name}":`),
        dropEmpty: name === "input",
      })
    for (const name of [...new Set(options.keep)].sort())
      this.metaSlots.push({
        source: sourceOf(name),
        key: Buffer.from(`${JSON.stringify(name)}:`),
        dropEmpty: false,
      })
    const all = [...this.fields, ...this.metaSlots]
    all.forEach((s, i) => {
      this.index.set(s.source, i)
    })
    this.starts = new Int32Array(all.length)
    this.ends = new Int32Array(all.length)
    this.escaped = new Uint8Array(all.length)
  }

  /** A fast path for these options, or undefined when they need the general path. */
  static make(options: FastOptions & { readonly expand?: string }): FastJsonl | undefined {
    if (options.kind === "chat" || options.expand !== undefined) return undefined
    const names = [...Object.keys(options.rename), ...options.keep]
    if (names.some((n) => n.includes(".") || n === "meta" || /[^\x20-\x7e]/.test(n))) return undefined
    if (Object.values(options.rename).includes("meta")) return undefined
    // text-only completions and other renames onto canonical names keep to the general path
    const sources = new Set(Object.keys(options.rename))
    const targets = Object.values(options.rename)
    if (targets.some((t) => sources.has(t))) return undefined
    if (new Set(targets).size !== targets.length) return undefined
    return new FastJsonl(options.kind, options)
  }

  /**
   * The canonical line for buf[start, end) written to `this.output` (returns
   * its length), or -1 for "take the general path".
   */
  transcode(seg: Buffer, start: number, end: number): number {
    // work on the line alone, so that native searches stop at its end
    // a CR before the LF is whitespace (CRLF files)
    if (end > start && seg[end - 1] === 13) end--
    const buf = seg.subarray(start, end)
    end = buf.length
    const starts = this.starts
    starts.fill(-1)
    const escaped = this.escaped
    // raw control characters are invalid inside strings: such lines take the general path
    if (CONTROL.test(buf.toString("latin1", 0, end))) return -1
    let backslash = buf.indexOf(92)
    let p = 0
    while (p < end && isWs(buf[p]!)) p++
    if (buf[p] !== 123) return -1
    p++
    for (;;) {
      while (p < end && isWs(buf[p]!)) p++
      if (buf[p] !== 34) return -1
      // key: plain ASCII without escapes
      const k0 = p + 1
      let k = k0
      while (k < end) {
        const c = buf[k]!
        if (c === 34) break
        if (c === 92 || c >= 0x80) return -1
        k++
      }
      if (k >= end) return -1
      const name = buf.toString("latin1", k0, k)
      // a record's own meta object is merged by the general path
      if (name === "meta") return -1
      const slot = this.index.get(name)
      p = k + 1
      while (p < end && isWs(buf[p]!)) p++
      if (buf[p] !== 58) return -1
      p++
      while (p < end && isWs(buf[p]!)) p++
      if (buf[p] === 34) {
        const v0 = p
        let esc = 0
        let q = buf.indexOf(34, p + 1)
        if (backslash >= 0 && backslash < p) backslash = buf.indexOf(92, p)
        // a quote preceded by a backslash is escaped: step over escapes up to the real end
        while (q >= 0 && backslash >= 0 && backslash < q) {
          esc = 1
          const after = backslash + 2
          if (q < after) q = buf.indexOf(34, after)
          backslash = buf.indexOf(92, after)
        }
        if (q < 0) return -1
        if (slot !== undefined) {
          if (starts[slot]! >= 0) return -1 // duplicate key: JSON.parse keeps the last, leave it to it
          starts[slot] = v0
          this.ends[slot] = q + 1
          escaped[slot] = esc
        }
        p = q + 1
      } else {
        if (slot !== undefined) return -1
        const q = skipValue(buf, p, end)
        if (q < 0) return -1
        p = q
      }
      while (p < end && isWs(buf[p]!)) p++
      if (buf[p] === 44) {
        p++
        continue
      }
      if (buf[p] !== 125) return -1
      p++
      while (p < end && isWs(buf[p]!)) p++
      if (p !== end) return -1
      break
    }
    try {
      return this.emit(buf)
    } catch (e) {
      if (e instanceof NotFast) return -1
      throw e
    }
  }

  /** The last line transcode wrote. */
  get output(): Buffer {
    return this.out
  }

  private emit(buf: Buffer): number {
    const fields = this.fields
    const starts = this.starts
    let size = 16
    for (let i = 0; i < starts.length; i++) {
      if (i < fields.length && !fields[i]!.dropEmpty && starts[i]! < 0) return -1 // missing: the general path says so
      const slot = i < fields.length ? fields[i]! : this.metaSlots[i - fields.length]!
      if (starts[i]! >= 0) size += this.ends[i]! - starts[i]! + slot.key.length + 2
    }
    if (this.out.length < size) this.out = Buffer.allocUnsafe(size * 2)
    const out = this.out
    let o = 0
    out[o++] = 123
    let first = true
    const sep = () => {
      if (!first) out[o++] = 44
      first = false
    }
    for (let i = 0; i <= fields.length; i++) {
      if (i === this.metaAt) {
        let any = false
        for (let m = 0; m < this.metaSlots.length; m++) {
          const j = fields.length + m
          if (starts[j]! < 0) continue
          if (!any) {
            sep()
            o += out.write('"meta":{', o, "latin1")
            any = true
          } else out[o++] = 44
          const slot = this.metaSlots[m]!
          o = copy(slot.key, 0, slot.key.length, out, o)
          o = this.value(buf, j, out, o, false)
        }
        if (any) out[o++] = 125
      }
      if (i === fields.length) break
      const s = starts[i]!
      if (s < 0) continue
      if (fields[i]!.dropEmpty && this.ends[i]! - s === 2) continue
      sep()
      const f = fields[i]!
      o = copy(f.key, 0, f.key.length, out, o)
      o = this.value(buf, i, out, o, true)
    }
    out[o++] = 125
    return o
  }

  /** Writes slot i's string value, rewriting escapes canonically; returns the new offset. */
  private value(buf: Buffer, i: number, out: Buffer, o: number, lf: boolean): number {
    const s = this.starts[i]!
    const e = this.ends[i]!
    if (this.escaped[i] === 0) return copy(buf, s, e, out, o)
    out[o++] = 34
    let p = s + 1
    const last = e - 1
    while (p < last) {
      let b = buf.indexOf(92, p)
      if (b < 0 || b >= last) b = last
      if (b > p) o = copy(buf, p, b, out, o)
      p = b
      if (p >= last) break
      const x = buf[p + 1]!
      p += 2
      switch (x) {
        case 34:
        case 92:
        case 98:
        case 102:
        case 110:
        case 116:
          out[o++] = 92
          out[o++] = x
          break
        case 47:
          out[o++] = 47
          break
        case 114:
          // in text fields CR and CRLF become LF (meta values are kept as they are)
          out[o++] = 92
          out[o++] = lf ? 110 : 114
          if (lf) p = skipEscapedLf(buf, p, last)
          break
        case 117: {
          let cp = hex4(buf, p, last)
          if (cp < 0) return this.fail()
          p += 4
          if (cp >= 0xd800 && cp <= 0xdbff && buf[p] === 92 && buf[p + 1] === 117) {
            const lo = hex4(buf, p + 2, last)
            if (lo >= 0xdc00 && lo <= 0xdfff) {
              cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00)
              p += 6
            }
          }
          o = writeCodePoint(out, o, cp, lf)
          if (cp === 13 && lf) p = skipEscapedLf(buf, p, last)
          break
        }
        default:
          return this.fail()
      }
    }
    out[o++] = 34
    return o
  }

  private fail(): never {
    throw new NotFast()
  }
}

/** Copies buf[a, b) to out at o: a loop for short runs, where a native copy's setup costs more. */
const copy = (buf: Buffer, a: number, b: number, out: Buffer, o: number): number => {
  if (b - a < 96) {
    for (let i = a; i < b; i++) out[o++] = buf[i]!
    return o
  }
  out.set(buf.subarray(a, b), o)
  return o + b - a
}

/** Thrown inside a transcode that meets an escape it must leave to JSON.parse. */
export class NotFast extends Error {}

// every control character but LF (which never occurs inside a line)
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
const CONTROL = /[\x00-\x09\x0b-\x1f]/

const hex4 = (buf: Buffer, p: number, last: number): number => {
  if (p + 4 > last) return -1
  let v = 0
  for (let k = 0; k < 4; k++) {
    const h = hexValue(buf[p + k]!)
    if (h < 0) return -1
    v = (v << 4) | h
  }
  return v
}

/** After an escaped CR: skips a following escaped LF (\n or \u000a). */
const skipEscapedLf = (buf: Buffer, p: number, last: number): number => {
  if (buf[p] === 92 && buf[p + 1] === 110) return p + 2
  if (buf[p] === 92 && buf[p + 1] === 117 && hex4(buf, p + 2, last) === 10) return p + 6
  return p
}

/** A code point as JSON.stringify writes it inside a string, as UTF-8. */
const writeCodePoint = (out: Buffer, o: number, cp: number, lf: boolean): number => {
  if (cp < 0x20) {
    out[o++] = 92
    switch (cp) {
      case 8:
        out[o++] = 98
        return o
      case 9:
        out[o++] = 116
        return o
      case 10:
        out[o++] = 110
        return o
      case 13:
        out[o++] = lf ? 110 : 114
        return o
      case 12:
        out[o++] = 102
        return o
      default:
        out[o++] = 117
        out[o++] = 48
        out[o++] = 48
        out[o++] = HEX.charCodeAt(cp >> 4)
        out[o++] = HEX.charCodeAt(cp & 15)
        return o
    }
  }
  if (cp === 34 || cp === 92) {
    out[o++] = 92
    out[o++] = cp
    return o
  }
  if (cp < 0x80) {
    out[o++] = cp
    return o
  }
  if (cp < 0x800) {
    out[o++] = 0xc0 | (cp >> 6)
    out[o++] = 0x80 | (cp & 63)
    return o
  }
  if (cp >= 0xd800 && cp <= 0xdfff) {
    // a lone surrogate: JSON.stringify keeps it escaped, in lower case
    out[o++] = 92
    out[o++] = 117
    for (let k = 12; k >= 0; k -= 4) out[o++] = HEX.charCodeAt((cp >> k) & 15)
    return o
  }
  if (cp < 0x10000) {
    out[o++] = 0xe0 | (cp >> 12)
    out[o++] = 0x80 | ((cp >> 6) & 63)
    out[o++] = 0x80 | (cp & 63)
    return o
  }
  out[o++] = 0xf0 | (cp >> 18)
  out[o++] = 0x80 | ((cp >> 12) & 63)
  out[o++] = 0x80 | ((cp >> 6) & 63)
  out[o++] = 0x80 | (cp & 63)
  return o
}

const NUMBER = /^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$/

/** The end of a non-string JSON value at p (validated), or -1. */
const skipValue = (buf: Buffer, p: number, end: number): number => {
  const c = buf[p]
  if (c === 123 || c === 91) {
    let depth = 0
    let q = p
    while (q < end) {
      const d = buf[q]!
      if (d === 34) {
        q++
        while (q < end && buf[q] !== 34) q += buf[q] === 92 ? 2 : 1
      } else if (d === 123 || d === 91) depth++
      else if (d === 125 || d === 93) {
        depth--
        if (depth === 0) {
          try {
            JSON.parse(buf.toString("utf8", p, q + 1))
          } catch {
            return -1
          }
          return q + 1
        }
      }
      q++
    }
    return -1
  }
  let q = p
  while (q < end) {
    const d = buf[q]!
    if (d === 44 || d === 125 || isWs(d)) break
    q++
  }
  const token = buf.toString("latin1", p, q)
  if (token === "true" || token === "false" || token === "null" || NUMBER.test(token)) return q
  return -1
}

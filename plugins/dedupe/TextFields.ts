/**
 * The text of a canonical record line, field by field, as bytes: what
 * dedupe and split compare. A scanner reads canonical lines (written by
 * ingest: no spaces, known keys) without JSON.parse, unescaping string values
 * into a scratch buffer; anything it does not expect (non-ASCII text, which
 * needs Unicode normalisation, or a line that is not canonical) goes to the
 * general path, which parses the line and hands over normalised strings.
 *
 * Fields come in canonical key order. `example` is every text field;
 * `prompt` leaves out the answer (output, completion, a final assistant
 * message). Meta never counts.
 */
import { isAscii } from "node:buffer"
import type { CanonicalRecord } from "../ingest/Records.ts"

export type TextScope = "example" | "prompt"

/** Field ids: role names count for exact matching, not for shingles. */
export enum Field {
  Input = 1,
  Instruction = 2,
  Output = 3,
  Prompt = 4,
  Completion = 5,
  Content = 6,
  Role = 7,
}

/**
 * Receives a record's fields as raw JSON string contents buf[start, end)
 * (escapes not yet undone: see unescape) and whether they are all ASCII.
 */
export type FieldSink = (field: Field, buf: Buffer, start: number, end: number, ascii: boolean) => void

const KEYS: Record<string, Field> = {
  input: Field.Input,
  instruction: Field.Instruction,
  output: Field.Output,
  prompt: Field.Prompt,
  completion: Field.Completion,
}

/** The general path's view of a record: its fields as strings, in the same order. */
export const recordFields = (r: CanonicalRecord, scope: TextScope): Array<[Field, string]> => {
  if ("messages" in r) {
    const msgs = r.messages
    const n =
      scope === "prompt" && msgs.length > 0 && msgs[msgs.length - 1]!.role === "assistant"
        ? msgs.length - 1
        : msgs.length
    const out: Array<[Field, string]> = []
    for (let i = 0; i < n; i++) out.push([Field.Content, msgs[i]!.content], [Field.Role, msgs[i]!.role])
    return out
  }
  if ("prompt" in r)
    return scope === "prompt"
      ? [[Field.Prompt, r.prompt]]
      : [
          [Field.Completion, r.completion],
          [Field.Prompt, r.prompt],
        ]
  const out: Array<[Field, string]> = []
  if (r.input !== undefined) out.push([Field.Input, r.input])
  out.push([Field.Instruction, r.instruction])
  if (scope === "example") out.push([Field.Output, r.output])
  return out
}

export class TextFields {
  /** Where unescape writes. */
  scratch = Buffer.allocUnsafe(1 << 16)

  constructor(private readonly scope: TextScope) {}

  /**
   * Hands the text fields of the canonical line buf[start, end) to `sink`
   * (as offsets into a view of the line alone, so that searches stop at its
   * end); returns false, having handed nothing, when the line needs the
   * general path.
   */
  scan(buf: Buffer, start: number, end: number, sink: FieldSink): boolean {
    const line = buf.subarray(start, end)
    const n = line.length
    if (this.scratch.length < n) this.scratch = Buffer.allocUnsafe(2 * n)
    if (line[0] !== 123 || line[n - 1] !== 125 || hasWideEscape(line)) return false
    // a first pass finds the fields, so that nothing is handed over for a line that turns out to need the general path
    const found = this.locate(line, 1, n - 1)
    if (found === undefined) return false
    const ascii = isAscii(line)
    for (let i = 0; i < found.length; i += 3) {
      const s = found[i + 1]!
      const e = found[i + 2]!
      sink(found[i]! as Field, line, s, e, ascii || isAscii(line.subarray(s, e)))
    }
    return true
  }

  private spans: number[] = []

  /** [field, valueStart, valueEnd]* for the fields in scope, or undefined. */
  private locate(buf: Buffer, p: number, end: number): number[] | undefined {
    const spans = this.spans
    spans.length = 0
    while (p < end) {
      if (buf[p] !== 34) return undefined
      const k = buf.indexOf(34, p + 1)
      if (k < 0 || k + 1 >= end || buf[k + 1] !== 58) return undefined
      const key = buf.toString("latin1", p + 1, k)
      p = k + 2
      if (key === "meta") {
        p = skipJson(buf, p, end)
        if (p < 0) return undefined
      } else if (key === "messages") {
        if (this.scope === "prompt") return undefined // which message is last is known only at the end: general path
        p = this.messages(buf, p, end)
        if (p < 0) return undefined
      } else {
        const f = KEYS[key]
        if (f === undefined || buf[p] !== 34) return undefined
        const q = stringEnd(buf, p, end)
        if (q < 0) return undefined
        if (this.scope === "example" || (f !== Field.Output && f !== Field.Completion))
          spans.push(f, p + 1, q - 1)
        p = q
      }
      if (p === end) break
      if (buf[p] !== 44) return undefined
      p++
    }
    return spans
  }

  private messages(buf: Buffer, p: number, end: number): number {
    if (buf[p] !== 91) return -1
    p++
    if (buf[p] === 93) return p + 1
    for (;;) {
      // {"content":"...","role":"..."}
      if (buf[p] !== 123 || !startsWith(buf, p + 1, CONTENT)) return -1
      const c0 = p + 1 + CONTENT.length
      const c1 = stringEnd(buf, c0, end)
      if (c1 < 0 || !startsWith(buf, c1, ROLE)) return -1
      const r0 = c1 + ROLE.length
      const r1 = stringEnd(buf, r0, end)
      if (r1 < 0 || buf[r1] !== 125) return -1
      this.spans.push(Field.Content, c0 + 1, c1 - 1, Field.Role, r0 + 1, r1 - 1)
      p = r1 + 1
      if (buf[p] === 44) {
        p++
        continue
      }
      if (buf[p] !== 93) return -1
      return p + 1
    }
  }

  /** Unescapes buf[s, e) (a field handed to a sink) into `scratch`; returns its length. */
  unescape(buf: Buffer, s: number, e: number): number {
    const out = this.scratch
    let o = 0
    let p = s
    while (p < e) {
      const b = nextBackslash(buf, p, e)
      if (b > p) {
        if (b - p < 64) for (let i = p; i < b; i++) out[o++] = buf[i]!
        else {
          buf.copy(out, o, p, b)
          o += b - p
        }
      }
      if (b >= e) break
      const x = buf[b + 1]!
      p = b + 2
      switch (x) {
        case 110:
          out[o++] = 10
          break
        case 116:
          out[o++] = 9
          break
        case 114:
          out[o++] = 13
          break
        case 98:
          out[o++] = 8
          break
        case 102:
          out[o++] = 12
          break
        case 117:
          // \u00XX: canonical lines escape only control characters this way (see hasWideEscape)
          out[o++] = Number.parseInt(buf.toString("latin1", p, p + 4), 16)
          p += 4
          break
        default:
          out[o++] = x
      }
    }
    return o
  }
}

/** A \u escape of anything but a control character (a lone surrogate): the general path decodes it. */
const hasWideEscape = (line: Buffer): boolean => {
  let b = line.indexOf(92)
  while (b >= 0) {
    if (line[b + 1] === 117 && (line[b + 2] !== 48 || line[b + 3] !== 48 || line[b + 4]! > 49)) return true
    b = line.indexOf(92, b + 2)
  }
  return false
}

/** The first backslash in line[p, e), or e. */
const nextBackslash = (line: Buffer, p: number, e: number): number => {
  const b = line.indexOf(92, p)
  return b < 0 || b > e ? e : b
}

const CONTENT = Buffer.from('"content":')
const ROLE = Buffer.from(',"role":')

const startsWith = (buf: Buffer, p: number, what: Buffer): boolean => {
  for (let i = 0; i < what.length; i++) if (buf[p + i] !== what[i]) return false
  return true
}

/** The index just past the JSON string starting at p, or -1. */
const stringEnd = (buf: Buffer, p: number, end: number): number => {
  let q = p + 1
  for (;;) {
    const quote = buf.indexOf(34, q)
    if (quote < 0 || quote >= end) return -1
    // a quote preceded by an odd number of backslashes is escaped
    let n = 0
    while (buf[quote - 1 - n] === 92) n++
    if (n % 2 === 0) return quote + 1
    q = quote + 1
  }
}

/** The index just past the JSON value starting at p (canonical: no spaces), or -1. */
const skipJson = (buf: Buffer, p: number, end: number): number => {
  let depth = 0
  while (p < end) {
    const c = buf[p]!
    if (c === 34) {
      p = stringEnd(buf, p, end)
      if (p < 0) return -1
      if (depth === 0) return p
      continue
    }
    if (c === 123 || c === 91) depth++
    else if (c === 125 || c === 93) {
      depth--
      if (depth === 0) return p + 1
      if (depth < 0) return -1
    } else if (depth === 0 && (c === 44 || c === 125)) return p
    p++
    if (depth === 0) {
      // a bare number, true, false or null
      while (p < end && buf[p] !== 44 && buf[p] !== 125) p++
      return p
    }
  }
  return depth === 0 ? p : -1
}

/**
 * JSON Lines: one JSON object per line; blank lines are ignored. Fed text
 * segments by Utf8Lines, so it never holds more than one chunk.
 */
import type { FastJsonl } from "./FastJsonl.ts"
import { type BadLine, badUtf8Message } from "./Lines.ts"
import { preview, type RawSink } from "./Problem.ts"

/** The path of the first string in a value that holds U+FFFD (where a lossy decode replaced bad bytes). */
export const fieldWithReplacement = (v: unknown, path = ""): string | undefined => {
  if (typeof v === "string") return v.includes("\ufffd") ? path : undefined
  if (Array.isArray(v)) {
    for (let i = 0; i < v.length; i++) {
      const f = fieldWithReplacement(v[i], `${path}[${i}]`)
      if (f !== undefined) return f
    }
    return undefined
  }
  if (v !== null && typeof v === "object")
    for (const [k, x] of Object.entries(v)) {
      const f = fieldWithReplacement(x, path === "" ? k : `${path}.${k}`)
      if (f !== undefined) return f
    }
  return undefined
}

const isBlank = (s: string): boolean => s.trim().length === 0

export interface FastSink {
  /** The fast path once it applies (the record kind is known), else undefined. */
  readonly fast: () => FastJsonl | undefined
  /** A canonical line the fast path wrote (buf[0, length)). */
  readonly line: (buf: Buffer, length: number) => void
}

export class JsonlParser {
  constructor(
    private readonly sink: RawSink,
    private readonly fastSink?: FastSink,
  ) {}

  /** Takes bytes: lines the fast path can transcode are never decoded. */
  bytes = (seg: Buffer, firstLine: number, bad: ReadonlyArray<BadLine>): void => {
    const fast = this.fastSink?.fast()
    const n = seg.length
    let start = 0
    let line = firstLine
    while (start < n) {
      let nl = seg.indexOf(10, start)
      if (nl < 0) nl = n
      if (fast !== undefined && (bad.length === 0 || !bad.some((b) => b.line === line))) {
        const len = fast.transcode(seg, start, nl)
        if (len >= 0) {
          this.fastSink!.line(fast.output, len)
          start = nl + 1
          line++
          continue
        }
      }
      if (seg[start] === 123 || !isBlank(seg.toString("latin1", start, nl)))
        this.line(seg.toString("utf8", start, nl), line, bad)
      start = nl + 1
      line++
    }
  }

  segment = (text: string, firstLine: number, bad: ReadonlyArray<BadLine>): void => {
    let start = 0
    let line = firstLine
    const n = text.length
    while (start < n) {
      let nl = text.indexOf("\n", start)
      if (nl < 0) nl = n
      const first = text.charCodeAt(start)
      // fast path: a line that starts with "{" is not blank
      if (first === 123 || !isBlank(text.slice(start, nl))) this.line(text.slice(start, nl), line, bad)
      start = nl + 1
      line++
    }
  }

  private line(s: string, line: number, bad: ReadonlyArray<BadLine>): void {
    const b = bad.length === 0 ? undefined : bad.find((x) => x.line === line)
    let value: unknown
    try {
      value = JSON.parse(s)
    } catch (e) {
      if (b !== undefined) {
        this.sink.invalid({ line }, { message: badUtf8Message(b) })
        return
      }
      const why = e instanceof Error ? e.message : String(e)
      const hint = /end of JSON|Unterminated/i.test(why) ? " (truncated line?)" : ""
      this.sink.invalid({ line }, { message: `invalid JSON: ${why}${hint}` })
      return
    }
    if (b !== undefined) {
      const field = fieldWithReplacement(value)
      this.sink.invalid(
        { line },
        field === undefined ? { message: badUtf8Message(b) } : { field, message: badUtf8Message(b) },
      )
      return
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      const hint = Array.isArray(value) && line === 1 ? ' (a JSON array file? set format: "json")' : ""
      this.sink.invalid({ line }, { message: `expected a JSON object, got ${preview(value)}${hint}` })
      return
    }
    this.sink.record(value, { line })
  }
}

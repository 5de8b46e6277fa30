/**
 * JSON files: a top-level array of objects, read one element at a time, or
 * a sequence of top-level objects (pretty-printed JSON Lines). The scanner
 * tracks only nesting depth and string state, cuts out each element's text
 * and hands it to JSON.parse, so memory holds one element at a time.
 */

import { fieldWithReplacement } from "./Jsonl.ts"
import { type BadLine, badUtf8Message } from "./Lines.ts"
import { preview, type RawSink, SourceError } from "./Problem.ts"

enum Mode {
  Start,
  Array,
  Values,
  Done,
}

export class JsonParser {
  private mode = Mode.Start
  private depth = 0
  private inString = false
  private escape = false
  private parts: string[] = []
  private partsLength = 0
  private collecting = false
  private elementLine = 0
  private elements = 0
  private line = 1
  private arrayLine = 1
  private bad: Map<number, BadLine> | undefined
  private expectComma = false

  constructor(
    private readonly sink: RawSink,
    private readonly maxElementChars: number,
  ) {}

  segment = (s: string, _firstLine: number, bad: ReadonlyArray<BadLine>): void => {
    if (bad.length > 0) {
      this.bad ??= new Map()
      for (const b of bad) this.bad.set(b.line, b)
    }
    const n = s.length
    let i = 0
    let from = 0 // start of the element text within s, while collecting
    while (i < n) {
      if (this.inString) {
        if (this.escape) {
          this.escape = false
          i++
          continue
        }
        const q = s.indexOf('"', i)
        const bs = s.indexOf("\\", i)
        if (bs >= 0 && (q < 0 || bs < q)) {
          i = bs + 1
          this.escape = true
          continue
        }
        if (q < 0) {
          i = n
          break
        }
        this.inString = false
        i = q + 1
        continue
      }
      const c = s.charCodeAt(i)
      if (c === 10) {
        this.line++
        i++
        continue
      }
      if (c === 32 || c === 9 || c === 13) {
        i++
        continue
      }
      const base = this.mode === Mode.Array ? 1 : 0
      if (this.mode === Mode.Start) {
        this.mode = c === 91 ? Mode.Array : Mode.Values
        if (c === 91) {
          this.depth = 1
          this.arrayLine = this.line
          i++
          continue
        }
      }
      if (this.mode === Mode.Done)
        throw new SourceError(
          { line: this.line },
          { message: "unexpected text after the end of the JSON array" },
        )
      if (this.depth === base) {
        // between elements
        if (c === 44 && this.mode === Mode.Array && this.expectComma) {
          this.expectComma = false
          i++
          continue
        }
        if (c === 93 && this.mode === Mode.Array) {
          this.mode = Mode.Done
          this.depth = 0
          i++
          continue
        }
        if (this.expectComma)
          throw new SourceError(
            { line: this.line, row: this.elements, unit: "element" },
            { message: `expected "," or "]" after the element, got ${JSON.stringify(s[i])}` },
          )
        this.collecting = true
        this.elementLine = this.line
        from = i
        if (c === 123 || c === 91) this.depth++
        else if (c === 34) this.inString = true
        else {
          // a bare scalar element: read up to the next separator
          let j = i
          while (j < n && !/[,\]\s]/.test(s[j]!)) j++
          this.take(s.slice(from, j))
          i = j
          continue
        }
        i++
        if (c === 34) {
          // a top-level string: finish it, then take it
          const q = this.stringEnd(s, i)
          if (q < 0) {
            this.appendPart(s.slice(from))
            return
          }
          this.take(s.slice(from, q + 1))
          i = q + 1
          this.inString = false
        }
        continue
      }
      if (c === 34) this.inString = true
      else if (c === 123 || c === 91) this.depth++
      else if (c === 125 || c === 93) {
        this.depth--
        if (this.depth === base) {
          this.take(s.slice(from, i + 1))
          i++
          continue
        }
      }
      i++
    }
    if (this.collecting) this.appendPart(s.slice(from))
  }

  end(): void {
    if (this.inString || this.collecting)
      throw new SourceError(
        { line: this.elementLine, row: this.elements + 1, unit: "element" },
        { message: "the file ends inside this element (truncated file?)" },
      )
    if (this.mode === Mode.Array)
      throw new SourceError(
        { line: this.arrayLine },
        { message: `the JSON array opened on line ${this.arrayLine} is never closed (truncated file?)` },
      )
  }

  private stringEnd(s: string, i: number): number {
    for (;;) {
      const q = s.indexOf('"', i)
      const bs = s.indexOf("\\", i)
      if (bs >= 0 && (q < 0 || bs < q)) {
        i = bs + 2
        continue
      }
      return q
    }
  }

  private appendPart(p: string): void {
    this.parts.push(p)
    this.partsLength += p.length
    if (this.partsLength > this.maxElementChars)
      throw new SourceError(
        { line: this.elementLine, row: this.elements + 1, unit: "element" },
        {
          message: `element is longer than maxLineBytes (${this.maxElementChars}): raise maxLineBytes, or is the file truncated?`,
        },
      )
  }

  private take(last: string): void {
    const text = this.parts.length === 0 ? last : this.parts.join("") + last
    this.parts = []
    this.partsLength = 0
    this.collecting = false
    this.expectComma = this.mode === Mode.Array
    const where = { line: this.elementLine, row: ++this.elements, unit: "element" as const }
    let value: unknown
    try {
      value = JSON.parse(text)
    } catch (e) {
      this.sink.invalid(where, {
        message: `invalid JSON: ${e instanceof Error ? e.message : String(e)}`,
      })
      return
    }
    if (this.bad !== undefined) {
      const endLine = this.line
      for (let l = this.elementLine; l <= endLine; l++) {
        const b = this.bad.get(l)
        if (b === undefined) continue
        const field = fieldWithReplacement(value)
        this.sink.invalid(
          where,
          field === undefined ? { message: badUtf8Message(b) } : { field, message: badUtf8Message(b) },
        )
        return
      }
    }
    if (value === null || typeof value !== "object" || Array.isArray(value)) {
      this.sink.invalid(where, { message: `expected a JSON object, got ${preview(value)}` })
      return
    }
    this.sink.record(value, where)
  }
}

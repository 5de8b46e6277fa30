/**
 * CSV as RFC 4180 defines it: a header row, fields separated by a delimiter,
 * quoted fields that may hold delimiters, doubled quotes and line breaks,
 * rows ended by LF or CRLF. Streaming: fed text segments that end at a line
 * break, it keeps only the current row between segments.
 *
 * Lenient where files in the wild are: a quote inside an unquoted field is
 * kept as a character. Strict where data would be lost: text after a closing
 * quote fails the row, and a quote that never closes fails the file (it would
 * swallow every row after it).
 */
import { type BadLine, badUtf8Message } from "./Lines.ts"
import { type RawSink, SourceError, type Where } from "./Problem.ts"

export interface CsvOptions {
  readonly delimiter: string
  /** A quoted field longer than this fails the file early (an unbalanced quote swallowing the rest). */
  readonly maxFieldChars: number
}

const QUOTE = 34
const LF = 10
const CR = 13

const countNewlines = (s: string): number => {
  let n = 0
  let p = s.indexOf("\n")
  while (p >= 0) {
    n++
    p = s.indexOf("\n", p + 1)
  }
  return n
}

export class CsvParser {
  private header: string[] | undefined
  private row: string[] = []
  private field = ""
  private fieldOpen = false
  private inQuotes = false
  private afterQuote = false
  private line = 1
  private rowLine = 1
  private quoteLine = 1
  private rows = 0
  private rowError: { field: string; message: string } | undefined
  private bad: Map<number, BadLine> | undefined
  private readonly delim: number

  constructor(
    private readonly sink: RawSink,
    private readonly options: CsvOptions,
  ) {
    if (options.delimiter.length !== 1)
      throw new Error(`CSV delimiter must be one character, got "${options.delimiter}"`)
    this.delim = options.delimiter.charCodeAt(0)
  }

  /** Column names, once the header row has been read. */
  get columns(): ReadonlyArray<string> | undefined {
    return this.header
  }

  segment = (s: string, _firstLine: number, bad: ReadonlyArray<BadLine>): void => {
    if (bad.length > 0) {
      this.bad ??= new Map()
      for (const b of bad) this.bad.set(b.line, b)
    }
    const n = s.length
    const d = this.delim
    const delimiter = this.options.delimiter
    let i = 0
    let nl = -2 // cached index of the next "\n" at or after i (-1: none)
    while (i < n) {
      if (this.inQuotes) {
        const q = s.indexOf('"', i)
        const part = q < 0 ? s.slice(i) : s.slice(i, q)
        this.field += part
        this.line += countNewlines(part)
        if (this.field.length > this.options.maxFieldChars)
          throw this.unbalanced("is longer than maxLineBytes")
        if (q < 0) return
        if (s.charCodeAt(q + 1) === QUOTE) {
          this.field += '"'
          i = q + 2
          continue
        }
        this.inQuotes = false
        this.afterQuote = true
        i = q + 1
        continue
      }
      const c = s.charCodeAt(i)
      if (this.afterQuote) {
        this.afterQuote = false
        if (c === d) {
          this.pushField()
          i++
          continue
        }
        if (c === LF || (c === CR && s.charCodeAt(i + 1) === LF)) {
          this.pushField()
          i += c === LF ? 1 : 2
          this.endRow()
          continue
        }
        this.rowError ??= {
          field: this.columnName(this.row.length),
          message: `unexpected ${JSON.stringify(s[i])} after the closing quote (quotes inside a quoted field must be doubled: "")`,
        }
        // read on as an unquoted continuation so the row still ends where it should
      } else if (c === QUOTE && !this.fieldOpen) {
        this.inQuotes = true
        this.fieldOpen = true
        this.quoteLine = this.line
        i++
        continue
      }
      if (nl !== -1 && nl < i) nl = s.indexOf("\n", i)
      const dl = s.indexOf(delimiter, i)
      const atDelim = dl >= 0 && (nl < 0 || dl < nl)
      const end = atDelim ? dl : nl < 0 ? n : nl
      let value = s.slice(i, end)
      if (!atDelim && end === nl && value.charCodeAt(value.length - 1) === CR) value = value.slice(0, -1)
      this.field = this.fieldOpen ? this.field + value : value
      this.fieldOpen = true
      if (atDelim) {
        this.pushField()
        i = dl + 1
      } else if (end === n) {
        i = n // last line without a line break: end() closes the row
      } else {
        this.pushField()
        i = nl + 1
        this.endRow()
      }
    }
  }

  end(): void {
    if (this.inQuotes) throw this.unbalanced("is never closed")
    if (this.fieldOpen || this.afterQuote || this.row.length > 0) {
      this.afterQuote = false
      this.pushField()
      this.endRow()
    }
  }

  private unbalanced(what: string): SourceError {
    const where: Where = { row: this.rows + 1, line: this.rowLine, unit: "row" }
    return new SourceError(where, {
      field: this.columnName(this.row.length),
      message: `the quote opened on line ${this.quoteLine} ${what} (unbalanced quote): the rest of the file cannot be read`,
    })
  }

  private columnName(i: number): string {
    return this.header?.[i] ?? `column ${i + 1}`
  }

  private pushField(): void {
    this.row.push(this.field)
    this.field = ""
    this.fieldOpen = false
  }

  private endRow(): void {
    const fields = this.row
    this.row = []
    const startLine = this.rowLine
    this.line++
    const endLine = this.line - 1
    this.rowLine = this.line
    const error = this.rowError
    this.rowError = undefined
    if (this.header === undefined) {
      this.setHeader(fields, startLine)
      return
    }
    if (fields.length === 1 && fields[0] === "" && this.header.length > 1) return // blank line
    const where: Where = { row: ++this.rows, line: startLine, unit: "row" }
    if (error !== undefined) {
      this.sink.invalid(where, error)
      return
    }
    if (this.bad !== undefined)
      for (let l = startLine; l <= endLine; l++) {
        const b = this.bad.get(l)
        if (b === undefined) continue
        const col = fields.findIndex((f) => f.includes("\ufffd"))
        this.sink.invalid(where, {
          field: col >= 0 ? this.columnName(col) : this.columnName(0),
          message: badUtf8Message(b),
        })
        return
      }
    const header = this.header
    if (fields.length !== header.length) {
      this.sink.invalid(where, {
        message: `has ${fields.length} fields but the header has ${header.length} (an unquoted delimiter, or a missing quote?)`,
      })
      return
    }
    const o: Record<string, string> = {}
    for (let k = 0; k < header.length; k++) o[header[k]!] = fields[k]!
    this.sink.record(o, where)
  }

  private setHeader(fields: string[], line: number): void {
    const seen = new Set<string>()
    this.header = fields.map((f, i) => {
      const name = f.trim() === "" ? `column${i + 1}` : f.trim()
      if (seen.has(name))
        throw new SourceError({ line }, { field: name, message: `the header names column "${name}" twice` })
      seen.add(name)
      return name
    })
  }
}

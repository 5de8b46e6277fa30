/**
 * Plain text: one example per non-blank line, or the whole file as one
 * example. Each becomes a source record `{ text }` (a completion with an
 * empty prompt, unless the field mapping says otherwise).
 */
import { type BadLine, badUtf8Message } from "./Lines.ts"
import { type RawSink, SourceError } from "./Problem.ts"

export class TextLinesParser {
  constructor(private readonly sink: RawSink) {}

  segment = (s: string, firstLine: number, bad: ReadonlyArray<BadLine>): void => {
    let start = 0
    let line = firstLine
    while (start < s.length) {
      let nl = s.indexOf("\n", start)
      if (nl < 0) nl = s.length
      let text = s.slice(start, nl)
      if (text.charCodeAt(text.length - 1) === 13) text = text.slice(0, -1)
      if (text.trim().length > 0) {
        const b = bad.length === 0 ? undefined : bad.find((x) => x.line === line)
        if (b !== undefined) this.sink.invalid({ line }, { field: "text", message: badUtf8Message(b) })
        else this.sink.record({ text }, { line })
      }
      start = nl + 1
      line++
    }
  }

  end(): void {}
}

export class TextFileParser {
  private parts: string[] = []
  private length = 0
  private bad: BadLine | undefined

  constructor(
    private readonly sink: RawSink,
    private readonly maxChars: number,
  ) {}

  segment = (s: string, _firstLine: number, bad: ReadonlyArray<BadLine>): void => {
    this.bad ??= bad[0]
    this.parts.push(s)
    this.length += s.length
    if (this.length > this.maxChars)
      throw new SourceError(
        {},
        { message: `the file is longer than maxLineBytes (${this.maxChars}) for one example` },
      )
  }

  end(): void {
    const text = this.parts.join("").replace(/\r?\n$/, "")
    this.parts = []
    if (this.bad !== undefined) {
      this.sink.invalid({ line: this.bad.line }, { field: "text", message: badUtf8Message(this.bad) })
      return
    }
    if (text.trim().length > 0) this.sink.record({ text }, {})
  }
}

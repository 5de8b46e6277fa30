import { describe, expect, it } from "vitest"
import { CsvParser } from "../../../plugins/ingest/Csv.ts"
import { SourceError } from "../../../plugins/ingest/Problem.ts"
import { collector, feed } from "./Parsers.ts"

const parse = (text: string | Buffer, chunk = 5, delimiter = ",") => {
  const c = collector()
  feed(text, new CsvParser(c.sink, { delimiter, maxFieldChars: 1 << 20 }), chunk)
  return c
}

describe("CsvParser (RFC 4180)", () => {
  it("reads quoted fields with delimiters, doubled quotes and line breaks, at any chunk size", () => {
    const text = 'a,b,c\n1,"x, y","say ""hi"""\r\n2,"line one\nline two",\n"3",,"end"'
    for (const chunk of [1, 2, 3, 5, 64]) {
      const { records, invalid } = parse(text, chunk)
      expect(invalid).toEqual([])
      expect(records.map((r) => r.value)).toEqual([
        { a: "1", b: "x, y", c: 'say "hi"' },
        { a: "2", b: "line one\nline two", c: "" },
        { a: "3", b: "", c: "end" },
      ])
      expect(records.map((r) => r.where)).toEqual([
        { row: 1, line: 2, unit: "row" },
        { row: 2, line: 3, unit: "row" },
        { row: 3, line: 5, unit: "row" },
      ])
    }
  })

  it("strips a byte-order mark, skips blank lines, reads tabs as delimiter for TSV", () => {
    const { records } = parse('\ufeffq\ta\nwhat?\tthat\n\nwhy?\t"be\tcause"\n', 3, "\t")
    expect(records.map((r) => r.value)).toEqual([
      { q: "what?", a: "that" },
      { q: "why?", a: "be\tcause" },
    ])
  })

  it("fails a row whose field count differs from the header, naming row and line", () => {
    const { records, invalid } = parse("a,b\n1,2\n3,4,5\n6,7\n")
    expect(records).toHaveLength(2)
    expect(invalid).toHaveLength(1)
    expect(invalid[0]!.where).toEqual({ row: 2, line: 3, unit: "row" })
    expect(invalid[0]!.problem.message).toContain("has 3 fields but the header has 2")
  })

  it("fails a row with text after a closing quote, naming the column", () => {
    const { records, invalid } = parse('a,b\n1,"x"y\n2,z\n')
    expect(records.map((r) => r.value)).toEqual([{ a: "2", b: "z" }])
    expect(invalid[0]!.problem).toMatchObject({ field: "b" })
    expect(invalid[0]!.where.row).toBe(1)
  })

  it("fails the file on a quote that never closes, naming row, line and column", () => {
    let error: unknown
    try {
      parse('instruction,output\nfine,ok\nbroken,"never closed\nmore,rows\n')
    } catch (e) {
      error = e
    }
    expect(error).toBeInstanceOf(SourceError)
    const e = error as SourceError
    expect(e.where).toEqual({ row: 2, line: 3, unit: "row" })
    expect(e.problem.field).toBe("output")
    expect(e.problem.message).toContain("unbalanced quote")
  })

  it("refuses a header that names a column twice", () => {
    expect(() => parse("a,a\n1,2\n")).toThrow(/twice/)
  })

  it("reports invalid UTF-8 in a row with its column", () => {
    const bytes = Buffer.concat([
      Buffer.from("a,b\n1,ok\n2,bad"),
      Buffer.from([0xff, 0xfe]),
      Buffer.from("\n3,fine\n"),
    ])
    const { records, invalid } = parse(bytes)
    expect(records).toHaveLength(2)
    expect(invalid[0]!.where).toEqual({ row: 2, line: 3, unit: "row" })
    expect(invalid[0]!.problem.field).toBe("b")
    expect(invalid[0]!.problem.message).toContain("invalid UTF-8 at byte 5")
  })
})

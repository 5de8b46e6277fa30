import { describe, expect, it } from "vitest"
import { JsonParser } from "../../../plugins/ingest/Json.ts"
import { JsonlParser } from "../../../plugins/ingest/Jsonl.ts"
import { SourceError } from "../../../plugins/ingest/Problem.ts"
import { collector, feed } from "./Parsers.ts"

const json = (text: string, chunk = 4) => {
  const c = collector()
  feed(text, new JsonParser(c.sink, 1 << 20), chunk)
  return c
}
const jsonl = (text: string | Buffer, chunk = 4) => {
  const c = collector()
  feed(text, new JsonlParser(c.sink), chunk)
  return c
}

describe("JsonParser (arrays, streamed)", () => {
  it("yields each element of a top-level array, at any chunk size", () => {
    const text = '[\n  {"a": "x,]}", "b": [1, {"c": "\\"q\\\\"}]},\n  {"a": "y"}\n]\n'
    for (const chunk of [1, 2, 3, 7, 100]) {
      const { records, invalid } = json(text, chunk)
      expect(invalid).toEqual([])
      expect(records.map((r) => r.value)).toEqual([{ a: "x,]}", b: [1, { c: '"q\\' }] }, { a: "y" }])
      expect(records.map((r) => r.where)).toEqual([
        { line: 2, row: 1, unit: "element" },
        { line: 3, row: 2, unit: "element" },
      ])
    }
  })

  it("reads a sequence of top-level objects (pretty-printed records)", () => {
    const { records } = json('{"a": 1}\n{\n "a": 2\n}\n')
    expect(records.map((r) => r.value)).toEqual([{ a: 1 }, { a: 2 }])
  })

  it("fails a truncated array, naming where the unfinished element starts", () => {
    expect(() => json('[{"a": 1},\n {"a": "cut')).toThrow(SourceError)
    try {
      json('[{"a": 1},\n {"a": "cut')
    } catch (e) {
      expect((e as SourceError).where).toEqual({ line: 2, row: 2, unit: "element" })
      expect((e as SourceError).problem.message).toContain("truncated")
    }
    expect(() => json('[{"a": 1}\n')).toThrow(/never closed/)
  })

  it("reports elements that are not objects", () => {
    const { records, invalid } = json('[{"a": 1}, 5, "s"]')
    expect(records).toHaveLength(1)
    expect(invalid.map((i) => i.where.row)).toEqual([2, 3])
    expect(invalid[0]!.problem.message).toContain("expected a JSON object, got number 5")
  })
})

describe("JsonlParser", () => {
  it("reads one object per line, skips blank lines, counts lines across chunks", () => {
    const { records } = jsonl('{"a":1}\n\n  \r\n{"a":2}\r\n{"a":3}')
    expect(records.map((r) => [r.value, r.where.line])).toEqual([
      [{ a: 1 }, 1],
      [{ a: 2 }, 4],
      [{ a: 3 }, 5],
    ])
  })

  it("names the line of a truncated record and of a non-object", () => {
    const { invalid } = jsonl('{"a":1}\n{"a": "trunc\n[1,2]\n')
    expect(invalid.map((i) => i.where.line)).toEqual([2, 3])
    expect(invalid[0]!.problem.message).toMatch(/invalid JSON: .*\(truncated line\?\)/)
    expect(invalid[1]!.problem.message).toContain("expected a JSON object")
  })

  it("names the line, byte and field holding invalid UTF-8", () => {
    const bytes = Buffer.concat([
      Buffer.from('{"a":"ok"}\n{"a":"ok","b":"x'),
      Buffer.from([0xc3, 0x28]),
      Buffer.from('"}\n'),
    ])
    const { records, invalid } = jsonl(bytes)
    expect(records).toHaveLength(1)
    expect(invalid[0]!.where.line).toBe(2)
    expect(invalid[0]!.problem.field).toBe("b")
    expect(invalid[0]!.problem.message).toContain("invalid UTF-8 at byte 16")
  })

  it("stops at a line longer than maxLineBytes without holding the rest", () => {
    const c = collector()
    expect(() => feed(`{"a":1}\n{"a":"${"x".repeat(5000)}"}\n`, new JsonlParser(c.sink), 100, 1000)).toThrow(
      /maxLineBytes/,
    )
  })
})

import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { type Line, parseRecord, readLines } from "../../../plugins/tokenize/RecordReader.ts"
import { tmpDir } from "./fixtures.ts"

const collect = async (file: string, batchBytes?: number): Promise<Line[]> => {
  const out: Line[] = []
  for await (const batch of readLines(file, batchBytes)) out.push(...batch)
  return out
}

describe("RecordReader", () => {
  it("streams lines with their numbers across chunk boundaries, CRLF, blank lines and a missing final newline", async () => {
    const dir = tmpDir("lines")
    const file = path.join(dir, "r.jsonl")
    const long = "é".repeat(3_000_000) // a line longer than the 4 MiB read buffer, multi-byte throughout
    fs.writeFileSync(file, `a\r\n\nb\n${long}\nlast`)
    const lines = await collect(file, 1)
    expect(lines.map((l) => l.line)).toEqual([1, 3, 4, 5])
    expect(lines.map((l) => l.text.length)).toEqual([1, 1, long.length, 4])
    expect(lines[2]!.text === long).toBe(true)
  })

  it("reads the three canonical shapes", () => {
    const at = (text: string) => parseRecord("r.jsonl", { line: 1, text })
    expect(at('{"instruction":"i","output":"o"}')).toEqual({ instruction: "i", output: "o" })
    expect(at('{"input":"x","instruction":"i","meta":{"k":1},"output":"o"}')).toEqual({
      instruction: "i",
      input: "x",
      output: "o",
    })
    expect(at('{"completion":"c","prompt":"p"}')).toEqual({ prompt: "p", completion: "c" })
    expect(at('{"messages":[{"content":"hi","role":"user"}]}')).toEqual({
      messages: [{ role: "user", content: "hi" }],
    })
  })

  it("names the file, line and field of a malformed record", () => {
    const at = (text: string) => () => parseRecord("data/r.jsonl", { line: 7, text })
    expect(at('{"instruction":"i","output":3}')).toThrow(
      'data/r.jsonl:7: field "output" must be a string, got number',
    )
    expect(at('{"instruction":"i"}')).toThrow('data/r.jsonl:7: field "output" must be a string, got nothing')
    expect(at('{"messages":[{"role":"bot","content":"x"}]}')).toThrow(
      /data\/r\.jsonl:7: field "messages\[0\]\.role" must be/,
    )
    expect(at('{"messages":[{"role":"user","content":null}]}')).toThrow(
      /"messages\[0\]\.content" must be a string, got null/,
    )
    expect(at('{"text":"x"}')).toThrow(/not a canonical record: .* got fields text/)
    expect(at("[1,2]")).toThrow(/must be a JSON object, got array/)
    expect(at('{"prompt": "x",')).toThrow(/data\/r\.jsonl:7: not valid JSON/)
    let error: unknown
    try {
      at('{"prompt":"p","completion":false}')()
    } catch (e) {
      error = e
    }
    expect(error).toMatchObject({ _tag: "StepError", file: "data/r.jsonl", line: 7, field: "completion" })
  })
})

import * as fs from "node:fs"
import * as path from "node:path"
import * as zlib from "node:zlib"
import { describe, expect, it } from "vitest"
import { ingest } from "../../../plugins/ingest/index.ts"
import { recordBytes } from "../../../plugins/ingest/RecordParts.ts"
import { iterateRecords } from "../../../plugins/ingest/Records.ts"
import { writeParquet } from "./ParquetWriter.ts"
import { readJson, readLines, runStep, sourceArtifact, tempDir } from "./StepHarness.ts"

const write = (dir: string, name: string, content: string | Buffer): string => {
  const file = path.join(dir, name)
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, content)
  return file
}

const ROWS = [
  { instruction: "Cancel my order", output: 'Sure, order "42" is\ncancelled.', intent: "cancel_order" },
  { instruction: "Où est ma commande?", output: "En route, 😀", intent: "track_order" },
  { instruction: "Refund, please", output: "Done.\n\nAnything else?", intent: "refund" },
]

const csvOf = (rows: typeof ROWS) =>
  `instruction,output,intent\r\n${rows.map((r) => [r.instruction, r.output, r.intent].map((v) => (/[",\n]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v)).join(",")).join("\r\n")}\r\n`
const jsonlOf = (rows: typeof ROWS) => rows.map((r) => `${JSON.stringify(r, null, 0)}\n`).join("")

/** Every file under dir, relative, with its bytes: to show that a failed step touched nothing else. */
const snapshot = (dir: string): Record<string, string> => {
  const out: Record<string, string> = {}
  const walk = (d: string) => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name)
      if (e.isDirectory()) walk(p)
      else out[path.relative(dir, p)] = fs.readFileSync(p).toString("base64")
    }
  }
  walk(dir)
  return out
}

describe("ingest: formats give the same canonical records", () => {
  it("the same records from CSV, JSONL, JSON, gzip and Parquet have the same digest", async () => {
    const dir = tempDir()
    const params = { keep: ["intent"] }
    const csv = await runStep(ingest, { files: sourceArtifact([write(dir, "a.csv", csvOf(ROWS))]) }, params)
    const jsonl = await runStep(
      ingest,
      { files: sourceArtifact([write(dir, "a.jsonl", jsonlOf(ROWS))]) },
      params,
    )
    const json = await runStep(
      ingest,
      { files: sourceArtifact([write(dir, "a.json", JSON.stringify(ROWS, null, 2))]) },
      params,
    )
    const gz = await runStep(
      ingest,
      { files: sourceArtifact([write(dir, "b.csv.gz", zlib.gzipSync(csvOf(ROWS)))]) },
      params,
    )
    // gzip found by its magic bytes, whatever the name says
    const magic = await runStep(
      ingest,
      { files: sourceArtifact([write(dir, "c.jsonl", zlib.gzipSync(jsonlOf(ROWS)))]) },
      params,
    )
    const pq = write(dir, "a.parquet", Buffer.alloc(0))
    writeParquet(
      pq,
      [
        { name: "instruction", type: "string" },
        { name: "output", type: "string" },
        { name: "intent", type: "string" },
      ],
      ROWS,
    )
    const parquet = await runStep(ingest, { files: sourceArtifact([pq]) }, params)
    const pqgz = write(dir, "b.parquet.gz", zlib.gzipSync(fs.readFileSync(pq)))
    const parquetGz = await runStep(ingest, { files: sourceArtifact([pqgz]) }, params)
    for (const r of [csv, jsonl, json, gz, magic, parquet, parquetGz]) {
      expect(r.error).toBeUndefined()
      expect(r.digests.records).toBe(csv.digests.records)
    }
    expect([...iterateRecords(csv.outputs.records!)]).toEqual(
      ROWS.map((r) => ({ instruction: r.instruction, output: r.output, meta: { intent: r.intent } })),
    )
    expect(readJson(gz.outputs.report!).files).toEqual([
      { path: "b.csv.gz", format: "csv", gzip: true, bytes: expect.any(Number), records: 3, skipped: 0 },
    ])
  })

  it("reads plain text one example per line or per file, and several files in path order", async () => {
    const dir = tempDir()
    const a = write(dir, "docs/a.txt", "first line\n\nsecond line\r\n")
    const b = write(dir, "docs/b.md", "# Title\n\nBody.\n")
    const lines = await runStep(ingest, { files: sourceArtifact([b, a], path.join(dir, "docs")) })
    expect(lines.error).toBeUndefined()
    expect(readLines(lines.outputs.records!)).toEqual([
      '{"completion":"first line","prompt":""}',
      '{"completion":"second line","prompt":""}',
      '{"completion":"# Title","prompt":""}',
      '{"completion":"Body.","prompt":""}',
    ])
    const files = await runStep(
      ingest,
      { files: sourceArtifact([a, b], path.join(dir, "docs")) },
      { textUnit: "file" },
    )
    expect(
      [...iterateRecords(files.outputs.records!)].map((r) => ("completion" in r ? r.completion : "")),
    ).toEqual(["first line\n\nsecond line", "# Title\n\nBody."])
  })

  it("says when it cannot tell a file's format, and takes the format parameter", async () => {
    const dir = tempDir()
    const f = write(dir, "data.dat", jsonlOf(ROWS))
    const r = await runStep(ingest, { files: sourceArtifact([f]) })
    expect(r.error?.message).toContain('cannot tell the format from the name "data.dat"')
    expect(r.error?.file).toBe(f)
    const ok = await runStep(ingest, { files: sourceArtifact([f]) }, { format: "jsonl" })
    expect(ok.meta?.records).toEqual({ count: 3, recordKind: "instruction" })
  })
})

describe("ingest: malformed files fail with file, line and field, or are skipped and counted", () => {
  const lines = [
    '{"instruction": "a", "output": "1"}',
    '{"instruction": "b", "output": 2}',
    '{"instruction": "c", "outp',
    '{"instruction": "d", "output": "4"}',
  ]

  it("a wrong field type: the error names file, line and field; nothing else is written", async () => {
    const dir = tempDir()
    const f = write(dir, "src/bad.jsonl", `${lines.join("\n")}\n`)
    const before = snapshot(path.join(dir, "src"))
    const r = await runStep(ingest, { files: sourceArtifact([f]) }, {}, path.join(dir, "step"))
    expect(r.ok).toBe(false)
    expect(r.error).toMatchObject({ _tag: "StepError", file: f, line: 2, field: "output" })
    expect(r.error?.message).toBe(`${f}: line 2: field "output": expected a string, got number 2`)
    expect(snapshot(path.join(dir, "src"))).toEqual(before)
    expect(fs.readdirSync(path.join(dir, "step/out")).sort()).toEqual(["records"])
  })

  it("with onInvalid: skip, counts the bad records and reports the first ones", async () => {
    const dir = tempDir()
    const f = write(dir, "bad.jsonl", `${lines.join("\n")}\n`)
    const r = await runStep(ingest, { files: sourceArtifact([f]) }, { onInvalid: "skip" })
    expect(r.error).toBeUndefined()
    expect(readLines(r.outputs.records!)).toEqual([
      '{"instruction":"a","output":"1"}',
      '{"instruction":"d","output":"4"}',
    ])
    const report = readJson(r.outputs.report!)
    expect(report.skipped).toBe(2)
    expect(report.invalid).toEqual([
      { file: "bad.jsonl", line: 2, field: "output", problem: "expected a string, got number 2" },
      { file: "bad.jsonl", line: 3, problem: expect.stringContaining("(truncated line?)") },
    ])
  })

  it("a truncated last line", async () => {
    const dir = tempDir()
    const f = write(dir, "cut.jsonl", `${lines[0]}\n${lines[3]}\n{"instruction": "e", "output": "fi`)
    const r = await runStep(ingest, { files: sourceArtifact([f]) })
    expect(r.error).toMatchObject({ file: f, line: 3 })
    expect(r.error?.message).toContain("truncated line?")
  })

  it("invalid UTF-8", async () => {
    const dir = tempDir()
    const f = write(
      dir,
      "latin1.jsonl",
      Buffer.concat([
        Buffer.from(`${lines[0]}\n{"instruction": "caf`),
        Buffer.from([0xe9]),
        Buffer.from('", "output": "x"}\n'),
      ]),
    )
    const r = await runStep(ingest, { files: sourceArtifact([f]) })
    expect(r.error).toMatchObject({ file: f, line: 2, field: "instruction" })
    expect(r.error?.message).toContain("invalid UTF-8 at byte 20")
    const skip = await runStep(ingest, { files: sourceArtifact([f]) }, { onInvalid: "skip" })
    expect(readJson(skip.outputs.report!).skipped).toBe(1)
  })

  it("an empty file", async () => {
    const dir = tempDir()
    const f = write(dir, "empty.jsonl", "")
    const r = await runStep(ingest, { files: sourceArtifact([f]) })
    expect(r.error).toMatchObject({ file: f })
    expect(r.error?.message).toContain("empty")
    const g = write(dir, "good.jsonl", `${lines[0]}\n`)
    const skip = await runStep(ingest, { files: sourceArtifact([f, g]) }, { onInvalid: "skip" })
    expect(skip.meta?.records).toEqual({ count: 1, recordKind: "instruction" })
    expect(readJson(skip.outputs.report!).invalid).toEqual([
      { file: "empty.jsonl", problem: expect.stringContaining("empty") },
    ])
  })

  it("a 10 MB single line: read when it fits maxLineBytes, refused by line when not", async () => {
    const dir = tempDir()
    const big = "x".repeat(10 * 1024 * 1024)
    const f = write(dir, "big.jsonl", `{"instruction": "long", "output": "${big}"}`)
    const r = await runStep(ingest, { files: sourceArtifact([f]) })
    expect(r.error).toBeUndefined()
    expect(recordBytes(r.outputs.records!)).toBe(big.length + 35)
    const capped = await runStep(ingest, { files: sourceArtifact([f]) }, { maxLineBytes: 1024 * 1024 })
    expect(capped.error).toMatchObject({ file: f, line: 1 })
    expect(capped.error?.message).toContain("maxLineBytes")
  })

  it("a CSV with an unbalanced quote", async () => {
    const dir = tempDir()
    const f = write(dir, "q.csv", 'instruction,output\nok,fine\nbroken,"never closed\nnext,row\n')
    const r = await runStep(ingest, { files: sourceArtifact([f]) })
    expect(r.error).toMatchObject({ file: f, line: 3, field: "output" })
    expect(r.error?.message).toContain("row 2 (line 3)")
    expect(r.error?.message).toContain("unbalanced quote")
    // not skippable: the rest of the file would be lost silently
    const skip = await runStep(ingest, { files: sourceArtifact([f]) }, { onInvalid: "skip" })
    expect(skip.ok).toBe(false)
  })

  it("a corrupt gzip file", async () => {
    const dir = tempDir()
    const gz = zlib.gzipSync(jsonlOf(ROWS))
    const f = write(dir, "cut.jsonl.gz", gz.subarray(0, gz.length - 12))
    const r = await runStep(ingest, { files: sourceArtifact([f]) })
    expect(r.error).toMatchObject({ file: f })
    expect(r.error?.message).toMatch(/gzip data is corrupt or truncated/)
  })

  it("a file whose records are all bad", async () => {
    const dir = tempDir()
    const f = write(dir, "all.jsonl", '{"a": 1}\n{"b": 2}\n')
    const r = await runStep(ingest, { files: sourceArtifact([f]) }, { onInvalid: "skip" })
    expect(r.error?.message).toContain("no valid records: all 2 were skipped")
  })
})

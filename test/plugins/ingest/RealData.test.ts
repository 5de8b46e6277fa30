import * as fs from "node:fs"
import * as path from "node:path"
import { Schema } from "effect"
import { describe, expect, it } from "vitest"
import { canonicalJson } from "../../../core/Canonical.ts"
import { ingest } from "../../../plugins/ingest/index.ts"
import { CanonicalRecord } from "../../../plugins/ingest/Records.ts"
import { haveShared } from "../../support/data.ts"
import { readJson, readLines, runStep, sharedData, sourceArtifact } from "./StepHarness.ts"

const gsm8k = path.join(sharedData, "gsm8k/test.jsonl")
const bitext = path.join(
  sharedData,
  "bitext-customer-support/Bitext_Sample_Customer_Support_Training_Dataset.csv",
)
const alpaca = path.join(sharedData, "alpaca-seed/seed_tasks.jsonl")

const isCanonical = Schema.is(CanonicalRecord)

// The shared datasets live beside the repository (../shared/data); a checkout without them skips these.
describe.skipIf(!haveShared("ingest GSM8K", gsm8k))("ingest GSM8K (JSONL)", () => {
  it("renames question/answer to instruction/output and writes canonical lines", async () => {
    const r = await runStep(
      ingest,
      { files: sourceArtifact([gsm8k]) },
      { rename: { question: "instruction", answer: "output" } },
    )
    expect(r.error).toBeUndefined()
    expect(r.meta?.records).toEqual({ count: 1319, recordKind: "instruction" })
    const lines = readLines(r.outputs.records!)
    expect(lines).toHaveLength(1319)
    for (const l of lines) {
      const rec = JSON.parse(l)
      expect(isCanonical(rec)).toBe(true)
      expect(canonicalJson(rec)).toBe(l)
    }
    const first = JSON.parse(lines[0]!)
    const src = JSON.parse(fs.readFileSync(gsm8k, "utf8").split("\n")[0]!)
    expect(first).toEqual({ instruction: src.question, output: src.answer })
    const report = readJson(r.outputs.report!)
    expect(report).toMatchObject({ records: 1319, skipped: 0, recordKind: "instruction" })
  })

  it("without a mapping, says which fields exist and how to map them", async () => {
    const r = await runStep(ingest, { files: sourceArtifact([gsm8k]) })
    expect(r.ok).toBe(false)
    expect(r.error?.message).toContain("test.jsonl: line 1")
    expect(r.error?.message).toContain("question, answer")
    expect(r.error?.message).toContain("rename")
    expect(r.error?.line).toBe(1)
  })
})

describe.skipIf(!haveShared("ingest Bitext", bitext))("ingest Bitext (CSV)", () => {
  it("reads quoted multi-line fields and keeps intent and category under meta", async () => {
    const r = await runStep(
      ingest,
      { files: sourceArtifact([bitext]) },
      { rename: { response: "output" }, keep: ["intent", "category"] },
    )
    expect(r.error).toBeUndefined()
    expect(r.meta?.records).toEqual({ count: 4514, recordKind: "instruction" })
    const lines = readLines(r.outputs.records!)
    expect(lines).toHaveLength(4514)
    const first = JSON.parse(lines[0]!)
    expect(first.instruction).toBe("how can I cancel purchase 113542617735902?")
    expect(first.meta).toEqual({ intent: "cancel_order", category: "ORDER" })
    expect(first.output).toContain("\n\n1. Firstly, connect to our system")
    expect(first.output.endsWith("You are never alone in this!")).toBe(true)
    const intents = new Set(lines.map((l) => JSON.parse(l).meta.intent))
    expect(intents.size).toBe(27)
    for (const l of lines) expect(canonicalJson(JSON.parse(l))).toBe(l)
  })
})

describe.skipIf(!haveShared("ingest alpaca seed tasks", alpaca))(
  "ingest alpaca seed tasks (nested instances)",
  () => {
    it("expands instances into one record each", async () => {
      const r = await runStep(
        ingest,
        { files: sourceArtifact([alpaca]) },
        { expand: "instances", keep: ["name"] },
      )
      expect(r.error).toBeUndefined()
      const src = fs
        .readFileSync(alpaca, "utf8")
        .split("\n")
        .filter((l) => l.trim() !== "")
        .map((l) => JSON.parse(l))
      const instances = src.reduce((n, t) => n + t.instances.length, 0)
      expect(src).toHaveLength(175)
      const lines = readLines(r.outputs.records!)
      expect(lines).toHaveLength(instances)
      const first = JSON.parse(lines[0]!)
      expect(first.instruction).toBe(src[0].instruction)
      expect(first.output).toBe(src[0].instances[0].output)
      expect(first.meta).toEqual({ name: src[0].name })
      expect(readJson(r.outputs.report!).expanded).toBe(instances)
    })
  },
)

import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { dedupe } from "../../../plugins/dedupe/index.ts"
import { ingest } from "../../../plugins/ingest/index.ts"
import { forEachLine } from "../../../plugins/ingest/Records.ts"
import { split } from "../../../plugins/split/index.ts"
import { haveShared } from "../../support/data.ts"
import { fileArtifact, runStep, sharedData, sourceArtifact, tempDir } from "../ingest/StepHarness.ts"

const gsm8k = path.join(sharedData, "gsm8k/test.jsonl")

/** ingest → dedupe → split of one source file; each record line with its split. */
const pipeline = async (source: string): Promise<Map<string, string>> => {
  const params = { rename: { question: "instruction", answer: "output" } }
  const i = await runStep(ingest, { files: sourceArtifact([source]) }, params)
  const d = await runStep(
    dedupe,
    { records: fileArtifact(i.outputs.records!, "Records", i.meta?.records) },
    { near: true },
  )
  const s = await runStep(split, { records: fileArtifact(d.outputs.records!, "Records", d.meta?.records) })
  expect(s.error).toBeUndefined()
  const m = new Map<string, string>()
  for (const name of ["train", "validation", "test"]) forEachLine(s.outputs[name]!, (l) => m.set(l, name))
  return m
}

// The shared datasets live beside the repository (../shared/data); a checkout without them skips this.
describe.skipIf(!haveShared("a growing dataset (GSM8K)", gsm8k))("a growing dataset (GSM8K)", () => {
  it("keeps every earlier record in its split when the source grows", async () => {
    const lines = fs
      .readFileSync(gsm8k, "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "")
    const dir = tempDir()
    const source = path.join(dir, "train.jsonl")
    fs.writeFileSync(source, `${lines.slice(0, 900).join("\n")}\n`)
    const before = await pipeline(source)
    fs.appendFileSync(source, `${lines.slice(900).join("\n")}\n`)
    const after = await pipeline(source)
    expect(before.size).toBeGreaterThan(850)
    expect(after.size).toBeGreaterThan(before.size)
    for (const [line, s] of before) expect(after.get(line)).toBe(s)
    const test = [...after.values()].filter((s) => s === "test").length
    expect(test / after.size).toBeGreaterThan(0.06)
    expect(test / after.size).toBeLessThan(0.14)
  })
})

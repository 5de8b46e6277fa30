import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { ingest } from "../../../plugins/ingest/index.ts"
import { type CanonicalRecord, forEachLine, recordLine } from "../../../plugins/ingest/Records.ts"
import { split } from "../../../plugins/split/index.ts"
import { haveShared } from "../../support/data.ts"
import {
  fileArtifact,
  readJson,
  runStep,
  sharedData,
  sourceArtifact,
  tempDir,
} from "../ingest/StepHarness.ts"

const recordsFile = (records: ReadonlyArray<CanonicalRecord>): string => {
  const file = path.join(tempDir(), "records.jsonl")
  fs.writeFileSync(file, records.map((r) => `${recordLine(r)}\n`).join(""))
  return file
}
const asInput = (file: string) => ({
  records: fileArtifact(file, "Records", { count: 0, recordKind: "instruction" }),
})

/** Which split each line went to. */
const assignment = (outputs: Record<string, string>): Map<string, string> => {
  const m = new Map<string, string>()
  for (const s of ["train", "validation", "test"]) forEachLine(outputs[s]!, (line) => m.set(line, s))
  return m
}

const synthetic = (n: number, from = 0): CanonicalRecord[] =>
  Array.from({ length: n }, (_, k) => {
    const i = from + k
    return {
      instruction: `question number ${i}`,
      output: `answer ${i * 7}`,
      meta: { intent: `intent${i % 9}`, user: `u${i % 40}` },
    }
  })

describe("split", () => {
  it("splits by ratio, every record exactly once, deterministically", async () => {
    const file = recordsFile(synthetic(3000))
    const a = await runStep(split, asInput(file))
    const b = await runStep(split, asInput(file))
    expect(a.error).toBeUndefined()
    expect(a.digests).toEqual(b.digests)
    const m = assignment(a.outputs)
    expect(m.size).toBe(3000)
    const report = readJson(a.outputs.report!) as {
      counts: Record<"train" | "validation" | "test", number>
    }
    expect(report.counts.train + report.counts.validation + report.counts.test).toBe(3000)
    // binomial: 3 standard deviations of 300 out of 3000 is about 50
    expect(Math.abs(report.counts.test - 300)).toBeLessThan(60)
    expect(Math.abs(report.counts.validation - 300)).toBeLessThan(60)
    expect(a.meta).toEqual({
      train: { count: report.counts.train, recordKind: "instruction" },
      validation: { count: report.counts.validation, recordKind: "instruction" },
      test: { count: report.counts.test, recordKind: "instruction" },
    })
    const other = await runStep(split, asInput(file), { seed: 1 })
    expect(other.digests.test).not.toBe(a.digests.test)
  })

  it("adding records never moves an earlier record to another split", async () => {
    const small = synthetic(1000)
    const grown = [
      ...synthetic(500, 5000),
      ...small.slice(0, 600),
      ...synthetic(1500, 1000),
      ...small.slice(600),
    ]
    for (const params of [{}, { groupBy: "meta.user" }, { stratifyBy: "meta.intent" }]) {
      const a = assignment((await runStep(split, asInput(recordsFile(small)), params)).outputs)
      const b = assignment((await runStep(split, asInput(recordsFile(grown)), params)).outputs)
      for (const [line, s] of a) expect(b.get(line), line).toBe(s)
    }
  })

  it("keeps each group on one side", async () => {
    const r = await runStep(split, asInput(recordsFile(synthetic(2000))), { groupBy: "meta.user" })
    expect(r.error).toBeUndefined()
    const sides = new Map<string, Set<string>>()
    for (const [line, s] of assignment(r.outputs)) {
      const user = JSON.parse(line).meta.user as string
      if (!sides.has(user)) sides.set(user, new Set())
      sides.get(user)!.add(s)
    }
    expect(sides.size).toBe(40)
    for (const s of sides.values()) expect(s.size).toBe(1)
    expect(readJson(r.outputs.report!).groups).toMatchObject({ field: "meta.user", count: 40 })
  })

  it("reports each stratum's shares and the largest deviation", async () => {
    const r = await runStep(split, asInput(recordsFile(synthetic(4500))), { stratifyBy: "meta.intent" })
    const strata = readJson(r.outputs.report!).strata as {
      values: Array<{ value: string; count: number; test: number }>
      maxDeviation: number
    }
    expect(strata.values).toHaveLength(9)
    for (const v of strata.values) {
      expect(v.count).toBe(500)
      // sqrt(0.1 * 0.9 / 500) is 0.013: 4 standard deviations
      expect(Math.abs(v.test / v.count - 0.1)).toBeLessThan(0.055)
    }
    expect(strata.maxDeviation).toBeLessThan(0.055)
  })

  it("refuses, or reports, an example that lands in two splits", async () => {
    // the same question and answer under different users: grouping by user can separate them
    const records: CanonicalRecord[] = []
    for (let u = 0; u < 60; u++)
      records.push({
        instruction: "How do I reset my password?",
        output: "Use the link.",
        meta: { user: `u${u}` },
      })
    const file = recordsFile([...records, ...synthetic(200)])
    const r = await runStep(split, asInput(file), { groupBy: "meta.user" })
    expect(r.ok).toBe(false)
    expect(r.error?.message).toMatch(/example\(s\) appear in more than one split/)
    expect(r.error?.message).toContain("How do I reset my password?")
    expect(r.error?.file).toBe(file)
    const reported = await runStep(split, asInput(file), { groupBy: "meta.user", onLeak: "report" })
    expect(reported.error).toBeUndefined()
    const leaks = readJson(reported.outputs.report!).leaks as Record<
      "trainTest" | "trainValidation" | "validationTest",
      number
    >
    expect(leaks.trainTest + leaks.trainValidation + leaks.validationTest).toBeGreaterThan(0)
    // without grouping, identical examples always share a split
    const plain = await runStep(split, asInput(file))
    expect(plain.error).toBeUndefined()
  })

  it("checks prompts for leaks when asked", async () => {
    const file = recordsFile(
      Array.from({ length: 200 }, (_, i) => ({
        instruction: "Same question",
        output: `different answer ${i}`,
      })),
    )
    const r = await runStep(split, asInput(file), { leakOn: "prompt" })
    expect(r.error?.message).toContain("share their prompt")
  })

  it("says which record lacks the group field, and refuses ratios that do not add up", async () => {
    const file = recordsFile([
      { prompt: "a", completion: "b", meta: { g: 1 } },
      { prompt: "c", completion: "d" },
    ])
    const r = await runStep(split, asInput(file), { groupBy: "meta.g" })
    expect(r.error).toMatchObject({
      line: 2,
      field: "meta.g",
      message: expect.stringContaining('record 2 has no field "meta.g"'),
    })
    await expect(
      runStep(split, asInput(file), { ratios: { train: 0.8, validation: 0.1, test: 0.2 } }),
    ).rejects.toThrow("ratios must add up to 1")
  })
})

const bitext = path.join(
  sharedData,
  "bitext-customer-support/Bitext_Sample_Customer_Support_Training_Dataset.csv",
)

// The shared datasets live beside the repository (../shared/data); a checkout without them skips this.
describe.skipIf(!haveShared("split on Bitext", bitext))("split on Bitext", () => {
  it("stratified by intent, every intent is in every split near its target share", async () => {
    const ing = await runStep(
      ingest,
      { files: sourceArtifact([bitext]) },
      { rename: { response: "output" }, keep: ["intent", "category"] },
    )
    const r = await runStep(
      split,
      { records: fileArtifact(ing.outputs.records!, "Records", ing.meta?.records) },
      { stratifyBy: "meta.intent" },
    )
    expect(r.error).toBeUndefined()
    const strata = readJson(r.outputs.report!).strata as {
      values: Array<{ count: number; train: number; validation: number; test: number }>
    }
    expect(strata.values).toHaveLength(27)
    for (const v of strata.values) {
      expect(v.train + v.validation + v.test).toBe(v.count)
      expect(v.test).toBeGreaterThan(0)
      expect(v.validation).toBeGreaterThan(0)
    }
  })
})

import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { dedupe } from "../../../plugins/dedupe/index.ts"
import { ingest } from "../../../plugins/ingest/index.ts"
import { type CanonicalRecord, iterateRecords, recordLine } from "../../../plugins/ingest/Records.ts"
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

const words = (n: number, seed: number) => {
  let s = seed
  const out: string[] = []
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    out.push(`w${s % 5000}`)
  }
  return out
}

describe("dedupe", () => {
  it("drops exact duplicates after normalisation, keeping the first, and reports clusters", async () => {
    const file = recordsFile([
      { instruction: "Reset my password", output: "Go to settings." },
      { instruction: "Track my order", output: "It ships today." },
      { instruction: "Reset  my password ", output: "Go to settings.\n", meta: { source: "b" } },
      { instruction: "reset my password", output: "go to settings." },
      { instruction: "Track my order", output: "It ships today." },
    ])
    const r = await runStep(dedupe, asInput(file))
    expect(r.error).toBeUndefined()
    expect(
      [...iterateRecords(r.outputs.records!)].map((x) => ("instruction" in x ? x.instruction : "")),
    ).toEqual(["Reset my password", "Track my order", "reset my password"])
    expect(r.meta?.records).toEqual({ count: 3, recordKind: "instruction" })
    const report = readJson(r.outputs.report!)
    expect(report).toMatchObject({
      recordsIn: 5,
      recordsOut: 3,
      duplicates: { exact: 2, near: 0 },
      near: false,
    })
    expect(report.clusters).toEqual([
      {
        kept: { index: 0, text: "Reset my password | Go to settings." },
        duplicates: 1,
        members: [{ index: 2, kind: "exact", text: expect.stringContaining("Reset  my password") }],
      },
      {
        kept: { index: 1, text: "Track my order | It ships today." },
        duplicates: 1,
        members: [{ index: 4, kind: "exact", text: expect.any(String) }],
      },
    ])
    const folded = await runStep(dedupe, asInput(file), { caseFold: true })
    expect(readJson(folded.outputs.report!).duplicates).toEqual({ exact: 3, near: 0 })
  })

  it("drops near duplicates above the Jaccard threshold, verified exactly", async () => {
    const base = words(300, 1)
    const edited = [...base]
    // 8 one-word edits change 40 of 296 5-gram shingles: Jaccard about 0.76
    for (let i = 0; i < 300; i += 40) edited[i] = "changed"
    const far = [...base]
    for (let i = 0; i < 300; i += 6) far[i] = "other"
    const file = recordsFile([
      { prompt: "Story", completion: base.join(" ") },
      { prompt: "Story", completion: words(300, 2).join(" ") },
      { prompt: "Story", completion: edited.join(" ") },
      { prompt: "Story", completion: far.join(" ") },
    ])
    const r = await runStep(dedupe, asInput(file), { near: true, threshold: 0.7 })
    expect(r.error).toBeUndefined()
    const report = readJson(r.outputs.report!) as {
      duplicates: unknown
      clusters: Array<{ members: Array<{ similarity: number }> }>
      near: Record<string, unknown>
    }
    expect(report.duplicates).toEqual({ exact: 0, near: 1 })
    expect(report.clusters[0]).toMatchObject({ kept: { index: 0 }, members: [{ index: 2, kind: "near" }] })
    expect(report.clusters[0]!.members[0]!.similarity).toBeGreaterThanOrEqual(0.7)
    expect(report.near).toMatchObject({
      verification: expect.stringContaining("exact Jaccard"),
      bands: 16,
      rows: 8,
      permutations: 128,
    })
    expect(r.meta?.records).toEqual({ count: 3, recordKind: "completion" })
  })

  it("is deterministic: the same input gives the same bytes", async () => {
    const records: CanonicalRecord[] = []
    for (let i = 0; i < 300; i++)
      records.push({ instruction: words(30, i % 200).join(" "), output: `answer ${i % 250}` })
    const file = recordsFile(records)
    const a = await runStep(dedupe, asInput(file), { near: true })
    const b = await runStep(dedupe, asInput(file), { near: true })
    expect(a.digests).toEqual(b.digests)
  })

  it("refuses inconsistent LSH settings with a message saying why", async () => {
    const file = recordsFile([{ prompt: "a", completion: "b" }])
    await expect(runStep(dedupe, asInput(file), { near: true, bands: 20, rows: 8 })).rejects.toThrow(
      "bands × rows (20 × 8 = 160) exceeds permutations (128)",
    )
  })
})

const bitext = path.join(
  sharedData,
  "bitext-customer-support/Bitext_Sample_Customer_Support_Training_Dataset.csv",
)

// The shared datasets live beside the repository (../shared/data); a checkout without them skips this.
describe.skipIf(!haveShared("dedupe on Bitext", bitext))("dedupe on Bitext", () => {
  it("finds the templated near-duplicate answers and keeps the first of each", async () => {
    const ing = await runStep(
      ingest,
      { files: sourceArtifact([bitext]) },
      { rename: { response: "output" }, keep: ["intent"] },
    )
    const input = { records: fileArtifact(ing.outputs.records!, "Records", ing.meta?.records) }
    const exact = await runStep(dedupe, input)
    const near = await runStep(dedupe, input, { near: true, threshold: 0.8 })
    const e = readJson(exact.outputs.report!) as { recordsOut: number; duplicates: { exact: number } }
    const n = readJson(near.outputs.report!) as {
      recordsOut: number
      duplicates: { exact: number; near: number }
      clusters: unknown[]
    }
    expect(e.recordsOut + e.duplicates.exact).toBe(4514)
    expect(n.duplicates.exact).toBe(e.duplicates.exact)
    expect(n.duplicates.near).toBeGreaterThan(0)
    expect(n.recordsOut).toBe(4514 - n.duplicates.exact - n.duplicates.near)
    expect(n.clusters.length).toBeGreaterThan(0)
  })
})

describe("interruption", () => {
  it("a long pass stops when its signal fires", async () => {
    const { dedupeFile } = await import("../../../plugins/dedupe/Run.ts")
    const { splitFile } = await import("../../../plugins/split/Run.ts")
    const file = recordsFile([{ prompt: "a", completion: "b" }])
    const dir = tempDir()
    const aborted = AbortSignal.abort()
    const options = {
      exact: true,
      near: true,
      on: "example" as const,
      caseFold: false,
      ngram: 5,
      permutations: 128,
      bands: 16,
      rows: 8,
      threshold: 0.8,
      seed: 1,
    }
    await expect(dedupeFile(file, path.join(dir, "d"), options, aborted)).rejects.toThrow(/abort/i)
    const outputs = { train: path.join(dir, "a"), validation: path.join(dir, "b"), test: path.join(dir, "c") }
    const params = {
      ratios: { train: 0.8, validation: 0.1, test: 0.1 },
      seed: 0,
      leakOn: "example" as const,
      onLeak: "fail" as const,
    }
    await expect(splitFile(file, outputs, params, aborted)).rejects.toThrow(/abort/i)
  })
})

/**
 * eval and the exports in a pipeline run by the built CLI (`npm run build`
 * first): the steps run, are cached on the next run, and a custom scorer's
 * source text is part of the eval step's key, so editing it re-runs eval
 * and nothing else.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, test } from "vitest"
import { MARKER } from "../../../plugins/export/Target.ts"
import { loadModel } from "../../../plugins/train/ModelIO.ts"
import { writeTestAdapter } from "../export/Adapters.ts"
import { repoRoot, storiesBin, tempDir, tok512 } from "../export/Step.ts"

const pipeline = (word: string) => `
import { Adapter, evaluate, exportAdapter, exportMerged, Model, Pipeline, Records, tokenize, Tokenizer } from "tunegraph"

const p = Pipeline.make("eval-export")
const base = p.source("base", "model/stories260K.bin", Model)
const tokenizer = p.source("tokenizer", "model/tok512.bin", Tokenizer)
const adapter = p.source("adapter", "adapter", Adapter)
const records = p.source("records", "records.jsonl", Records)
const { tokens } = p.node("tokenize", tokenize, {
  inputs: { records, tokenizer },
  params: { template: "none", maxLength: 64 },
})
p.node("eval", evaluate, {
  inputs: { base, adapter, tokenizer, test: tokens, prompts: records },
  params: {
    template: "none",
    stop: ["."],
    maxNewTokens: 20,
    backend: "wasm",
    regex: /named (\\w+)/,
    scorers: { named: (output: string) => output.includes(${JSON.stringify(word)}) },
  },
})
p.node("export-adapter", exportAdapter, { inputs: { adapter, base }, params: { to: "out/adapter" } })
p.node("export-merged", exportMerged, { inputs: { model: base, adapter, tokenizer }, params: { to: "out/merged" } })
export default p
`

interface RunJson {
  status: string
  steps: Array<{ node: string; status: string; outputs: Record<string, string>; error?: string }>
}

const run = (cwd: string): RunJson => {
  const r = spawnSync(
    process.execPath,
    [path.join(repoRoot, "bin/tunegraph.js"), "run", "pipeline.ts", "--json"],
    {
      cwd,
      env: { ...process.env, NO_COLOR: "1" },
      encoding: "utf8",
      timeout: 240_000,
    },
  )
  try {
    return JSON.parse(r.stdout) as RunJson
  } catch {
    throw new Error(`not JSON (exit ${r.status}):\n${r.stdout}\n${r.stderr}`)
  }
}

/** Where the store keeps an artifact (digests print as "sha256:<hex>"). */
const objectDir = (cwd: string, digest: string) => {
  const hex = digest.replace(/^sha256:/, "")
  return path.join(cwd, ".tunegraph/objects", hex.slice(0, 2), hex.slice(2))
}

const statuses = (r: RunJson) => Object.fromEntries(r.steps.map((s) => [s.node, s.status]))

let cwd: string

beforeAll(() => {
  cwd = tempDir("pipeline")
  fs.mkdirSync(path.join(cwd, "model"))
  fs.copyFileSync(storiesBin, path.join(cwd, "model/stories260K.bin"))
  fs.copyFileSync(tok512, path.join(cwd, "model/tok512.bin"))
  writeTestAdapter(path.join(cwd, "adapter"), loadModel(storiesBin), { zeroB: true })
  const records = [
    { completion: "Once upon a time, there was a little girl named Lily", prompt: "" },
    { completion: "He liked to play with it in the park", prompt: "Tom had a red ball" },
  ]
  fs.writeFileSync(path.join(cwd, "records.jsonl"), records.map((r) => `${JSON.stringify(r)}\n`).join(""))
  fs.writeFileSync(path.join(cwd, "package.json"), "{}\n")
})

describe("eval and export in a pipeline", () => {
  test("run, cached re-run, and a changed scorer re-runs only eval", () => {
    fs.writeFileSync(path.join(cwd, "pipeline.ts"), pipeline("Lily"))
    const first = run(cwd)
    expect(first.steps.filter((s) => s.error !== undefined)).toEqual([])
    expect(first.status).toBe("succeeded")
    expect(statuses(first)).toMatchObject({
      tokenize: "ran",
      eval: "ran",
      "export-adapter": "ran",
      "export-merged": "ran",
    })
    const evalStep = first.steps.find((s) => s.node === "eval")
    const reportDir = objectDir(cwd, evalStep!.outputs.report!)
    const report = JSON.parse(fs.readFileSync(path.join(reportDir, "report.json"), "utf8"))
    expect(report.scores.tuned).toEqual(report.scores.base)
    expect(report.samples[0].base).toBe("Once upon a time, there was a little girl named Lily")
    expect(report.samples[0].scores.base).toMatchObject({ exact_match: 1, regex: 1, named: 1 })
    expect(fs.readdirSync(path.join(cwd, "out/adapter"))).toContain(MARKER)
    expect(fs.readdirSync(path.join(cwd, "out/merged"))).toContain("tokenizer.json")

    const again = run(cwd)
    expect(new Set(Object.values(statuses(again)))).toEqual(new Set(["cached"]))

    fs.writeFileSync(path.join(cwd, "pipeline.ts"), pipeline("Tim"))
    const edited = run(cwd)
    expect(edited.steps.filter((s) => s.status === "ran").map((s) => s.node)).toEqual(["eval"])
    const step = edited.steps.find((s) => s.node === "eval")!
    const dir = objectDir(cwd, step.outputs.report!)
    expect(
      JSON.parse(fs.readFileSync(path.join(dir, "report.json"), "utf8")).samples[0].scores.base.named,
    ).toBe(0)
  })
})

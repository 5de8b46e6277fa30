/**
 * A function given as a parameter (an eval scorer) is keyed by what it
 * depends on: editing a constant or helper it uses changes eval's key,
 * editing an unrelated node does not.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { describe, expect, it } from "vitest"
import { canonicalJson } from "../../core/Canonical.ts"
import { loadPipeline, setEngineUrl } from "../../core/Loader.ts"
import type { StepNode } from "../../core/Pipeline.ts"
import { repoRoot, tempDir } from "../support/cli.ts"

// The pipeline file imports the built engine, as under the CLI.
setEngineUrl(pathToFileURL(path.join(repoRoot, "dist/index.js")).href)

const pipeline = (o: { limit?: number; suffix?: string; steps?: number; weight?: number } = {}) => `
import { dedupe, evaluate, ingest, Model, Pipeline, Tokenizer, Tokens } from "tunegraph"
import { normalise } from "./helpers.ts"

const LIMIT = ${o.limit ?? 3}
const UNUSED_BY_SCORERS = ${o.steps ?? 10}
function clip(s: string) {
  return normalise(s).slice(0, LIMIT)
}

const p = Pipeline.make("scorers")
const data = p.source("data", "data.jsonl")
const { records } = p.node("ingest", ingest, { inputs: { files: data } })
p.node("dedupe", dedupe, { inputs: { records }, params: { ngram: UNUSED_BY_SCORERS } })
const base = p.source("base", "model.bin", Model)
const tokenizer = p.source("tokenizer", "tok.bin", Tokenizer)
const test = p.source("test", "test-tokens", Tokens)
p.node("eval", evaluate, {
  inputs: { base, tokenizer, test, prompts: records },
  params: {
    scorers: {
      clipped: (output: string, reference: string) => clip(output) === clip(reference),
      weighted: (output: string) => output.length * ${o.weight ?? 1},
    },
  },
})
export default p
`
const helpers = (suffix = "") =>
  `export const normalise = (s: string) => s.trim().toLowerCase()${suffix ? ` + ${JSON.stringify(suffix)}` : ""}\n`

const keyOf = async (dir: string) => {
  const { pipeline: p } = await loadPipeline(path.join(dir, "pipeline.ts"), path.join(dir, "compiled"))
  const node = p.nodes.get("eval") as StepNode
  const scorers = (node.params as { scorers: Record<string, unknown> }).scorers
  return Object.fromEntries(Object.entries(scorers).map(([n, f]) => [n, canonicalJson(f)]))
}

const write = async (dir: string, pipe: string, help: string) => {
  fs.writeFileSync(path.join(dir, "pipeline.ts"), pipe)
  fs.writeFileSync(path.join(dir, "helpers.ts"), help)
  // A new mtime for the loader's cache even within one clock tick.
  const t = new Date(Date.now() + Math.floor(Math.random() * 1e6))
  fs.utimesSync(path.join(dir, "pipeline.ts"), t, t)
  fs.utimesSync(path.join(dir, "helpers.ts"), t, t)
  return keyOf(dir)
}

describe("functions as parameters", () => {
  it("are keyed by the constants and helpers they use, not by unrelated code", async () => {
    const dir = tempDir("scorers")
    fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
    const before = await write(dir, pipeline(), helpers())
    // The same file again: the same keys.
    expect(await write(dir, pipeline(), helpers())).toEqual(before)
    // An unrelated node's parameter: unchanged.
    expect(await write(dir, pipeline({ steps: 11 }), helpers())).toEqual(before)
    // A constant the scorer uses (through a helper function): changed.
    const limit = await write(dir, pipeline({ limit: 4 }), helpers())
    expect(limit.clipped).not.toBe(before.clipped)
    expect(limit.weighted).toBe(before.weighted)
    // A helper in another file, two calls away: changed.
    const helper = await write(dir, pipeline(), helpers("!"))
    expect(helper.clipped).not.toBe(before.clipped)
    expect(helper.weighted).toBe(before.weighted)
    // Its own source: changed.
    expect((await write(dir, pipeline({ weight: 2 }), helpers())).weighted).not.toBe(before.weighted)
  })
})

/**
 * reproduce: recompute an artifact in a scratch store and compare the bytes.
 * The chain here is the ops fixture's deterministic text steps; a CPU
 * training chain belongs here too once the training steps land.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { digestOf, opsProject } from "../fixtures/ops/project.ts"
import { cli, repoRoot, runJson, sha256sum } from "../support/cli.ts"

interface ReproJson {
  identical: boolean
  node: string
  output: string
  overrides: string[]
  reproduced: string
  divergedAt: string | null
  steps: Array<{ node: string; sameOutputs: boolean; sameKey: boolean | null; reasons: string[] }>
}

const reproduce = (dir: string, ref: string, env: Record<string, string> = {}) => {
  const r = cli(dir, ["reproduce", ref, "--json"], env)
  return { code: r.code, json: JSON.parse(r.stdout) as ReproJson, stderr: r.stderr }
}

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe("reproduce", () => {
  it("recomputes a deterministic chain to identical digests, with the run's --set overrides", () => {
    const dir = opsProject("repro")
    const r = runJson(dir, ["pipeline.ts", "--set", "train.lr=0.2"]).json
    const report = digestOf(r, "eval", "report")
    const again = reproduce(dir, `sha256:${report}`)
    expect(again.code).toBe(0)
    expect(again.json).toMatchObject({ identical: true, node: "eval", output: "report", reproduced: report })
    expect(again.json.overrides).toEqual(["train.lr=0.2"])
    expect(again.json.steps.map((s) => [s.node, s.sameOutputs])).toEqual([
      ["records", true],
      ["clean", true],
      ["train", true],
      ["eval", true],
    ])
    // Nothing was added to the project's store: the scratch store is thrown away.
    const runs = JSON.parse(cli(dir, ["runs", "--json"]).stdout).runs
    expect(runs).toHaveLength(1)
    const human = cli(dir, ["reproduce", "eval"])
    expect(human.code).toBe(0)
    expect(human.stdout).toContain("identical:")
  })

  it("names the first step that differs, and why", () => {
    const dir = opsProject("repro")
    const r = runJson(dir, ["pipeline.ts"]).json
    const weights = digestOf(r, "train", "weights")
    // Not deterministic: same recipe, other bytes.
    const salted = reproduce(dir, weights, { TG_OPS_SALT: "noise" })
    expect(salted.code).toBe(1)
    expect(salted.json.identical).toBe(false)
    expect(salted.json.divergedAt).toBe("clean")
    expect(salted.json.steps.find((s) => s.node === "clean")).toMatchObject({ sameKey: true, reasons: [] })
    // The data changed since: the source is where it starts.
    const file = path.join(dir, "data/a.jsonl")
    const before = sha256sum(file)
    fs.appendFileSync(file, '{"text": "Zeta six"}\n')
    const changed = reproduce(dir, weights)
    expect(changed.code).toBe(1)
    expect(changed.json.divergedAt).toBe("records")
    expect(changed.json.steps[0]!.reasons).toEqual([
      `file a.jsonl: sha256:${before.slice(0, 12)} -> sha256:${sha256sum(file).slice(0, 12)}`,
    ])
    const human = cli(dir, ["reproduce", weights])
    expect(human.code).toBe(1)
    expect(human.stdout).toContain('first difference at "records"')
  })
})

import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { gridTrials, randomTrials, trialLabel } from "../../../plugins/sweep/index.ts"
import { cli, ran, repoRoot, runJson, tempDir } from "../../support/cli.ts"

const project = () => {
  const dir = tempDir("sweep")
  fs.copyFileSync(path.join(repoRoot, "test/fixtures/sweep/pipeline.ts"), path.join(dir, "pipeline.ts"))
  fs.writeFileSync(path.join(dir, "data.txt"), "data\n")
  fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
  return dir
}

describe("sweep", () => {
  it("expands grids and seeded random searches deterministically", () => {
    expect(gridTrials({ lr: [1, 2], rank: [4, 8] })).toEqual([
      { lr: 1, rank: 4 },
      { lr: 1, rank: 8 },
      { lr: 2, rank: 4 },
      { lr: 2, rank: 8 },
    ])
    expect(trialLabel({ rank: 8, lr: 0.0001 })).toBe("lr=0.0001,rank=8")
    const a = randomTrials(5, 42, { lr: { min: 1e-5, max: 1e-2, log: true }, rank: [4, 8, 16] })
    expect(randomTrials(5, 42, { lr: { min: 1e-5, max: 1e-2, log: true }, rank: [4, 8, 16] })).toEqual(a)
    for (const t of a) {
      expect(t.lr as number).toBeGreaterThanOrEqual(1e-5)
      expect(t.lr as number).toBeLessThanOrEqual(1e-2)
      expect([4, 8, 16]).toContain(t.rank)
    }
    expect(randomTrials(5, 43, { lr: { min: 1e-5, max: 1e-2, log: true } })).not.toEqual(a)
  })

  it("runs each trial as its own cached node, picks the best, and adding a value runs only the new trials", () => {
    const dir = project()
    const trace = path.join(dir, "trace")
    const first = runJson(dir, ["pipeline.ts"], { TG_TRACE: trace })
    expect(first.code).toBe(0)
    expect(ran(first.json).filter((n) => n.startsWith("search/"))).toEqual([
      "search/lr=0.01,rank=4",
      "search/lr=0.01,rank=8",
      "search/lr=0.1,rank=4",
      "search/lr=0.1,rank=8",
    ])
    const select = first.json.steps.find((s) => s.node === "search")!
    const table = JSON.parse(
      fs.readFileSync(
        path.join(
          dir,
          ".tunegraph/objects",
          select.outputs.table!.slice(7, 9),
          select.outputs.table!.slice(9),
        ),
        "utf8",
      ),
    )
    expect(table.best).toBe("lr=0.01,rank=8")
    // The best output is the winning trial's artifact, byte for byte (same digest).
    const winner = first.json.steps.find((s) => s.node === "search/lr=0.01,rank=8")!
    expect(select.outputs.best).toBe(winner.outputs.adapter)

    const grown = runJson(dir, ["pipeline.ts"], { TG_GRID_LR: "0.1,0.01,0.001", TG_TRACE: trace })
    expect(ran(grown.json)).toEqual(["search", "search/lr=0.001,rank=4", "search/lr=0.001,rank=8"])
    expect(fs.readFileSync(trace, "utf8").trim().split("\n")).toHaveLength(6)

    const show = cli(dir, ["show", grown.json.run])
    expect(show.stdout).toContain("trials of search (val_loss, min)")
    expect(show.stdout).toMatch(/lr=0\.01,rank=8 +0\.125 +best/)
  })
})

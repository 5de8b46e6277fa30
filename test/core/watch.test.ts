/**
 * `tunegraph watch --json` in a child process: one JSON line per cycle.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, beforeAll, describe, expect, it } from "vitest"
import { digestOf, opsProject, readStore } from "../fixtures/ops/project.ts"
import { killChildren, repoRoot, runJson, startWatch, type WatchCycle } from "../support/cli.ts"

interface CycleJson extends WatchCycle {
  cycle: number
  changed: string[]
  status: "succeeded" | "failed" | "interrupted" | "error"
  run?: string
  steps: Array<{ node: string; status: string; outputs: Record<string, string> }>
  error?: string
}

afterEach(killChildren)

const ran = (c: CycleJson) =>
  c.steps
    .filter((s) => s.status === "ran")
    .map((s) => s.node)
    .sort()

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe("watch", () => {
  it("retrains only what an appended record affects, and survives a broken pipeline file", async () => {
    const dir = opsProject("watch")
    const w = startWatch<CycleJson>(dir)
    const first = await w.next()
    expect(first).toMatchObject({ cycle: 1, changed: [], status: "succeeded" })
    expect(ran(first)).toHaveLength(8)

    fs.appendFileSync(path.join(dir, "data/a.jsonl"), '{"text": "Epsilon five"}\n')
    const second = await w.next()
    expect(second).toMatchObject({ cycle: 2, changed: [path.join("data", "a.jsonl")], status: "succeeded" })
    expect(ran(second)).toEqual(["clean", "eval", "records", "sweep/lr=0.01", "sweep/lr=0.3", "train"])
    expect(second.steps.find((s) => s.node === "side")!.status).toBe("cached")

    // A file outside every source changes nothing.
    fs.writeFileSync(path.join(dir, "data/notes.txt"), "not a source\n")
    // A broken pipeline reports its error and waits; the fix runs again (all cached).
    const source = fs.readFileSync(path.join(dir, "pipeline.ts"), "utf8")
    fs.writeFileSync(path.join(dir, "pipeline.ts"), `${source}\nthis is not TypeScript(\n`)
    const broken = await w.next()
    expect(broken).toMatchObject({ cycle: 3, changed: ["pipeline.ts"], status: "error" })
    expect(broken.error).toContain("pipeline.ts")
    fs.writeFileSync(path.join(dir, "pipeline.ts"), source)
    const fixed = await w.next()
    expect(fixed).toMatchObject({ cycle: 4, changed: ["pipeline.ts"], status: "succeeded" })
    expect(ran(fixed)).toEqual([])
    expect(await w.stop()).toBe(0)
  })

  it("interrupts a run when a change arrives, and the next cycle resumes training from its checkpoint", async () => {
    const dir = opsProject("watch")
    const marker = path.join(dir, "train.step")
    const w = startWatch<CycleJson>(dir, { TG_OPS_SLEEP_MS: "150", TG_OPS_MARKER: marker })
    for (let i = 0; i < 1200; i++) {
      if (fs.existsSync(marker) && Number(fs.readFileSync(marker, "utf8")) >= 3) break
      await new Promise((r) => setTimeout(r, 25))
    }
    // "side" reads other.txt: train's key does not change, so its checkpoint is the one to resume.
    fs.appendFileSync(path.join(dir, "other.txt"), "more\n")
    const first = await w.next()
    expect(first.status).toBe("interrupted")
    expect(first.steps.find((s) => s.node === "train")).toBeUndefined()
    const second = await w.next()
    expect(second).toMatchObject({ cycle: 2, changed: ["other.txt"], status: "succeeded" })
    expect(ran(second)).toContain("train")
    expect(await w.stop()).toBe(0)

    const resumed = readStore(dir, (db) => ({
      interrupted: db
        .prepare("SELECT status FROM executions WHERE run_id = ? AND node = 'train'")
        .pluck()
        .get(first.run) as string,
      from: db
        .prepare(
          "SELECT m.value FROM metrics m JOIN executions e ON e.id = m.execution_id WHERE e.run_id = ? AND e.node = 'train' AND m.name = 'resumed_from'",
        )
        .pluck()
        .get(second.run) as number,
      steps: db
        .prepare(
          "SELECT min(m.step) FROM metrics m JOIN executions e ON e.id = m.execution_id WHERE e.run_id = ? AND e.node = 'train' AND m.name = 'train_loss'",
        )
        .pluck()
        .get(second.run) as number,
    }))
    expect(resumed.interrupted).toBe("interrupted")
    expect(resumed.from).toBeGreaterThanOrEqual(3)
    expect(resumed.steps).toBe(resumed.from + 1)
    // Resuming gives the very bytes an uninterrupted run gives.
    const fresh = opsProject("watch-ref")
    const reference = runJson(fresh, ["pipeline.ts", "--target", "train"]).json
    expect(digestOf(second as never, "train", "weights")).toBe(digestOf(reference, "train", "weights"))
  })
})

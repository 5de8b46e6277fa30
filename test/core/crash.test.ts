/**
 * A run killed with kill -9: once its process is gone it reads as crashed
 * everywhere (runs, show, query), and the rows it already knew are kept.
 */
import { once } from "node:events"
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { engineProject } from "../fixtures/engine/project.ts"
import { cli, repoRoot, runJson, spawnCli } from "../support/cli.ts"

const project = () => engineProject("crash")

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe("a run killed with kill -9", () => {
  it("shows as crashed in runs, show and query, and keeps its cached and source rows", async () => {
    const dir = project()
    expect(runJson(dir, ["pipeline.ts"]).code).toBe(0)
    const marker = path.join(dir, "slow.started")
    const child = spawnCli(dir, ["run", "pipeline.ts", "--force", "slow", "--json"], {
      TG_SLEEP_FILE: marker,
      TG_SLEEP_MS: "60000",
    })
    for (let i = 0; i < 600 && !fs.existsSync(marker); i++) await new Promise((r) => setTimeout(r, 50))
    expect(fs.existsSync(marker)).toBe(true)
    child.kill("SIGKILL")
    await once(child, "exit")

    const runs = JSON.parse(cli(dir, ["runs", "--json"]).stdout) as {
      runs: Array<{ run: string; status: string; steps: Record<string, number> }>
    }
    const killed = runs.runs[0]!
    expect(killed.status).toBe("crashed")
    expect(runs.runs[1]!.status).toBe("succeeded")
    // Everything the run had settled before it was killed is on record.
    expect(killed.steps.cached).toBeGreaterThanOrEqual(5)
    const show = JSON.parse(cli(dir, ["show", killed.run, "--json"]).stdout) as {
      status: string
      steps: Array<{ node: string; status: string }>
    }
    expect(show.status).toBe("crashed")
    const shown = Object.fromEntries(show.steps.map((s) => [s.node, s.status]))
    expect(shown.data).toBe("cached")
    expect(shown.concat).toBe("cached")
    expect(shown.slow).toBeUndefined()
    const q = cli(dir, ["query", `SELECT status FROM runs WHERE run = '${killed.run}'`, "--json"])
    expect(q.code).toBe(0)
    expect(q.stdout).toContain("crashed")
    expect(q.stdout).not.toContain("running")
  })
})

/**
 * gc on a shared store against a run that starts while gc decides what to
 * keep, interleaved deterministically: gc stops after marking (gcHooks), a
 * run starts in another process, and gc goes on only once that run has
 * either finished or is waiting on gc's locks. PostgreSQL locks rows, not
 * the database, so without gc's table locks the run records executions gc
 * never marked, and gc deletes them (or fails on a foreign key).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { collectGarbage, gcHooks } from "../../cache/Gc.ts"
import { Store, sleepMs } from "../../cache/Store.ts"
import { engineProject } from "../fixtures/engine/project.ts"
import { cli, runJson, runJsonAsync, tempDir } from "../support/cli.ts"
import { freshDatabase, postgresUrl, psql } from "../support/services.ts"

const server = postgresUrl()

const traced = (trace: string) =>
  fs.existsSync(trace) ? fs.readFileSync(trace, "utf8").trim().split("\n").filter(Boolean) : []

describe.skipIf(server === undefined)("gc on a shared store and a run that starts while gc marks", () => {
  it("the run waits for gc, and keeps every row it records", async () => {
    const database = freshDatabase(server!)
    const dir = engineProject("shared-gc-mark")
    const objects = path.join(tempDir("shared-gc-objects"), "team")
    const env = { TUNEGRAPH_STORE: database, TUNEGRAPH_OBJECTS: objects }
    const init = cli(dir, ["store", "init", "--json"], env)
    expect(init.code, init.stderr).toBe(0)
    const first = runJson(dir, ["pipeline.ts"], env)
    expect(first.code, first.stderr).toBe(0)

    // gc from another machine's cache directory, in this process, so that it can stop after marking.
    const store = Store.openShared({ database, objects, local: path.join(tempDir("shared-gc-local"), ".tg") })
    const original = gcHooks.afterMark
    let running: ReturnType<typeof runJsonAsync> | undefined
    let waited = false
    gcHooks.afterMark = () => {
      running = runJsonAsync(dir, ["pipeline.ts", "--set", "upper.times=5"], env)
      for (let i = 0; i < 1200; i++) {
        const [locked, done] = psql(
          database,
          `SELECT (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'),
                  (SELECT count(*) FROM runs WHERE status != 'running')`,
        )
          .split("|")
          .map(Number)
        if (locked! > 0) waited = true
        if (locked! > 0 || done! > 1) return
        sleepMs(50)
      }
      throw new Error("the run neither finished nor waited for gc in 60 s")
    }
    try {
      const report = collectGarbage(store, { keepLast: 0, graceMs: 0 })
      expect(report.inProgress).toEqual([])
      expect(report.deleted.runs).toBe(1)
    } finally {
      gcHooks.afterMark = original
      store.close()
    }
    expect(running).toBeDefined()
    const r = await running!
    expect(r.code, r.stderr).toBe(0)
    expect(waited, "the run waited on gc's locks").toBe(true)

    // Every execution the run recorded is there, its objects too, and the same run again is all cached.
    const steps = r.json.steps.length
    expect(Number(psql(database, `SELECT count(*) FROM executions WHERE run_id = '${r.json.run}'`))).toBe(
      steps,
    )
    const v = cli(dir, ["verify", "--json"], env)
    expect((JSON.parse(v.stdout) as { problems: string[] }).problems).toEqual([])
    expect(v.code).toBe(0)
    const trace = path.join(dir, "trace")
    const again = runJson(dir, ["pipeline.ts", "--set", "upper.times=5"], { ...env, TG_TRACE: trace })
    expect(again.code, again.stderr).toBe(0)
    expect(traced(trace)).toEqual([])
  })
})

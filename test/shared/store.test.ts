/**
 * A team's shared store: rows in a real PostgreSQL, objects in an
 * S3-compatible bucket (moto's server on loopback) or in a shared directory,
 * each machine reading through its own cache. Everything runs through the
 * CLI as a user runs it, from different working directories.
 */
import { spawn } from "node:child_process"
import { once } from "node:events"
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { Store } from "../../cache/Store.ts"
import { engineProject } from "../fixtures/engine/project.ts"
import { cli, type RunJson, repoRoot, runJson, runJsonAsync, spawnCli } from "../support/cli.ts"
import { freshBucket, freshDatabase, postgresUrl, psql, s3Endpoint, s3Env } from "../support/services.ts"

const server = postgresUrl()
const endpoint = s3Endpoint()

const traced = (trace: string) =>
  fs.existsSync(trace) ? fs.readFileSync(trace, "utf8").trim().split("\n").filter(Boolean) : []
const outputs = (j: RunJson) => Object.fromEntries(j.steps.map((s) => [s.node, s.outputs]))
const statuses = (j: RunJson) => Object.fromEntries(j.steps.map((s) => [s.node, s.status]))

/** A fresh database and bucket (or shared directory), and the environment that points a process at them. */
const sharedStore = (objects: "s3" | "dir") => {
  const database = freshDatabase(server!)
  const where = objects === "s3" ? `s3://${freshBucket()}/team` : engineProject("shared-objects")
  const env: Record<string, string> = {
    TUNEGRAPH_STORE: database,
    TUNEGRAPH_OBJECTS: where,
    ...(objects === "s3" ? s3Env(endpoint!) : {}),
  }
  const init = cli(process.cwd(), ["store", "init", "--json"], env)
  expect(init.code, init.stderr).toBe(0)
  return { database, objects: where, env }
}

const verify = (dir: string, env: Record<string, string>) => {
  const v = cli(dir, ["verify", "--json"], env)
  const report = JSON.parse(v.stdout) as { objects: number; problems: string[] }
  expect(report.problems).toEqual([])
  expect(v.code).toBe(0)
  return report
}

describe.skipIf(server === undefined || endpoint === undefined)("a shared store on PostgreSQL", () => {
  beforeAll(() => {
    expect(server).toBeDefined()
  })

  for (const objects of ["s3", "dir"] as const)
    it(`two working directories share cache hits (objects in ${objects === "s3" ? "a bucket" : "a shared directory"})`, () => {
      const { env, database } = sharedStore(objects)
      const a = engineProject("shared-a")
      const b = engineProject("shared-b")
      const traceA = path.join(a, "trace")
      const traceB = path.join(b, "trace")
      const first = runJson(a, ["pipeline.ts"], { ...env, TG_TRACE: traceA })
      expect(first.code, first.stderr).toBe(0)
      expect(traced(traceA)).toHaveLength(7)
      // Another checkout (its own .tunegraph/ cache, its own source paths with the same bytes).
      const second = runJson(b, ["pipeline.ts"], { ...env, TG_TRACE: traceB })
      expect(second.code, second.stderr).toBe(0)
      expect(traced(traceB)).toEqual([])
      for (const s of second.json.steps) if (s.plugin !== "source") expect(s.status, s.node).toBe("cached")
      expect(outputs(second.json)).toEqual(outputs(first.json))
      // No embedded store was made: the rows are in PostgreSQL.
      expect(fs.existsSync(path.join(b, ".tunegraph", "db.sqlite"))).toBe(false)
      expect(Number(psql(database, "SELECT count(*) FROM runs"))).toBe(2)
      if (objects === "s3") {
        // B read nothing: a cached step's outputs stay in the bucket until a step reads them.
        expect(fs.readdirSync(path.join(b, ".tunegraph", "objects"))).toEqual([])
        // A step that runs in B downloads its input once into B's cache, checked against its digest.
        const changed = runJson(b, ["pipeline.ts", "--set", "upper.times=3"], { ...env, TG_TRACE: traceB })
        expect(changed.code, changed.stderr).toBe(0)
        expect(
          traced(traceB)
            .map((l) => l.split(" ")[0])
            .sort(),
        ).toEqual(["shout", "upper"])
        const upperIn = first.json.steps.find((s) => s.node === "first")!.outputs.text!.replace("sha256:", "")
        expect(
          fs.existsSync(path.join(b, ".tunegraph", "objects", upperIn.slice(0, 2), upperIn.slice(2))),
        ).toBe(true)
      }
      // The same lineage, runs and query from either directory.
      const la = cli(a, ["lineage", "shout", "--json"], env)
      expect(la.code, la.stderr).toBe(0)
      expect(JSON.parse(la.stdout).steps.length).toBeGreaterThan(3)
      const runs = JSON.parse(cli(b, ["runs", "--json"], env).stdout) as { runs: Array<{ status: string }> }
      expect(runs.runs.length).toBe(objects === "s3" ? 3 : 2)
      expect(runs.runs.every((r) => r.status === "succeeded")).toBe(true)
      verify(a, env)
    })

  it("a run reads ahead the cache entries of its pipeline's last run: this checkout's, else the same name's", () => {
    const { env, database, objects } = sharedStore("dir")
    const [a, b, c] = [engineProject("ahead-a"), engineProject("ahead-b"), engineProject("ahead-c")]
    const mine = runJson(a, ["pipeline.ts"], env)
    expect(mine.code, mine.stderr).toBe(0)
    // A newer run of the same pipeline from another checkout, with other keys for two of its steps.
    const theirs = runJson(b, ["pipeline.ts", "--set", "upper.times=3"], env)
    expect(theirs.code, theirs.stderr).toBe(0)
    const [pipelinePath, name] = psql(
      database,
      `SELECT pipeline_path, pipeline FROM runs WHERE id = '${mine.json.run}'`,
    ).split("|") as [string, string]
    const keysOf = (run: string) =>
      psql(
        database,
        `SELECT DISTINCT e.step_key FROM executions e JOIN step_cache c ON c.step_key = e.step_key WHERE e.run_id = '${run}'`,
      ).split("\n")
    const [mineKeys, theirKeys] = [keysOf(mine.json.run), keysOf(theirs.json.run)]
    const onlyMine = mineKeys.filter((k) => !theirKeys.includes(k))
    const onlyTheirs = theirKeys.filter((k) => !mineKeys.includes(k))
    expect(onlyMine.length).toBeGreaterThan(0)
    expect(onlyTheirs.length).toBeGreaterThan(0)

    const open = (dir: string) => Store.openShared({ database, objects, local: path.join(dir, ".tunegraph") })
    const [again, first, other] = [open(a), open(c), open(c)]
    try {
      expect(again.prefetchCache(pipelinePath, name)).toBe(mineKeys.length)
      // A checkout that never ran it: the newest run of the pipeline of that name, made elsewhere.
      expect(first.prefetchCache(path.join(c, "pipeline.ts"), name)).toBe(theirKeys.length)
      expect(other.prefetchCache(path.join(c, "pipeline.ts"), "no-such-pipeline")).toBe(0)
      // What was read ahead serves the lookups without the database: the entries are gone from it now.
      psql(database, "DELETE FROM step_cache")
      for (const k of mineKeys) expect(again.lookup(k), k).toBeDefined()
      for (const k of onlyTheirs) expect(again.lookup(k), k).toBeUndefined()
      for (const k of theirKeys) expect(first.lookup(k), k).toBeDefined()
      for (const k of onlyMine) expect(first.lookup(k), k).toBeUndefined()
      expect(other.lookup(theirKeys[0]!)).toBeUndefined()
    } finally {
      for (const s of [again, first, other]) s.close()
    }
  })

  it("a sink cached on another machine writes its outside copy from the bucket", () => {
    const { env } = sharedStore("s3")
    const [a, b] = [engineProject("sink-a"), engineProject("sink-b")]
    for (const d of [a, b])
      fs.copyFileSync(
        path.join(repoRoot, "test/fixtures/shared/sink-pipeline.ts"),
        path.join(d, "pipeline.ts"),
      )
    const first = runJson(a, ["pipeline.ts"], env)
    expect(first.code, first.stderr).toBe(0)
    const second = runJson(b, ["pipeline.ts"], { ...env, TUNEGRAPH_LOCAL: path.join(b, "cache") })
    expect(second.code, second.stderr).toBe(0)
    expect(statuses(second.json).publish).toBe("cached")
    expect(fs.readFileSync(path.join(b, "published.txt"), "utf8")).toBe(
      fs.readFileSync(path.join(a, "published.txt"), "utf8"),
    )
  })

  it("three processes racing on one pipeline compute each key once, round after round", async () => {
    const { env } = sharedStore("s3")
    const dirs = [engineProject("race-1"), engineProject("race-2"), engineProject("race-3")]
    const trace = path.join(dirs[0]!, "trace-all")
    const ROUNDS = 8
    let seen = 0
    for (let round = 0; round < ROUNDS; round++) {
      // Round 0 computes all 7 keys; each later one gives "upper" and "shout" new keys.
      const args = round === 0 ? ["pipeline.ts"] : ["pipeline.ts", "--set", `upper.times=${round + 1}`]
      const results = await Promise.all(
        dirs.map((d) => runJsonAsync(d, args, { ...env, TG_TRACE: trace, TG_SLEEP_MS: "100" })),
      )
      for (const r of results) {
        expect(r.code, r.stderr).toBe(0)
        expect(r.json.status).toBe("succeeded")
        expect(outputs(r.json)).toEqual(outputs(results[0]!.json))
      }
      const lines = traced(trace)
      const keys = lines.slice(seen).map((l) => l.split(" ")[1])
      seen = lines.length
      expect(keys, `round ${round}`).toHaveLength(round === 0 ? 7 : 2)
      expect(new Set(keys).size, `round ${round}`).toBe(keys.length)
    }
    verify(dirs[0]!, env)
  }, 300_000)

  it("a step key's lease goes to one process of many taking it at once", async () => {
    const { database, objects } = sharedStore("dir")
    const hammer = path.join(repoRoot, "test/fixtures/shared/lease-hammer.ts")
    const KEYS = 300
    const work = engineProject("lease")
    const release = path.join(work, "release")
    const results = [1, 2, 3, 4].map((i) => path.join(work, `got-${i}.json`))
    const children = [1, 2, 3, 4].map((i) => {
      const child = spawn(
        process.execPath,
        [
          "--import",
          "tsx",
          hammer,
          database,
          objects,
          engineProject(`lease-${i}`),
          String(KEYS),
          `run-${i}`,
          results[i - 1]!,
          release,
        ],
        { cwd: repoRoot },
      )
      let err = ""
      child.stderr.on("data", (d) => {
        err += d
      })
      const exited = once(child, "exit").then(([code]) => ({ code: code as number, err }))
      return { child, exited }
    })
    // Every holder stays alive until all have tried every key: none is a dead holder to take over from.
    for (let i = 0; i < 1200 && !results.every((f) => fs.existsSync(f)); i++)
      await new Promise((r) => setTimeout(r, 100))
    fs.writeFileSync(release, "")
    for (const c of children) {
      const { code, err } = await c.exited
      expect(code, err).toBe(0)
    }
    const outs = results.map((f) => JSON.parse(fs.readFileSync(f, "utf8")) as string[])
    const all = outs.flat()
    expect(all).toHaveLength(KEYS)
    expect(new Set(all).size).toBe(KEYS)
  })

  it("kill -9 of a driver leaves a consistent store, and the next run finishes the work", async () => {
    const { env } = sharedStore("s3")
    const dir = engineProject("shared-kill")
    const marker = path.join(dir, "slow.started")
    const child = spawnCli(dir, ["run", "pipeline.ts", "--json"], {
      ...env,
      TG_SLEEP_FILE: marker,
      TG_SLEEP_MS: "60000",
    })
    for (let i = 0; i < 1200 && !fs.existsSync(marker); i++) await new Promise((r) => setTimeout(r, 50))
    expect(fs.existsSync(marker)).toBe(true)
    child.kill("SIGKILL")
    await once(child, "exit")
    const runs = JSON.parse(cli(dir, ["runs", "--json"], env).stdout) as {
      runs: Array<{ status: string }>
    }
    expect(runs.runs[0]!.status).toBe("crashed")
    verify(dir, env)
    // The dead driver's lease on "slow" is taken over at once (same machine, process gone).
    const again = runJson(dir, ["pipeline.ts"], env)
    expect(again.code, again.stderr).toBe(0)
    expect(statuses(again.json).slow).toBe("ran")
    expect(statuses(again.json).concat).toBe("cached")
    verify(dir, env)
  })

  it("another machine's run that stopped beating reads as crashed; one that beats is in progress for gc", () => {
    const { env, database } = sharedStore("dir")
    const dir = engineProject("shared-hosts")
    expect(runJson(dir, ["pipeline.ts"], env).code).toBe(0)
    const now = Date.now()
    // Two runs of a machine this one cannot see into: one beat 10 minutes ago, one 2 seconds ago.
    for (const [id, beat] of [
      ["other-dead", now - 600_000],
      ["other-alive", now - 2_000],
    ] as const)
      psql(
        database,
        `INSERT INTO runs (id, pipeline, pipeline_path, started_at, status, argv, pid, host, heartbeat_at)
         VALUES ('${id}', 'engine-test', '/elsewhere/pipeline.ts', ${now - 900_000}, 'running', '[]', 4242, 'other-machine', ${beat})`,
      )
    const runs = JSON.parse(cli(dir, ["runs", "--json"], env).stdout) as {
      runs: Array<{ run: string; status: string }>
    }
    const status = Object.fromEntries(runs.runs.map((r) => [r.run, r.status]))
    expect(status["other-dead"]).toBe("crashed")
    expect(status["other-alive"]).toBe("running")
    const gc = JSON.parse(cli(dir, ["gc", "--dry-run", "--json"], env).stdout) as { inProgress: string[] }
    expect(gc.inProgress).toEqual(["other-alive"])
  })

  it("gc beside a running pipeline loses nothing", async () => {
    const { env } = sharedStore("s3")
    const dir = engineProject("shared-gc")
    // Older runs for gc to collect: two other "upper" settings.
    for (const t of [2, 3])
      expect(runJson(dir, ["pipeline.ts", "--set", `upper.times=${t}`], env).code).toBe(0)
    const marker = path.join(dir, "slow.started")
    const running = runJsonAsync(dir, ["pipeline.ts", "--force", "slow", "--set", "upper.times=4"], {
      ...env,
      TG_SLEEP_FILE: marker,
      TG_SLEEP_MS: "3000",
    })
    for (let i = 0; i < 1200 && !fs.existsSync(marker); i++) await new Promise((r) => setTimeout(r, 50))
    expect(fs.existsSync(marker)).toBe(true)
    const gc = cli(dir, ["gc", "--keep-last", "0", "--json"], env)
    expect(gc.code, gc.stderr).toBe(0)
    const report = JSON.parse(gc.stdout) as { inProgress: string[] }
    expect(report.inProgress).toHaveLength(1)
    const r = await running
    expect(r.code, r.stderr).toBe(0)
    verify(dir, env)
    // With nothing running, gc collects the old runs' objects from the bucket too, and keeps the last run's.
    const gc2 = cli(dir, ["gc", "--keep-last", "1", "--json"], env)
    expect(gc2.code, gc2.stderr).toBe(0)
    expect((JSON.parse(gc2.stdout) as { deleted: { artifacts: number } }).deleted.artifacts).toBeGreaterThan(
      0,
    )
    verify(dir, env)
    const fresh = engineProject("shared-gc-b")
    const after = runJson(fresh, ["pipeline.ts", "--set", "upper.times=4"], env)
    expect(after.code, after.stderr).toBe(0)
    for (const s of after.json.steps) if (s.plugin !== "source") expect(s.status, s.node).toBe("cached")
  })

  it("query is read-only: a reader role over the views, in read-only transactions", () => {
    const { env } = sharedStore("dir")
    const dir = engineProject("shared-query")
    expect(runJson(dir, ["pipeline.ts"], env).code).toBe(0)
    const ok = cli(dir, ["query", "SELECT node, status FROM executions ORDER BY execution", "--json"], env)
    expect(ok.code, ok.stderr).toBe(0)
    expect((JSON.parse(ok.stdout) as Array<{ node: string }>).map((r) => r.node)).toContain("shout")
    const write = cli(dir, ["query", "DELETE FROM runs"], env)
    expect(write.code).toBe(2)
    expect(write.stderr).toMatch(/read-only/)
    // A function that writes, behind a SELECT, is stopped by the transaction.
    const sneaky = cli(
      dir,
      ["query", "SELECT set_config('default_transaction_read_only', 'off', false)"],
      env,
    )
    const sneakyWrite = cli(dir, ["query", "WITH d AS (DELETE FROM v_runs RETURNING 1) SELECT * FROM d"], env)
    expect(sneakyWrite.code).toBe(2)
    expect(sneaky.code === 0 || sneaky.code === 2).toBe(true)
    const tables = cli(dir, ["query", "SELECT count(*) FROM artifact_files"], env)
    expect(tables.code).toBe(2)
    expect(tables.stderr).toMatch(/views/)
    expect(JSON.parse(cli(dir, ["runs", "--json"], env).stdout).runs).toHaveLength(1)
  })

  it("says what is wrong with a shared store it cannot use", () => {
    const dir = engineProject("shared-errors")
    const noObjects = cli(dir, ["run", "pipeline.ts"], { TUNEGRAPH_STORE: server! })
    expect(noObjects.code).toBe(2)
    expect(noObjects.stderr).toMatch(/--objects s3:\/\/bucket\/prefix/)
    const down = cli(dir, [
      "run",
      "pipeline.ts",
      "--store",
      "postgres://nobody@127.0.0.1:1/none",
      "--objects",
      dir,
    ])
    expect(down.code).toBe(2)
    expect(down.stderr).toMatch(
      /cannot connect to the shared store's database at postgres:\/\/nobody@127\.0\.0\.1:1\/none/,
    )
    const uninitialised = freshDatabase(server!)
    const readFirst = cli(dir, ["runs", "--store", uninitialised, "--objects", dir])
    expect(readFirst.code).toBe(2)
    expect(readFirst.stderr).toMatch(/tunegraph store init/)
  })
})

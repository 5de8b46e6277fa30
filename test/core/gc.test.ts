/**
 * gc, pin and verify through the CLI: what is kept, what is freed, and a
 * run in progress on the same store.
 */

import { spawnSync } from "node:child_process"
import { once } from "node:events"
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { digestOf, objectFile, opsProject, readStore } from "../fixtures/ops/project.ts"
import { cli, type RunJson, ran, repoRoot, runJson, spawnCli } from "../support/cli.ts"

interface GcJson {
  dryRun: boolean
  keptRuns: number
  inProgress: string[]
  deleted: Record<string, number>
  bytes: { artifacts: number; garbage: number; tmp: number; checkpoints: number; total: number }
}

const gc = (dir: string, args: string[]) => {
  const r = cli(dir, ["gc", "--json", ...args])
  if (r.code !== 0) throw new Error(`gc failed (${r.code}): ${r.stderr}`)
  return JSON.parse(r.stdout) as GcJson
}

const verify = (dir: string) => JSON.parse(cli(dir, ["verify", "--json"]).stdout) as { problems: string[] }

/** Sizes of the artifacts the given run does not use. */
const unusedBy = (dir: string, run: string) =>
  readStore(
    dir,
    (db) =>
      db
        .prepare(
          `SELECT digest, size FROM artifacts WHERE digest NOT IN
           (SELECT o.digest FROM execution_outputs o JOIN executions e ON e.id = o.execution_id WHERE e.run_id = ?)`,
        )
        .all(run) as Array<{ digest: string; size: number }>,
  )

/** A pid that belonged to a process which has exited. */
const deadPid = () => spawnSync("true").pid!

const listObjects = (dir: string) => {
  const root = path.join(dir, ".tunegraph/objects")
  return fs
    .readdirSync(root)
    .flatMap((s) => fs.readdirSync(path.join(root, s)).map((r) => `${s}${r}`))
    .sort()
}

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe("gc", () => {
  it("keeps the last runs, frees exactly the rest, and leaves a store that verifies", () => {
    const dir = opsProject()
    const old = runJson(dir, ["pipeline.ts", "--set", "train.lr=0.2", "--set", "clean.lower=false"]).json
    const last = runJson(dir, ["pipeline.ts"]).json
    const unused = unusedBy(dir, last.run)
    expect(unused.length).toBeGreaterThan(0)
    // Garbage a crash could leave: an object with no row, a dead process's tmp/, a stale checkpoint.
    const store = path.join(dir, ".tunegraph")
    const orphan = objectFile(dir, "ff".repeat(32))
    fs.mkdirSync(path.dirname(orphan), { recursive: true })
    fs.writeFileSync(orphan, "x".repeat(1000))
    const tmp = path.join(store, "tmp", `${deadPid()}-dead-step`)
    fs.mkdirSync(tmp, { recursive: true })
    fs.writeFileSync(path.join(tmp, "partial"), "y".repeat(300))
    const ckpt = path.join(store, "checkpoints", "e".repeat(64))
    fs.mkdirSync(ckpt, { recursive: true })
    fs.writeFileSync(path.join(ckpt, "progress.json"), "z".repeat(50))

    const before = listObjects(dir)
    const dry = gc(dir, ["--keep-last", "1", "--dry-run"])
    expect(listObjects(dir)).toEqual(before)
    expect(fs.existsSync(tmp) && fs.existsSync(ckpt)).toBe(true)

    const r = gc(dir, ["--keep-last", "1"])
    const expected = unused.reduce((s, a) => s + a.size, 0)
    expect(r.bytes).toEqual({
      artifacts: expected,
      garbage: 1000,
      tmp: 300,
      checkpoints: 50,
      total: expected + 1350,
    })
    expect(r.deleted.artifacts).toBe(unused.length)
    expect(r.deleted.garbageObjects).toBe(1)
    expect({ ...dry, dryRun: false }).toEqual(r)
    for (const a of unused) expect(fs.existsSync(objectFile(dir, a.digest))).toBe(false)
    expect(fs.existsSync(orphan) || fs.existsSync(tmp) || fs.existsSync(ckpt)).toBe(false)
    expect(verify(dir).problems).toEqual([])

    // Of the old run only what the kept one reused survives: the step that computed "side", and the
    // source it read;
    // the kept run is whole and still cached.
    const nodesOf = (run: string) =>
      readStore(dir, (db) =>
        db.prepare("SELECT node FROM executions WHERE run_id = ? ORDER BY node").pluck().all(run),
      )
    expect(nodesOf(old.run)).toEqual(["other", "side"])
    expect(nodesOf(last.run)).toEqual(last.steps.map((s) => s.node).sort())
    expect(ran(runJson(dir, ["pipeline.ts"]).json)).toEqual([])
    expect(cli(dir, ["lineage", digestOf(last, "eval", "report")]).code).toBe(0)
    expect(cli(dir, ["lineage", digestOf(old, "train", "weights")]).code).toBe(2)
    // The collected recipe computes again, to the same bytes.
    const back = runJson(dir, ["pipeline.ts", "--set", "train.lr=0.2", "--set", "clean.lower=false"]).json
    expect(ran(back)).toContain("train")
    expect(digestOf(back, "train", "weights")).toBe(digestOf(old, "train", "weights"))
    // Nothing left to free.
    expect(gc(dir, ["--keep-last", "2"]).bytes.total).toBe(0)
  })

  it("keeps a pinned artifact and its history until it is unpinned", () => {
    const dir = opsProject()
    const old = runJson(dir, ["pipeline.ts", "--set", "train.lr=0.2"]).json
    runJson(dir, ["pipeline.ts"])
    const weights = digestOf(old, "train", "weights")
    const pinned = cli(dir, ["pin", weights.slice(0, 12), "--note", "best so far"])
    expect(pinned.code).toBe(0)
    expect(pinned.stdout).toContain("pinned")
    gc(dir, ["--keep-last", "1"])
    expect(fs.existsSync(objectFile(dir, weights))).toBe(true)
    const l = JSON.parse(cli(dir, ["lineage", weights, "--json"]).stdout)
    expect(l.steps.find((s: { node: string }) => s.node === "train").params).toEqual({ steps: 12, lr: 0.2 })
    expect(verify(dir).problems).toEqual([])
    expect(cli(dir, ["unpin", weights]).code).toBe(0)
    const r = gc(dir, ["--keep-last", "1"])
    expect(r.bytes.artifacts).toBeGreaterThan(0)
    expect(fs.existsSync(objectFile(dir, weights))).toBe(false)
    expect(verify(dir).problems).toEqual([])
  })

  it("does not take anything from under a run in progress", async () => {
    const dir = opsProject()
    const first = runJson(dir, ["pipeline.ts"]).json
    runJson(dir, ["pipeline.ts", "--set", "clean.lower=false"])
    // A third run reuses the first run's cleaned lines (cached) and trains on them slowly.
    const marker = path.join(dir, "train.step")
    const child = spawnCli(dir, ["run", "pipeline.ts", "--json", "--force", "train", "--target", "train"], {
      TG_OPS_SLEEP_MS: "150",
      TG_OPS_MARKER: marker,
    })
    let stdout = ""
    child.stdout!.on("data", (d) => {
      stdout += d
    })
    for (let i = 0; i < 600 && !fs.existsSync(marker); i++) await new Promise((r) => setTimeout(r, 50))
    expect(fs.existsSync(marker)).toBe(true)
    const r = gc(dir, ["--keep-last", "1"])
    expect(r.inProgress).toHaveLength(1)
    // The cleaned lines it is reading, and its checkpoint, are still there.
    expect(fs.existsSync(objectFile(dir, digestOf(first, "clean", "lines")))).toBe(true)
    const [code] = await once(child, "exit")
    expect(code).toBe(0)
    const third = JSON.parse(stdout) as RunJson
    expect(digestOf(third, "train", "weights")).toBe(digestOf(first, "train", "weights"))
    expect(verify(dir).problems).toEqual([])
    // Once it is done, its cached steps still lead to the executions that computed them.
    gc(dir, ["--keep-last", "1"])
    expect(verify(dir).problems).toEqual([])
    expect(ran(runJson(dir, ["pipeline.ts", "--target", "train"]).json)).toEqual([])
  })
})

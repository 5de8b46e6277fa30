/**
 * The engine end to end: the CLI in child processes, a real SQLite store,
 * the fixture pipeline in test/fixtures/engine.
 */
import { once } from "node:events"
import * as fs from "node:fs"
import * as path from "node:path"
import Database from "better-sqlite3"
import { beforeAll, describe, expect, it } from "vitest"
import { engineProject } from "../fixtures/engine/project.ts"
import {
  cli,
  type RunJson,
  ran,
  repoRoot,
  runJson,
  runJsonAsync,
  sha256sum,
  spawnCli,
  statuses,
  tempDir,
} from "../support/cli.ts"

const project = () => engineProject("engine")

const traced = (trace: string) =>
  fs.existsSync(trace) ? fs.readFileSync(trace, "utf8").trim().split("\n").filter(Boolean) : []

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe("incremental runs", () => {
  it("1: a second run with nothing changed executes nothing", () => {
    const dir = project()
    const trace = path.join(dir, "trace")
    const first = runJson(dir, ["pipeline.ts"], { TG_TRACE: trace })
    expect(first.code).toBe(0)
    expect(first.json.status).toBe("succeeded")
    expect(ran(first.json)).toEqual([
      "after-fail",
      "concat",
      "data",
      "fail",
      "first",
      "notes",
      "shout",
      "slow",
      "upper",
    ])
    expect(traced(trace)).toHaveLength(7)
    const second = runJson(dir, ["pipeline.ts"], { TG_TRACE: trace })
    expect(second.code).toBe(0)
    expect(ran(second.json)).toEqual([])
    expect(traced(trace)).toHaveLength(7)
    expect(second.json.steps.map((s) => s.outputs)).toEqual(first.json.steps.map((s) => s.outputs))
    // The store lives at the project root and outputs are content-addressed files sha256sum agrees with.
    const up = second.json.steps.find((s) => s.node === "upper")!.outputs.text!.replace("sha256:", "")
    const obj = path.join(dir, ".tunegraph/objects", up.slice(0, 2), up.slice(2))
    expect(sha256sum(obj)).toBe(up)
    expect(fs.readFileSync(obj, "utf8")).toBe("HELLO")
  })

  it("2: touching a source without changing its bytes executes nothing", () => {
    const dir = project()
    const trace = path.join(dir, "trace")
    runJson(dir, ["pipeline.ts"], { TG_TRACE: trace })
    const future = new Date(Date.now() + 60_000)
    fs.utimesSync(path.join(dir, "data/a.txt"), future, future)
    const again = runJson(dir, ["pipeline.ts"], { TG_TRACE: trace })
    expect(ran(again.json)).toEqual([])
    expect(traced(trace)).toHaveLength(7)
  })

  it("3: changing one source re-runs exactly its downstream", () => {
    const dir = project()
    const trace = path.join(dir, "trace")
    runJson(dir, ["pipeline.ts"], { TG_TRACE: trace })
    fs.writeFileSync(path.join(dir, "notes.md"), "another note\n")
    // notes is not wired by default: nothing re-runs.
    expect(ran(runJson(dir, ["pipeline.ts"]).json)).toEqual(["notes"])
    fs.writeFileSync(path.join(dir, "data/a.txt"), "changed\nworld\n")
    const r = runJson(dir, ["pipeline.ts"], { TG_TRACE: trace })
    // "fail" writes the same bytes whatever its input: "after-fail" stays cached (early cutoff).
    expect(ran(r.json)).toEqual(["concat", "data", "fail", "first", "shout", "slow", "upper"])
  })

  it("4: --set on a middle node re-runs it and its downstream, nothing upstream", () => {
    const dir = project()
    runJson(dir, ["pipeline.ts"])
    const r = runJson(dir, ["pipeline.ts", "--set", "upper.times=2"])
    expect(ran(r.json)).toEqual(["shout", "upper"])
    const s = statuses(r.json)
    expect([s.data, s.concat, s.first]).toEqual(["cached", "cached", "cached"])
    // Back to the default: both keys are cached now.
    expect(ran(runJson(dir, ["pipeline.ts"]).json)).toEqual([])
    expect(ran(runJson(dir, ["pipeline.ts", "--set", "upper.times=2"]).json)).toEqual([])
  })

  it("5: a step that re-runs but yields identical bytes leaves its downstream cached", () => {
    const dir = project()
    runJson(dir, ["pipeline.ts"])
    fs.writeFileSync(path.join(dir, "data/b.txt"), "a different second file\n")
    const r = runJson(dir, ["pipeline.ts"])
    // concat and first re-run; first's output is still "hello", so upper and shout stay cached.
    expect(ran(r.json)).toEqual(["concat", "data", "fail", "first", "slow"])
    expect(statuses(r.json).upper).toBe("cached")
    expect(statuses(r.json).shout).toBe("cached")
  })

  it("6: bumping a plugin version re-runs that plugin's nodes", () => {
    const dir = project()
    runJson(dir, ["pipeline.ts"])
    const r = runJson(dir, ["pipeline.ts"], { TG_UPPER_VERSION: "2" })
    // upper and after-fail use the upper plugin; shout re-runs only if upper's bytes changed (they did not).
    expect(ran(r.json)).toEqual(["after-fail", "upper"])
    const plan = JSON.parse(cli(dir, ["plan", "pipeline.ts", "--json"], { TG_UPPER_VERSION: "3" }).stdout)
    const upper = plan.steps.find((s: { node: string }) => s.node === "upper")
    expect(upper.status).toBe("run")
    expect(upper.reasons.join(" ")).toContain("version: 2 -> 3")
  })

  it("7: adding or removing a parameter or an input edge re-runs", () => {
    const dir = project()
    runJson(dir, ["pipeline.ts"])
    expect(ran(runJson(dir, ["pipeline.ts"], { TG_EXTRA_PARAM: "?" }).json)).toEqual(["shout"])
    expect(ran(runJson(dir, ["pipeline.ts"], { TG_EXTRA_PARAM: "?", TG_EXTRA_EDGE: "1" }).json)).toEqual([
      "shout",
    ])
    // Removing the edge (keeping the parameter) gives the key of the second run: cached.
    expect(ran(runJson(dir, ["pipeline.ts"], { TG_EXTRA_PARAM: "?" }).json)).toEqual([])
    const fresh = project()
    runJson(fresh, ["pipeline.ts"], { TG_EXTRA_EDGE: "1" })
    expect(ran(runJson(fresh, ["pipeline.ts"]).json)).toEqual(["shout"])
    const plan = JSON.parse(cli(fresh, ["plan", "pipeline.ts", "--json"], { TG_EXTRA_EDGE: "1" }).stdout)
    const shout = plan.steps.find((s: { node: string }) => s.node === "shout")
    expect(shout.status).toBe("cached")
  })
})

describe("the store", () => {
  const outputOf = (json: RunJson, node: string, name: string) =>
    json.steps.find((s) => s.node === node)!.outputs[name]!.replace("sha256:", "")
  const objectPath = (dir: string, digest: string) =>
    path.join(dir, ".tunegraph/objects", digest.slice(0, 2), digest.slice(2))

  it("8: a deleted or truncated object is recomputed, not served", () => {
    const dir = project()
    const first = runJson(dir, ["pipeline.ts"]).json
    const up = objectPath(dir, outputOf(first, "upper", "text"))
    fs.chmodSync(up, 0o644)
    fs.truncateSync(up, 2)
    const r = runJson(dir, ["pipeline.ts"]).json
    expect(ran(r)).toEqual(["upper"])
    expect(fs.readFileSync(up, "utf8")).toBe("HELLO")
    // A directory object with one file deleted.
    const shoutDir = objectPath(dir, outputOf(first, "shout", "text"))
    fs.chmodSync(shoutDir, 0o755)
    fs.chmodSync(path.join(shoutDir, "len.txt"), 0o644)
    fs.rmSync(path.join(shoutDir, "len.txt"))
    expect(ran(runJson(dir, ["pipeline.ts"]).json)).toEqual(["shout"])
    expect(fs.readFileSync(path.join(shoutDir, "len.txt"), "utf8")).toBe("6")
    expect(cli(dir, ["verify"]).code).toBe(0)
  })

  it("9: kill -9 in the middle of a step leaves a consistent store and nothing partial", async () => {
    const dir = project()
    const marker = path.join(dir, "slow.started")
    const child = spawnCli(dir, ["run", "pipeline.ts", "--json"], {
      TG_SLEEP_FILE: marker,
      TG_SLEEP_MS: "60000",
    })
    for (let i = 0; i < 600 && !fs.existsSync(marker); i++) await new Promise((r) => setTimeout(r, 50))
    expect(fs.existsSync(marker)).toBe(true)
    child.kill("SIGKILL")
    await once(child, "exit")
    // A partial output is on disk under tmp/, and no cache row points at it.
    const db = new Database(path.join(dir, ".tunegraph/db.sqlite"), { readonly: true })
    const slowCached = db
      .prepare("SELECT count(*) n FROM executions WHERE node = 'slow' AND status = 'ran'")
      .get() as { n: number }
    db.close()
    expect(slowCached.n).toBe(0)
    expect(fs.readdirSync(path.join(dir, ".tunegraph/tmp")).length).toBeGreaterThan(0)
    const verify = cli(dir, ["verify", "--json"])
    expect(verify.code).toBe(0)
    const next = runJson(dir, ["pipeline.ts"]).json
    expect(next.status).toBe("succeeded")
    expect(statuses(next).slow).toBe("ran")
    const slow = fs.readFileSync(objectPath(dir, outputOf(next, "slow", "text")), "utf8")
    expect(slow).toBe("slow:hello\nworld\nsecond file\n")
    expect(fs.readdirSync(path.join(dir, ".tunegraph/tmp"))).toEqual([])
    expect(JSON.parse(cli(dir, ["verify", "--json"]).stdout).problems).toEqual([])
  })

  it("10: two processes on one store compute each key once and agree", async () => {
    const dir = project()
    const trace = path.join(dir, "trace")
    const env = { TG_TRACE: trace, TG_SLEEP_MS: "1500" }
    const run = () => runJsonAsync(dir, ["pipeline.ts"], env)
    const [a, b] = await Promise.all([run(), run()])
    expect(a.code).toBe(0)
    expect(b.code).toBe(0)
    const keys = traced(trace).map((l) => l.split(" ")[1])
    expect(keys.length).toBe(7)
    expect(new Set(keys).size).toBe(7)
    const outs = (j: RunJson) => Object.fromEntries(j.steps.map((s) => [s.node, s.outputs]))
    expect(outs(a.json)).toEqual(outs(b.json))
  })
})

describe("failures and errors", () => {
  it("keeps going past a failed branch, skips its dependants and exits non-zero", () => {
    const dir = project()
    const r = runJson(dir, ["pipeline.ts", "--set", "fail.when=true"])
    expect(r.code).toBe(1)
    expect(r.json.status).toBe("failed")
    const s = statuses(r.json)
    expect(s.fail).toBe("failed")
    expect(s["after-fail"]).toBe("skipped")
    expect(s.shout).toBe("ran")
    expect(r.json.steps.find((x) => x.node === "fail")!.error).toContain("asked to fail")
    const human = cli(dir, ["run", "pipeline.ts", "--set", "fail.when=true"])
    expect(human.code).toBe(1)
    expect(human.stdout.trim().split("\n").at(-1)).toMatch(
      /^9 steps: 7 cached, 0 ran, 1 failed, 1 skipped \(\d+\.\d+ s\)$/,
    )
  })

  it("--fail-fast stops at the first failure", () => {
    const dir = project()
    const r = runJson(dir, ["pipeline.ts", "--set", "fail.when=true", "--fail-fast"], { TG_SLEEP_MS: "5000" })
    expect(r.code).toBe(1)
    expect(statuses(r.json).fail).toBe("failed")
    expect(statuses(r.json).slow).not.toBe("ran")
  })

  it("a bad parameter names the node, the field and what was expected, before anything runs", () => {
    const dir = project()
    const r = cli(dir, ["run", "pipeline.ts", "--set", "upper.times=lots"])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('node "upper"')
    expect(r.stderr).toContain("times: expected number")
    expect(r.stderr).toContain('got "lots"')
    expect(
      fs.existsSync(path.join(dir, ".tunegraph/objects")) &&
        fs.readdirSync(path.join(dir, ".tunegraph/objects")),
    ).toEqual([])
    const unknown = cli(dir, ["run", "pipeline.ts", "--set", "upper.speed=3"])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain("speed: unknown parameter")
  })

  it("--target runs only a node and its upstream; the store can be moved with --store or TUNEGRAPH_STORE", () => {
    const dir = project()
    const store = tempDir("store")
    const r = runJson(dir, ["pipeline.ts", "--target", "upper", "--store", store])
    expect(r.json.steps.map((s) => s.node).sort()).toEqual(["concat", "data", "first", "upper"])
    expect(fs.existsSync(path.join(dir, ".tunegraph"))).toBe(false)
    const again = runJson(dir, ["pipeline.ts"], { TUNEGRAPH_STORE: store })
    expect(ran(again.json)).toEqual(["after-fail", "fail", "notes", "shout", "slow"])
  })

  it("--force re-runs a cached node", () => {
    const dir = project()
    runJson(dir, ["pipeline.ts"])
    expect(ran(runJson(dir, ["pipeline.ts", "--force", "concat"]).json)).toEqual(["concat"])
  })

  it("runs and show report what happened", () => {
    const dir = project()
    const r = runJson(dir, ["pipeline.ts"]).json
    const runs = JSON.parse(cli(dir, ["runs", "--json"]).stdout)
    expect(runs.runs[0].run).toBe(r.run)
    const show = JSON.parse(cli(dir, ["show", r.run, "--json"]).stdout)
    expect(show.steps.map((s: { node: string }) => s.node).sort()).toEqual(r.steps.map((s) => s.node).sort())
    expect(cli(dir, ["show", "nope"]).code).toBe(2)
  })
})

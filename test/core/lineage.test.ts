/**
 * lineage, diff and query through the CLI, on the ops fixture pipeline.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { QueryConnection } from "../../cache/Query.ts"
import { Store } from "../../cache/Store.ts"
import { lineage as lineage_, resolveTarget } from "../../core/Lineage.ts"
import { digestOf, objectFile, opsProject, readStore } from "../fixtures/ops/project.ts"
import { cli, repoRoot, runJson, sha256sum } from "../support/cli.ts"

interface Step {
  node: string
  plugin: string
  version: string
  params: Record<string, unknown>
  run: string
  inputs: Array<{ name: string; digest: string; from: string }>
  outputs: Record<string, { digest: string; kind: string }>
  files?: Array<{ path: string; digest: string; size: number }>
  metrics: Record<string, { last: number; points: number }>
}
interface LineageJson {
  target: { digest: string | null; node: string; output: string | null; kind: string | null; via: string }
  steps: Step[]
}

const lineage = (dir: string, ref: string, extra: string[] = []) => {
  const r = cli(dir, ["lineage", ref, "--json", ...extra])
  if (r.code !== 0) throw new Error(`lineage ${ref} failed (${r.code}): ${r.stderr}`)
  return JSON.parse(r.stdout) as LineageJson
}

/** The same question asked in-process: resolveTarget and lineage over the project's store. */
const traced = (dir: string, ref: string) => {
  const store = Store.open(path.join(dir, ".tunegraph"))
  try {
    return lineage_(store, resolveTarget(store, ref)) as unknown as LineageJson
  } finally {
    store.close()
  }
}

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe("lineage", () => {
  it("names the exact source files, digests and parameters behind an artifact", () => {
    const dir = opsProject()
    const r = runJson(dir, ["pipeline.ts", "--set", "train.lr=0.2"]).json
    const report = digestOf(r, "eval", "report")
    const l = lineage(dir, `sha256:${report}`)
    expect(l.target).toMatchObject({ digest: report, node: "eval", output: "report", kind: "Report" })
    expect(l.steps.map((s) => s.node)).toEqual(["records", "clean", "train", "eval"])
    const records = l.steps.find((s) => s.node === "records")!
    expect(records.files).toEqual(
      ["a.jsonl", "b.jsonl"].map((f) => {
        const abs = path.join(fs.realpathSync(dir), "data", f)
        return {
          path: expect.stringMatching(new RegExp(`data/${f}$`)),
          digest: sha256sum(abs),
          size: fs.statSync(abs).size,
        }
      }),
    )
    const train = l.steps.find((s) => s.node === "train")!
    expect(train.plugin).toBe("fake-train")
    expect(train.version).toBe("1")
    expect(train.params).toEqual({ steps: 12, lr: 0.2 })
    expect(train.inputs).toEqual([
      expect.objectContaining({ name: "lines", digest: digestOf(r, "clean", "lines"), from: "clean" }),
    ])
    expect(train.outputs.weights!.digest).toBe(digestOf(r, "train", "weights"))
    expect(train.metrics.train_loss!.points).toBe(12)
    expect(l.steps.find((s) => s.node === "clean")!.inputs[0]!.digest).toBe(digestOf(r, "records", "files"))
    expect(l.steps.find((s) => s.node === "clean")!.params).toEqual({ lower: true })

    // The same artifact by a bare prefix, by its path in the store, by its node, and through an export.
    expect(traced(dir, report.slice(0, 10)).target.digest).toBe(report)
    expect(traced(dir, objectFile(dir, report)).target.digest).toBe(report)
    expect(traced(dir, "eval").steps.map((s) => s.node)).toEqual(["records", "clean", "train", "eval"])
    const exportDir = path.join(dir, "exported")
    fs.mkdirSync(exportDir)
    const weights = digestOf(r, "train", "weights")
    fs.writeFileSync(
      path.join(exportDir, "tunegraph-export.json"),
      JSON.stringify({ artifact: `sha256:${weights}`, node: "train", run: r.run }),
    )
    const viaExport = lineage(dir, "exported")
    expect(viaExport.target).toMatchObject({ digest: weights, node: "train", via: "export" })
    expect(viaExport.steps.map((s) => s.node)).toEqual(["records", "clean", "train"])
    expect(traced(dir, path.join(exportDir, "tunegraph-export.json")).target.digest).toBe(weights)

    // A later run that reuses the artifact still traces it to the run that computed it.
    const again = runJson(dir, ["pipeline.ts", "--set", "train.lr=0.2"]).json
    expect(again.steps.every((s) => s.status === "cached")).toBe(true)
    expect(traced(dir, report).steps.find((s) => s.node === "train")!.run).toBe(r.run)

    const human = cli(dir, ["lineage", report.slice(0, 12)])
    expect(human.code).toBe(0)
    expect(human.stdout).toContain('output "report" of node "eval"')
    expect(human.stdout).toContain('{"steps":12,"lr":0.2}')
    const dot = cli(dir, ["lineage", report, "--dot"])
    expect(dot.stdout.startsWith("digraph lineage {")).toBe(true)
    expect(dot.stdout).toContain("fake-train@1")

    const unknown = cli(dir, ["lineage", "sha256:0123456789abcdef"])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain("no artifact or source digest starts with 0123456789abcdef")
    const notExport = cli(dir, ["lineage", "data"])
    expect(notExport.code).toBe(2)
    expect(notExport.stderr).toContain("tunegraph-export.json")
  })
})

describe("lineage of a step that passes bytes through", () => {
  it("tells the step from its input although both have one digest", () => {
    const dir = opsProject()
    const r = runJson(dir, ["pipeline.ts", "--target", "shout"], { TG_OPS_COPY: "1" }).json
    expect(digestOf(r, "copy", "lines")).toBe(digestOf(r, "other", "files"))
    const l = traced(dir, digestOf(r, "shout", "lines"))
    expect(l.steps.map((s) => s.node)).toEqual(["other", "copy", "shout"])
    expect(l.steps.find((s) => s.node === "copy")!.inputs[0]!.from).toBe("other")
    expect(l.steps.find((s) => s.node === "shout")!.inputs[0]!.from).toBe("copy")
    const conn = QueryConnection.open(path.join(dir, ".tunegraph"))
    try {
      const edges = conn.run(
        "SELECT from_node, node FROM lineage_edges WHERE node IN ('copy', 'shout') ORDER BY node",
      )
      expect(edges.rows).toEqual([
        ["other", "copy"],
        ["copy", "shout"],
      ])
    } finally {
      conn.close()
    }
  })
})

describe("diff", () => {
  it("shows the parameters, sources and digests that differ, and the metric deltas", () => {
    const dir = opsProject()
    const a = runJson(dir, ["pipeline.ts"]).json
    const bBefore = sha256sum(path.join(dir, "data/b.jsonl"))
    fs.appendFileSync(path.join(dir, "data/b.jsonl"), '{"text": "Delta four"}\n')
    const b = runJson(dir, ["pipeline.ts", "--set", "train.lr=0.2"]).json
    const r = cli(dir, ["diff", a.run, b.run, "--json"])
    expect(r.code).toBe(0)
    const d = JSON.parse(r.stdout)
    expect(d.overrides).toEqual({ a: [], b: ["train.lr=0.2"] })
    expect(d.params).toEqual([{ node: "train", name: "lr", a: 0.1, b: 0.2 }])
    expect(d.sources).toEqual([
      {
        node: "records",
        name: "b.jsonl",
        a: bBefore,
        b: sha256sum(path.join(dir, "data/b.jsonl")),
      },
    ])
    const outs = d.outputs.map((o: { node: string; name: string }) => `${o.node}.${o.name}`).sort()
    expect(outs).toEqual(
      [
        "clean.lines",
        "eval.report",
        "records.files",
        "sweep/lr=0.01.weights",
        "sweep/lr=0.3.weights",
        "train.weights",
      ].sort(),
    )
    const la = traced(dir, digestOf(a, "train", "weights")).steps.at(-1)!.metrics
    const lb = traced(dir, digestOf(b, "train", "weights")).steps.at(-1)!.metrics
    const loss = d.metrics.find(
      (m: { node: string; name: string }) => m.node === "train" && m.name === "train_loss",
    )
    expect(loss).toEqual({
      node: "train",
      name: "train_loss",
      a: la.train_loss!.last,
      b: lb.train_loss!.last,
      delta: lb.train_loss!.last - la.train_loss!.last,
    })
    expect(loss.delta).not.toBe(0)
    const human = cli(dir, ["diff", "last~1", "last"])
    expect(human.code).toBe(0)
    expect(human.stdout).toContain("train.lr: 0.1 -> 0.2")
    expect(human.stdout).toContain("b.jsonl")
  })
})

describe("query", () => {
  it("answers SQL over the documented views as a table, JSON or CSV", () => {
    const dir = opsProject()
    const r = runJson(dir, ["pipeline.ts"]).json
    const json = cli(dir, [
      "query",
      "SELECT node, status FROM executions WHERE run = ? ORDER BY node".replace("?", `'${r.run}'`),
      "--json",
    ])
    expect(json.code).toBe(0)
    expect(JSON.parse(json.stdout)).toEqual(
      [...r.steps]
        .sort((x, y) => (x.node < y.node ? -1 : 1))
        .map((s) => ({ node: s.node, status: s.status })),
    )
    const points = cli(dir, [
      "query",
      "SELECT count(*) AS n FROM metrics WHERE node = 'train' AND name = 'train_loss'",
      "--csv",
    ])
    expect(points.stdout).toBe("n\n12\n")
    const edges = JSON.parse(
      cli(dir, [
        "query",
        "SELECT from_node, node, to_digest FROM lineage_edges WHERE node = 'train'",
        "--json",
      ]).stdout,
    )
    expect(edges).toEqual([{ from_node: "clean", node: "train", to_digest: digestOf(r, "train", "weights") }])
    const table = cli(dir, ["query", "SELECT run, status, steps, ran FROM runs"])
    expect(table.stdout).toContain(r.run)
    expect(table.stdout).toContain("(1 row)")
    const arts = JSON.parse(
      cli(dir, [
        "query",
        "SELECT output, kind, is_dir, pinned FROM artifacts WHERE node = 'eval' ORDER BY output",
        "--json",
      ]).stdout,
    )
    expect(arts).toEqual([
      { output: "details", kind: "Report", is_dir: 1, pinned: 0 },
      { output: "report", kind: "Report", is_dir: 0, pinned: 0 },
    ])
    expect(cli(dir, ["query", "--views"]).stdout).toContain("lineage_edges")
  })

  it("refuses every write with a clear error and leaves the store untouched", () => {
    const dir = opsProject()
    runJson(dir, ["pipeline.ts"])
    const count = () =>
      readStore(dir, (db) => ({
        runs: (db.prepare("SELECT count(*) n FROM runs").get() as { n: number }).n,
        artifacts: (db.prepare("SELECT count(*) n FROM artifacts").get() as { n: number }).n,
        version: db.pragma("user_version", { simple: true }),
      }))
    const before = count()
    for (const sql of [
      "INSERT INTO runs (id, pipeline, pipeline_path, started_at, status, argv, pid, host) VALUES ('x','p','p',0,'s','[]',1,'h')",
      "UPDATE executions SET status = 'failed'",
      "DELETE FROM artifacts",
      "delete from main.artifacts",
      "  /* sneaky */ DELETE FROM main.runs",
      "WITH x AS (SELECT 1) DELETE FROM main.runs",
      "ATTACH DATABASE 'other.db' AS other",
      "PRAGMA user_version = 99",
      "PRAGMA query_only = OFF",
      "PRAGMA main.journal_mode = DELETE",
      "CREATE TABLE t (a)",
      "DROP VIEW runs",
      "VACUUM",
      "SELECT 1; DELETE FROM main.runs",
    ]) {
      const conn = QueryConnection.open(path.join(dir, ".tunegraph"))
      try {
        expect(() => conn.run(sql), sql).toThrow(/read-only|one statement at a time/)
      } finally {
        conn.close()
      }
    }
    // Through the command line: exit code 2 and the reason.
    for (const sql of ["DELETE FROM artifacts", "PRAGMA query_only = OFF"]) {
      const r = cli(dir, ["query", sql])
      expect(r.code, sql).toBe(2)
      expect(r.stderr, sql).toContain("tunegraph query is read-only")
    }
    expect(fs.existsSync(path.join(dir, "other.db"))).toBe(false)
    expect(count()).toEqual(before)
    // Reading stays possible, schema introspection included.
    expect(cli(dir, ["query", "PRAGMA table_info(runs)", "--json"]).code).toBe(0)
  })
})

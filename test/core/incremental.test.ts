/**
 * Incremental data steps through the CLI, as a user runs them: after an
 * append, insert, delete or edit, every data step's outputs equal a
 * from-scratch run's on the same final input (in a fresh store, so nothing
 * is reused), and only the chunks that changed were processed again. The
 * outputs are parts that follow the chunks' cuts (plugins/ingest/RecordParts.ts),
 * so the chunk size is part of ingest's key: a run at another size is
 * another output of the same records.
 */
import { once } from "node:events"
import * as fs from "node:fs"
import * as path from "node:path"
import Database from "better-sqlite3"
import { beforeAll, describe, expect, it } from "vitest"
import {
  bitextFile,
  bitextLines,
  gsm8kFile,
  gsm8kLines,
  incrementalProject,
  type Reuse,
  reuseOf,
  writeRecords,
} from "../fixtures/incremental/project.ts"
import { readLines } from "../plugins/ingest/StepHarness.ts"
import { cli, type RunJson, repoRoot, runJson, spawnCli, statuses } from "../support/cli.ts"
import { haveShared } from "../support/data.ts"

const have = haveShared("incremental data steps on GSM8K and Bitext", gsm8kFile, bitextFile)
const SMALL = { TUNEGRAPH_CHUNK_BYTES: "16384" }
const DATA = ["ingest", "dedupe", "split", "tokenize"]

const outputsOf = (json: RunJson) =>
  Object.fromEntries(json.steps.filter((s) => DATA.includes(s.node)).map((s) => [s.node, s.outputs]))

const run = (dir: string, env: Record<string, string> = SMALL) => {
  const r = runJson(dir, ["pipeline.ts"], env)
  expect(r.json.status, r.stderr).toBe("succeeded")
  return r.json
}

/** The same final input in a fresh store (nothing to reuse), with the same chunk size. */
const fromScratch = (lines: ReadonlyArray<string>, env: Record<string, string> = SMALL) =>
  outputsOf(run(incrementalProject(lines, "inc-ref"), env))

/** The log a node of a run wrote. */
const logOf = (dir: string, run: string, node: string): string => {
  const d = new Database(path.join(dir, ".tunegraph/db.sqlite"), { readonly: true })
  try {
    return d.prepare("SELECT text FROM v_logs WHERE run = ? AND node = ?").pluck().get(run, node) as string
  } finally {
    d.close()
  }
}

/** The inodes of an output's part files (Records parts, or every array of every Tokens part). */
const partInodes = (dir: string, digest: string): number[] => {
  const hex = digest.replace(/^sha256:/, "")
  const root = path.join(dir, ".tunegraph/objects", hex.slice(0, 2), hex.slice(2))
  const out: number[] = []
  for (const e of fs.readdirSync(root, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1)))
    if (e.name.startsWith("part-"))
      if (e.isDirectory()) out.push(fs.statSync(path.join(root, e.name, "tokens.u32")).ino)
      else out.push(fs.statSync(path.join(root, e.name)).ino)
  expect(out.length, `${root} has parts`).toBeGreaterThan(1)
  return out
}

const atMost = (r: Reuse | undefined, n: number) => {
  expect(r).toBeDefined()
  expect(r!.computed).toBeGreaterThanOrEqual(1)
  expect(r!.computed).toBeLessThanOrEqual(n)
  expect(r!.reused + r!.computed).toBe(r!.chunks)
}

/** A GSM8K record with one word of its answer changed: a near duplicate of the original. */
const nearCopy = (line: string): string => {
  const r = JSON.parse(line) as { question: string; answer: string }
  return JSON.stringify({ ...r, answer: r.answer.replace(/\bhow\b|\bthe\b/, "that") })
}

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe.skipIf(!have)("incremental data steps", () => {
  const all = have ? gsm8kLines() : []

  it("append, insert, delete and modify: the same bytes as a full run, only the changed chunks redone", () => {
    let lines = all.slice(0, 600)
    const dir = incrementalProject(lines)
    const first = run(dir)
    const firstReuse = reuseOf(dir, first.run)
    for (const n of DATA) expect(firstReuse[n]!.reused).toBe(0)
    expect(firstReuse.ingest!.chunks).toBeGreaterThanOrEqual(15)
    expect(outputsOf(first)).toEqual(fromScratch(lines))

    // append: every step does only the last chunk or two
    lines = [...lines, ...all.slice(600, 606)]
    writeRecords(dir, lines)
    // plan knows ingest's share before anything runs, and says it
    const planned = cli(dir, ["plan", "pipeline.ts", "--json"], SMALL)
    const ingestPlan = (
      JSON.parse(planned.stdout) as { steps: Array<{ node: string; reasons: string[]; chunks?: Reuse }> }
    ).steps.find((x) => x.node === "ingest")!
    expect(ingestPlan.reasons.join("\n")).toMatch(/ingest: [12] of \d+ chunks to parse \(\d+ reused\)/)
    const appended = run(dir)
    const a = reuseOf(dir, appended.run)
    for (const n of DATA) atMost(a[n], 2)
    expect(ingestPlan.chunks).toEqual(a.ingest)
    expect(appended.steps.find((x) => x.node === "tokenize")).toMatchObject({ chunks: a.tokenize })
    expect(outputsOf(appended)).toEqual(fromScratch(lines))
    // ingest read only the new chunks, found by the line index made when the source was hashed
    expect(logOf(dir, appended.run, "ingest")).toMatch(
      new RegExp(`records.jsonl: ${a.ingest!.computed} of ${a.ingest!.chunks} chunks read \\(its line index`),
    )
    // dedupe took up the index kept before the last chunk instead of replaying the chunks before it
    expect(logOf(dir, appended.run, "dedupe")).toMatch(
      new RegExp(`the index of ${firstReuse.dedupe!.chunks - 1} chunks loaded as kept, 0 replayed`),
    )
    // the new outputs share the unchanged parts with the old ones (hard links), written once
    for (const [node, output] of [
      ["ingest", "records"],
      ["dedupe", "records"],
      ["split", "train"],
      ["tokenize", "tokens"],
    ] as const) {
      const before = partInodes(dir, outputsOf(first)[node]![output]!)
      const after = partInodes(dir, outputsOf(appended)[node]![output]!)
      const shared = after.filter((ino) => before.includes(ino)).length
      expect(shared, `${node}: parts shared with the previous output`).toBeGreaterThanOrEqual(
        after.length - 3,
      )
      expect(shared).toBeLessThan(after.length)
    }

    // insert in the middle: the map-like steps redo the chunks near it; dedupe from there on
    lines = [...lines.slice(0, 300), ...all.slice(700, 703), ...lines.slice(300)]
    writeRecords(dir, lines)
    const inserted = run(dir)
    const i = reuseOf(dir, inserted.run)
    atMost(i.ingest, 3)
    atMost(i.split, 3)
    expect(i.dedupe!.reused).toBeGreaterThanOrEqual(Math.floor(i.dedupe!.chunks / 3))
    expect(i.dedupe!.computed).toBeLessThan(i.dedupe!.chunks)
    expect(outputsOf(inserted)).toEqual(fromScratch(lines))

    // delete in the middle
    lines = [...lines.slice(0, 150), ...lines.slice(154)]
    writeRecords(dir, lines)
    const deleted = run(dir)
    const d = reuseOf(dir, deleted.run)
    atMost(d.ingest, 3)
    atMost(d.split, 3)
    expect(outputsOf(deleted)).toEqual(fromScratch(lines))

    // modify one record near the end
    const at = 500
    const r = JSON.parse(lines[at]!) as { question: string; answer: string }
    lines = [...lines]
    lines[at] = JSON.stringify({ ...r, question: `${r.question} Show your work.` })
    writeRecords(dir, lines)
    const modified = run(dir)
    const m = reuseOf(dir, modified.run)
    atMost(m.ingest, 2)
    atMost(m.split, 2)
    expect(m.dedupe!.reused).toBeGreaterThanOrEqual(Math.floor(m.dedupe!.chunks / 2))
    expect(outputsOf(modified)).toEqual(fromScratch(lines))

    expect(cli(dir, ["verify"]).code).toBe(0)
  }, 300_000)

  it("finds near and exact duplicates of old records in the appended part; everything after dedupe stays cached", () => {
    const lines = all.slice(0, 300)
    const dir = incrementalProject(lines, "inc-dup")
    const first = run(dir)
    const report = (json: RunJson) => {
      const digest = json.steps.find((s) => s.node === "dedupe")!.outputs.report!.replace("sha256:", "")
      const file = path.join(dir, ".tunegraph/objects", digest.slice(0, 2), digest.slice(2))
      return JSON.parse(fs.readFileSync(file, "utf8")) as {
        recordsIn: number
        recordsOut: number
        duplicates: { exact: number; near: number }
      }
    }
    const before = report(first)
    writeRecords(dir, [...lines, nearCopy(lines[10]!), lines[20]!])
    const second = run(dir)
    const after = report(second)
    expect(after.recordsIn).toBe(before.recordsIn + 2)
    expect(after.recordsOut).toBe(before.recordsOut)
    expect(after.duplicates).toEqual({ exact: before.duplicates.exact + 1, near: before.duplicates.near + 1 })
    const s = statuses(second)
    expect(s.ingest).toBe("ran")
    expect(s.dedupe).toBe("ran")
    expect(s.split).toBe("cached")
    expect(s.tokenize).toBe("cached")
    const dd = (json: RunJson) => json.steps.find((x) => x.node === "dedupe")!.outputs.records
    expect(dd(second)).toBe(dd(first))
    const reuse = reuseOf(dir, second.run)
    atMost(reuse.ingest, 2)
    atMost(reuse.dedupe, 2)

    // An edit near the start that copies a later record: the later one is now the duplicate, so
    // dedupe decides again from the edited chunk on (its signatures are reused) and drops it.
    const edited = [...lines, nearCopy(lines[10]!), lines[20]!]
    edited[5] = lines[250]!
    writeRecords(dir, edited)
    const third = run(dir)
    expect(report(third).duplicates.exact).toBe(before.duplicates.exact + 2)
    expect(outputsOf(third)).toEqual(fromScratch(edited))
    const r3 = reuseOf(dir, third.run)
    expect(r3.dedupe!.computed).toBeGreaterThan(r3.dedupe!.chunks / 2)
  }, 300_000)

  it("Bitext: appended records and near copies of old ones; an edit redoes its chunk", async () => {
    const all = await bitextLines()
    expect(all.length).toBe(4514)
    const lines = all.slice(0, 1200)
    const dir = incrementalProject(lines, "inc-bitext")
    const dedupeReport = (json: RunJson) => {
      const d = json.steps.find((x) => x.node === "dedupe")!.outputs.report!.replace("sha256:", "")
      return JSON.parse(
        fs.readFileSync(path.join(dir, ".tunegraph/objects", d.slice(0, 2), d.slice(2)), "utf8"),
      ) as {
        duplicates: { exact: number; near: number }
      }
    }
    const before = dedupeReport(run(dir))
    const grown = [...lines, ...all.slice(3000, 3040), nearCopy(lines[100]!), nearCopy(lines[900]!)]
    writeRecords(dir, grown)
    const second = run(dir)
    const after = dedupeReport(second)
    expect(after.duplicates.near).toBeGreaterThanOrEqual(before.duplicates.near + 2)
    const reuse = reuseOf(dir, second.run)
    // 42 records are about 25 KB: two chunks of new bytes and the one they joined
    for (const n of ["ingest", "dedupe", "split"]) atMost(reuse[n], 4)
    expect(outputsOf(second)).toEqual(fromScratch(grown))

    const edited = [...grown]
    const q = JSON.parse(edited[600]!) as { question: string; answer: string }
    edited[600] = JSON.stringify({ ...q, question: `${q.question} Thanks in advance.` })
    writeRecords(dir, edited)
    const third = run(dir)
    const r3 = reuseOf(dir, third.run)
    atMost(r3.ingest, 2)
    expect(outputsOf(third)).toEqual(fromScratch(edited))
  }, 300_000)

  it("kill -9 in the middle of a chunked step: the store verifies, and the next run reuses the finished chunks", async () => {
    // GSM8K in 4 KiB chunks: hundreds of chunk commits.
    const lines = all
    const dir = incrementalProject(lines, "inc-kill")
    const env = { TUNEGRAPH_CHUNK_BYTES: "4096" }
    const child = spawnCli(dir, ["run", "pipeline.ts", "--json"], env)
    const db = () => path.join(dir, ".tunegraph/db.sqlite")
    let committed = 0
    for (let i = 0; i < 3000 && committed < 20; i++) {
      await new Promise((r) => setTimeout(r, 10))
      if (child.exitCode !== null) break
      if (!fs.existsSync(db())) continue
      try {
        const d = new Database(db(), { readonly: true, fileMustExist: true })
        try {
          committed = d.prepare("SELECT count(*) FROM chunks WHERE step = 'ingest'").pluck().get() as number
        } finally {
          d.close()
        }
      } catch {
        // the schema is being created
      }
    }
    expect(child.exitCode, "the run finished before it could be killed").toBeNull()
    child.kill("SIGKILL")
    await once(child, "exit")
    expect(committed).toBeGreaterThanOrEqual(20)

    expect(cli(dir, ["verify"]).code).toBe(0)
    const again = run(dir, env)
    const reuse = reuseOf(dir, again.run)
    expect(reuse.ingest!.reused).toBeGreaterThanOrEqual(committed)
    expect(outputsOf(again)).toEqual(fromScratch(lines, env))
    expect(cli(dir, ["verify"]).code).toBe(0)
  }, 300_000)

  it("the chunk size shapes the parts, not the records: it is in ingest's key", () => {
    const lines = all.slice(0, 300)
    const dir = incrementalProject(lines, "inc-size")
    const small = run(dir)
    const other = run(dir, { TUNEGRAPH_CHUNK_BYTES: "65536" })
    expect(statuses(other).ingest).toBe("ran")
    const records = (json: RunJson) => {
      const hex = outputsOf(json).ingest!.records!.replace(/^sha256:/, "")
      return readLines(path.join(dir, ".tunegraph/objects", hex.slice(0, 2), hex.slice(2)))
    }
    expect(outputsOf(other).ingest).not.toEqual(outputsOf(small).ingest)
    expect(records(other)).toEqual(records(small))
    expect(records(small)).toHaveLength(lines.length)
    // back at the first size: every step is cached
    const again = run(dir)
    for (const n of DATA) expect(statuses(again)[n]).toBe("cached")
  }, 300_000)

  it("a new maxLength or packing packs again and encodes nothing again", () => {
    const lines = all.slice(0, 300)
    const dir = incrementalProject(lines, "inc-len")
    run(dir)
    const file = path.join(dir, "pipeline.ts")
    const source = fs.readFileSync(file, "utf8")
    const changed = source.replace(
      'maxLength: 256, overflow: "truncate", pack: true',
      'maxLength: 200, overflow: "truncate", pack: false',
    )
    expect(changed).not.toBe(source)
    fs.writeFileSync(file, changed)
    const second = run(dir)
    expect(statuses(second).tokenize).toBe("ran")
    const r = reuseOf(dir, second.run).tokenize!
    expect(r.computed).toBe(0)
    expect(r.reused).toBe(r.chunks)
    // the same bytes as a store that never saw the first parameters
    const fresh = incrementalProject(lines, "inc-len-ref")
    fs.writeFileSync(path.join(fresh, "pipeline.ts"), changed)
    expect(outputsOf(second).tokenize).toEqual(outputsOf(run(fresh)).tokenize)
  }, 300_000)

  it("gc collects the chunk entries only collected runs used and keeps the rest", () => {
    const lines = all.slice(0, 400)
    const dir = incrementalProject(lines, "inc-gc")
    run(dir)
    // Ten records edited: some land in every split, so no step of the first run stays in use.
    const edited = lines.map((l, i) => (i >= 200 && i < 210 ? l.replace("?", "? Explain.") : l))
    writeRecords(dir, edited)
    const second = run(dir)
    for (const n of DATA) expect(statuses(second)[n]).toBe("ran")
    const count = () => {
      const d = new Database(path.join(dir, ".tunegraph/db.sqlite"), { readonly: true })
      try {
        return {
          chunks: d.prepare("SELECT count(*) FROM chunks").pluck().get() as number,
          usedByLast: d
            .prepare(
              "SELECT count(DISTINCT chunk_key) FROM chunk_uses WHERE run_id = ? AND chunk_key IN (SELECT chunk_key FROM chunks)",
            )
            .pluck()
            .get(second.run) as number,
          usedByLastAll: d
            .prepare("SELECT count(DISTINCT chunk_key) FROM chunk_uses WHERE run_id = ?")
            .pluck()
            .get(second.run) as number,
          // the line indexes made when the source was hashed, and those of the digest it has now
          indexes: d.prepare("SELECT count(*) FROM line_indexes").pluck().get() as number,
          current: d
            .prepare("SELECT count(*) FROM line_indexes WHERE digest IN (SELECT digest FROM stat_cache)")
            .pluck()
            .get() as number,
        }
      } finally {
        d.close()
      }
    }
    const before = count()
    const gc = cli(dir, ["gc", "--keep-last", "1"])
    expect(gc.code, gc.stderr).toBe(0)
    expect(gc.stdout).toMatch(/[1-9]\d* chunk entr/)
    const after = count()
    expect(after.chunks).toBeLessThan(before.chunks)
    // the first version's line index went with it; the current file's is kept
    expect(before.indexes).toBe(2)
    expect(after.indexes).toBe(1)
    expect(after.current).toBe(1)
    // everything the kept run used is still there
    expect(after.chunks).toBe(after.usedByLastAll)
    expect(after.usedByLast).toBe(before.usedByLast)
    expect(cli(dir, ["verify"]).code).toBe(0)
    // back to the first version: its changed chunk was collected, so it is parsed again
    writeRecords(dir, lines)
    const third = run(dir)
    const reuse = reuseOf(dir, third.run)
    atMost(reuse.ingest, 2)
    expect(outputsOf(third)).toEqual(fromScratch(lines))
  }, 300_000)
})

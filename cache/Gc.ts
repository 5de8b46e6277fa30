/**
 * Garbage collection: mark from roots, then sweep rows and objects together.
 *
 * Roots are the last N runs of each pipeline (and its last successful run),
 * runs still in progress, pinned artifacts and exports. Marking follows each
 * kept execution to the execution that computed it (`produced_by`) and each
 * input digest to the execution that produced it, so a kept artifact keeps
 * its whole history. Rows go first, in one transaction; objects after, so a
 * crash in between leaves only unreferenced objects, which the next gc
 * removes. Objects with no row, dead processes' tmp/ entries and checkpoints
 * no kept step can resume from go too. Chunk entries of chunked data steps
 * (core/Chunks.ts) stay when a kept run used them (or a kept execution's
 * run and node did: a cached step keeps the chunks its producer used), and
 * their objects with them; the rest go like any other artifact.
 *
 * A concurrent run is respected: while one is in progress every cache entry
 * stays (it may be reusing any of them), leased keys keep their outputs and
 * checkpoints, and an unreferenced object younger than the grace period is
 * left alone while anyone holds a lease (it may be between its rename into
 * objects/ and the transaction that records it).
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { LEASE_STALE_MS, processAlive, removeTree, type Store, sleepMs } from "./Store.ts"

export class GcError extends Error {
  override readonly name = "GcError"
}

export interface GcOptions {
  /** Runs kept per pipeline, newest first (the last successful one is kept too when N > 0). */
  readonly keepLast: number
  readonly dryRun?: boolean
  /** How old an unreferenced object must be before it is removed while leases are held. */
  readonly graceMs?: number
}

export interface GcReport {
  readonly dryRun: boolean
  readonly keptRuns: number
  readonly inProgress: ReadonlyArray<string>
  readonly deleted: {
    readonly runs: number
    readonly executions: number
    readonly cacheEntries: number
    /** Chunk results of chunked data steps that no kept run used (core/Chunks.ts). */
    readonly chunkEntries: number
    readonly artifacts: number
    readonly garbageObjects: number
    readonly tmp: number
    readonly checkpoints: number
  }
  readonly bytes: {
    readonly artifacts: number
    readonly garbage: number
    readonly tmp: number
    readonly checkpoints: number
    readonly total: number
  }
}

const HOST = os.hostname()
const OTHER_HOST_RUN_MS = 7 * 24 * 3600 * 1000

class Rollback extends Error {}

interface RunRow {
  id: string
  pipeline_path: string
  status: string
  pid: number
  host: string
  started_at: number
  heartbeat_at: number | null
}

/** Bytes of the files under a path (a file or a directory). */
export const diskBytes = (p: string): number => {
  let st: fs.Stats
  try {
    st = fs.lstatSync(p)
  } catch {
    return 0
  }
  if (!st.isDirectory()) return st.size
  let total = 0
  for (const n of fs.readdirSync(p)) total += diskBytes(path.join(p, n))
  return total
}

/** A run in progress: its process is alive (this machine), or it beat lately (another; a run from before heartbeats: a week). */
const liveRun = (r: RunRow, now: number) =>
  r.status === "running" &&
  (r.host === HOST
    ? processAlive(r.pid)
    : r.heartbeat_at !== null
      ? now - r.heartbeat_at < LEASE_STALE_MS
      : now - r.started_at < OTHER_HOST_RUN_MS)

/**
 * Where a test can act: between gc deciding what to keep and deleting the
 * rest (`afterMark`), and between moving an object away and checking it for a
 * row (`afterMove`).
 */
export const gcHooks = { afterMark: (): void => {}, afterMove: (_digest: string): void => {} }

/**
 * The tables gc reads to decide and deletes from. On PostgreSQL, which locks
 * rows and not the database as SQLite's write lock does, gc holds them all in
 * EXCLUSIVE mode (reads go on, writes wait): otherwise a run recording while
 * gc marks adds executions gc never saw, and gc deletes them.
 */
const GC_TABLES = [
  "runs",
  "leases",
  "pins",
  "artifacts",
  "artifact_files",
  "executions",
  "execution_inputs",
  "execution_outputs",
  "step_cache",
  "logs",
  "metrics",
  "chunks",
  "chunk_uses",
  "source_files",
  "stat_cache",
  "line_indexes",
]
/** How long gc waits for the tables before it lets go and tries again: under PostgreSQL's deadlock check (1 s), so a run is never the one aborted. */
const GC_LOCK_WAIT_MS = 500
const GC_LOCK_TRIES = 240

export const collectGarbage = (store: Store, options: GcOptions): GcReport => {
  const dryRun = options.dryRun === true
  const graceMs = options.graceMs ?? 3600_000
  const started = Date.now()
  const db = store.db
  let marked!: {
    keptRuns: number
    inProgress: string[]
    leasedKeys: Set<string>
    resumableKeys: Set<string>
    deleted: {
      runs: number
      executions: number
      cacheEntries: number
      artifacts: number
      chunkEntries: number
    }
    doomed: Array<{ digest: string; size: number }>
  }
  const mark = () => {
    if (db.dialect === "postgres") {
      db.exec(`SET LOCAL lock_timeout = '${GC_LOCK_WAIT_MS}ms'`)
      db.exec(`LOCK TABLE ${GC_TABLES.join(", ")} IN EXCLUSIVE MODE`)
      db.exec("SET LOCAL lock_timeout = 0")
    }
    const now = Date.now()
    const runs = db
      .prepare(
        "SELECT id, pipeline_path, status, pid, host, started_at, heartbeat_at FROM runs ORDER BY started_at DESC, id DESC",
      )
      .all() as RunRow[]
    const inProgress = runs.filter((r) => liveRun(r, now)).map((r) => r.id)
    const roots = new Set(inProgress)
    const perPipeline = new Map<string, RunRow[]>()
    for (const r of runs) perPipeline.set(r.pipeline_path, [...(perPipeline.get(r.pipeline_path) ?? []), r])
    for (const list of perPipeline.values()) {
      for (const r of list.slice(0, options.keepLast)) roots.add(r.id)
      const ok = list.find((r) => r.status === "succeeded")
      if (options.keepLast > 0 && ok !== undefined) roots.add(ok.id)
    }
    const leases = db.prepare("SELECT step_key, run_id, pid, host, heartbeat_at FROM leases").all() as Array<{
      step_key: string
      run_id: string
      pid: number
      host: string
      heartbeat_at: number
    }>
    const leasedKeys = new Set(
      leases
        .filter((l) => (l.host === HOST ? processAlive(l.pid) : now - l.heartbeat_at < LEASE_STALE_MS))
        .map((l) => l.step_key),
    )
    const busy = inProgress.length > 0 || leasedKeys.size > 0

    db.exec("CREATE TEMP TABLE IF NOT EXISTS gc_live (id INTEGER PRIMARY KEY); DELETE FROM temp.gc_live;")
    db.exec("CREATE TEMP TABLE IF NOT EXISTS gc_keep (digest TEXT PRIMARY KEY); DELETE FROM temp.gc_keep;")
    const live = new Set<number>()
    const stack: number[] = []
    const producedBy = db.prepare("SELECT produced_by FROM executions WHERE id = ?").pluck()
    const inputs = db.prepare("SELECT digest FROM execution_inputs WHERE execution_id = ?").pluck()
    const producer = db
      .prepare(
        `SELECT e.id FROM execution_outputs o JOIN executions e ON e.id = o.execution_id WHERE o.digest = ?
         ORDER BY (e.status = 'ran') DESC, e.produced_by IS NULL DESC, e.id LIMIT 1`,
      )
      .pluck()
    // The same run's producer first: a kept run then explains itself without older runs.
    // (Not the consumer itself, and finished before it started: a step may pass bytes through unchanged.)
    const sameRun = db
      .prepare(
        `SELECT e.id FROM execution_outputs o JOIN executions e ON e.id = o.execution_id
         JOIN executions c ON c.id = ?
         WHERE o.digest = ? AND e.run_id = c.run_id AND e.id != c.id
           AND coalesce(e.finished_at, e.started_at) <= c.started_at
         ORDER BY coalesce(e.finished_at, e.started_at) DESC, e.id DESC LIMIT 1`,
      )
      .pluck()
    const push = (id: number | null | undefined) => {
      if (id === null || id === undefined || live.has(id)) return
      live.add(id)
      stack.push(id)
    }
    const rootDigests = new Set<string>([
      ...(db.prepare("SELECT digest FROM pins").pluck().all() as string[]),
      ...(db.prepare("SELECT digest FROM artifacts WHERE kind = 'Export'").pluck().all() as string[]),
    ])
    const cacheRows = db.prepare("SELECT step_key, execution_id, outputs FROM step_cache").all() as Array<{
      step_key: string
      execution_id: number
      outputs: string
    }>
    for (const c of cacheRows)
      if (busy || leasedKeys.has(c.step_key)) {
        push(c.execution_id)
        for (const d of Object.values(JSON.parse(c.outputs) as Record<string, string>)) rootDigests.add(d)
      }
    // Everything a leased key ever produced: a run holding the lease may be about to reuse it.
    for (const k of leasedKeys)
      for (const id of db.prepare("SELECT id FROM executions WHERE step_key = ?").pluck().all(k) as number[])
        push(id)
    const byRun = db.prepare("SELECT id FROM executions WHERE run_id = ?").pluck()
    for (const r of roots) for (const id of byRun.all(r) as number[]) push(id)
    for (const d of rootDigests) push(producer.get(d) as number | undefined)
    while (stack.length > 0) {
      const id = stack.pop()!
      push(producedBy.get(id) as number | null)
      for (const d of inputs.all(id) as string[])
        push((sameRun.get(id, d) as number | undefined) ?? (producer.get(d) as number | undefined))
    }
    const insLive = db.prepare("INSERT INTO temp.gc_live (id) VALUES (?)")
    for (const id of live) insLive.run(id)
    const insKeep = db.prepare("INSERT OR IGNORE INTO temp.gc_keep (digest) VALUES (?)")
    for (const d of rootDigests) insKeep.run(d)
    db.exec(
      `INSERT OR IGNORE INTO temp.gc_keep (digest)
       SELECT digest FROM execution_outputs WHERE execution_id IN (SELECT id FROM temp.gc_live)`,
    )

    // Chunk entries: those a kept run used (its steps' own, or a kept execution's), every one while busy.
    db.exec(
      "CREATE TEMP TABLE IF NOT EXISTS gc_chunks (chunk_key TEXT PRIMARY KEY); DELETE FROM temp.gc_chunks;",
    )
    if (busy) db.exec("INSERT INTO temp.gc_chunks SELECT chunk_key FROM chunks")
    else
      db.prepare(
        `INSERT OR IGNORE INTO temp.gc_chunks (chunk_key)
         SELECT u.chunk_key FROM chunk_uses u
         WHERE u.run_id IN (SELECT value FROM json_each(?))
            OR EXISTS (SELECT 1 FROM executions e WHERE e.id IN (SELECT id FROM temp.gc_live)
                       AND e.run_id = u.run_id AND e.node = u.node)`,
      ).run(JSON.stringify([...roots]))
    const chunkEntries = db
      .prepare("DELETE FROM chunks WHERE chunk_key NOT IN (SELECT chunk_key FROM temp.gc_chunks)")
      .run().changes
    db.exec(
      `INSERT OR IGNORE INTO temp.gc_keep (digest) SELECT digest FROM chunks;
       DELETE FROM temp.gc_chunks;`,
    )

    gcHooks.afterMark()
    const dead = "execution_id NOT IN (SELECT id FROM temp.gc_live)"
    const doomed = db
      .prepare("SELECT digest, size FROM artifacts WHERE digest NOT IN (SELECT digest FROM temp.gc_keep)")
      .all() as Array<{ digest: string; size: number }>
    const cacheEntries = db.prepare(`DELETE FROM step_cache WHERE ${dead}`).run().changes
    for (const t of ["metrics", "logs", "execution_inputs", "execution_outputs"])
      db.prepare(`DELETE FROM ${t} WHERE ${dead}`).run()
    const executions = db
      .prepare("DELETE FROM executions WHERE id NOT IN (SELECT id FROM temp.gc_live)")
      .run().changes
    const keepRuns = [...roots]
    const deletedRuns = db
      .prepare(
        `DELETE FROM runs WHERE id NOT IN (SELECT run_id FROM executions)
           AND id NOT IN (SELECT value FROM json_each(?))`,
      )
      .run(JSON.stringify(keepRuns)).changes
    const artifacts = db
      .prepare("DELETE FROM artifacts WHERE digest NOT IN (SELECT digest FROM temp.gc_keep)")
      .run().changes
    db.exec(
      `DELETE FROM chunk_uses WHERE chunk_key NOT IN (SELECT chunk_key FROM chunks)
         OR run_id NOT IN (SELECT id FROM runs);
       DELETE FROM source_files WHERE digest NOT IN (SELECT digest FROM execution_outputs);
       DELETE FROM temp.gc_live; DELETE FROM temp.gc_keep;`,
    )
    // Stat entries of files that are gone only slow down nothing, but they are noise in the store.
    // (In a shared store each machine's entries are its own, keyed by host: this machine checks its own.)
    const stat = db.prepare("SELECT path FROM stat_cache").pluck().all() as string[]
    const dropStat = db.prepare("DELETE FROM stat_cache WHERE path = ?")
    const own = store.statKey("")
    for (const p of stat) if (p.startsWith(own) && !fs.existsSync(p.slice(own.length))) dropStat.run(p)
    db.exec("DELETE FROM line_indexes WHERE digest NOT IN (SELECT digest FROM stat_cache)")
    marked = {
      keptRuns: runs.length - deletedRuns,
      inProgress,
      leasedKeys,
      // A step killed mid-way (its lease left behind) in a kept run resumes from its checkpoint.
      resumableKeys: new Set(leases.filter((l) => roots.has(l.run_id)).map((l) => l.step_key)),
      deleted: { runs: deletedRuns, executions, cacheEntries, artifacts, chunkEntries },
      doomed,
    }
    if (dryRun) throw new Rollback()
  }
  for (let attempt = 1; ; attempt++) {
    try {
      db.transaction(mark, true)
      break
    } catch (e) {
      if (e instanceof Rollback) break
      // Runs were writing: gc let go of what it had locked so they can finish, and tries again.
      if ((e as { code?: string }).code !== "55P03") throw e
      if (attempt === GC_LOCK_TRIES)
        throw new Error(
          `gc could not lock ${db.where}'s tables in ${GC_LOCK_TRIES} tries of ${GC_LOCK_WAIT_MS} ms: runs kept writing; nothing was deleted, run gc again`,
        )
      sleepMs(50 + Math.floor(Math.random() * 200))
    }
  }

  // Objects: those whose rows were just deleted, then any other object without a row.
  const trash = path.join(store.tmpDir, `${process.pid}-gc-${started}`)
  const hasRow = db.prepare("SELECT 1 FROM artifacts WHERE digest = ?").pluck()
  const discard = (digest: string): boolean => {
    const p = store.objectPath(digest)
    if (!fs.existsSync(p)) return false
    if (dryRun) return true
    fs.mkdirSync(trash, { recursive: true })
    const moved = path.join(trash, digest)
    // A read-only directory cannot move to another parent: its `..` entry changes.
    const isDir = fs.lstatSync(p).isDirectory()
    if (isDir) fs.chmodSync(p, 0o755)
    fs.renameSync(p, moved)
    gcHooks.afterMove(digest)
    // A run that recorded this very digest meanwhile keeps it (and may have put its own copy back already).
    if (hasRow.get(digest) !== undefined) {
      if (fs.existsSync(p)) removeTree(moved)
      else {
        fs.renameSync(moved, p)
        if (isDir) fs.chmodSync(p, 0o555)
      }
      return false
    }
    return true
  }
  let artifactBytes = 0
  const gone = new Set<string>()
  for (const d of marked.doomed) {
    const bytes = diskBytes(store.objectPath(d.digest))
    if (discard(d.digest)) {
      artifactBytes += bytes
      gone.add(d.digest)
    }
  }
  let garbage = 0
  let garbageBytes = 0
  const cutoff = marked.leasedKeys.size > 0 ? started - graceMs : started
  for (const shard of safeReaddir(store.objectsDir)) {
    const dir = path.join(store.objectsDir, shard)
    for (const rest of safeReaddir(dir)) {
      const digest = `${shard}${rest}`
      if (gone.has(digest) || hasRow.get(digest) !== undefined) continue
      const p = path.join(dir, rest)
      let st: fs.Stats
      try {
        st = fs.lstatSync(p)
      } catch {
        continue
      }
      // ctime moves on rename and chmod: a just-committed object looks new however old its bytes.
      if (st.ctimeMs >= cutoff) continue
      const bytes = diskBytes(p)
      if (discard(digest)) {
        garbage++
        garbageBytes += bytes
      }
    }
    if (!dryRun && safeReaddir(dir).length === 0) fs.rmSync(dir, { recursive: true, force: true })
  }
  if (!dryRun) removeTree(trash)

  // A bucket (the local objects/ above is then this machine's cache): the same two sweeps, each
  // deletion under the digest's lock, which a run recording that digest takes too (Store.commitObjects).
  const remote = store.remote
  if (remote !== undefined) {
    const removeRemote = (digest: string): boolean => {
      if (dryRun) return hasRow.get(digest) === undefined
      return db.transaction(() => {
        db.prepare("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))").get(digest)
        if (hasRow.get(digest) !== undefined) return false
        remote.remove(digest)
        return true
      })
    }
    const listed = remote.list()
    const inBucket = new Set(listed.map((o) => o.digest))
    for (const d of marked.doomed)
      if (inBucket.has(d.digest) && removeRemote(d.digest) && !gone.has(d.digest)) {
        artifactBytes += d.size
        gone.add(d.digest)
      }
    for (const o of listed) {
      if (gone.has(o.digest) || o.modified >= cutoff || hasRow.get(o.digest) !== undefined) continue
      if (removeRemote(o.digest)) garbage++
    }
  }

  // tmp/: entries of processes that are gone.
  let tmp = 0
  let tmpBytes = 0
  for (const name of safeReaddir(store.tmpDir)) {
    const pid = Number(name.split("-")[0])
    if (!Number.isInteger(pid) || pid <= 0 || processAlive(pid)) continue
    const p = path.join(store.tmpDir, name)
    tmp++
    tmpBytes += diskBytes(p)
    if (!dryRun) removeTree(p)
  }

  // checkpoints/: kept while leased, or while a kept run's unfinished step could resume from it.
  const resumable = new Set(
    db
      .prepare(
        `SELECT step_key FROM executions WHERE status IN ('interrupted','failed') AND step_key IS NOT NULL
         AND step_key NOT IN (SELECT step_key FROM step_cache)`,
      )
      .pluck()
      .all() as string[],
  )
  let checkpoints = 0
  let checkpointBytes = 0
  for (const key of safeReaddir(store.checkpointsDir)) {
    if (marked.leasedKeys.has(key) || marked.resumableKeys.has(key) || resumable.has(key)) continue
    const p = path.join(store.checkpointsDir, key)
    checkpoints++
    checkpointBytes += diskBytes(p)
    if (!dryRun) removeTree(p)
  }

  return {
    dryRun,
    keptRuns: marked.keptRuns,
    inProgress: marked.inProgress,
    deleted: { ...marked.deleted, garbageObjects: garbage, tmp, checkpoints },
    bytes: {
      artifacts: artifactBytes,
      garbage: garbageBytes,
      tmp: tmpBytes,
      checkpoints: checkpointBytes,
      total: artifactBytes + garbageBytes + tmpBytes + checkpointBytes,
    },
  }
}

const safeReaddir = (dir: string): string[] => {
  try {
    return fs.readdirSync(dir)
  } catch {
    return []
  }
}

/** Pins keep an artifact and its history through every gc until unpinned. */
export const pin = (store: Store, digest: string, note?: string): boolean => {
  if (store.artifact(digest) === undefined)
    throw new GcError(`sha256:${digest} is not an object in the store (sources are never collected)`)
  return (
    store.db
      .prepare("INSERT OR IGNORE INTO pins (digest, note, created_at) VALUES (?, ?, ?)")
      .run(digest, note ?? null, Date.now()).changes > 0
  )
}

export const unpin = (store: Store, digest: string): boolean =>
  store.db.prepare("DELETE FROM pins WHERE digest = ?").run(digest).changes > 0

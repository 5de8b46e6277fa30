/**
 * The artifact store: `db.sqlite` (WAL) beside content-addressed objects.
 *
 *   <store>/db.sqlite
 *   <store>/objects/ab/cdef...   read-only files or directories named by digest
 *   <store>/tmp/<pid>-<rand>/     a step's outputs and scratch while it runs
 *   <store>/checkpoints/<key>/    kept until the step succeeds, so training resumes
 *
 * Commit order makes crashes harmless: outputs are hashed, fsynced and renamed
 * into objects/ first, then one transaction records the execution, its
 * outputs and the cache entry. A row never points at a missing object; an
 * object with no row is garbage for gc. The store itself is dumb and
 * append-only; decisions live in the scheduler.
 */
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import { createRequire } from "node:module"
import * as os from "node:os"
import * as path from "node:path"
import Database from "better-sqlite3"
import type { ArtifactFile } from "../core/Artifact.ts"
import type { LineIndex } from "../core/Chunks.ts"
import {
  hashDirSync,
  hashFileSync,
  type KnownFile,
  listFiles,
  type ManifestEntry,
  modeOf,
} from "../core/Hash.ts"
import { type Db, PostgresDb, SqliteDb, type Stmt } from "./Db.ts"
import { migrations, postgresMigrations } from "./Migrations.ts"
import { type ObjectBackend, S3Objects } from "./Objects.ts"

export interface ArtifactRow {
  readonly digest: string
  readonly kind: string
  readonly isDir: boolean
  readonly size: number
  readonly meta: unknown
}

export interface CacheEntry {
  readonly executionId: number
  readonly outputs: Readonly<Record<string, string>>
}

export interface ExecutionRecord {
  readonly runId: string
  readonly node: string
  readonly plugin: string
  readonly version: string
  readonly fingerprint: string
  readonly key: string | null
  readonly status: "ran" | "cached" | "failed" | "skipped" | "interrupted"
  readonly producedBy?: number
  readonly startedAt: number
  readonly finishedAt: number
  readonly ms: number
  readonly backend?: string
  readonly annotations?: unknown
  readonly error?: string
  readonly ingredients?: unknown
  readonly inputs?: ReadonlyArray<{ name: string; position: number; digest: string }>
  readonly outputs?: ReadonlyArray<{ name: string; digest: string }>
  /** For a source: its manifest, stored once per source digest. */
  readonly sourceFiles?: { readonly digest: string; readonly files: ReadonlyArray<ArtifactFile> }
  readonly log?: string
  readonly metrics?: ReadonlyArray<{ name: string; step: number | null; value: number; at: number }>
  /** Write a cache entry for `key` pointing at this execution's outputs. */
  readonly cache?: boolean
}

export interface StoredObject {
  readonly digest: string
  readonly size: number
  readonly isDir: boolean
  readonly entries: ReadonlyArray<ManifestEntry>
  /** A second copy of an object that was already present, kept until the rows are committed (putObject). */
  readonly spare?: string
}

interface CacheRow {
  readonly step_key: string
  readonly execution_id: number
  readonly outputs: string
  readonly digest: string | null
  readonly kind: string
  readonly is_dir: number
  readonly size: number
  readonly meta: string | null
}

export interface StatRow {
  readonly dev: number
  readonly ino: number
  readonly size: number
  readonly mtimeNs: bigint
  readonly ctimeNs: bigint
}

const HOST = os.hostname()

// Loading the addon by its path skips the `bindings` package's search of a dozen locations at start-up.
const require = createRequire(import.meta.url)
let nativeBinding: string | undefined
const binding = (): string | undefined => {
  if (nativeBinding !== undefined) return nativeBinding || undefined
  try {
    const pkg = path.dirname(require.resolve("better-sqlite3/package.json"))
    const p = path.join(pkg, "build", "Release", "better_sqlite3.node")
    nativeBinding = fs.existsSync(p) ? p : ""
  } catch {
    nativeBinding = ""
  }
  return nativeBinding || undefined
}
const openDb = (file: string, options: Database.Options = {}) => {
  const nb = binding()
  return new Database(file, nb === undefined ? options : { ...options, nativeBinding: nb })
}

const isBusy = (e: unknown): boolean => {
  const code = (e as { code?: unknown }).code
  return (typeof code === "string" && code.startsWith("SQLITE_BUSY")) || /database is locked/.test(String(e))
}

/**
 * Runs `f` again while SQLite answers busy. A store opened by two processes
 * at once can get SQLITE_BUSY without the busy handler being consulted
 * (switching a new database to WAL, a read upgraded to a write): waiting a
 * little and trying again is what the busy timeout would have done.
 */
/** Blocks this thread for `ms` (the store's calls are synchronous). */
export const sleepMs = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)

export const retryBusy = <A>(f: () => A, ms = 20_000): A => {
  const until = Date.now() + ms
  for (let wait = 5; ; wait = Math.min(wait * 2, 250)) {
    try {
      return f()
    } catch (e) {
      if (!isBusy(e) || Date.now() > until) throw e
      sleepMs(wait)
    }
  }
}

/** Where a shared store keeps its rows and its objects (core/cli/StoreArg.ts reads them from flags). */
export interface SharedStoreConfig {
  /** postgres://user@host:port/db */
  readonly database: string
  /** s3://bucket/prefix, or a directory every machine mounts (the objects go in its objects/). */
  readonly objects: string
  /** This machine's own directory: the read cache of objects, tmp/ and checkpoints/. */
  readonly local: string
}

export class Store {
  readonly db: Db
  readonly objectsDir: string
  readonly tmpDir: string
  readonly checkpointsDir: string
  /** Where objects live when not in objectsDir (a bucket); objectsDir is then this machine's read cache. */
  readonly remote: ObjectBackend | undefined

  private constructor(
    readonly dir: string,
    db: Db,
    places: { objectsDir?: string; tmpDir?: string; remote?: ObjectBackend } = {},
  ) {
    this.db = db
    this.objectsDir = places.objectsDir ?? path.join(dir, "objects")
    this.tmpDir = places.tmpDir ?? path.join(dir, "tmp")
    this.checkpointsDir = path.join(dir, "checkpoints")
    this.remote = places.remote
  }

  /** True for a store whose rows are in PostgreSQL (shared by machines). */
  get shared(): boolean {
    return this.db.dialect === "postgres"
  }

  /** The store in words, for messages: its directory, or its database and objects. */
  get where(): string {
    return this.shared
      ? `${this.db.where} with objects in ${this.remote?.where ?? this.objectsDir}`
      : this.dir
  }

  /** The SQLite handle of an embedded store (pragmas, its own checks); refused for a shared one. */
  get sqlite(): Database.Database {
    if (!(this.db instanceof SqliteDb)) throw new Error(`the store at ${this.where} is not SQLite`)
    return this.db.raw
  }

  static open(dir: string, options: { readonly readonly?: boolean } = {}): Store {
    if (options.readonly === true) {
      const file = path.join(dir, "db.sqlite")
      if (!fs.existsSync(file)) throw new Error(`no tunegraph store at ${dir} (no db.sqlite)`)
      const db = openDb(file, { readonly: true, fileMustExist: true })
      db.pragma("busy_timeout = 10000")
      return new Store(dir, new SqliteDb(db, file))
    }
    fs.mkdirSync(path.join(dir, "objects"), { recursive: true })
    fs.mkdirSync(path.join(dir, "tmp"), { recursive: true })
    const file = path.join(dir, "db.sqlite")
    const db = openDb(file)
    db.pragma("busy_timeout = 10000")
    retryBusy(() => {
      if (db.pragma("journal_mode", { simple: true }) !== "wal") db.pragma("journal_mode = WAL")
    })
    db.pragma("synchronous = NORMAL")
    db.pragma("foreign_keys = ON")
    const store = new Store(dir, new SqliteDb(db, file))
    retryBusy(() => store.migrate())
    retryBusy(() => store.reapCrashed())
    return store
  }

  /**
   * A shared store: rows in PostgreSQL, objects in a bucket (read through
   * this machine's cache in `local`/objects) or in a shared directory.
   * `migrate: false` opens a database `tunegraph store init` prepared
   * without touching its schema (a reader's role may not change it).
   */
  static openShared(config: SharedStoreConfig, options: { readonly migrate?: boolean } = {}): Store {
    const db = PostgresDb.connect(config.database)
    try {
      let places: { objectsDir?: string; tmpDir?: string; remote?: ObjectBackend }
      if (/^s3:\/\//.test(config.objects)) {
        places = { remote: S3Objects.open(db.remote, config.objects) }
      } else {
        const root = path.resolve(config.objects)
        places = { objectsDir: path.join(root, "objects"), tmpDir: path.join(root, "tmp") }
      }
      fs.mkdirSync(places.objectsDir ?? path.join(config.local, "objects"), { recursive: true })
      fs.mkdirSync(places.tmpDir ?? path.join(config.local, "tmp"), { recursive: true })
      const store = new Store(config.local, db, places)
      if (options.migrate !== false) store.migrate()
      else store.requireSchema()
      store.reapCrashed()
      return store
    } catch (e) {
      db.close()
      throw e
    }
  }

  /**
   * Marks as crashed the runs still shown as running whose process is gone
   * (same host: a run killed with kill -9, or a machine that lost power), so
   * no reader ever sees a dead run as running. Their end time is the last
   * moment the run is known to have been alive: its last recorded step.
   */
  reapCrashed(): number {
    // Another machine's run is dead when it stopped beating (a store shared by machines).
    const stale = this.sql(
      `UPDATE runs SET status = 'crashed', finished_at = coalesce(
         (SELECT max(coalesce(finished_at, started_at)) FROM executions WHERE run_id = runs.id), heartbeat_at)
       WHERE status = 'running' AND host != ? AND heartbeat_at IS NOT NULL AND heartbeat_at < ?`,
    ).run(HOST, Date.now() - LEASE_STALE_MS).changes
    const rows = this.sql("SELECT id, pid FROM runs WHERE status = 'running' AND host = ?").all(
      HOST,
    ) as Array<{
      id: string
      pid: number
    }>
    let n = stale
    for (const r of rows) {
      if (r.pid === process.pid || processAlive(r.pid)) continue
      n += this.sql(
        `UPDATE runs SET status = 'crashed', finished_at = coalesce(
           (SELECT max(coalesce(finished_at, started_at)) FROM executions WHERE run_id = runs.id), started_at)
         WHERE id = ? AND status = 'running'`,
      ).run(r.id).changes
    }
    return n
  }

  close() {
    this.flushChunkUses()
    this.db.close()
  }

  private readonly statements = new Map<string, Stmt>()
  /** A prepared statement, compiled once per store. */
  sql(text: string): Stmt {
    let st = this.statements.get(text)
    if (st === undefined) {
      st = this.db.prepare(text)
      this.statements.set(text, st)
    }
    return st
  }

  /** Brings the schema up to date (SQLite's user_version, or PostgreSQL's schema_migrations). */
  migrate() {
    if (this.db.dialect === "postgres") {
      // Up to date (the usual case): one query, no lock.
      if (this.schemaVersion() === postgresMigrations.length) return
      this.db.transaction(() => {
        // one process migrates at a time; the others wait here, then find nothing to do
        this.sql("SELECT pg_advisory_xact_lock(7262001)").get()
        this.db.exec(
          "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER NOT NULL, applied_at BIGINT NOT NULL)",
        )
        const now = Number(
          this.sql("SELECT coalesce(max(version), 0) AS v FROM schema_migrations").pluck().get(),
        )
        if (now > postgresMigrations.length)
          throw new Error(
            `the shared store at ${this.db.where} has schema ${now}, newer than this tunegraph knows (${postgresMigrations.length})`,
          )
        for (let i = now; i < postgresMigrations.length; i++) {
          this.db.exec(postgresMigrations[i]!)
          this.sql("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)").run(i + 1, Date.now())
        }
      })
      return
    }
    const db = this.sqlite
    const current = db.pragma("user_version", { simple: true }) as number
    if (current > migrations.length)
      throw new Error(
        `store ${this.dir} has schema ${current}, newer than this tunegraph knows (${migrations.length})`,
      )
    if (current === migrations.length) return
    // IMMEDIATE: two processes opening a new store at once must not both migrate.
    this.db.transaction(() => {
      const now = db.pragma("user_version", { simple: true }) as number
      for (let i = now; i < migrations.length; i++) {
        db.exec(migrations[i]!)
        db.pragma(`user_version = ${i + 1}`)
      }
    }, true)
  }

  /** The schema version a shared store's database has, 0 before `tunegraph store init`. */
  schemaVersion(): number {
    if (this.db.dialect === "sqlite") return this.sqlite.pragma("user_version", { simple: true }) as number
    const has = this.sql("SELECT to_regclass('schema_migrations') IS NOT NULL AS ok").pluck().get()
    if (has !== true) return 0
    return Number(this.sql("SELECT coalesce(max(version), 0) FROM schema_migrations").pluck().get())
  }

  private requireSchema() {
    const v = this.schemaVersion()
    if (v < postgresMigrations.length)
      throw new Error(
        `the shared store at ${this.db.where} is at schema ${v} of ${postgresMigrations.length}: run \`tunegraph store init\` first`,
      )
  }

  objectPath(digest: string): string {
    return path.join(this.objectsDir, digest.slice(0, 2), digest.slice(2))
  }

  // ---------------------------------------------------------------- cache

  lookup(key: string): CacheEntry | undefined {
    if (this.shared) return this.lookupShared(key)
    const row = this.sql("SELECT execution_id, outputs FROM step_cache WHERE step_key = ?").get(key) as
      | { execution_id: number; outputs: string }
      | undefined
    return row === undefined ? undefined : { executionId: row.execution_id, outputs: JSON.parse(row.outputs) }
  }

  /** Cache entries read ahead (a shared store's run reads those of its pipeline's last run at once); each serves one lookup. */
  private readonly prefetched = new Map<string, CacheEntry>()

  /**
   * A shared store: reads the cache entries of the keys the last finished run of
   * this pipeline used, with their outputs' rows, in one query, so that a
   * re-run's lookups are not a round trip each. The pipeline is the same file
   * where this checkout ran it before, else the pipeline of the same name run
   * from another checkout (a machine's first run). Only a hint: a key it did
   * not read is looked up alone. Called once the run is recorded as running:
   * gc keeps every cache entry while a run is in progress. Returns how many
   * entries it read ahead.
   */
  prefetchCache(pipelinePath: string, pipeline: string): number {
    if (!this.shared) return 0
    const last = (where: string) =>
      `(SELECT id FROM runs WHERE ${where} = ? AND status IN ('succeeded', 'failed') ORDER BY started_at DESC LIMIT 1)`
    const rows = this.sql(
      `SELECT c.step_key, c.execution_id, c.outputs, a.digest, a.kind, a.is_dir, a.size, a.meta FROM step_cache c
         JOIN (SELECT DISTINCT step_key FROM executions WHERE step_key IS NOT NULL
                 AND run_id = coalesce(${last("pipeline_path")}, ${last("pipeline")})) k ON k.step_key = c.step_key
         LEFT JOIN artifacts a ON a.digest IN (SELECT value FROM json_each_text(c.outputs::json))`,
    ).all(pipelinePath, pipeline) as CacheRow[]
    const entries = this.cacheRows(rows)
    for (const [key, entry] of entries) this.prefetched.set(key, entry)
    return entries.size
  }

  /** Cache entries from rows of an entry joined with its outputs' artifacts (whose rows are kept). */
  private cacheRows(rows: ReadonlyArray<CacheRow>): Map<string, CacheEntry> {
    const out = new Map<string, CacheEntry>()
    for (const r of rows) {
      if (!out.has(r.step_key))
        out.set(r.step_key, { executionId: r.execution_id, outputs: JSON.parse(r.outputs) })
      if (r.digest !== null)
        this.artifactRows.set(r.digest, {
          digest: r.digest,
          kind: r.kind,
          isDir: r.is_dir === 1,
          size: r.size,
          meta: r.meta === null ? null : JSON.parse(r.meta),
        })
    }
    return out
  }

  /** A shared store's lookup: the entry and its outputs' artifact rows in one round trip (the rows are kept). */
  private lookupShared(key: string): CacheEntry | undefined {
    const ahead = this.prefetched.get(key)
    if (ahead !== undefined) {
      this.prefetched.delete(key)
      return ahead
    }
    const rows = this.sql(
      `SELECT c.step_key, c.execution_id, c.outputs, a.digest, a.kind, a.is_dir, a.size, a.meta FROM step_cache c
         LEFT JOIN artifacts a ON a.digest IN (SELECT value FROM json_each_text(c.outputs::json))
         WHERE c.step_key = ?`,
    ).all(key) as CacheRow[]
    return this.cacheRows(rows).get(key)
  }

  /** Drops a cache entry whose objects are gone or damaged, so the step runs again. */
  forget(key: string) {
    this.prefetched.delete(key)
    this.sql("DELETE FROM step_cache WHERE step_key = ?").run(key)
  }

  /** Artifact rows already read (a digest's row never changes; a shared store's reads are round trips). */
  private readonly artifactRows = new Map<string, ArtifactRow>()

  artifact(digest: string): ArtifactRow | undefined {
    const known = this.artifactRows.get(digest)
    if (known !== undefined) return known
    const row = this.sql("SELECT digest, kind, is_dir, size, meta FROM artifacts WHERE digest = ?").get(
      digest,
    ) as { digest: string; kind: string; is_dir: number; size: number; meta: string | null } | undefined
    if (row === undefined) return undefined
    const art: ArtifactRow = {
      digest: row.digest,
      kind: row.kind,
      isDir: row.is_dir === 1,
      size: row.size,
      meta: row.meta === null ? null : JSON.parse(row.meta),
    }
    if (this.shared) this.artifactRows.set(digest, art)
    return art
  }

  artifactFiles(digest: string): ArtifactFile[] {
    const root = this.objectPath(digest)
    const rows = this.sql(
      "SELECT path, file_digest, size FROM artifact_files WHERE digest = ? ORDER BY path",
    ).all(digest) as Array<{ path: string; file_digest: string; size: number }>
    return rows.map((r) => ({
      path: r.path,
      abs: path.join(root, r.path),
      digest: r.file_digest,
      size: r.size,
    }))
  }

  /**
   * True when the object is on disk with the size recorded for it (cheap:
   * stats only), or, for a store whose objects are in a bucket, there with
   * the sizes of its files.
   */
  objectIntact(digest: string): boolean {
    const art = this.artifact(digest)
    if (art === undefined) return false
    // A bucket's object is there when its row is: the row is written only after the upload, and gc
    // deletes an object only after its row, under the lock recording takes. (verify asks the bucket.)
    return this.remote !== undefined || this.localIntact(digest, art)
  }

  /** True when the bucket holds every file of the object with its recorded size (a request per file). */
  remoteIntact(digest: string): boolean {
    const art = this.artifact(digest)
    return art !== undefined && this.remote?.present(digest, this.filesOf(digest, art)) === true
  }

  /** What a bucket needs to know of an object: its size, or its files' paths and sizes. */
  private filesOf(digest: string, art: { isDir: boolean; size: number }) {
    return {
      isDir: art.isDir,
      size: art.size,
      entries: art.isDir
        ? (this.sql("SELECT path, size FROM artifact_files WHERE digest = ? ORDER BY path").all(
            digest,
          ) as Array<{
            path: string
            size: number
          }>)
        : [],
    }
  }

  /**
   * Makes a stored object readable at objectPath on this machine: for a
   * store whose objects are in a bucket, downloads it into this machine's
   * cache once (checked against its digest, read-only like any object).
   * Digests the store holds no object for (sources) are left alone.
   */
  materialize(digest: string) {
    if (this.remote === undefined) return
    const art = this.artifact(digest)
    if (art === undefined || this.localIntact(digest, art)) return
    const tmp = this.makeTmp("fetch")
    try {
      const dest = path.join(tmp, "object")
      const files = this.filesOf(digest, art)
      const modes = new Map<string, number>()
      if (art.isDir) {
        for (const r of this.sql("SELECT path, mode FROM artifact_files WHERE digest = ?").all(
          digest,
        ) as Array<{
          path: string
          mode: number
        }>) {
          modes.set(r.path, r.mode)
          fs.mkdirSync(path.dirname(path.join(dest, r.path)), { recursive: true })
        }
        fs.mkdirSync(dest, { recursive: true })
      }
      try {
        this.remote.pull(digest, dest, files)
      } catch (e) {
        throw new Error(
          `object ${digest} (${art.kind}) is recorded but could not be read from ${this.remote.where}: ${(e as Error).message.replace(/^[^:]*:\/\/[^:]*: /, "")} (tunegraph verify lists what is missing)`,
        )
      }
      for (const [rel, mode] of modes) if (mode === 755) fs.chmodSync(path.join(dest, rel), 0o755)
      const h = art.isDir ? hashDirSync(dest) : hashFileSync(dest)
      if (h.digest !== digest)
        throw new Error(
          `object ${digest} from ${this.remote.where} is damaged: its content hashes to ${h.digest} (run tunegraph verify)`,
        )
      const stored: StoredObject = {
        digest,
        size: h.size,
        isDir: art.isDir,
        entries: "entries" in h ? (h.entries as ReadonlyArray<ManifestEntry>) : [],
      }
      const final = this.objectPath(digest)
      if (fs.existsSync(final)) removeTree(final)
      this.place(dest, stored)
    } finally {
      removeTree(tmp)
    }
  }

  /** The object is in this machine's objects/ with the sizes recorded for it. */
  private localIntact(digest: string, art: ArtifactRow): boolean {
    const p = this.objectPath(digest)
    try {
      if (!art.isDir) {
        const st = fs.statSync(p)
        return st.isFile() && st.size === art.size
      }
      for (const f of this.artifactFiles(digest)) {
        const st = fs.statSync(f.abs)
        if (!st.isFile() || st.size !== f.size) return false
      }
      return fs.statSync(p).isDirectory()
    } catch {
      return false
    }
  }

  // ---------------------------------------------------------------- objects

  /** A fresh private directory under tmp/, named after this process so a dead one's can be swept. */
  makeTmp(label: string): string {
    const dir = path.join(
      this.tmpDir,
      `${process.pid}-${randomBytes(4).toString("hex")}-${label.replace(/[^\w.-]/g, "_")}`,
    )
    fs.mkdirSync(dir, { recursive: true })
    return dir
  }

  /** Removes tmp/ entries left by processes that are gone (killed mid-step). */
  sweepTmp() {
    let names: string[]
    try {
      names = fs.readdirSync(this.tmpDir)
    } catch {
      return
    }
    for (const name of names) {
      const pid = Number(name.split("-")[0])
      if (Number.isInteger(pid) && pid > 0 && !processAlive(pid)) removeTree(path.join(this.tmpDir, name))
    }
  }

  /**
   * Moves a finished output (file or directory) into objects/ under its digest:
   * fsync every file, make it read-only, rename into place. Where an intact
   * object is there already, the new copy stays where it is as the object's
   * `spare` until `record` has committed the rows: gc may be deleting that
   * very object meanwhile (it had no row), and the spare then takes its place.
   */
  putObject(src: string, known?: ReadonlyMap<string, KnownFile>): StoredObject {
    const st = fs.statSync(src)
    let stored: StoredObject
    if (st.isDirectory()) {
      // a hard link to a stored object's file is durable and hashed already: neither is done again
      const h = hashDirSync(src, known)
      for (const rel of h.read) fsyncFile(path.join(src, rel))
      stored = { digest: h.digest, size: h.size, isDir: true, entries: h.entries }
    } else if (st.isFile()) {
      fsyncFile(src)
      const h = hashFileSync(src)
      stored = { digest: h.digest, size: h.size, isDir: false, entries: [] }
    } else throw new Error(`output ${src} is neither a file nor a directory`)
    const dest = this.objectPath(stored.digest)
    if (fs.existsSync(dest) && intactOnDisk(dest, stored)) stored = { ...stored, spare: src }
    else {
      if (fs.existsSync(dest)) removeTree(dest)
      this.place(src, stored)
    }
    // A bucket gets the object before the transaction that records it.
    this.remote?.push(stored.digest, stored.spare ?? dest, stored)
    return stored
  }

  /**
   * Runs `f`, the one transaction that records `objects`, where the objects
   * are in a bucket: under a lock per digest that gc takes too before it
   * deletes one, each object is checked to be in the bucket, and pushed
   * again (the transaction retried) where gc took it since it was pushed.
   */
  private commitObjects<A>(objects: ReadonlyArray<StoredObject>, f: () => A): A {
    const remote = this.remote
    if (remote === undefined || objects.length === 0) return this.db.transaction(f, true)
    const digests = [...new Set(objects.map((o) => o.digest))].sort()
    for (let attempt = 1; ; attempt++) {
      const gone: StoredObject[] = []
      const a = this.db.transaction(() => {
        for (const d of digests) this.sql("SELECT pg_advisory_xact_lock(hashtextextended(?, 0))").get(d)
        for (const o of objects) if (!remote.present(o.digest, o)) gone.push(o)
        return gone.length === 0 ? f() : undefined
      }, true)
      if (gone.length === 0) return a as A
      if (attempt >= 5) throw new Error(`objects keep disappearing from ${remote.where} while being recorded`)
      for (const o of gone) remote.push(o.digest, o.spare ?? this.objectPath(o.digest), o)
    }
  }

  /** Renames a hashed, fsynced copy into objects/: read-only all the way down, every directory durable. */
  private place(src: string, stored: StoredObject) {
    const dest = this.objectPath(stored.digest)
    const shard = path.dirname(dest)
    if (!fs.existsSync(shard)) {
      fs.mkdirSync(shard, { recursive: true })
      durability.fsyncDir(this.objectsDir)
    }
    // Inner directories: read-only, and their entries durable before the rename publishes them.
    const dirs = stored.isDir ? innerDirs(src) : []
    makeReadOnly(src, stored.isDir)
    for (const d of dirs) {
      durability.fsyncDir(d)
      fs.chmodSync(d, 0o555)
    }
    if (stored.isDir) durability.fsyncDir(src)
    fs.renameSync(src, dest)
    // The root last: renaming a directory into another parent needs it writable.
    if (stored.isDir) fs.chmodSync(dest, 0o555)
    durability.fsyncDir(shard)
  }

  /**
   * After the rows are committed: an object found already present is checked
   * again, and put back from its spare if gc took it in between; the spare is
   * dropped otherwise. gc checks for a row after moving an object away, and
   * this checks for the object after writing the row, so one of the two sees
   * the other and no row is left pointing at a missing object.
   */
  private settle(obj: StoredObject) {
    if (obj.spare === undefined) return
    const dest = this.objectPath(obj.digest)
    if (intactOnDisk(dest, obj)) {
      removeTree(obj.spare)
      return
    }
    if (fs.existsSync(dest)) removeTree(dest)
    this.place(obj.spare, obj)
  }

  // ---------------------------------------------------------------- runs & executions

  beginRun(run: { id: string; pipeline: string; pipelinePath: string; argv: ReadonlyArray<string> }) {
    this.sql(
      "INSERT INTO runs (id, pipeline, pipeline_path, started_at, status, argv, pid, host, heartbeat_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
    ).run(
      run.id,
      run.pipeline,
      run.pipelinePath,
      Date.now(),
      JSON.stringify(run.argv),
      process.pid,
      HOST,
      Date.now(),
    )
  }

  /** A running run says it is alive (every 10 s): other machines reap it as crashed when it stops. */
  runHeartbeat(id: string) {
    this.sql("UPDATE runs SET heartbeat_at = ? WHERE id = ? AND status = 'running'").run(Date.now(), id)
  }

  finishRun(id: string, status: "succeeded" | "failed" | "interrupted") {
    this.sql("UPDATE runs SET status = ?, finished_at = ? WHERE id = ?").run(status, Date.now(), id)
  }

  /** Records artifacts, one execution and its edges, and the cache entry, in one transaction. */
  record(
    exec: ExecutionRecord,
    artifacts: ReadonlyArray<{ object: StoredObject; kind: string; meta: unknown }> = [],
  ): number {
    const id = this.commitObjects(
      artifacts.map((a) => a.object),
      () => this.recordUnsafe(exec, artifacts),
    )
    for (const a of artifacts) this.settle(a.object)
    return id
  }

  /** Many executions at once (the cached steps of a no-op run). */
  recordMany(all: ReadonlyArray<ExecutionRecord>) {
    let execs = all
    if (execs.length === 0) return
    if (this.db instanceof PostgresDb) {
      // One round trip: each execution and its edges in one statement, all in one transaction
      // (a source's, with its manifest, the usual way).
      const rest = execs.filter((e) => !batchable(e))
      const batch = execs.filter(batchable)
      // one statement needs a node per run at most once; a repeat goes the usual way
      const seen = new Set<string>()
      const once = batch.filter((e) => {
        const k = `${e.runId}\0${e.node}`
        if (seen.has(k)) return false
        seen.add(k)
        return true
      })
      if (once.length > 0) this.db.batch([executionsStatement(once)])
      rest.push(...batch.filter((e) => !once.includes(e)))
      if (rest.length === 0) return
      execs = rest
    }
    this.db.transaction(() => {
      for (const e of execs) this.recordUnsafe(e, [])
    }, true)
  }

  private recordUnsafe(
    exec: ExecutionRecord,
    artifacts: ReadonlyArray<{ object: StoredObject; kind: string; meta: unknown }>,
  ): number {
    const now = Date.now()
    for (const a of artifacts) this.insertArtifact(a, now)
    const info = this.sql(
      `INSERT INTO executions (run_id, node, plugin, plugin_version, fingerprint, step_key, status, produced_by,
           started_at, finished_at, ms, backend, annotations, error, ingredients)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    ).run(
      exec.runId,
      exec.node,
      exec.plugin,
      exec.version,
      exec.fingerprint,
      exec.key,
      exec.status,
      exec.producedBy ?? null,
      exec.startedAt,
      exec.finishedAt,
      exec.ms,
      exec.backend ?? null,
      exec.annotations === undefined ? null : JSON.stringify(exec.annotations),
      exec.error ?? null,
      exec.ingredients === undefined ? null : JSON.stringify(exec.ingredients),
    )
    const id = Number(info.lastInsertRowid)
    if (exec.inputs !== undefined && exec.inputs.length > 0) {
      const ins = this.sql(
        "INSERT INTO execution_inputs (execution_id, name, position, digest) VALUES (?, ?, ?, ?)",
      )
      for (const i of exec.inputs) ins.run(id, i.name, i.position, i.digest)
    }
    if (exec.outputs !== undefined && exec.outputs.length > 0) {
      const ins = this.sql("INSERT INTO execution_outputs (execution_id, name, digest) VALUES (?, ?, ?)")
      for (const o of exec.outputs) ins.run(id, o.name, o.digest)
    }
    if (exec.sourceFiles !== undefined) {
      const known = this.sql("SELECT 1 FROM source_files WHERE digest = ? LIMIT 1").get(
        exec.sourceFiles.digest,
      )
      if (known === undefined) {
        const ins = this.sql(
          "INSERT OR IGNORE INTO source_files (digest, path, file_digest, size) VALUES (?, ?, ?, ?)",
        )
        for (const f of exec.sourceFiles.files) ins.run(exec.sourceFiles.digest, f.abs, f.digest, f.size)
      }
    }
    if (exec.log !== undefined && exec.log.length > 0)
      this.sql("INSERT INTO logs (execution_id, text) VALUES (?, ?)").run(id, exec.log)
    if (exec.metrics !== undefined && exec.metrics.length > 0) {
      const ins = this.sql("INSERT INTO metrics (execution_id, name, step, value, at) VALUES (?, ?, ?, ?, ?)")
      for (const m of exec.metrics) ins.run(id, m.name, m.step, m.value, m.at)
    }
    if (exec.cache === true && exec.key !== null && exec.outputs !== undefined) {
      const outs: Record<string, string> = {}
      for (const o of exec.outputs) outs[o.name] = o.digest
      this.sql(
        "INSERT OR REPLACE INTO step_cache (step_key, execution_id, outputs, created_at) VALUES (?, ?, ?, ?)",
      ).run(exec.key, id, JSON.stringify(outs), now)
    }
    return id
  }

  private insertArtifact(a: { object: StoredObject; kind: string; meta: unknown }, now: number) {
    this.sql(
      "INSERT OR IGNORE INTO artifacts (digest, kind, is_dir, size, meta, created_at) VALUES (?, ?, ?, ?, ?, ?)",
    ).run(
      a.object.digest,
      a.kind,
      a.object.isDir ? 1 : 0,
      a.object.size,
      a.meta === undefined ? null : JSON.stringify(a.meta),
      now,
    )
    const insFile = this.sql(
      "INSERT OR IGNORE INTO artifact_files (digest, path, mode, file_digest, size) VALUES (?, ?, ?, ?, ?)",
    )
    for (const e of a.object.entries) insFile.run(a.object.digest, e.path, e.mode, e.digest, e.size)
  }

  // ---------------------------------------------------------------- chunks (core/Chunks.ts)

  /**
   * The stored result of a chunk, when its object is intact; records that
   * `runId`'s `node` used it (gc keeps what kept runs used), in batches: a
   * use not yet written when the process dies only means that gc may
   * collect an entry the dead run had reused. An entry whose object is gone
   * or damaged is dropped, so the chunk is computed again.
   */
  chunkLookup(key: string, runId: string, node: string): string | undefined {
    const found = this.chunkFind(key)
    if (found === undefined) return undefined
    if (!found.intact) {
      this.sql("DELETE FROM chunks WHERE chunk_key = ?").run(key)
      return undefined
    }
    this.pendingUses.push([runId, node, key])
    if (this.pendingUses.length >= 256) this.flushChunkUses()
    this.materialize(found.digest)
    return this.objectPath(found.digest)
  }

  private pendingUses: Array<[string, string, string]> = []

  /** Writes the chunk uses recorded since the last flush (chunkCommit and the end of a step flush too). */
  flushChunkUses() {
    if (this.pendingUses.length === 0) return
    const uses = this.pendingUses
    this.pendingUses = []
    const ins = this.sql("INSERT OR IGNORE INTO chunk_uses (run_id, node, chunk_key) VALUES (?, ?, ?)")
    this.db.transaction(() => {
      for (const u of uses) ins.run(...u)
    })
  }

  /** A chunk entry's object and whether it is on disk with its recorded size (stats only). */
  private chunkFind(key: string): { digest: string; intact: boolean } | undefined {
    const row = this.sql(
      "SELECT c.digest, a.is_dir, a.size FROM chunks c LEFT JOIN artifacts a ON a.digest = c.digest WHERE c.chunk_key = ?",
    ).get(key) as { digest: string; is_dir: number | null; size: number | null } | undefined
    if (row === undefined) return undefined
    if (row.is_dir === null) return { digest: row.digest, intact: false }
    if (row.is_dir === 1) return { digest: row.digest, intact: this.objectIntact(row.digest) }
    try {
      const st = fs.statSync(this.objectPath(row.digest))
      if (st.isFile() && st.size === row.size) return { digest: row.digest, intact: true }
    } catch {
      // not on this machine
    }
    return { digest: row.digest, intact: this.remote !== undefined }
  }

  /** A chunk entry's stored path when its object is intact, recording nothing (for `plan`). */
  chunkPeek(key: string): string | undefined {
    const found = this.chunkFind(key)
    return found?.intact === true ? this.objectPath(found.digest) : undefined
  }

  /**
   * Commits one chunk's result (a file or directory the step wrote): the
   * object first, then its artifact row, the chunk entry and this run's use
   * of it in one transaction, as `record` does for a step's outputs.
   */
  chunkCommit(key: string, src: string, step: string, runId: string, node: string): string {
    const object = this.putObject(src)
    this.flushChunkUses()
    this.commitObjects([object], () => {
      const now = Date.now()
      this.insertArtifact({ object, kind: "Chunk", meta: null }, now)
      this.sql("INSERT OR REPLACE INTO chunks (chunk_key, digest, step, created_at) VALUES (?, ?, ?, ?)").run(
        key,
        object.digest,
        step,
        now,
      )
      this.sql("INSERT OR IGNORE INTO chunk_uses (run_id, node, chunk_key) VALUES (?, ?, ?)").run(
        runId,
        node,
        key,
      )
    })
    this.settle(object)
    return this.objectPath(object.digest)
  }

  /**
   * Hard-links file `name` of a stored chunk result directory (a path chunkLookup
   * or chunkCommit returned) to `dest`, and returns what the store knows of it,
   * so the output it joins is not read or fsynced again (putObject `known`).
   */
  chunkLink(stored: string, name: string, dest: string): KnownFile {
    const rel = path.relative(this.objectsDir, stored)
    const digest = rel.split(path.sep).join("")
    const row = this.sql("SELECT file_digest, size FROM artifact_files WHERE digest = ? AND path = ?").get(
      digest,
      name,
    ) as { file_digest: string; size: number } | undefined
    if (row === undefined) throw new Error(`${stored}: the store has no file "${name}" in this chunk result`)
    fs.linkSync(path.join(stored, name), dest)
    const st = fs.statSync(dest)
    if (st.size !== row.size)
      throw new Error(`${path.join(stored, name)}: ${st.size} bytes on disk, the store recorded ${row.size}`)
    return { digest: row.file_digest, size: row.size, dev: st.dev, ino: st.ino }
  }

  /** The latest execution of a key that ran or failed in a run since `since` (ms): what a remote worker recorded. */
  executionSince(
    runId: string,
    node: string,
    key: string,
    since: number,
  ): { id: number; status: "ran" | "failed"; error?: string } | undefined {
    const row = this.sql(
      `SELECT id, status, error FROM executions WHERE run_id = ? AND node = ? AND step_key = ?
         AND status IN ('ran', 'failed') AND started_at >= ? ORDER BY id DESC LIMIT 1`,
    ).get(runId, node, key, since) as
      | { id: number; status: "ran" | "failed"; error: string | null }
      | undefined
    if (row === undefined) return undefined
    return { id: row.id, status: row.status, ...(row.error === null ? {} : { error: row.error }) }
  }

  /** Adds fields to an execution's annotations (where a remote executor ran it). */
  annotateExecution(id: number, fields: Readonly<Record<string, unknown>>) {
    this.db.transaction(() => {
      const row = this.sql("SELECT annotations FROM executions WHERE id = ?").get(id) as
        | { annotations: string | null }
        | undefined
      if (row === undefined) return
      const now = row.annotations === null ? {} : (JSON.parse(row.annotations) as Record<string, unknown>)
      this.sql("UPDATE executions SET annotations = ? WHERE id = ?").run(
        JSON.stringify({ ...now, ...fields }),
        id,
      )
    }, true)
  }

  /** The output digests of the most recent successful execution of a node. */
  lastOutputs(node: string): Record<string, string> | undefined {
    const rows = this.sql(
      `SELECT o.name, o.digest FROM execution_outputs o WHERE o.execution_id =
           (SELECT id FROM executions WHERE node = ? AND status IN ('ran','cached') ORDER BY id DESC LIMIT 1)`,
    ).all(node) as Array<{ name: string; digest: string }>
    if (rows.length === 0) return undefined
    return Object.fromEntries(rows.map((r) => [r.name, r.digest]))
  }

  /** The most recent execution of a node that computed or reused a key (for `plan` to explain a miss). */
  lastIngredients(node: string): { key: string; ingredients: unknown } | undefined {
    const row = this.sql(
      "SELECT step_key, ingredients FROM executions WHERE node = ? AND ingredients IS NOT NULL AND status IN ('ran','cached') ORDER BY id DESC LIMIT 1",
    ).get(node) as { step_key: string; ingredients: string } | undefined
    return row === undefined ? undefined : { key: row.step_key, ingredients: JSON.parse(row.ingredients) }
  }

  // ---------------------------------------------------------------- stat cache

  /** A stat entry's key: the path, and in a shared store the machine too (each has its own files). */
  statKey(file: string): string {
    return this.shared ? `${HOST}:${file}` : file
  }

  statLookup(file: string, st: StatRow): string | undefined {
    const row = this.sql(
      "SELECT dev, ino, size, mtime_ns, ctime_ns, digest, racy FROM stat_cache WHERE path = ?",
    ).get(this.statKey(file)) as
      | {
          dev: number
          ino: number
          size: number
          mtime_ns: string
          ctime_ns: string
          digest: string
          racy: number
        }
      | undefined
    if (row === undefined || row.racy === 1) return undefined
    if (
      row.dev !== st.dev ||
      row.ino !== st.ino ||
      row.size !== st.size ||
      row.mtime_ns !== String(st.mtimeNs) ||
      row.ctime_ns !== String(st.ctimeNs)
    )
      return undefined
    return row.digest
  }

  /**
   * Remembers a file's digest under its stat. A file modified within the
   * timestamp granularity before now could change again without its mtime
   * moving, so such an entry is marked racy and re-hashed next time.
   */
  statRemember(file: string, st: StatRow, digest: string, nowNs: bigint) {
    const racy = nowNs - st.mtimeNs < RACY_WINDOW_NS ? 1 : 0
    this.sql(
      "INSERT OR REPLACE INTO stat_cache (path, dev, ino, size, mtime_ns, ctime_ns, digest, racy) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    ).run(this.statKey(file), st.dev, st.ino, st.size, String(st.mtimeNs), String(st.ctimeNs), digest, racy)
  }

  /** Keeps the line index made while a file with this digest was hashed (core/Chunks.ts LineIndex). */
  lineIndexRemember(digest: string, index: LineIndex) {
    this.sql(
      "INSERT OR REPLACE INTO line_indexes (digest, target, data, created_at) VALUES (?, ?, ?, ?)",
    ).run(digest, index.target, JSON.stringify(index), Date.now())
  }

  /** The line index of a file's digest at a chunk target, if it was made. */
  lineIndex(digest: string, target: number): LineIndex | undefined {
    const data = this.sql("SELECT data FROM line_indexes WHERE digest = ? AND target = ?")
      .pluck()
      .get(digest, target) as string | undefined
    return data === undefined ? undefined : (JSON.parse(data) as LineIndex)
  }

  // ---------------------------------------------------------------- leases

  /**
   * Takes the lease on a step key, or reports who holds it. A lease whose
   * process is gone (same host) or that stopped beating is taken over.
   */
  tryLease(key: string, runId: string): { ok: true } | { ok: false; holder: string } {
    const now = Date.now()
    return this.db.transaction(() => {
      // PostgreSQL: a lock on the key itself, held to the end of the transaction (the row may not exist yet)
      if (this.shared) this.sql("SELECT pg_advisory_xact_lock(hashtextextended(?, 1))").get(key)
      const row = this.sql("SELECT run_id, pid, host, heartbeat_at FROM leases WHERE step_key = ?").get(
        key,
      ) as { run_id: string; pid: number; host: string; heartbeat_at: number } | undefined
      if (row !== undefined) {
        const mine = row.pid === process.pid && row.host === HOST && row.run_id === runId
        const dead = (row.host === HOST && !processAlive(row.pid)) || now - row.heartbeat_at > LEASE_STALE_MS
        if (!mine && !dead)
          return { ok: false as const, holder: `run ${row.run_id} (pid ${row.pid} on ${row.host})` }
      }
      this.sql(
        "INSERT OR REPLACE INTO leases (step_key, run_id, pid, host, acquired_at, heartbeat_at) VALUES (?, ?, ?, ?, ?, ?)",
      ).run(key, runId, process.pid, HOST, now, now)
      return { ok: true as const }
    }, true)
  }

  heartbeat(keys: ReadonlyArray<string>) {
    const st = this.sql("UPDATE leases SET heartbeat_at = ? WHERE step_key = ? AND pid = ? AND host = ?")
    const now = Date.now()
    this.db.transaction(() => {
      for (const k of keys) st.run(now, k, process.pid, HOST)
    }, true)
  }

  releaseLease(key: string, runId: string) {
    this.sql("DELETE FROM leases WHERE step_key = ? AND run_id = ? AND pid = ? AND host = ?").run(
      key,
      runId,
      process.pid,
      HOST,
    )
  }
}

/** An execution whose rows are the execution, its inputs and outputs only (a cached step's). */
const batchable = (e: ExecutionRecord) =>
  e.sourceFiles === undefined &&
  (e.log === undefined || e.log.length === 0) &&
  (e.metrics === undefined || e.metrics.length === 0) &&
  e.cache !== true

/**
 * PostgreSQL: executions with their inputs and outputs, all in one statement (data-modifying CTEs
 * over a JSON array). Each has a node of its own in its run, which ties the ids back to them.
 */
const executionsStatement = (execs: ReadonlyArray<ExecutionRecord>): { text: string; params: unknown[] } => ({
  text: `WITH x AS (
      SELECT * FROM json_to_recordset($1::json) AS x(i int, run_id text, node text, plugin text, plugin_version text,
        fingerprint text, step_key text, status text, produced_by bigint, started_at bigint, finished_at bigint,
        ms double precision, backend text, annotations text, error text, ingredients text, inputs json, outputs json)),
    e AS (INSERT INTO executions (run_id, node, plugin, plugin_version, fingerprint, step_key, status, produced_by,
        started_at, finished_at, ms, backend, annotations, error, ingredients)
      SELECT run_id, node, plugin, plugin_version, fingerprint, step_key, status, produced_by, started_at,
        finished_at, ms, backend, annotations, error, ingredients FROM x ORDER BY i
      RETURNING id, run_id, node),
    i AS (INSERT INTO execution_inputs (execution_id, name, position, digest)
      SELECT e.id, y.name, y.position, y.digest FROM e JOIN x ON x.run_id = e.run_id AND x.node = e.node,
        json_to_recordset(x.inputs) AS y(name text, position int, digest text))
    INSERT INTO execution_outputs (execution_id, name, digest)
      SELECT e.id, y.name, y.digest FROM e JOIN x ON x.run_id = e.run_id AND x.node = e.node,
        json_to_recordset(x.outputs) AS y(name text, digest text)`,
  params: [
    JSON.stringify(
      execs.map((e, i) => ({
        i,
        run_id: e.runId,
        node: e.node,
        plugin: e.plugin,
        plugin_version: e.version,
        fingerprint: e.fingerprint,
        step_key: e.key,
        status: e.status,
        produced_by: e.producedBy ?? null,
        started_at: e.startedAt,
        finished_at: e.finishedAt,
        ms: e.ms,
        backend: e.backend ?? null,
        annotations: e.annotations === undefined ? null : JSON.stringify(e.annotations),
        error: e.error ?? null,
        ingredients: e.ingredients === undefined ? null : JSON.stringify(e.ingredients),
        inputs: e.inputs ?? [],
        outputs: e.outputs ?? [],
      })),
    ),
  ],
})

export const RACY_WINDOW_NS = 2_000_000_000n
export const LEASE_STALE_MS = 120_000

export const processAlive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return true
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"
  }
}

export const removeTree = (p: string) => {
  try {
    fs.rmSync(p, { recursive: true, force: true })
  } catch {
    // read-only directories: make them writable, then retry
    makeWritable(p)
    fs.rmSync(p, { recursive: true, force: true })
  }
}

const makeWritable = (p: string) => {
  try {
    const st = fs.lstatSync(p)
    if (st.isDirectory()) {
      fs.chmodSync(p, 0o755)
      for (const n of fs.readdirSync(p)) makeWritable(path.join(p, n))
    }
  } catch {
    // already gone
  }
}

const fsyncFile = (file: string) => {
  const fd = fs.openSync(file, "r")
  try {
    fs.fsyncSync(fd)
  } finally {
    fs.closeSync(fd)
  }
}

/** Every directory below `root` (not `root` itself), deepest first. */
const innerDirs = (root: string): string[] => {
  const out: string[] = []
  const walk = (dir: string) => {
    for (const d of fs.readdirSync(dir, { withFileTypes: true }))
      if (d.isDirectory()) {
        const abs = path.join(dir, d.name)
        walk(abs)
        out.push(abs)
      }
  }
  walk(root)
  return out
}

/** How directories are made durable; a test may watch which ones are. */
export const durability = {
  fsyncDir: (dir: string) => fsyncDir(dir),
}

const fsyncDir = (dir: string) => {
  try {
    const fd = fs.openSync(dir, "r")
    try {
      fs.fsyncSync(fd)
    } finally {
      fs.closeSync(fd)
    }
  } catch {
    // not supported on every file system
  }
}

const makeReadOnly = (p: string, isDir: boolean) => {
  if (!isDir) {
    fs.chmodSync(p, 0o444)
    return
  }
  for (const rel of listFiles(p)) {
    const abs = path.join(p, rel)
    fs.chmodSync(abs, modeOf(fs.statSync(abs)) === 755 ? 0o555 : 0o444)
  }
}

const intactOnDisk = (dest: string, obj: StoredObject): boolean => {
  try {
    if (!obj.isDir) return fs.statSync(dest).size === obj.size
    return obj.entries.every((e) => fs.statSync(path.join(dest, e.path)).size === e.size)
  } catch {
    return false
  }
}

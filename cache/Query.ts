/**
 * `tunegraph query`: read-only SQL over the documented views.
 *
 * Three locks, each enough on its own: the database is opened read-only,
 * `query_only` is on, and a statement is refused before it runs unless it
 * is a single read (SELECT, WITH ... SELECT, VALUES, EXPLAIN, or an
 * introspection PRAGMA) that SQLite itself reports as read-only.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import Database from "better-sqlite3"
import { PostgresDb } from "./Db.ts"
import { migrations } from "./Migrations.ts"
import { Store } from "./Store.ts"

export class QueryError extends Error {
  override readonly name = "QueryError"
}

/** The public views: stable names and columns, whatever the tables underneath become. */
export const VIEWS: ReadonlyArray<{ readonly name: string; readonly doc: string }> = [
  {
    name: "runs",
    doc: "one row per run: run, pipeline, pipeline_path, status (running|succeeded|failed|interrupted|crashed), started, started_at, finished_at, ms, argv (JSON), host, pid, steps, ran, cached, failed",
  },
  {
    name: "executions",
    doc: "one row per step of a run: execution, run, node, plugin, version, fingerprint, step_key, status (ran|cached|failed|skipped|interrupted), cached, produced_by, computed_by, started, started_at, finished_at, ms, backend, error, params (JSON), ingredients (JSON), annotations (JSON)",
  },
  {
    name: "outputs",
    doc: "what each execution produced: execution, run, node, output, digest, kind, size, status",
  },
  {
    name: "artifacts",
    doc: "objects in the store: digest, kind, is_dir, size, meta (JSON), created, produced_by, run, node, output (of the execution that computed it), pinned",
  },
  {
    name: "lineage_edges",
    doc: "input artifact -> step -> output artifact: from_digest, from_node, input, position, execution, run, node, plugin, status, output, to_digest",
  },
  {
    name: "metrics",
    doc: "metric points per run and node (a cached step shows the points of the execution that computed it): run, node, execution, computed_by, name, step, value, at",
  },
  {
    name: "sources",
    doc: "files read by source nodes: run, node, execution, source_digest, path, file_digest, size",
  },
  { name: "logs", doc: "step logs: run, node, execution, computed_by, text" },
  { name: "pins", doc: "pinned artifacts (kept by gc): digest, note, created" },
]

const ALLOWED = new Set(["SELECT", "WITH", "VALUES", "EXPLAIN", "PRAGMA"])
// Introspection only: a PRAGMA that sets something is refused even where SQLite calls it read-only.
const READ_PRAGMAS = new Set([
  "table_info",
  "table_xinfo",
  "table_list",
  "index_list",
  "index_info",
  "index_xinfo",
  "foreign_key_list",
  "database_list",
  "collation_list",
  "function_list",
  "pragma_list",
  "compile_options",
  "user_version",
  "schema_version",
])
const PRAGMAS_WITH_ARGUMENT = new Set([
  "table_info",
  "table_xinfo",
  "index_list",
  "index_info",
  "index_xinfo",
  "foreign_key_list",
])

/** The first keyword of a statement, past comments and whitespace. */
export const firstKeyword = (sql: string): string => {
  let s = sql
  for (;;) {
    s = s.trimStart()
    if (s.startsWith("--")) s = s.slice(s.indexOf("\n") < 0 ? s.length : s.indexOf("\n"))
    else if (s.startsWith("/*")) s = s.slice(s.indexOf("*/") < 0 ? s.length : s.indexOf("*/") + 2)
    else break
  }
  return (/^[A-Za-z]+/.exec(s)?.[0] ?? s.slice(0, 12)).toUpperCase()
}

const refuse = (what: string) =>
  new QueryError(
    `tunegraph query is read-only: ${what} is not allowed. Use SELECT over the views (${VIEWS.map((v) => v.name).join(", ")}).`,
  )

export interface QueryResult {
  readonly columns: ReadonlyArray<string>
  readonly rows: ReadonlyArray<ReadonlyArray<unknown>>
}

interface Reader {
  run(sql: string, keyword: string, params: ReadonlyArray<unknown>): QueryResult
  close(): void
}

export class QueryConnection {
  private constructor(private readonly reader: Reader) {}

  static open(storeDir: string): QueryConnection {
    const file = path.join(storeDir, "db.sqlite")
    if (!fs.existsSync(file)) throw new QueryError(`no tunegraph store at ${storeDir}: run a pipeline first`)
    // A store made by an older tunegraph gets the views first (the only write, through the migrations).
    const probe = new Database(file, { readonly: true, fileMustExist: true })
    const version = probe.pragma("user_version", { simple: true }) as number
    probe.close()
    if (version < migrations.length) Store.open(storeDir).close()
    else
      try {
        // Runs whose process is gone read as crashed, never as running.
        Store.open(storeDir).close()
      } catch {
        // a store this user may only read: shown as recorded
      }
    const db = new Database(file, { readonly: true, fileMustExist: true })
    db.pragma("busy_timeout = 10000")
    // The short names shadow the tables for this connection only (temp schema is searched first).
    for (const v of VIEWS) db.exec(`CREATE TEMP VIEW ${v.name} AS SELECT * FROM main.v_${v.name}`)
    db.pragma("query_only = ON")
    return new QueryConnection(sqliteReader(db))
  }

  /**
   * Queries on a shared store's database: each statement in a READ ONLY
   * transaction, as the role READER_ROLE (`tunegraph store init` makes it,
   * with SELECT on the views only) when this login may take it.
   */
  static openShared(store: Store): QueryConnection {
    const db = store.db
    if (!(db instanceof PostgresDb)) throw new QueryError(`${store.where} is not a shared store`)
    const q = (sql: string) => db.remote.call<{ rows: unknown[][] }>("query", sql, [], "array")
    for (const v of VIEWS) q(`CREATE TEMP VIEW ${v.name} AS SELECT * FROM public.v_${v.name}`)
    const role = q(
      `SELECT 1 FROM pg_roles r WHERE r.rolname = '${READER_ROLE}' AND pg_has_role(current_user, r.oid, 'MEMBER')`,
    )
    if (role.rows.length > 0) {
      for (const v of VIEWS) q(`GRANT SELECT ON pg_temp.${v.name} TO ${READER_ROLE}`)
      q(`SET ROLE ${READER_ROLE}`)
    }
    q("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY")
    return new QueryConnection({
      run: (sql, keyword, params) => {
        if (keyword === "PRAGMA") throw refuse("PRAGMA (a SQLite statement) on a PostgreSQL store")
        q("BEGIN READ ONLY")
        try {
          const r = db.remote.call<{ rows: unknown[][]; fields: string[] }>("query", sql, params, "array")
          return { columns: r.fields, rows: r.rows }
        } catch (e) {
          const msg = (e as Error).message.replace(/^PostgreSQL at [^:]*:[^:]*:\S*: /, "")
          if (/read-only transaction/i.test(msg)) throw refuse("writing")
          if (/permission denied/i.test(msg)) throw refuse(`reading past the views (${msg})`)
          if (/cannot insert multiple commands/i.test(msg))
            throw new QueryError("one statement at a time, please")
          throw new QueryError(`SQL error: ${msg}`)
        } finally {
          q("ROLLBACK")
        }
      },
      close: () => store.close(),
    })
  }

  run(sql: string, params: ReadonlyArray<unknown> = []): QueryResult {
    const keyword = firstKeyword(sql)
    if (keyword === "") throw new QueryError("empty query")
    if (!ALLOWED.has(keyword)) throw refuse(`${keyword}`)
    return this.reader.run(sql, keyword, params)
  }

  close() {
    this.reader.close()
  }
}

/** The role `tunegraph query` takes on a shared store: SELECT on the views, nothing else. */
export const READER_ROLE = "tunegraph_reader"

const sqliteReader = (db: Database.Database): Reader => ({
  run: (sql, keyword, params) => {
    if (keyword === "PRAGMA") {
      const m = /PRAGMA\s+(?:\w+\.)?(\w+)\s*(=|\()?/i.exec(sql)
      const name = m?.[1]?.toLowerCase() ?? ""
      const form = m?.[2]
      const reads =
        READ_PRAGMAS.has(name) && form !== "=" && (form === undefined || PRAGMAS_WITH_ARGUMENT.has(name))
      if (!reads) throw refuse(`PRAGMA ${name}${form === undefined ? "" : " with a value"}`)
    }
    let st: Database.Statement
    try {
      st = db.prepare(sql)
    } catch (e) {
      const msg = (e as Error).message
      if (/more than one statement/.test(msg)) throw new QueryError("one statement at a time, please")
      throw new QueryError(`SQL error: ${msg}`)
    }
    if (!st.readonly) throw refuse(`a statement that writes (${keyword} ...)`)
    if (!st.reader) throw refuse(`a statement that returns no rows (${keyword} ...)`)
    try {
      const columns = st.columns().map((c) => c.name)
      const rows = st.raw(true).all(...params) as unknown[][]
      return { columns, rows }
    } catch (e) {
      const msg = (e as Error).message
      if (/readonly|not authorized/i.test(msg)) throw refuse("writing")
      throw new QueryError(`SQL error: ${msg}`)
    }
  },
  close: () => db.close(),
})

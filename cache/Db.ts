/**
 * The store's database, behind one synchronous interface with two
 * implementations:
 *
 *   - SQLite (better-sqlite3), the embedded store's `db.sqlite`;
 *   - PostgreSQL, a shared store's database, through the worker of
 *     cache/Remote.ts.
 *
 * The store's statements are written once, in the SQL both understand. The
 * few SQLite forms they use are rewritten for PostgreSQL when a statement is
 * prepared (`toPostgres`): `?` placeholders, `INSERT OR IGNORE` / `OR
 * REPLACE`, `json_each`, the temp schema, and the id an insert into
 * `executions` returns.
 */
import type Database from "better-sqlite3"
import { Remote, RemoteError } from "./Remote.ts"

export interface RunResult {
  readonly changes: number
  readonly lastInsertRowid: number | bigint
}

export interface Stmt {
  get(...params: ReadonlyArray<unknown>): unknown
  all(...params: ReadonlyArray<unknown>): unknown[]
  run(...params: ReadonlyArray<unknown>): RunResult
  /** Rows become their first column's value (better-sqlite3's pluck). */
  pluck(): Stmt
}

export interface Db {
  readonly dialect: "sqlite" | "postgres"
  /** Where it is, for messages (a file, or a URL without its password). */
  readonly where: string
  prepare(sql: string): Stmt
  /** Statements without parameters, separated by semicolons. */
  exec(sql: string): void
  /**
   * Runs `f` in one transaction. `immediate` takes SQLite's write lock first
   * (PostgreSQL locks rows as it writes them: gc locks its tables itself); a
   * PostgreSQL transaction or batch that loses a deadlock or a serialization
   * check is run again.
   */
  transaction<A>(f: () => A, immediate?: boolean): A
  close(): void
}

// ---------------------------------------------------------------- SQLite

export class SqliteDb implements Db {
  readonly dialect = "sqlite" as const
  constructor(
    readonly raw: Database.Database,
    readonly where: string,
  ) {}
  prepare(sql: string): Stmt {
    return this.raw.prepare(sql) as unknown as Stmt
  }
  exec(sql: string) {
    this.raw.exec(sql)
  }
  transaction<A>(f: () => A, immediate = false): A {
    const t = this.raw.transaction(f)
    return immediate ? t.immediate() : t()
  }
  close() {
    this.raw.close()
  }
}

// ---------------------------------------------------------------- PostgreSQL

/** Primary keys of the tables the store writes with INSERT OR REPLACE. */
const PRIMARY_KEYS: Readonly<Record<string, ReadonlyArray<string>>> = {
  step_cache: ["step_key"],
  stat_cache: ["path"],
  line_indexes: ["digest", "target"],
  leases: ["step_key"],
  chunks: ["chunk_key"],
  pins: ["digest"],
  artifacts: ["digest"],
}

/** `?` placeholders to `$1, $2, ...`, outside quoted strings and identifiers. */
const numberPlaceholders = (sql: string): string => {
  let out = ""
  let n = 0
  let quote: string | null = null
  for (const ch of sql) {
    if (quote !== null) {
      if (ch === quote) quote = null
      out += ch
    } else if (ch === "'" || ch === '"') {
      quote = ch
      out += ch
    } else if (ch === "?") out += `$${++n}`
    else out += ch
  }
  return out
}

/** One statement of the store's SQL, in PostgreSQL's. */
export const toPostgres = (statement: string): string => {
  let s = statement.trim()
  s = s.replace(/\btemp\.(\w+)/gi, "pg_temp.$1")
  s = s.replace(/\bjson_each\(\?\)/gi, "json_array_elements_text(?::json) AS j(value)")
  const or = /^INSERT\s+OR\s+(IGNORE|REPLACE)\s+INTO\s+([\w.]+)\s*(?:\(([^)]*)\))?/i.exec(s)
  if (or !== null) {
    s = s.replace(/^INSERT\s+OR\s+(IGNORE|REPLACE)/i, "INSERT")
    if (or[1]!.toUpperCase() === "IGNORE") s += " ON CONFLICT DO NOTHING"
    else {
      const table = or[2]!.replace(/^pg_temp\./, "")
      const pk = PRIMARY_KEYS[table]
      if (pk === undefined || or[3] === undefined)
        throw new Error(`INSERT OR REPLACE INTO ${table}: its primary key is not known for PostgreSQL`)
      const cols = or[3].split(",").map((c) => c.trim())
      const rest = cols.filter((c) => !pk.includes(c))
      s += ` ON CONFLICT (${pk.join(", ")}) DO ${
        rest.length === 0 ? "NOTHING" : `UPDATE SET ${rest.map((c) => `${c} = EXCLUDED.${c}`).join(", ")}`
      }`
    }
  }
  if (/^INSERT\s+INTO\s+executions\b/i.test(s) && !/\bRETURNING\b/i.test(s)) s += " RETURNING id"
  return numberPlaceholders(s)
}

/** Statements separated by semicolons (the store's own SQL has none inside strings). */
const statements = (sql: string): string[] =>
  sql
    .split(";")
    .map((s) => s.trim())
    .filter((s) => s.length > 0)

interface Answer {
  readonly rows: Array<Record<string, unknown> | unknown[]>
  readonly rowCount: number
}

/** The SQLite store binds booleans and bigints as numbers; PostgreSQL is told the same values. */
const bindable = (params: ReadonlyArray<unknown>): unknown[] =>
  params.map((p) => (typeof p === "bigint" ? p.toString() : typeof p === "boolean" ? (p ? 1 : 0) : p))

class PgStmt implements Stmt {
  private plucked = false
  constructor(
    private readonly db: PostgresDb,
    private readonly text: string,
  ) {}
  private query(params: ReadonlyArray<unknown>): Answer {
    return this.db.query(this.text, bindable(params), this.plucked ? "array" : "object")
  }
  get(...params: ReadonlyArray<unknown>): unknown {
    const row = this.query(params).rows[0]
    return row === undefined ? undefined : this.plucked ? (row as unknown[])[0] : row
  }
  all(...params: ReadonlyArray<unknown>): unknown[] {
    const rows = this.query(params).rows
    return this.plucked ? rows.map((r) => (r as unknown[])[0]) : rows
  }
  run(...params: ReadonlyArray<unknown>): RunResult {
    const a = this.query(params)
    const first = a.rows[0] as Record<string, unknown> | unknown[] | undefined
    const id = first === undefined ? 0 : Array.isArray(first) ? first[0] : first.id
    return { changes: a.rowCount, lastInsertRowid: typeof id === "number" ? id : 0 }
  }
  pluck(): Stmt {
    this.plucked = true
    return this
  }
}

const RETRY_CODES = new Set(["40P01", "40001"])

export class PostgresDb implements Db {
  readonly dialect = "postgres" as const
  private depth = 0
  private readonly translated = new Map<string, string>()

  private constructor(
    readonly remote: Remote,
    readonly where: string,
  ) {}

  /** Connects, or says plainly that it cannot (the URL without its password). */
  static connect(url: string): PostgresDb {
    const where = redact(url)
    const remote = new Remote(`PostgreSQL at ${where}`)
    try {
      remote.call("connect", url)
    } catch (e) {
      remote.close()
      throw new RemoteError(
        `cannot connect to the shared store's database at ${where}: ${(e as Error).message.replace(/^[^:]*: /, "")}`,
        (e as RemoteError).code,
      )
    }
    return new PostgresDb(remote, where)
  }

  query(text: string, params: ReadonlyArray<unknown>, rowMode: "object" | "array"): Answer {
    let t = this.translated.get(text)
    if (t === undefined) {
      t = toPostgres(text)
      this.translated.set(text, t)
    }
    return this.remote.call<Answer>("query", t, params, rowMode)
  }

  prepare(sql: string): Stmt {
    return new PgStmt(this, sql)
  }

  exec(sql: string) {
    for (const s of statements(sql)) this.query(s, [], "object")
  }

  transaction<A>(f: () => A, _immediate = false): A {
    if (this.depth > 0) {
      const name = `sp${this.depth}`
      this.remote.call("query", `SAVEPOINT ${name}`, [], "object")
      this.depth++
      try {
        const a = f()
        this.remote.call("query", `RELEASE SAVEPOINT ${name}`, [], "object")
        return a
      } catch (e) {
        this.remote.call("query", `ROLLBACK TO SAVEPOINT ${name}`, [], "object")
        throw e
      } finally {
        this.depth--
      }
    }
    for (let attempt = 1; ; attempt++) {
      this.remote.call("query", "BEGIN", [], "object")
      this.depth = 1
      try {
        const a = f()
        this.remote.call("query", "COMMIT", [], "object")
        return a
      } catch (e) {
        try {
          this.remote.call("query", "ROLLBACK", [], "object")
        } catch {
          // the connection is gone: the transaction is too
        }
        const code = (e as RemoteError).code
        if (attempt < 10 && code !== undefined && RETRY_CODES.has(code)) continue
        throw e
      } finally {
        this.depth = 0
      }
    }
  }

  /** Statements (already in PostgreSQL's SQL) in one transaction and one round trip; all or none. */
  batch(statements: ReadonlyArray<{ text: string; params: ReadonlyArray<unknown> }>) {
    if (this.depth > 0) throw new Error("a batch runs in a transaction of its own")
    const all = [
      { text: "BEGIN", params: [] },
      ...statements.map((s) => ({ text: s.text, params: bindable(s.params) })),
      { text: "COMMIT", params: [] },
    ]
    for (let attempt = 1; ; attempt++) {
      try {
        this.remote.call("batch", all)
        return
      } catch (e) {
        const code = (e as RemoteError).code
        if (attempt < 10 && code !== undefined && RETRY_CODES.has(code)) continue
        throw e
      }
    }
  }

  close() {
    this.remote.close()
  }
}

/** A database URL without its password. */
export const redact = (url: string): string => url.replace(/\/\/([^:/@]+):[^@/]*@/, "//$1:***@")

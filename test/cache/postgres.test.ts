/**
 * The store's database on PostgreSQL (cache/Db.ts): the SQLite forms the
 * store's statements use, rewritten and run on a real server; transactions
 * and their rollback; the schema's migrations, applied once by racing
 * processes' stores; and the same rows read back as SQLite gives them.
 */
import { once } from "node:events"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { PostgresDb, redact, toPostgres } from "../../cache/Db.ts"
import { postgresMigrations } from "../../cache/Migrations.ts"
import { Store } from "../../cache/Store.ts"
import { spawnCli, tempDir } from "../support/cli.ts"
import { freshDatabase, postgresUrl, psql } from "../support/services.ts"

describe("the store's SQL for PostgreSQL", () => {
  it("rewrites placeholders, INSERT OR IGNORE / OR REPLACE, json_each, the temp schema and execution ids", () => {
    expect(toPostgres("SELECT a FROM t WHERE b = ? AND c = '?' AND d = ?")).toBe(
      "SELECT a FROM t WHERE b = $1 AND c = '?' AND d = $2",
    )
    expect(toPostgres("INSERT OR IGNORE INTO pins (digest, note, created_at) VALUES (?, ?, ?)")).toBe(
      "INSERT INTO pins (digest, note, created_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    expect(
      toPostgres(
        "INSERT OR REPLACE INTO line_indexes (digest, target, data, created_at) VALUES (?, ?, ?, ?)",
      ),
    ).toBe(
      "INSERT INTO line_indexes (digest, target, data, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (digest, target) DO UPDATE SET data = EXCLUDED.data, created_at = EXCLUDED.created_at",
    )
    expect(toPostgres("DELETE FROM runs WHERE id NOT IN (SELECT value FROM json_each(?))")).toBe(
      "DELETE FROM runs WHERE id NOT IN (SELECT value FROM json_array_elements_text($1::json) AS j(value))",
    )
    expect(toPostgres("INSERT INTO temp.gc_keep (digest) VALUES (?)")).toBe(
      "INSERT INTO pg_temp.gc_keep (digest) VALUES ($1)",
    )
    expect(toPostgres("INSERT INTO executions (run_id, node) VALUES (?, ?)")).toBe(
      "INSERT INTO executions (run_id, node) VALUES ($1, $2) RETURNING id",
    )
    expect(() => toPostgres("INSERT OR REPLACE INTO mystery (a) VALUES (?)")).toThrow(
      /primary key is not known/,
    )
    expect(redact("postgres://ml:s3cret@db:5432/tg")).toBe("postgres://ml:***@db:5432/tg")
  })
})

const server = postgresUrl()

describe.skipIf(server === undefined)("a store on a real PostgreSQL", () => {
  it("runs the rewritten statements with SQLite's results, and rolls back a failed transaction", () => {
    const db = PostgresDb.connect(freshDatabase(server!))
    try {
      db.exec(
        "CREATE TABLE step_cache (step_key TEXT PRIMARY KEY, execution_id BIGINT, outputs TEXT, created_at BIGINT)",
      )
      const put = db.prepare(
        "INSERT OR REPLACE INTO step_cache (step_key, execution_id, outputs, created_at) VALUES (?, ?, ?, ?)",
      )
      put.run("k", 1, "{}", 10)
      expect(put.run("k", 2, '{"a":"b"}', 20).changes).toBe(1)
      expect(db.prepare("SELECT execution_id, outputs FROM step_cache WHERE step_key = ?").get("k")).toEqual({
        execution_id: 2,
        outputs: '{"a":"b"}',
      })
      expect(db.prepare("SELECT count(*) FROM step_cache").pluck().get()).toBe(1)
      expect(() =>
        db.transaction(() => {
          put.run("k2", 3, "{}", 30)
          throw new Error("step failed")
        }),
      ).toThrow("step failed")
      expect(db.prepare("SELECT step_key FROM step_cache ORDER BY step_key").pluck().all()).toEqual(["k"])
      // A nested transaction is a savepoint: its failure undoes its own writes only.
      db.transaction(() => {
        put.run("outer", 4, "{}", 40)
        try {
          db.transaction(() => {
            put.run("inner", 5, "{}", 50)
            throw new Error("inner")
          })
        } catch {
          // the outer one goes on
        }
      })
      expect(db.prepare("SELECT step_key FROM step_cache ORDER BY step_key").pluck().all()).toEqual([
        "k",
        "outer",
      ])
      expect(() => db.prepare("SELECT nonsense FROM step_cache").all()).toThrow(
        /column "nonsense" does not exist/,
      )
    } finally {
      db.close()
    }
  })

  it("migrates a new database once however many processes initialise it at once, and refuses a newer schema", async () => {
    const url = freshDatabase(server!)
    const objects = tempDir("pg-objects")
    const env = { TUNEGRAPH_STORE: url, TUNEGRAPH_OBJECTS: objects }
    const inits = await Promise.all(
      [1, 2, 3, 4].map(async () => {
        const child = spawnCli(tempDir("pg-init"), ["store", "init", "--json"], env)
        let out = ""
        let err = ""
        child.stdout!.on("data", (d) => {
          out += d
        })
        child.stderr!.on("data", (d) => {
          err += d
        })
        const [code] = (await once(child, "exit")) as [number]
        return { code, out, err }
      }),
    )
    for (const r of inits) {
      expect(r.code, r.err).toBe(0)
      expect(JSON.parse(r.out).schema).toBe(postgresMigrations.length)
    }
    expect(Number(psql(url, "SELECT count(*) FROM schema_migrations"))).toBe(postgresMigrations.length)
    expect(psql(url, "SELECT rolname FROM pg_roles WHERE rolname = 'tunegraph_reader'")).toBe(
      "tunegraph_reader",
    )
    const store = Store.openShared({ database: url, objects, local: tempDir("pg-local") })
    expect(store.schemaVersion()).toBe(postgresMigrations.length)
    store.close()
    psql(
      url,
      `INSERT INTO schema_migrations (version, applied_at) VALUES (${postgresMigrations.length + 1}, 0)`,
    )
    expect(() => Store.openShared({ database: url, objects, local: tempDir("pg-local") })).toThrow(
      /newer than this tunegraph knows/,
    )
    expect(fs.existsSync(path.join(objects, "objects"))).toBe(true)
  })

  it("says which database it cannot reach", () => {
    expect(() => PostgresDb.connect("postgres://nobody:pw@127.0.0.1:1/none")).toThrow(
      /cannot connect to the shared store's database at postgres:\/\/nobody:\*\*\*@127\.0\.0\.1:1\/none/,
    )
  })
})

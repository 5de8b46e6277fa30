/**
 * The services the shared-store suites run against, on loopback: PostgreSQL
 * (test/services/postgres.sh, Debian's packages) and moto's S3-compatible
 * server (test/services/moto.sh, from the Python registry). Each is started
 * when none is running and shared by the suites; `.ci/run` stops them.
 *
 * Where one cannot start, its suites are skipped, saying why; under
 * CI=true that is a failure with the script's own message.
 */
import { spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { repoRoot } from "./cli.ts"

const start = (name: string, dirVar: string, fallback: string): { url?: string; why?: string } => {
  const dir = process.env[dirVar] ?? fallback
  const r = spawnSync("bash", [path.join(repoRoot, `test/services/${name}.sh`), "start", dir], {
    encoding: "utf8",
    timeout: 240_000,
  })
  if (r.status === 0 && fs.existsSync(path.join(dir, "url")))
    return { url: fs.readFileSync(path.join(dir, "url"), "utf8").trim() }
  const why = `test/services/${name}.sh start could not start it: ${(r.stderr || r.stdout || r.error?.message || "").trim()}`
  if (process.env.CI === "true") throw new Error(`CI=true and ${why}`)
  process.stderr.write(`skipping the suites that need ${name}: ${why}\n`)
  return { why }
}

let pg: { url?: string; why?: string } | undefined
let s3: { url?: string; why?: string } | undefined

/** The PostgreSQL server's URL (its superuser's), or undefined where it cannot start (outside CI). */
export const postgresUrl = (): string | undefined => {
  pg ??= start("postgres", "TUNEGRAPH_PG_DIR", "/tmp/tunegraph-pg")
  return pg.url
}

/** moto's S3 endpoint, or undefined where it cannot start (outside CI). */
export const s3Endpoint = (): string | undefined => {
  s3 ??= start("moto", "TUNEGRAPH_MOTO_DIR", "/tmp/tunegraph-moto")
  return s3.url
}

/** A new, empty database on the server, its URL. */
export const freshDatabase = (serverUrl: string, prefix = "tg"): string => {
  const name = `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString("hex")}`
  psql(serverUrl, `CREATE DATABASE ${name}`)
  return serverUrl.replace(/\/[^/]*$/, `/${name}`)
}

/** Runs SQL with psql; its output (unaligned, tuples only). */
export const psql = (url: string, sql: string): string => {
  const r = spawnSync("psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", url, "-c", sql], {
    encoding: "utf8",
    timeout: 60_000,
  })
  if (r.status !== 0) throw new Error(`psql ${sql}: ${r.stderr}`)
  return r.stdout.trim()
}

/** The environment a tunegraph process needs to reach moto's S3 (any credentials do). */
export const s3Env = (endpoint: string): Record<string, string> => ({
  AWS_ENDPOINT_URL_S3: endpoint,
  AWS_ACCESS_KEY_ID: "test",
  AWS_SECRET_ACCESS_KEY: "test",
  AWS_REGION: "us-east-1",
})

/** A bucket name of its own for one suite. */
export const freshBucket = (prefix = "tg") =>
  `${prefix}-${Date.now().toString(36)}-${randomBytes(3).toString("hex")}`

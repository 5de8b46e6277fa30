/**
 * `tunegraph store init`: prepares a store before a team uses it. For a
 * shared store: the PostgreSQL schema (migrations, run once however many
 * machines call this at once), the role `tunegraph query` reads as, and the
 * bucket or the shared directory of objects. For an embedded store: its
 * directory and db.sqlite. Running it again changes nothing.
 */
import { READER_ROLE } from "../../cache/Query.ts"
import { Store } from "../../cache/Store.ts"
import { bool, parseArgs, str, UsageError } from "./Args.ts"
import { storeDir } from "./Locate.ts"
import { sharedConfig } from "./StoreArg.ts"

const out = (s: string) => process.stdout.write(s)

export const cmdStore = (argv: ReadonlyArray<string>): number => {
  const [sub, ...rest] = argv
  if (sub !== "init")
    throw new UsageError(
      "usage: tunegraph store init [--store postgres://... --objects s3://bucket/prefix|DIR] [--json]",
    )
  const args = parseArgs(rest, { store: "string", json: "boolean" })
  const shared = sharedConfig(args)
  if (shared === undefined) {
    const dir = storeDir(str(args, "store"))
    const store = Store.open(dir)
    const version = store.schemaVersion()
    store.close()
    if (bool(args, "json")) out(`${JSON.stringify({ store: dir, schema: version })}\n`)
    else out(`embedded store at ${dir}: schema ${version}\n`)
    return 0
  }
  let store: Store
  try {
    store = Store.openShared(shared)
  } catch (e) {
    throw new UsageError((e as Error).message)
  }
  try {
    const bucketCreated = store.remote?.ensureBucket() ?? false
    grantReader(store)
    const version = store.schemaVersion()
    if (bool(args, "json"))
      out(
        `${JSON.stringify({ database: store.db.where, objects: store.remote?.where ?? store.objectsDir, schema: version, bucketCreated, readerRole: READER_ROLE })}\n`,
      )
    else
      out(
        `shared store ready: ${store.db.where} (schema ${version}), objects in ${store.remote?.where ?? store.objectsDir}${bucketCreated ? " (bucket created)" : ""}; tunegraph query reads as role ${READER_ROLE}\n`,
      )
    return 0
  } finally {
    store.close()
  }
}

/** The role `tunegraph query` takes: SELECT on the views only, granted to whoever ran init. */
const grantReader = (store: Store) => {
  store.db.transaction(() => {
    store.db.prepare("SELECT pg_advisory_xact_lock(7262002)").get()
    const exists = store.db.prepare(`SELECT 1 FROM pg_roles WHERE rolname = '${READER_ROLE}'`).get()
    if (exists === undefined) store.db.exec(`CREATE ROLE ${READER_ROLE} NOLOGIN`)
    store.db.exec(`REVOKE ALL ON ALL TABLES IN SCHEMA public FROM ${READER_ROLE}`)
    const views = store.db
      .prepare("SELECT viewname FROM pg_views WHERE schemaname = 'public' AND viewname LIKE 'v\\_%'")
      .pluck()
      .all() as string[]
    for (const v of views) store.db.exec(`GRANT SELECT ON public.${v} TO ${READER_ROLE}`)
    store.db.exec(`GRANT ${READER_ROLE} TO CURRENT_USER`)
  })
}

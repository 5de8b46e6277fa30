/** Opening the store a command reads: it must exist already (nothing to inspect otherwise). */
import * as fs from "node:fs"
import * as path from "node:path"
import { Store } from "../../cache/Store.ts"
import { UsageError } from "./Args.ts"
import { resolveRun } from "./Inspect.ts"
import { storeDir } from "./Locate.ts"

export const existingStoreDir = (flag: string | undefined): string => {
  const dir = storeDir(flag)
  if (!fs.existsSync(path.join(dir, "db.sqlite")))
    throw new UsageError(`no tunegraph store at ${dir}: run a pipeline first, or pass --store`)
  return dir
}

export const openExistingStore = (flag: string | undefined): Store => Store.open(existingStoreDir(flag))

/** Bytes for people: 1.2 MB. */
export const bytes = (n: number): string =>
  n < 1000
    ? `${n} B`
    : n < 1e6
      ? `${(n / 1e3).toFixed(1)} kB`
      : n < 1e9
        ? `${(n / 1e6).toFixed(1)} MB`
        : `${(n / 1e9).toFixed(2)} GB`

export const short = (digest: string | null | undefined) =>
  digest === null || digest === undefined ? "-" : `sha256:${digest.slice(0, 12)}`

/** Runs a command body, turning the errors of a wrong reference or query into usage errors (exit 2). */
export const asUsage = <A>(f: () => A): A => {
  try {
    return f()
  } catch (e) {
    const name = (e as Error)?.name
    if (name === "LineageError" || name === "QueryError" || name === "GcError" || name === "ReportError")
      throw new UsageError((e as Error).message)
    throw e
  }
}

/** A run reference: an id or unique prefix, `last`, or `last~N` (the Nth run before the last). */
export const runRef = (store: Store, ref: string): string => {
  const m = /^(?:last|latest)~(\d+)$/.exec(ref)
  if (m === null) return resolveRun(store, ref).id
  const row = store.db
    .prepare("SELECT id FROM runs ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?")
    .get(Number(m[1])) as { id: string } | undefined
  if (row === undefined) throw new UsageError(`there is no run ${ref} (see tunegraph runs)`)
  return row.id
}

/** `tunegraph lineage ... | head`: a reader that stops early is not an error. */
export const quietOnClosedPipe = () => {
  process.stdout.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(0)
    throw e
  })
}

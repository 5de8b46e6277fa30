/** Opening the store a command works on: an embedded store's directory, or a shared store. */
import * as fs from "node:fs"
import * as path from "node:path"
import { type SharedStoreConfig, Store } from "../../cache/Store.ts"
import { type Parsed, str, UsageError } from "./Args.ts"
import { resolveRun } from "./Inspect.ts"
import { projectRoot, storeDir } from "./Locate.ts"

/** A database URL names a shared store; anything else is an embedded store's directory. */
export const isDatabaseUrl = (s: string | undefined): s is string =>
  s !== undefined && /^postgres(ql)?:\/\//.test(s)

/**
 * The shared store `--store postgres://...` (or TUNEGRAPH_STORE) names, with
 * its objects from --objects (or TUNEGRAPH_OBJECTS); undefined for an
 * embedded store. This machine's own part (its object cache, tmp/,
 * checkpoints/) is TUNEGRAPH_LOCAL, else .tunegraph/ at the project root.
 */
export const sharedConfig = (args: Parsed, pipelineFile?: string): SharedStoreConfig | undefined => {
  const flag = str(args, "store") ?? (process.env.TUNEGRAPH_STORE || undefined)
  const objects = str(args, "objects") ?? (process.env.TUNEGRAPH_OBJECTS || undefined)
  if (!isDatabaseUrl(flag)) {
    if (str(args, "objects") !== undefined)
      throw new UsageError("--objects goes with a shared store: --store postgres://...")
    return undefined
  }
  if (objects === undefined)
    throw new UsageError(
      "a shared store needs its objects: --objects s3://bucket/prefix or a directory every machine mounts (or TUNEGRAPH_OBJECTS)",
    )
  const local =
    process.env.TUNEGRAPH_LOCAL ||
    path.join(
      projectRoot(pipelineFile === undefined ? process.cwd() : path.dirname(path.resolve(pipelineFile))),
      ".tunegraph",
    )
  return { database: flag, objects, local: path.resolve(local) }
}

/** The store a pipeline runs against, made when it does not exist yet. */
export const openStoreFor = (args: Parsed, pipelineFile: string): Store => {
  const shared = sharedConfig(args, pipelineFile)
  if (shared !== undefined) return openShared(shared)
  return Store.open(storeDir(str(args, "store"), pipelineFile))
}

const openShared = (config: SharedStoreConfig, options: { migrate?: boolean } = {}): Store => {
  try {
    return Store.openShared(config, options)
  } catch (e) {
    if ((e as Error).name === "RemoteError" || /store init/.test((e as Error).message))
      throw new UsageError((e as Error).message)
    throw e
  }
}

export const existingStoreDir = (flag: string | undefined): string => {
  const dir = storeDir(flag)
  if (!fs.existsSync(path.join(dir, "db.sqlite")))
    throw new UsageError(`no tunegraph store at ${dir}: run a pipeline first, or pass --store`)
  return dir
}

/** Opening the store a command reads: it must exist already (nothing to inspect otherwise). */
export const openExistingStore = (args: Parsed): Store => {
  const shared = sharedConfig(args)
  if (shared !== undefined) return openShared(shared, { migrate: false })
  return Store.open(existingStoreDir(str(args, "store")))
}

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

/**
 * MLflow from the command line: `run` and `watch` log each finished run when
 * a tracking server is named (`--mlflow URI` or MLFLOW_TRACKING_URI), within a
 * bounded time, and a run that could not be logged is remembered as pending
 * for `tunegraph mlflow sync`.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import type { Store } from "../../cache/Store.ts"
import { bool, parseArgs, str, UsageError } from "../cli/Args.ts"
import { dim, red } from "../cli/Output.ts"
import { openExistingStore, runRef } from "../cli/StoreArg.ts"
import { MlflowClient, MlflowError } from "./Client.ts"
import { type GitInfo, type SyncResult, syncRun } from "./Sync.ts"

/** The tracking server: the flag, else MLflow's own MLFLOW_TRACKING_URI. */
export const trackingUri = (flag: string | undefined): string | undefined => {
  const uri = flag ?? process.env.MLFLOW_TRACKING_URI
  return uri === undefined || uri.trim() === "" ? undefined : uri.trim()
}

/** The commit of the git repository holding `dir`, when there is one. */
export const gitInfo = (dir: string): GitInfo | undefined => {
  try {
    const opts = {
      cwd: dir,
      encoding: "utf8" as const,
      timeout: 3000,
      stdio: ["ignore", "pipe", "ignore"] as Array<"ignore" | "pipe">,
    }
    const commit = execFileSync("git", ["rev-parse", "HEAD"], opts).trim()
    if (!/^[0-9a-f]{40,64}$/.test(commit)) return undefined
    const dirty = execFileSync("git", ["status", "--porcelain", "--untracked-files=no"], opts).trim() !== ""
    return { commit, dirty }
  } catch {
    return undefined
  }
}

const seconds = (name: string, fallback: number) => {
  const v = Number(process.env[name])
  return Number.isFinite(v) && v > 0 ? v * 1000 : fallback
}
/** The whole logging of one run at the end of `run` or a watch cycle. */
const totalMs = () => seconds("TUNEGRAPH_MLFLOW_TIMEOUT", 30_000)
/** The first answer: a server that is down or hangs is given up on after this. */
const probeMs = () => Math.min(totalMs(), 5_000)

const pendingDir = (store: Store) => path.join(store.dir, "mlflow", "pending")
const pendingFile = (store: Store, run: string) => path.join(pendingDir(store), `${run}.json`)

interface Pending {
  readonly uri: string
  readonly git?: GitInfo
  readonly error: string
}

const readPending = (store: Store, run: string): Pending | undefined => {
  try {
    return JSON.parse(fs.readFileSync(pendingFile(store, run), "utf8")) as Pending
  } catch {
    return undefined
  }
}

const pendingRuns = (store: Store): string[] => {
  try {
    return fs
      .readdirSync(pendingDir(store))
      .filter((f) => f.endsWith(".json"))
      .map((f) => f.slice(0, -5))
      .sort()
  } catch {
    return []
  }
}

const message = (e: unknown) => (e instanceof Error ? e.message : String(e))

const syncWithin = async (
  store: Store,
  run: string,
  uri: string,
  git: GitInfo | undefined,
  ms: number,
  experiment?: string,
): Promise<SyncResult> => {
  const deadline = new AbortController()
  const timer = setTimeout(() => deadline.abort(), ms)
  try {
    const client = new MlflowClient({ uri, deadline: deadline.signal, requestMs: Math.min(ms, 10_000) })
    return await syncRun({
      store,
      run,
      client,
      ...(git === undefined ? {} : { git }),
      ...(experiment === undefined ? {} : { experiment }),
      probeMs: Math.min(ms, probeMs()),
    })
  } finally {
    clearTimeout(timer)
  }
}

/**
 * Logs a finished run; never throws and never takes longer than the timeout.
 * On failure it says so once and keeps the run as pending.
 */
export const logAfterRun = async (o: {
  readonly store: Store
  readonly run: string
  readonly uri: string
  readonly git: GitInfo | undefined
  /** Say nothing on failure (watch: already said for an earlier cycle). */
  readonly quietFailure?: boolean
}): Promise<boolean> => {
  try {
    const r = await syncWithin(o.store, o.run, o.uri, o.git, totalMs())
    fs.rmSync(pendingFile(o.store, o.run), { force: true })
    process.stderr.write(`${dim(`mlflow: logged run ${o.run}: ${r.url}`)}\n`)
    return true
  } catch (e) {
    try {
      fs.mkdirSync(pendingDir(o.store), { recursive: true })
      const pending: Pending = {
        uri: o.uri,
        ...(o.git === undefined ? {} : { git: o.git }),
        error: message(e),
      }
      fs.writeFileSync(pendingFile(o.store, o.run), `${JSON.stringify(pending)}\n`)
    } catch {
      // the message below still says how to log it
    }
    if (o.quietFailure !== true)
      process.stderr.write(
        `${red("mlflow:")} could not log run ${o.run} to ${o.uri}: ${message(e)}; \`tunegraph mlflow sync ${o.run}\` logs it later\n`,
      )
    return false
  }
}

/** What logs each run of a pipeline after it finishes (`run`, and every cycle of `watch`). */
export const runLogger = (flag: string | undefined, pipelineFile: string) => {
  const uri = trackingUri(flag)
  if (uri === undefined) return undefined
  // Read before the run starts; watch reads it again for each later cycle.
  let git = gitInfo(path.dirname(pipelineFile))
  let calls = 0
  let failedBefore = false
  return async (store: Store, run: string): Promise<boolean> => {
    if (calls++ > 0) git = gitInfo(path.dirname(pipelineFile))
    // A server that stays down is reported once, not at every cycle.
    const ok = await logAfterRun({ store, run, uri, git, quietFailure: failedBefore })
    failedBefore = !ok
    return ok
  }
}

const USAGE = `usage: tunegraph mlflow sync [<run|last>...] [--mlflow URI] [--experiment NAME] [--json]
  Logs runs to MLflow (MLFLOW_TRACKING_URI, or --mlflow); without a run, every run whose
  logging failed. A run already logged is not logged again.`

export const cmdMlflow = async (argv: ReadonlyArray<string>): Promise<number> => {
  const [sub, ...rest] = argv
  if (sub !== "sync") throw new UsageError(USAGE)
  const args = parseArgs(rest, { mlflow: "string", experiment: "string", store: "string", json: "boolean" })
  const store = openExistingStore(args)
  try {
    const refs = args.positionals
    const runs = refs.length === 0 ? pendingRuns(store) : refs.map((r) => runRef(store, r))
    const json = bool(args, "json")
    if (runs.length === 0) {
      if (json) process.stdout.write("[]\n")
      else process.stdout.write("no run is waiting to be logged (name one: tunegraph mlflow sync last)\n")
      return 0
    }
    const out: Array<Record<string, unknown>> = []
    let failed = 0
    for (const run of runs) {
      const pending = readPending(store, run)
      const uri = trackingUri(str(args, "mlflow")) ?? pending?.uri
      if (uri === undefined)
        throw new UsageError("no MLflow tracking server: set MLFLOW_TRACKING_URI or pass --mlflow URI")
      const row = store.db.prepare("SELECT pipeline_path FROM runs WHERE id = ?").get(run) as
        | { pipeline_path: string }
        | undefined
      if (row === undefined) {
        fs.rmSync(pendingFile(store, run), { force: true })
        process.stderr.write(`${red("mlflow:")} run ${run} is no longer in the store\n`)
        failed++
        continue
      }
      const git = pending?.git ?? gitInfo(path.dirname(row.pipeline_path))
      try {
        const r = await syncWithin(
          store,
          run,
          uri,
          git,
          seconds("TUNEGRAPH_MLFLOW_TIMEOUT", 600_000),
          str(args, "experiment"),
        )
        fs.rmSync(pendingFile(store, run), { force: true })
        out.push({
          run,
          status: r.logged ? "logged" : "already-logged",
          mlflow_run: r.runId,
          experiment: r.experimentId,
          url: r.url,
          children: r.children,
          registered: r.registered,
        })
        if (!json)
          process.stdout.write(
            `${r.logged ? "logged" : "already logged"} run ${run}: ${r.url}${r.logged ? dim(` (${r.children} child run${r.children === 1 ? "" : "s"}${r.registered.length === 0 ? "" : `, registered ${r.registered.map((m) => `${m.name} v${m.version}`).join(", ")}`})`) : ""}\n`,
          )
      } catch (e) {
        failed++
        out.push({ run, status: "failed", error: message(e) })
        if (!json)
          process.stderr.write(`${red("mlflow:")} could not log run ${run} to ${uri}: ${message(e)}\n`)
        if (!(e instanceof MlflowError)) throw e
      }
    }
    if (json) process.stdout.write(`${JSON.stringify(out)}\n`)
    return failed === 0 ? 0 : 1
  } finally {
    store.close()
  }
}

/** `runs`, `show` and `verify`: reading the store back. */
import * as fs from "node:fs"
import type { Store } from "../../cache/Store.ts"
import { verifyStore } from "../../cache/Verify.ts"
import { bool, int, parseArgs, UsageError } from "./Args.ts"
import { bold, dim, green, red, seconds, yellow } from "./Output.ts"
import { openExistingStore, quietOnClosedPipe } from "./StoreArg.ts"

interface RunRow {
  id: string
  pipeline: string
  pipeline_path: string
  started_at: number
  finished_at: number | null
  status: string
  argv: string
}

const counts = (store: Store, runId: string) =>
  Object.fromEntries(
    (
      store.db
        .prepare("SELECT status, count(*) n FROM executions WHERE run_id = ? GROUP BY status")
        .all(runId) as Array<{
        status: string
        n: number
      }>
    ).map((r) => [r.status, r.n]),
  ) as Record<string, number>

export const cmdRuns = (argv: ReadonlyArray<string>): number => {
  quietOnClosedPipe()
  const args = parseArgs(argv, { json: "boolean", store: "string", limit: "string" })
  const store = openExistingStore(args)
  const limit = int(args, "limit") ?? 20
  const rows = store.db
    .prepare("SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT ?")
    .all(limit) as RunRow[]
  const out = rows.map((r) => ({
    run: r.id,
    pipeline: r.pipeline,
    path: r.pipeline_path,
    status: r.status,
    startedAt: new Date(r.started_at).toISOString(),
    ms: r.finished_at === null ? null : r.finished_at - r.started_at,
    steps: counts(store, r.id),
  }))
  store.close()
  if (bool(args, "json")) {
    process.stdout.write(`${JSON.stringify({ runs: out })}\n`)
    return 0
  }
  if (out.length === 0) process.stdout.write("no runs yet\n")
  for (const r of out) {
    const c = r.steps
    const word =
      r.status === "succeeded"
        ? green(r.status)
        : r.status === "failed" || r.status === "crashed"
          ? red(r.status)
          : yellow(r.status)
    process.stdout.write(
      `${r.run}  ${word.padEnd(9)}  ${r.pipeline}  ${dim(`${c.ran ?? 0} ran, ${c.cached ?? 0} cached, ${c.failed ?? 0} failed`)}  ${dim(r.ms === null ? "" : seconds(r.ms))}\n`,
    )
  }
  return 0
}

export const resolveRun = (store: Store, ref: string): RunRow => {
  const row =
    ref === "last" || ref === "latest"
      ? (store.db.prepare("SELECT * FROM runs ORDER BY started_at DESC, id DESC LIMIT 1").get() as
          | RunRow
          | undefined)
      : ((store.db.prepare("SELECT * FROM runs WHERE id = ?").get(ref) as RunRow | undefined) ??
        (() => {
          const m = store.db.prepare("SELECT * FROM runs WHERE id LIKE ? LIMIT 2").all(`${ref}%`) as RunRow[]
          if (m.length > 1) throw new UsageError(`run "${ref}" is ambiguous`)
          return m[0]
        })())
  if (row === undefined) throw new UsageError(`no run "${ref}" (see tunegraph runs)`)
  return row
}

export const cmdShow = (argv: ReadonlyArray<string>): number => {
  quietOnClosedPipe()
  const args = parseArgs(argv, { json: "boolean", store: "string" })
  const ref = args.positionals[0]
  if (ref === undefined) throw new UsageError("usage: tunegraph show <run|last>")
  const store = openExistingStore(args)
  const r = resolveRun(store, ref)
  const execs = store.db
    .prepare(
      "SELECT id, node, plugin, plugin_version, step_key, status, ms, backend, error, produced_by FROM executions WHERE run_id = ? ORDER BY id",
    )
    .all(r.id) as Array<{
    id: number
    node: string
    plugin: string
    plugin_version: string
    step_key: string | null
    status: string
    ms: number
    backend: string | null
    error: string | null
    produced_by: number | null
  }>
  const outputs = store.db.prepare("SELECT name, digest FROM execution_outputs WHERE execution_id = ?")
  const logs = store.db.prepare("SELECT text FROM logs WHERE execution_id = ?")
  const metricsOf = (id: number) =>
    Object.fromEntries(
      (
        store.db
          .prepare(
            "SELECT m.name, m.value FROM metrics m JOIN (SELECT name, max(rowid) r FROM metrics WHERE execution_id = ? GROUP BY name) l ON m.rowid = l.r",
          )
          .all(id) as Array<{ name: string; value: number }>
      ).map((m) => [m.name, m.value]),
    )
  const steps = execs.map((e) => {
    const producer = e.produced_by ?? e.id
    return {
      node: e.node,
      plugin: e.plugin,
      version: e.plugin_version,
      status: e.status,
      key: e.step_key,
      ms: e.ms,
      backend: e.backend,
      error: e.error,
      outputs: Object.fromEntries(
        (outputs.all(e.id) as Array<{ name: string; digest: string }>).map((o) => [
          o.name,
          `sha256:${o.digest}`,
        ]),
      ),
      metrics: metricsOf(producer),
      log: (logs.get(producer) as { text: string } | undefined)?.text ?? "",
    }
  })
  const tables = trialTables(store, steps)
  store.close()
  if (bool(args, "json")) {
    process.stdout.write(
      `${JSON.stringify({ run: r.id, sweeps: tables, pipeline: r.pipeline, path: r.pipeline_path, status: r.status, startedAt: new Date(r.started_at).toISOString(), ms: r.finished_at === null ? null : r.finished_at - r.started_at, argv: JSON.parse(r.argv), steps })}\n`,
    )
    return 0
  }
  process.stdout.write(`${bold(`run ${r.id}`)}  ${r.pipeline}  ${r.status}  ${r.pipeline_path}\n`)
  for (const s of steps) {
    const digest = Object.entries(s.outputs)
      .map(([n, d]) => `${n}=${d.slice(7, 19)}`)
      .join(" ")
    const metrics = Object.entries(s.metrics)
      .map(([k, v]) => `${k}=${Number(v.toPrecision(4))}`)
      .join(" ")
    process.stdout.write(
      `  ${s.status.padEnd(8)} ${s.node.padEnd(24)} ${dim(`${s.plugin}@${s.version}`)} ${dim(seconds(s.ms ?? 0))} ${digest}${s.backend ? dim(` [${s.backend}]`) : ""}${metrics ? ` ${metrics}` : ""}\n`,
    )
    if (s.error) process.stdout.write(`           ${red(s.error)}\n`)
  }
  for (const t of tables) {
    process.stdout.write(`\n${bold(`trials of ${t.node} (${t.metric}, ${t.mode})`)}\n`)
    const width = Math.max(...t.trials.map((r) => r.label.length))
    for (const r of t.trials)
      process.stdout.write(
        `  ${r.label.padEnd(width)}  ${String(Number(r.value.toPrecision(6))).padStart(10)}  ${r.label === t.best ? green("best") : ""}\n`,
      )
  }
  return 0
}

interface TrialTable {
  node: string
  metric: string
  mode: string
  best: string
  trials: Array<{ label: string; value: number }>
}

/** Steps whose `table` output is a sweep table {metric, mode, best, trials: [{label, value}]}. */
const trialTables = (
  store: Store,
  steps: ReadonlyArray<{ node: string; outputs: Record<string, string> }>,
) => {
  const out: TrialTable[] = []
  for (const s of steps) {
    const d = s.outputs.table?.replace("sha256:", "")
    if (d === undefined) continue
    try {
      const t = JSON.parse(fs.readFileSync(store.objectPath(d), "utf8")) as Omit<TrialTable, "node">
      if (Array.isArray(t.trials) && typeof t.metric === "string") out.push({ node: s.node, ...t })
    } catch {
      // not a table
    }
  }
  return out
}

export const cmdVerify = (argv: ReadonlyArray<string>): number => {
  const args = parseArgs(argv, { json: "boolean", store: "string" })
  const store = openExistingStore(args)
  const report = verifyStore(store)
  store.close()
  if (bool(args, "json")) process.stdout.write(`${JSON.stringify(report)}\n`)
  else {
    for (const p of report.problems) process.stdout.write(`${red("problem:")} ${p}\n`)
    process.stdout.write(
      `${report.objects} objects checked (${(report.bytes / 1e6).toFixed(1)} MB${report.sizeChecked === undefined ? "" : `; ${report.sizeChecked} by size in the bucket, the rest re-hashed in this machine's cache`}): ${report.problems.length === 0 ? green("store is consistent") : red(`${report.problems.length} problems`)}\n`,
    )
  }
  return report.problems.length === 0 ? 0 : 1
}

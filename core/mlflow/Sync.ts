/**
 * Logs a finished run, as the store recorded it, to an MLflow tracking server.
 *
 *   experiment   the pipeline's name (or the name given)
 *   run          one per tunegraph run, tagged tunegraph.run_id; params `<node>.<param>`
 *   child runs   nested (mlflow.parentRunId) for every step that recorded metrics, belongs
 *                to a group (a sweep trial, `<group>/<trial>`), or whose plugin the tracking
 *                policy names; params are the step's own (flattened `a.b`), metrics every
 *                point with its step, tags its key, plugin, version and backend. A cached
 *                step is a child tagged tunegraph.cached that names the run that computed it.
 *   artifacts    the files the policy names per plugin and output, uploaded through the
 *                server's artifact proxy: into the step's child run, else under `<node>/`
 *                of the run.
 *   registry     a step with a string parameter `registerAs` registers its uploaded
 *                artifact directory as a version of that model, tagged with its digest.
 *
 * Idempotent: the run is found again by its tunegraph.run_id tag and each child by its
 * node; a run or child tagged tunegraph.synced is left alone, and one left half-logged
 * (by a timeout) gets only the metric points it lacks. Logging twice duplicates nothing.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { Store } from "../../cache/Store.ts"
import { listFiles } from "../Hash.ts"
import {
  type MetricPoint,
  type MlflowClient,
  MlflowError,
  type MlflowRun,
  runUrl,
  type Tag,
  tagOf,
} from "./Client.ts"
import { trackingPolicy } from "./Policy.ts"

export interface GitInfo {
  readonly commit: string
  readonly dirty: boolean
}

export interface SyncOptions {
  readonly store: Store
  readonly run: string
  readonly client: MlflowClient
  /** Defaults to MLFLOW_EXPERIMENT_NAME, else the pipeline's name. */
  readonly experiment?: string
  readonly git?: GitInfo
  /** Longest wait for the first answer (the server's experiment lookup). */
  readonly probeMs?: number
}

export interface SyncResult {
  readonly experimentId: string
  readonly runId: string
  readonly url: string
  /** False when the run was already logged in full. */
  readonly logged: boolean
  readonly children: number
  readonly registered: ReadonlyArray<{ readonly name: string; readonly version: string }>
}

interface RunRow {
  run: string
  pipeline: string
  pipeline_path: string
  status: string
  started_at: number
  finished_at: number | null
  argv: string
  host: string
}

interface ExecRow {
  execution: number
  node: string
  plugin: string
  version: string
  step_key: string | null
  status: string
  computed_by: number
  started_at: number
  finished_at: number | null
  backend: string | null
  params: string | null
  annotations: string | null
}

export const RUN_TAG = "tunegraph.run_id"
export const NODE_TAG = "tunegraph.node"
export const SYNCED_TAG = "tunegraph.synced"
const PARENT_TAG = "mlflow.parentRunId"

const mlflowStatus = (s: string): "FINISHED" | "FAILED" | "KILLED" =>
  s === "succeeded" || s === "ran" || s === "cached" ? "FINISHED" : s === "interrupted" ? "KILLED" : "FAILED"

/** Parameters flattened as MLflow's autologging does: nested keys joined by dots. */
export const flattenParams = (value: unknown, prefix = ""): Tag[] => {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>)
    if (entries.length === 0 && prefix !== "") return [{ key: mlflowKey(prefix), value: "{}" }]
    return entries.flatMap(([k, v]) => flattenParams(v, prefix === "" ? k : `${prefix}.${k}`))
  }
  if (prefix === "") return []
  return [
    {
      key: mlflowKey(prefix),
      value: typeof value === "string" ? value : (JSON.stringify(value) ?? String(value)),
    },
  ]
}

/** A name as MLflow accepts it: alphanumerics, `_ - . : /` and spaces, the rest as `_`. */
export const mlflowKey = (name: string) => name.replace(/[^A-Za-z0-9_\-. :/]/g, "_")

/** The run's description in the UI: what happened to its steps, and how to look closer. */
const summary = (run: RunRow, execs: ReadonlyArray<ExecRow>) => {
  const n = (s: string) => execs.filter((e) => e.status === s).length
  return `tunegraph run \`${run.run}\` of pipeline ${run.pipeline} (${run.pipeline_path}): ${run.status}; ${execs.length} steps: ${n("ran")} ran, ${n("cached")} cached, ${n("failed")} failed. \`tunegraph show ${run.run}\` and \`tunegraph report ${run.run}\` show it in full.`
}

const quote = (s: string) => `'${s.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`

export const syncRun = async (o: SyncOptions): Promise<SyncResult> => {
  const { store, client } = o
  const db = store.db
  const run = db.prepare("SELECT * FROM v_runs WHERE run = ?").get(o.run) as RunRow | undefined
  if (run === undefined) throw new MlflowError(`no run ${o.run} in the store`)
  if (run.status === "running") throw new MlflowError(`run ${o.run} is still running`)
  const execs = db
    .prepare("SELECT * FROM v_executions WHERE run = ? AND plugin != 'source' ORDER BY execution")
    .all(o.run) as ExecRow[]
  const policy = trackingPolicy()
  const paramsOf = (e: ExecRow): unknown => (e.params === null ? {} : JSON.parse(e.params))
  const metricsOf = (e: ExecRow): MetricPoint[] =>
    (
      db
        .prepare("SELECT name, step, value, at FROM metrics WHERE execution_id = ? ORDER BY rowid")
        .all(e.computed_by) as Array<{ name: string; step: number | null; value: number; at: number }>
    ).map((m) => ({ key: mlflowKey(m.name), value: m.value, timestamp: m.at, step: m.step ?? 0 }))
  const outputsOf = (e: ExecRow) =>
    db.prepare("SELECT output, digest FROM v_outputs WHERE execution = ?").all(e.execution) as Array<{
      output: string
      digest: string
    }>
  const childOf = (e: ExecRow) =>
    e.status !== "skipped" &&
    (policy.runs.includes(e.plugin) ||
      e.node.includes("/") ||
      (db.prepare("SELECT 1 FROM v_metrics WHERE execution = ? LIMIT 1").get(e.execution) as unknown) !==
        undefined)

  const experimentName = o.experiment ?? (process.env.MLFLOW_EXPERIMENT_NAME || run.pipeline)
  const experimentId = await client.experiment(experimentName, o.probeMs)
  const existing = await client.searchRuns(experimentId, `tags.\`${RUN_TAG}\` = ${quote(run.run)}`)
  let parent = existing.find((r) => tagOf(r, PARENT_TAG) === undefined)
  const url = (id: string) => runUrl(client.base, experimentId, id)
  if (parent !== undefined && tagOf(parent, SYNCED_TAG) === "true")
    return {
      experimentId,
      runId: parent.info.run_id,
      url: url(parent.info.run_id),
      logged: false,
      children: existing.length - 1,
      registered: [],
    }

  const git: Tag[] =
    o.git === undefined
      ? []
      : [
          { key: "mlflow.source.git.commit", value: o.git.commit },
          { key: "tunegraph.git.dirty", value: String(o.git.dirty) },
        ]
  const runTags: Tag[] = [
    { key: RUN_TAG, value: run.run },
    { key: "mlflow.runName", value: run.run },
    { key: "mlflow.source.name", value: run.pipeline_path },
    { key: "mlflow.source.type", value: "LOCAL" },
    { key: "mlflow.user", value: process.env.USER ?? process.env.USERNAME ?? "tunegraph" },
    { key: "tunegraph.pipeline", value: run.pipeline },
    { key: "tunegraph.status", value: run.status },
    { key: "tunegraph.host", value: run.host },
    { key: "tunegraph.argv", value: run.argv },
    { key: "mlflow.note.content", value: summary(run, execs) },
    ...git,
  ]
  if (parent === undefined)
    parent = await client.createRun({
      experimentId,
      name: run.run,
      startTime: run.started_at,
      tags: runTags,
    })
  const parentId = parent.info.run_id
  const parentArtifacts = parent.info.artifact_uri ?? (await client.getRun(parentId)).info.artifact_uri ?? ""
  await client.logBatch(parentId, {
    tags: runTags,
    params: execs.flatMap((e) => {
      const p = paramsOf(e)
      return typeof p === "object" && p !== null && Object.keys(p).length === 0
        ? []
        : flattenParams(p, e.node)
    }),
  })

  const upload = async (artifactUri: string, e: ExecRow, under: string): Promise<string | undefined> => {
    const wanted = policy.artifacts[e.plugin]
    if (wanted === undefined) return undefined
    let uploaded: string | undefined
    for (const out of outputsOf(e)) {
      const files = wanted[out.output]
      if (files === undefined) continue
      store.materialize(out.digest)
      const obj = store.objectPath(out.digest)
      if (!fs.existsSync(obj)) continue
      const isDir = fs.statSync(obj).isDirectory()
      const names = !isDir ? [out.output] : files === "*" ? listFiles(obj) : files
      for (const f of names) {
        const src = isDir ? path.join(obj, f) : obj
        if (!fs.existsSync(src)) continue
        await client.uploadArtifact(artifactUri, under === "" ? f : `${under}/${f}`, fs.readFileSync(src))
        uploaded = under
      }
    }
    return uploaded
  }

  let children = 0
  const registered: Array<{ name: string; version: string }> = []
  const registrations: Array<{ e: ExecRow; runId: string; source: string }> = []
  for (const e of execs) {
    const registerAs = (paramsOf(e) as { registerAs?: unknown }).registerAs
    if (!childOf(e)) {
      const under = await upload(parentArtifacts, e, e.node)
      if (typeof registerAs === "string" && under !== undefined)
        registrations.push({ e, runId: parentId, source: `${parentArtifacts}/${under}` })
      continue
    }
    children++
    let child: MlflowRun | undefined = existing.find(
      (r) => tagOf(r, PARENT_TAG) === parentId && tagOf(r, NODE_TAG) === e.node,
    )
    if (child !== undefined && tagOf(child, SYNCED_TAG) === "true") {
      if (typeof registerAs === "string" && policy.artifacts[e.plugin] !== undefined)
        registrations.push({ e, runId: child.info.run_id, source: child.info.artifact_uri ?? "" })
      continue
    }
    const cached = e.status === "cached"
    const tags: Tag[] = [
      { key: PARENT_TAG, value: parentId },
      { key: RUN_TAG, value: run.run },
      { key: NODE_TAG, value: e.node },
      { key: "mlflow.runName", value: e.node },
      { key: "mlflow.source.name", value: run.pipeline_path },
      { key: "mlflow.source.type", value: "LOCAL" },
      ...git,
      { key: "tunegraph.plugin", value: e.plugin },
      { key: "tunegraph.plugin_version", value: e.version },
      { key: "tunegraph.status", value: e.status },
      { key: "tunegraph.cached", value: String(cached) },
      ...(e.step_key === null ? [] : [{ key: "tunegraph.step_key", value: e.step_key }]),
      ...(e.backend === null ? [] : [{ key: "tunegraph.backend", value: e.backend }]),
      ...(e.node.includes("/")
        ? [{ key: "tunegraph.group", value: e.node.slice(0, e.node.lastIndexOf("/")) }]
        : []),
    ]
    if (cached) {
      const by = db
        .prepare("SELECT run, node, backend FROM v_executions WHERE execution = ?")
        .get(e.computed_by) as { run: string; node: string; backend: string | null } | undefined
      if (by !== undefined) {
        tags.push({ key: "tunegraph.computed_in", value: by.run })
        if (e.backend === null && by.backend !== null)
          tags.push({ key: "tunegraph.backend", value: by.backend })
        const origin = (
          await client.searchRuns(
            experimentId,
            `tags.\`${RUN_TAG}\` = ${quote(by.run)} AND tags.\`${NODE_TAG}\` = ${quote(by.node)}`,
          )
        ).find((r) => tagOf(r, PARENT_TAG) !== undefined)
        if (origin !== undefined)
          tags.push({ key: "tunegraph.computed_by_mlflow_run", value: origin.info.run_id })
        tags.push({
          key: "mlflow.note.content",
          value: `Cached: computed in tunegraph run ${by.run}${origin === undefined ? "" : ` ([MLflow run](${url(origin.info.run_id)}))`}.`,
        })
      }
    }
    const fresh = child === undefined
    if (child === undefined)
      child = await client.createRun({ experimentId, name: e.node, startTime: e.started_at, tags })
    const childId = child.info.run_id
    let metrics = metricsOf(e)
    if (!fresh) {
      // Half-logged before: only the points it lacks.
      const have = new Set<string>()
      for (const key of new Set(metrics.map((m) => m.key)))
        for (const m of await client.metricHistory(childId, key))
          have.add(`${m.key}\u0000${m.step}\u0000${m.timestamp}\u0000${m.value}`)
      metrics = metrics.filter(
        (m) => !have.has(`${m.key}\u0000${m.step}\u0000${m.timestamp}\u0000${m.value}`),
      )
    }
    await client.logBatch(childId, { params: flattenParams(paramsOf(e)), tags, metrics })
    const artifactUri = child.info.artifact_uri ?? (await client.getRun(childId)).info.artifact_uri ?? ""
    const under = await upload(artifactUri, e, "")
    if (typeof registerAs === "string" && under !== undefined)
      registrations.push({ e, runId: childId, source: artifactUri })
    await client.updateRun(childId, mlflowStatus(e.status), e.finished_at ?? e.started_at)
    await client.setTag(childId, SYNCED_TAG, "true")
  }

  for (const { e, runId, source } of registrations) {
    const name = (paramsOf(e) as { registerAs: string }).registerAs
    const digest = outputsOf(e)[0]?.digest
    if (digest === undefined || e.status === "failed") continue
    await client.createRegisteredModel(name)
    const versions = await client.searchModelVersions(`name = ${quote(name)}`)
    // One version per artifact: a later run that reuses the export registers nothing new.
    const same = versions.find((v) =>
      v.tags?.some((t) => t.key === "tunegraph.digest" && t.value === `sha256:${digest}`),
    )
    if (same !== undefined) {
      registered.push({ name, version: same.version })
      continue
    }
    const v = await client.createModelVersion({
      name,
      source,
      runId,
      tags: [
        { key: "tunegraph.digest", value: `sha256:${digest}` },
        { key: RUN_TAG, value: run.run },
        { key: NODE_TAG, value: e.node },
      ],
      description: `tunegraph artifact sha256:${digest} (node ${e.node} of run ${run.run}); \`tunegraph lineage ${digest.slice(0, 12)}\` traces it.`,
    })
    registered.push({ name, version: v.version })
  }

  await client.updateRun(parentId, mlflowStatus(run.status), run.finished_at ?? run.started_at)
  await client.setTag(parentId, SYNCED_TAG, "true")
  return { experimentId, runId: parentId, url: url(parentId), logged: true, children, registered }
}

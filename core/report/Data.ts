/**
 * What a run report shows, read from the store: the run's steps and the
 * edges between them, training curves, sweep trials and evaluation reports.
 *
 * Curves are the metrics `train_loss`, `val_loss`, `lr` and `tokens_per_s`
 * by step. A training step that was interrupted and resumed shows the points
 * of its interrupted attempts too, so the curve is whole.
 *
 * An evaluation is any `Report` artifact of the run whose JSON has a
 * top-level `scores` object (and optionally `samples`):
 *
 *   { "scores":  { "<metric>": { "base": 0.21, "tuned": 0.48 }, ... },
 *     "samples": [ { "prompt": "...", "reference": "...", "base": "...", "tuned": "..." }, ... ] }
 *
 * `scores` may also be `{ "<metric>": number }` (one model) or
 * `{ "base": { "<metric>": n }, "tuned": { "<metric>": n } }` (what the eval
 * step writes). A directory artifact is read through its report.json (else
 * its first .json file). Sample fields that are not strings are left out.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { Store } from "../../cache/Store.ts"
import { computing, type ExecutionRow } from "../Lineage.ts"

export class ReportError extends Error {
  override readonly name = "ReportError"
}

export const CURVE_METRICS = ["train_loss", "val_loss", "lr", "tokens_per_s"] as const

export interface ReportNode {
  readonly node: string
  readonly plugin: string
  readonly version: string
  readonly status: string
  readonly ms: number | null
  /** The run whose execution computed the outputs (this run unless cached). */
  readonly computedIn: string
  readonly startedAt: string
  readonly backend: string | null
  readonly error: string | null
  readonly params: unknown
  readonly outputs: Readonly<Record<string, string>>
  readonly metrics: Readonly<Record<string, number>>
}

export interface Curve {
  readonly node: string
  readonly metric: string
  /** [step, value], sorted by step. */
  readonly points: ReadonlyArray<readonly [number, number]>
}

export interface SweepRow {
  readonly node: string
  readonly status: string
  readonly params: Readonly<Record<string, unknown>>
  readonly metrics: Readonly<Record<string, number>>
}

export interface Sweep {
  readonly group: string
  /** Parameters whose values differ between trials. */
  readonly varying: ReadonlyArray<string>
  readonly rows: ReadonlyArray<SweepRow>
}

export interface Score {
  readonly name: string
  readonly base: number | null
  readonly tuned: number | null
}

export interface Evaluation {
  readonly node: string
  readonly output: string
  readonly digest: string
  readonly scores: ReadonlyArray<Score>
  readonly samples: ReadonlyArray<Readonly<Record<string, string>>>
}

export interface ReportData {
  readonly run: {
    readonly id: string
    readonly pipeline: string
    readonly pipelinePath: string
    readonly status: string
    readonly startedAt: string
    readonly ms: number | null
    readonly argv: ReadonlyArray<string>
  }
  readonly nodes: ReadonlyArray<ReportNode>
  readonly edges: ReadonlyArray<{ readonly from: string; readonly to: string; readonly input: string }>
  readonly curves: ReadonlyArray<Curve>
  readonly sweeps: ReadonlyArray<Sweep>
  readonly evaluations: ReadonlyArray<Evaluation>
  readonly generatedAt: string
}

const MAX_SAMPLES = 50

const flatParams = (v: unknown, prefix = "", out: Record<string, unknown> = {}) => {
  if (typeof v === "object" && v !== null && !Array.isArray(v))
    for (const [k, x] of Object.entries(v)) flatParams(x, prefix === "" ? k : `${prefix}.${k}`, out)
  else if (prefix !== "") out[prefix] = v
  return out
}

const num = (v: unknown): number | null => (typeof v === "number" && Number.isFinite(v) ? v : null)

/** Scores in any of the accepted shapes, as rows of base and tuned. */
export const normalizeScores = (scores: Record<string, unknown>): Score[] => {
  const { base, tuned } = scores as { base?: unknown; tuned?: unknown }
  const isObj = (x: unknown): x is Record<string, unknown> =>
    typeof x === "object" && x !== null && !Array.isArray(x)
  if (isObj(base) || isObj(tuned)) {
    const b = isObj(base) ? base : {}
    const t = isObj(tuned) ? tuned : {}
    return [...new Set([...Object.keys(b), ...Object.keys(t)])].map((name) => ({
      name,
      base: num(b[name]),
      tuned: num(t[name]),
    }))
  }
  return Object.entries(scores).map(([name, v]) =>
    isObj(v)
      ? { name, base: num(v.base), tuned: num(v.tuned ?? v.value) }
      : { name, base: null, tuned: num(v) },
  )
}

const readEvaluation = (
  store: Store,
  node: string,
  output: string,
  digest: string,
): Evaluation | undefined => {
  const art = store.artifact(digest)
  if (art === undefined) return undefined
  // (a shared store's object comes into this machine's cache first)
  store.materialize(digest)
  let file = store.objectPath(digest)
  if (art.isDir) {
    const files = store.artifactFiles(digest)
    const json = files.find((f) => f.path === "report.json") ?? files.find((f) => f.path.endsWith(".json"))
    if (json === undefined) return undefined
    file = json.abs
  }
  let parsed: unknown
  try {
    const st = fs.statSync(file)
    if (st.size > 64 * 1024 * 1024) return undefined
    parsed = JSON.parse(fs.readFileSync(file, "utf8"))
  } catch {
    return undefined
  }
  const scores = (parsed as { scores?: unknown })?.scores
  if (typeof scores !== "object" || scores === null || Array.isArray(scores)) return undefined
  const raw = (parsed as { samples?: unknown }).samples
  const samples = (Array.isArray(raw) ? raw : [])
    .filter((s): s is Record<string, unknown> => typeof s === "object" && s !== null)
    .slice(0, MAX_SAMPLES)
    .map((s) =>
      Object.fromEntries(Object.entries(s).filter((e): e is [string, string] => typeof e[1] === "string")),
    )
  return { node, output, digest, scores: normalizeScores(scores as Record<string, unknown>), samples }
}

export const reportData = (store: Store, runId: string): ReportData => {
  const run = store.sql("SELECT * FROM runs WHERE id = ?").get(runId) as
    | {
        id: string
        pipeline: string
        pipeline_path: string
        status: string
        started_at: number
        finished_at: number | null
        argv: string
      }
    | undefined
  if (run === undefined) throw new ReportError(`no run ${runId}`)
  const execs = store
    .sql("SELECT * FROM executions WHERE run_id = ? ORDER BY id")
    .all(runId) as ExecutionRow[]
  const outputsOf = (id: number) =>
    store
      .sql("SELECT name, digest FROM execution_outputs WHERE execution_id = ? ORDER BY name")
      .all(id) as Array<{
      name: string
      digest: string
    }>
  const lastMetrics = (id: number) =>
    Object.fromEntries(
      (
        store
          .sql(
            `SELECT name, (SELECT value FROM metrics l WHERE l.execution_id = m.execution_id AND l.name = m.name
               ORDER BY l.step IS NULL, l.step DESC, l.rowid DESC LIMIT 1) AS value
             FROM metrics m WHERE execution_id = ? GROUP BY m.execution_id, name ORDER BY name`,
          )
          .all(id) as Array<{ name: string; value: number }>
      ).map((m) => [m.name, m.value]),
    )

  const producers = new Map<string, ExecutionRow[]>()
  const nodes: ReportNode[] = []
  const computingOf = new Map<string, ExecutionRow>()
  for (const e of execs) {
    const c = computing(store, e)
    computingOf.set(e.node, c)
    const outs = outputsOf(e.id)
    for (const o of outs) producers.set(o.digest, [...(producers.get(o.digest) ?? []), e])
    const ingredients = e.ingredients === null ? null : (JSON.parse(e.ingredients) as { params?: unknown })
    nodes.push({
      node: e.node,
      plugin: e.plugin,
      version: e.plugin_version,
      status: e.status,
      ms: c.ms,
      computedIn: c.run_id,
      startedAt: new Date(c.started_at).toISOString(),
      backend: c.backend,
      error: e.error,
      params: ingredients?.params ?? {},
      outputs: Object.fromEntries(outs.map((o) => [o.name, o.digest])),
      metrics: lastMetrics(c.id),
    })
  }
  const edges: Array<{ from: string; to: string; input: string }> = []
  for (const e of execs)
    for (const i of store
      .sql("SELECT name, digest FROM execution_inputs WHERE execution_id = ? ORDER BY name, position")
      .all(e.id) as Array<{ name: string; digest: string }>) {
      // The latest producer that finished before this step started (a step may pass bytes through).
      const from = (producers.get(i.digest) ?? [])
        .filter((p) => p.id !== e.id && (p.finished_at ?? p.started_at) <= e.started_at)
        .sort(
          (a, b) => (b.finished_at ?? b.started_at) - (a.finished_at ?? a.started_at) || b.id - a.id,
        )[0]?.node
      if (from !== undefined && !edges.some((x) => x.from === from && x.to === e.node && x.input === i.name))
        edges.push({ from, to: e.node, input: i.name })
    }

  // Curves: the computing execution's points, with those of its interrupted attempts before it.
  const curves: Curve[] = []
  for (const e of execs) {
    const c = computingOf.get(e.node)!
    const attempts =
      c.step_key === null
        ? [c.id]
        : (store
            .sql(
              `SELECT id FROM executions WHERE step_key = ? AND id <= ? AND (id = ? OR status = 'interrupted') ORDER BY id`,
            )
            .pluck()
            .all(c.step_key, c.id, c.id) as number[])
    for (const metric of CURVE_METRICS) {
      const byStep = new Map<number, number>()
      let index = 0
      for (const id of attempts)
        for (const p of store
          .sql("SELECT step, value FROM metrics WHERE execution_id = ? AND name = ? ORDER BY rowid")
          .all(id, metric) as Array<{ step: number | null; value: number }>)
          byStep.set(p.step ?? index++, p.value)
      if (byStep.size > 0)
        curves.push({ node: e.node, metric, points: [...byStep.entries()].sort((a, b) => a[0] - b[0]) })
    }
  }

  // Sweeps: nodes named "<group>/<trial>".
  const groups = new Map<string, ReportNode[]>()
  for (const n of nodes) {
    const slash = n.node.indexOf("/")
    if (slash <= 0) continue
    const g = n.node.slice(0, slash)
    groups.set(g, [...(groups.get(g) ?? []), n])
  }
  const sweeps: Sweep[] = [...groups.entries()].map(([group, members]) => {
    const rows = members.map((m) => ({
      node: m.node,
      status: m.status,
      params: flatParams(m.params),
      metrics: m.metrics,
    }))
    const keys = [...new Set(rows.flatMap((r) => Object.keys(r.params)))].sort()
    const varying = keys.filter((k) => new Set(rows.map((r) => JSON.stringify(r.params[k]))).size > 1)
    return { group, varying, rows }
  })

  const evaluations: Evaluation[] = []
  for (const n of nodes)
    for (const [output, digest] of Object.entries(n.outputs)) {
      if (store.artifact(digest)?.kind !== "Report") continue
      const ev = readEvaluation(store, n.node, output, digest)
      if (ev !== undefined) evaluations.push(ev)
    }

  return {
    run: {
      id: run.id,
      pipeline: run.pipeline,
      pipelinePath: path.resolve(run.pipeline_path),
      status: run.status,
      startedAt: new Date(run.started_at).toISOString(),
      ms: run.finished_at === null ? null : run.finished_at - run.started_at,
      argv: JSON.parse(run.argv) as string[],
    },
    nodes,
    edges,
    curves,
    sweeps,
    evaluations,
    generatedAt: new Date().toISOString(),
  }
}

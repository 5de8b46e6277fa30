/**
 * `tunegraph diff`: what differs between two runs, node by node. Parameters
 * (flattened to dotted paths), source files, plugin versions and code,
 * output digests, the `--set` overrides given, and the final value of every
 * metric with its delta. Cached steps count with the metrics of the execution
 * that computed them.
 */
import type { Store } from "../cache/Store.ts"
import { computing, type ExecutionRow, metricSummaries } from "./Lineage.ts"

export interface Change<T = unknown> {
  readonly node: string
  readonly name: string
  readonly a: T | null
  readonly b: T | null
}

export interface MetricChange {
  readonly node: string
  readonly name: string
  readonly a: number | null
  readonly b: number | null
  readonly delta: number | null
}

export interface RunDiff {
  readonly a: string
  readonly b: string
  readonly overrides: { readonly a: ReadonlyArray<string>; readonly b: ReadonlyArray<string> }
  readonly nodes: { readonly onlyA: ReadonlyArray<string>; readonly onlyB: ReadonlyArray<string> }
  readonly params: ReadonlyArray<Change>
  readonly plugins: ReadonlyArray<Change<string>>
  readonly sources: ReadonlyArray<Change<string>>
  readonly outputs: ReadonlyArray<Change<string>>
  readonly status: ReadonlyArray<Change<string>>
  readonly metrics: ReadonlyArray<MetricChange>
}

/** The `--set` values a run was started with, from its recorded argv. */
export const overridesOf = (argv: ReadonlyArray<string>): string[] => {
  const out: string[] = []
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (a === "--set" && argv[i + 1] !== undefined) out.push(argv[++i]!)
    else if (a.startsWith("--set=")) out.push(a.slice(6))
  }
  return out
}

const flatten = (v: unknown, prefix: string, out: Map<string, unknown>) => {
  if (typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length > 0) {
    for (const [k, x] of Object.entries(v)) flatten(x, prefix === "" ? k : `${prefix}.${k}`, out)
  } else if (prefix !== "") out.set(prefix, v)
  return out
}

const executionsOf = (store: Store, run: string): Map<string, ExecutionRow> => {
  const rows = store.sql("SELECT * FROM executions WHERE run_id = ? ORDER BY id").all(run) as ExecutionRow[]
  return new Map(rows.map((r) => [r.node, r]))
}

const outputsOf = (store: Store, id: number) =>
  new Map(
    (
      store.sql("SELECT name, digest FROM execution_outputs WHERE execution_id = ?").all(id) as Array<{
        name: string
        digest: string
      }>
    ).map((o) => [o.name, o.digest]),
  )

const ingredients = (e: ExecutionRow) =>
  (e.ingredients === null ? {} : JSON.parse(e.ingredients)) as {
    params?: unknown
    files?: Record<string, string>
  }

const same = (x: unknown, y: unknown) => JSON.stringify(x) === JSON.stringify(y)

export const diffRuns = (store: Store, a: string, b: string): RunDiff => {
  const argvOf = (run: string) =>
    JSON.parse(
      (store.sql("SELECT argv FROM runs WHERE id = ?").get(run) as { argv: string }).argv,
    ) as string[]
  const ea = executionsOf(store, a)
  const eb = executionsOf(store, b)
  const nodes = [...new Set([...ea.keys(), ...eb.keys()])]
  const params: Change[] = []
  const plugins: Change<string>[] = []
  const sources: Change<string>[] = []
  const outputs: Change<string>[] = []
  const status: Change<string>[] = []
  const metrics: MetricChange[] = []
  for (const node of nodes) {
    const x = ea.get(node)
    const y = eb.get(node)
    if (x === undefined || y === undefined) continue
    const ok = (st: string) => st === "ran" || st === "cached"
    if (x.status !== y.status && !(ok(x.status) && ok(y.status)))
      status.push({ node, name: "status", a: x.status, b: y.status })
    if (x.plugin_version !== y.plugin_version)
      plugins.push({ node, name: "version", a: x.plugin_version, b: y.plugin_version })
    if (x.fingerprint !== y.fingerprint)
      plugins.push({ node, name: "code", a: x.fingerprint, b: y.fingerprint })
    const ix = ingredients(x)
    const iy = ingredients(y)
    if (x.plugin === "source") {
      const fx = ix.files ?? {}
      const fy = iy.files ?? {}
      for (const f of [...new Set([...Object.keys(fx), ...Object.keys(fy)])].sort())
        if (fx[f] !== fy[f]) sources.push({ node, name: f, a: fx[f] ?? null, b: fy[f] ?? null })
    } else if (x.ingredients !== null && y.ingredients !== null) {
      const px = flatten(ix.params ?? {}, "", new Map())
      const py = flatten(iy.params ?? {}, "", new Map())
      for (const k of [...new Set([...px.keys(), ...py.keys()])].sort())
        if (!same(px.get(k), py.get(k)))
          params.push({ node, name: k, a: px.has(k) ? px.get(k) : null, b: py.has(k) ? py.get(k) : null })
    }
    const ox = outputsOf(store, x.id)
    const oy = outputsOf(store, y.id)
    for (const o of [...new Set([...ox.keys(), ...oy.keys()])].sort())
      if (ox.get(o) !== oy.get(o)) outputs.push({ node, name: o, a: ox.get(o) ?? null, b: oy.get(o) ?? null })
    const mx = metricSummaries(store, computing(store, x).id)
    const my = metricSummaries(store, computing(store, y).id)
    for (const m of [...new Set([...Object.keys(mx), ...Object.keys(my)])].sort()) {
      const va = mx[m]?.last ?? null
      const vb = my[m]?.last ?? null
      metrics.push({ node, name: m, a: va, b: vb, delta: va !== null && vb !== null ? vb - va : null })
    }
  }
  return {
    a,
    b,
    overrides: { a: overridesOf(argvOf(a)), b: overridesOf(argvOf(b)) },
    nodes: {
      onlyA: nodes.filter((n) => !eb.has(n)),
      onlyB: nodes.filter((n) => !ea.has(n)),
    },
    params,
    plugins,
    sources,
    outputs,
    status,
    metrics,
  }
}

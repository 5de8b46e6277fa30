/**
 * Lineage: where an artifact came from. From the execution that computed it,
 * follow each input digest to the execution that computed that, up to the
 * sources, and report every step's recipe (plugin, version, parameters, input
 * and output digests, source files), where and how long it ran, and its
 * metrics. A cached execution counts as the one that really computed its
 * outputs (`produced_by`), so times and logs are the real ones.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { Store } from "../cache/Store.ts"
import { hashFileSync } from "./Hash.ts"

export class LineageError extends Error {
  override readonly name = "LineageError"
}

/** The file the export step writes into each export directory. */
export const EXPORT_MANIFEST = "tunegraph-export.json"

export interface ExecutionRow {
  readonly id: number
  readonly run_id: string
  readonly node: string
  readonly plugin: string
  readonly plugin_version: string
  readonly fingerprint: string
  readonly step_key: string | null
  readonly status: string
  readonly produced_by: number | null
  readonly started_at: number
  readonly finished_at: number | null
  readonly ms: number | null
  readonly backend: string | null
  readonly annotations: string | null
  readonly error: string | null
  readonly ingredients: string | null
}

/** What the user asked about: one artifact digest, or every output of one execution (a node). */
export interface Target {
  readonly digest?: string
  readonly execution: number
  /** How the reference was understood, for the heading. */
  readonly via: "digest" | "export" | "object" | "file" | "node"
}

export interface MetricSummary {
  readonly last: number
  readonly lastStep: number | null
  readonly min: number
  readonly max: number
  readonly points: number
}

export interface LineageInput {
  readonly name: string
  readonly position: number
  readonly digest: string
  readonly from: string | null
  readonly fromExecution: number | null
}

export interface LineageStep {
  readonly execution: number
  readonly node: string
  readonly plugin: string
  readonly version: string
  readonly fingerprint: string
  readonly key: string | null
  readonly status: string
  readonly run: string
  readonly startedAt: string
  readonly ms: number | null
  readonly backend: string | null
  readonly annotations: unknown
  readonly error: string | null
  readonly params: unknown
  readonly inputs: ReadonlyArray<LineageInput>
  readonly outputs: Readonly<Record<string, { digest: string; kind: string | null; size: number | null }>>
  /** For a source: every file it read, with its path and digest. */
  readonly files?: ReadonlyArray<{ path: string; digest: string; size: number }>
  readonly metrics: Readonly<Record<string, MetricSummary>>
}

export interface Lineage {
  readonly target: {
    readonly digest: string | null
    readonly kind: string | null
    readonly size: number | null
    readonly node: string
    readonly output: string | null
    readonly execution: number
    readonly via: Target["via"]
  }
  /** Upstream first: every step appears after the steps it read from. */
  readonly steps: ReadonlyArray<LineageStep>
  readonly edges: ReadonlyArray<{ from: number; to: number; digest: string; input: string }>
}

export const stripDigest = (d: string) =>
  d
    .trim()
    .replace(/^sha256:/, "")
    .toLowerCase()

const execById = (store: Store, id: number) =>
  store.sql("SELECT * FROM executions WHERE id = ?").get(id) as ExecutionRow | undefined

/** The execution that computed a digest: the earliest that ran, else a source read, else any. */
export const producerOf = (store: Store, digest: string): ExecutionRow | undefined => {
  const row = store
    .sql(
      `SELECT e.* FROM execution_outputs o JOIN executions e ON e.id = o.execution_id
       WHERE o.digest = ?
       ORDER BY (e.status = 'ran') DESC, (e.plugin = 'source') DESC, e.produced_by IS NULL DESC, e.id LIMIT 1`,
    )
    .get(digest) as ExecutionRow | undefined
  return row === undefined ? undefined : computing(store, row)
}

/**
 * The execution whose output a consumer read: preferably in the consumer's own
 * run (the graph then reads as one run), finished before the consumer started,
 * the latest such (a step may pass bytes through unchanged, so its input and
 * output share a digest), and never the consumer itself.
 */
export const upstreamOf = (
  store: Store,
  digest: string,
  consumer: ExecutionRow,
): ExecutionRow | undefined => {
  const sameRun = store
    .sql(
      `SELECT e.* FROM execution_outputs o JOIN executions e ON e.id = o.execution_id
       WHERE o.digest = ? AND e.run_id = ? AND e.id != ? AND coalesce(e.finished_at, e.started_at) <= ?
       ORDER BY coalesce(e.finished_at, e.started_at) DESC, e.id DESC LIMIT 1`,
    )
    .get(digest, consumer.run_id, consumer.id, consumer.started_at) as ExecutionRow | undefined
  if (sameRun !== undefined) return computing(store, sameRun)
  const any = producerOf(store, digest)
  return any === undefined || any.id === consumer.id ? undefined : any
}

/** Follows `produced_by` to the execution that really ran. */
export const computing = (store: Store, e: ExecutionRow): ExecutionRow => {
  let cur = e
  for (let i = 0; i < 64 && cur.produced_by !== null; i++) {
    const next = execById(store, cur.produced_by)
    if (next === undefined) break
    cur = next
  }
  return cur
}

const findByPrefix = (store: Store, prefix: string): string[] => {
  const like = `${prefix}%`
  return (
    store
      .sql(
        `SELECT digest FROM artifacts WHERE digest LIKE ?
         UNION SELECT digest FROM execution_outputs WHERE digest LIKE ? LIMIT 6`,
      )
      .all(like, like) as Array<{ digest: string }>
  ).map((r) => r.digest)
}

const readExportManifest = (file: string): string => {
  let parsed: { artifact?: unknown }
  try {
    parsed = JSON.parse(fs.readFileSync(file, "utf8")) as { artifact?: unknown }
  } catch (e) {
    throw new LineageError(`${file}: not a readable export manifest (${(e as Error).message})`)
  }
  if (typeof parsed.artifact !== "string")
    throw new LineageError(`${file}: has no "artifact" digest; was it written by tunegraph's export step?`)
  return stripDigest(parsed.artifact)
}

/** The digest of the object holding `abs`, when `abs` is inside the store's objects/. */
const objectDigestOf = (store: Store, abs: string): string | undefined => {
  const rel = path.relative(path.resolve(store.objectsDir), abs)
  if (rel.startsWith("..") || path.isAbsolute(rel)) return undefined
  const [a, b] = rel.split(path.sep)
  return a !== undefined && b !== undefined && a.length === 2 ? `${a}${b}` : undefined
}

const executionFor = (store: Store, digest: string): number => {
  const e = producerOf(store, digest)
  if (e === undefined)
    throw new LineageError(`sha256:${digest} is in no execution's outputs (gc may have removed its history)`)
  return e.id
}

/**
 * Understands what the user pointed at: an artifact digest (with or without
 * "sha256:", or a unique prefix), a node name (its latest execution, or the
 * one in `run`), an export directory or its tunegraph-export.json, a path in
 * the store's objects/, or any file whose bytes are a known artifact.
 */
export const resolveTarget = (store: Store, ref: string, run?: string): Target => {
  const node = store
    .sql(
      `SELECT id FROM executions WHERE node = ? AND (CAST(? AS TEXT) IS NULL OR run_id = ?)
       AND status IN ('ran','cached') ORDER BY id DESC LIMIT 1`,
    )
    .get(ref, run ?? null, run ?? null) as { id: number } | undefined
  if (node !== undefined) return { execution: node.id, via: "node" }
  const abs = path.resolve(ref)
  if (/[/\\]/.test(ref) || ref.startsWith(".") || (fs.existsSync(abs) && !/^(sha256:)?[0-9a-f]+$/i.test(ref)))
    return resolvePath(store, ref, abs)
  if (/^(sha256:)?[0-9a-f]{4,64}$/i.test(ref.trim())) {
    const prefix = stripDigest(ref)
    const found = findByPrefix(store, prefix)
    if (found.length === 0) {
      if (fs.existsSync(abs)) return resolvePath(store, ref, abs)
      throw new LineageError(`no artifact or source digest starts with ${prefix}`)
    }
    if (found.length > 1)
      throw new LineageError(
        `digest prefix ${prefix} is ambiguous: ${found.map((d) => d.slice(0, 16)).join(", ")}${found.length > 5 ? ", ..." : ""}`,
      )
    return { digest: found[0]!, execution: executionFor(store, found[0]!), via: "digest" }
  }
  if (run !== undefined) throw new LineageError(`node "${ref}" has no successful execution in run ${run}`)
  throw new LineageError(`"${ref}" is not a node, an artifact digest, or a path (see tunegraph show last)`)
}

const resolvePath = (store: Store, ref: string, abs: string): Target => {
  if (!fs.existsSync(abs)) throw new LineageError(`${ref} does not exist`)
  const inStore = objectDigestOf(store, abs)
  if (inStore !== undefined) {
    if (store.artifact(inStore) === undefined)
      throw new LineageError(`${ref} is not a recorded object (garbage?)`)
    return { digest: inStore, execution: executionFor(store, inStore), via: "object" }
  }
  const st = fs.statSync(abs)
  const manifest = st.isDirectory()
    ? path.join(abs, EXPORT_MANIFEST)
    : path.basename(abs) === EXPORT_MANIFEST
      ? abs
      : undefined
  if (manifest !== undefined) {
    if (!fs.existsSync(manifest))
      throw new LineageError(`${ref} is a directory without ${EXPORT_MANIFEST}: not an export of tunegraph`)
    const digest = readExportManifest(manifest)
    return { digest, execution: executionFor(store, digest), via: "export" }
  }
  // Any other file: known by its bytes, as an artifact, a file inside one, or a source file.
  const { digest } = hashFileSync(abs)
  if (store.artifact(digest) !== undefined || findByPrefix(store, digest).length > 0)
    return { digest, execution: executionFor(store, digest), via: "file" }
  const inside = store.sql("SELECT digest FROM artifact_files WHERE file_digest = ? LIMIT 1").get(digest) as
    | { digest: string }
    | undefined
  if (inside !== undefined)
    return { digest: inside.digest, execution: executionFor(store, inside.digest), via: "file" }
  const source = store.sql("SELECT digest FROM source_files WHERE file_digest = ? LIMIT 1").get(digest) as
    | { digest: string }
    | undefined
  if (source !== undefined)
    return { digest: source.digest, execution: executionFor(store, source.digest), via: "file" }
  throw new LineageError(`${ref} (sha256:${digest.slice(0, 12)}) is not an artifact tunegraph knows`)
}

/** The last value, range and count of each metric an execution recorded. */
export const metricSummaries = (store: Store, execution: number): Record<string, MetricSummary> => {
  const rows = store
    .sql(
      `SELECT name, count(*) AS points, min(value) AS min, max(value) AS max,
         (SELECT value FROM metrics l WHERE l.execution_id = m.execution_id AND l.name = m.name
            ORDER BY l.step IS NULL, l.step DESC, l.rowid DESC LIMIT 1) AS last,
         max(step) AS lastStep
       FROM metrics m WHERE execution_id = ? GROUP BY m.execution_id, name ORDER BY name`,
    )
    .all(execution) as Array<{
    name: string
    points: number
    min: number
    max: number
    last: number
    lastStep: number | null
  }>
  return Object.fromEntries(
    rows.map((r) => [
      r.name,
      { last: r.last, lastStep: r.lastStep, min: r.min, max: r.max, points: r.points },
    ]),
  )
}

const iso = (ms: number) => new Date(ms).toISOString()

export const lineage = (store: Store, target: Target): Lineage => {
  const start = execById(store, target.execution)
  if (start === undefined) throw new LineageError(`execution ${target.execution} is not in the store`)
  const root = computing(store, start)
  const steps = new Map<number, LineageStep>()
  const edges: Array<{ from: number; to: number; digest: string; input: string }> = []
  const queue: ExecutionRow[] = [root]
  const outputsOf = (id: number) =>
    store
      .sql(
        `SELECT o.name, o.digest, a.kind, a.size FROM execution_outputs o LEFT JOIN artifacts a ON a.digest = o.digest
         WHERE o.execution_id = ? ORDER BY o.name`,
      )
      .all(id) as Array<{ name: string; digest: string; kind: string | null; size: number | null }>
  while (queue.length > 0) {
    const e = queue.shift()!
    if (steps.has(e.id)) continue
    // Inputs are recorded on every execution; a cached one has the same as its producer.
    const inputs = (
      store
        .sql(
          "SELECT name, position, digest FROM execution_inputs WHERE execution_id = ? ORDER BY name, position",
        )
        .all(e.id) as Array<{ name: string; position: number; digest: string }>
    ).map((i) => {
      const from = upstreamOf(store, i.digest, e)
      if (from !== undefined) {
        edges.push({ from: from.id, to: e.id, digest: i.digest, input: i.name })
        queue.push(from)
      }
      return { ...i, from: from?.node ?? null, fromExecution: from?.id ?? null }
    })
    const ingredients = e.ingredients === null ? null : (JSON.parse(e.ingredients) as { params?: unknown })
    const outs = outputsOf(e.id)
    const isSource = e.plugin === "source"
    const files = isSource
      ? (store
          .sql("SELECT path, file_digest AS digest, size FROM source_files WHERE digest = ? ORDER BY path")
          .all(outs[0]?.digest ?? "") as Array<{ path: string; digest: string; size: number }>)
      : undefined
    steps.set(e.id, {
      execution: e.id,
      node: e.node,
      plugin: e.plugin,
      version: e.plugin_version,
      fingerprint: e.fingerprint,
      key: e.step_key,
      status: e.status,
      run: e.run_id,
      startedAt: iso(e.started_at),
      ms: e.ms,
      backend: e.backend,
      annotations: e.annotations === null ? null : JSON.parse(e.annotations),
      error: e.error,
      params: ingredients?.params ?? {},
      inputs,
      outputs: Object.fromEntries(
        outs.map((o) => [o.name, { digest: o.digest, kind: o.kind, size: o.size }]),
      ),
      ...(files === undefined ? {} : { files }),
      metrics: metricSummaries(store, e.id),
    })
  }
  const order = topological([...steps.keys()], edges)
  const rootOuts = steps.get(root.id)!.outputs
  const outName =
    target.digest === undefined
      ? null
      : (Object.entries(rootOuts).find(([, o]) => o.digest === target.digest)?.[0] ?? null)
  const art = target.digest === undefined ? undefined : store.artifact(target.digest)
  return {
    target: {
      digest: target.digest ?? null,
      kind: art?.kind ?? (target.digest !== undefined && root.plugin === "source" ? "Files" : null),
      size: art?.size ?? null,
      node: root.node,
      output: outName,
      execution: root.id,
      via: target.via,
    },
    steps: order.map((id) => steps.get(id)!),
    edges,
  }
}

const topological = (ids: number[], edges: ReadonlyArray<{ from: number; to: number }>): number[] => {
  const indeg = new Map(ids.map((i) => [i, 0]))
  const kids = new Map<number, number[]>(ids.map((i) => [i, []]))
  const seen = new Set<string>()
  for (const e of edges) {
    const k = `${e.from}>${e.to}`
    if (seen.has(k)) continue
    seen.add(k)
    indeg.set(e.to, (indeg.get(e.to) ?? 0) + 1)
    kids.get(e.from)?.push(e.to)
  }
  const ready = ids.filter((i) => indeg.get(i) === 0).sort((a, b) => a - b)
  const out: number[] = []
  while (ready.length > 0) {
    const n = ready.shift()!
    out.push(n)
    for (const c of kids.get(n) ?? []) {
      indeg.set(c, indeg.get(c)! - 1)
      if (indeg.get(c) === 0) ready.push(c)
    }
  }
  return out.length === ids.length ? out : ids
}

/** Graphviz: steps as boxes, artifacts as ellipses. */
export const toDot = (l: Lineage): string => {
  const esc = (s: string) => s.replace(/\\/g, "\\\\").replace(/"/g, '\\"')
  const q = (...parts: string[]) => `"${parts.map(esc).join("\\n")}"`
  const lines = ["digraph lineage {", "  rankdir=LR;", '  node [fontname="Helvetica", fontsize=10];']
  const artifacts = new Set<string>()
  for (const s of l.steps) {
    const params = JSON.stringify(s.params)
    const label = [
      s.node,
      s.plugin === "source" ? "source" : `${s.plugin}@${s.version}`,
      ...(params !== "{}" && s.plugin !== "source"
        ? [params.length > 60 ? `${params.slice(0, 57)}...` : params]
        : []),
      ...(s.files !== undefined ? [`${s.files.length} file${s.files.length === 1 ? "" : "s"}`] : []),
    ]
    lines.push(`  ${q(`e${s.execution}`)} [shape=box, style=rounded, label=${q(...label)}];`)
    for (const [name, o] of Object.entries(s.outputs)) {
      if (!artifacts.has(o.digest)) {
        artifacts.add(o.digest)
        const mark = o.digest === l.target.digest ? ", penwidth=2" : ""
        lines.push(
          `  ${q(o.digest)} [shape=ellipse, label=${q(`${o.kind ?? "Files"} ${o.digest.slice(0, 12)}`)}${mark}];`,
        )
      }
      lines.push(`  ${q(`e${s.execution}`)} -> ${q(o.digest)} [label=${q(name)}];`)
    }
  }
  for (const s of l.steps)
    for (const i of s.inputs) {
      if (!artifacts.has(i.digest)) {
        artifacts.add(i.digest)
        lines.push(`  ${q(i.digest)} [shape=ellipse, label=${q(i.digest.slice(0, 12))}];`)
      }
      lines.push(`  ${q(i.digest)} -> ${q(`e${s.execution}`)} [label=${q(i.name)}];`)
    }
  lines.push("}")
  return `${lines.join("\n")}\n`
}

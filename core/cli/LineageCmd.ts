/** `lineage`, `diff` and `query`: questions about history, answered from the store. */
import * as fs from "node:fs"
import { QueryConnection, type QueryResult, VIEWS } from "../../cache/Query.ts"
import { diffRuns } from "../Diff.ts"
import { type Lineage, lineage, resolveTarget, toDot } from "../Lineage.ts"
import { bool, parseArgs, str, UsageError } from "./Args.ts"
import { bold, dim, green, red } from "./Output.ts"
import {
  asUsage,
  bytes,
  existingStoreDir,
  isDatabaseUrl,
  openExistingStore,
  quietOnClosedPipe,
  runRef,
  short,
} from "./StoreArg.ts"

const out = (s: string) => process.stdout.write(s)

export const cmdLineage = (argv: ReadonlyArray<string>): number => asUsage(() => lineageCmd(argv))
const lineageCmd = (argv: ReadonlyArray<string>): number => {
  quietOnClosedPipe()
  const args = parseArgs(argv, { json: "boolean", dot: "boolean", store: "string", run: "string" })
  const ref = args.positionals[0]
  if (ref === undefined)
    throw new UsageError("usage: tunegraph lineage <artifact digest | node | exported path> [--json | --dot]")
  const store = openExistingStore(args)
  try {
    const run = str(args, "run")
    const l = lineage(store, resolveTarget(store, ref, run === undefined ? undefined : runRef(store, run)))
    if (bool(args, "json")) out(`${JSON.stringify(l)}\n`)
    else if (bool(args, "dot")) out(toDot(l))
    else printLineage(l)
    return 0
  } finally {
    store.close()
  }
}

const printLineage = (l: Lineage) => {
  const t = l.target
  const what =
    t.digest === null
      ? `node "${t.node}"`
      : `${short(t.digest)}${t.kind ? ` (${t.kind}${t.size === null ? "" : `, ${bytes(t.size)}`})` : ""}: ${t.output ? `output "${t.output}" of ` : ""}node "${t.node}"`
  out(`${bold("lineage of")} ${what}\n`)
  for (const s of l.steps) {
    out("\n")
    if (s.plugin === "source") {
      const d = Object.values(s.outputs)[0]?.digest
      out(`${bold(s.node)}  ${dim("source")}  ${short(d)}  ${dim(`read in run ${s.run}`)}\n`)
      const hf = (s.params as { hf?: { repo?: string; revision?: string; commit?: string } } | null)?.hf
      if (hf?.repo !== undefined)
        out(`    ${dim("hf     ")}  ${hf.repo} revision ${hf.revision} = commit ${hf.commit ?? "?"}\n`)
      for (const f of s.files ?? []) out(`    ${short(f.digest)}  ${bytes(f.size).padStart(9)}  ${f.path}\n`)
      continue
    }
    const when = `${s.status === "ran" ? "ran" : s.status} in run ${s.run} at ${s.startedAt}${s.ms === null ? "" : `, ${(s.ms / 1000).toFixed(2)} s`}`
    out(`${bold(s.node)}  ${s.plugin}@${s.version}  ${dim(when)}${s.backend ? `  [${s.backend}]` : ""}\n`)
    out(`    ${dim("params ")}  ${JSON.stringify(s.params)}\n`)
    for (const i of s.inputs)
      out(
        `    ${dim("input  ")}  ${i.name}${i.position > 0 ? `[${i.position}]` : ""} = ${short(i.digest)}${i.from ? dim(` from ${i.from}`) : ""}\n`,
      )
    for (const [n, o] of Object.entries(s.outputs))
      out(
        `    ${dim("output ")}  ${n} = ${short(o.digest)}${o.kind ? dim(` ${o.kind}`) : ""}${o.size === null ? "" : dim(` ${bytes(o.size)}`)}\n`,
      )
    const ms = Object.entries(s.metrics)
    if (ms.length > 0)
      out(
        `    ${dim("metrics")}  ${ms.map(([k, m]) => `${k}=${Number(m.last.toPrecision(5))}${m.points > 1 ? dim(` (${m.points} points)`) : ""}`).join("  ")}\n`,
      )
    out(`    ${dim("key    ")}  ${s.key ?? "-"}  ${dim(`code ${s.fingerprint}`)}\n`)
    if (s.error) out(`    ${red(s.error)}\n`)
  }
  return 0
}

export const cmdDiff = (argv: ReadonlyArray<string>): number => asUsage(() => diffCmd(argv))
const diffCmd = (argv: ReadonlyArray<string>): number => {
  quietOnClosedPipe()
  const args = parseArgs(argv, { json: "boolean", store: "string" })
  const [ra, rb] = args.positionals
  if (ra === undefined || rb === undefined)
    throw new UsageError("usage: tunegraph diff <runA> <runB> [--json]")
  const store = openExistingStore(args)
  try {
    const d = diffRuns(store, runRef(store, ra), runRef(store, rb))
    if (bool(args, "json")) {
      out(`${JSON.stringify(d)}\n`)
      return 0
    }
    const v = (x: unknown) =>
      x === null
        ? dim("(none)")
        : typeof x === "string" && /^[0-9a-f]{64}$/.test(x)
          ? short(x)
          : JSON.stringify(x)
    out(`${bold("diff")} ${d.a} ${dim("->")} ${d.b}\n`)
    const section = (title: string, rows: string[]) => {
      if (rows.length === 0) return
      out(`\n${bold(title)}\n`)
      for (const r of rows) out(`  ${r}\n`)
    }
    if (d.overrides.a.join(" ") !== d.overrides.b.join(" "))
      section("--set", [
        `a: ${d.overrides.a.join(" ") || dim("(none)")}`,
        `b: ${d.overrides.b.join(" ") || dim("(none)")}`,
      ])
    section("nodes", [
      ...d.nodes.onlyA.map((n) => `- ${n} (only in ${d.a})`),
      ...d.nodes.onlyB.map((n) => `+ ${n} (only in ${d.b})`),
    ])
    section(
      "parameters",
      d.params.map((c) => `${c.node}.${c.name}: ${v(c.a)} -> ${v(c.b)}`),
    )
    section(
      "plugins",
      d.plugins.map((c) => `${c.node} ${c.name}: ${c.a} -> ${c.b}`),
    )
    section(
      "sources",
      d.sources.map((c) => `${c.node} ${c.name}: ${v(c.a)} -> ${v(c.b)}`),
    )
    section(
      "outputs",
      d.outputs.map((c) => `${c.node}.${c.name}: ${v(c.a)} -> ${v(c.b)}`),
    )
    section(
      "status",
      d.status.map((c) => `${c.node}: ${c.a} -> ${c.b}`),
    )
    const fmt = (x: number | null) => (x === null ? dim("(none)") : String(Number(x.toPrecision(6))))
    const moved = d.metrics.filter((m) => m.delta !== 0)
    section(
      "metrics (final values)",
      moved.map((m) => {
        const delta =
          m.delta === null ? "" : `  ${m.delta < 0 ? green(fmt(m.delta)) : red(`+${fmt(m.delta)}`)}`
        return `${m.node}.${m.name}: ${fmt(m.a)} -> ${fmt(m.b)}${delta}`
      }),
    )
    if (moved.length < d.metrics.length)
      out(dim(`  (${d.metrics.length - moved.length} metrics unchanged)\n`))
    const changed =
      d.params.length +
      d.plugins.length +
      d.sources.length +
      d.outputs.length +
      d.nodes.onlyA.length +
      d.nodes.onlyB.length
    if (changed === 0) out(`\n${dim("same recipe and the same outputs")}\n`)
    return 0
  } finally {
    store.close()
  }
}

export const cmdQuery = (argv: ReadonlyArray<string>): number => asUsage(() => queryCmd(argv))
const queryCmd = (argv: ReadonlyArray<string>): number => {
  quietOnClosedPipe()
  const args = parseArgs(argv, { json: "boolean", csv: "boolean", store: "string", views: "boolean" })
  if (bool(args, "views")) {
    for (const view of VIEWS) out(`${bold(view.name)}\n  ${view.doc}\n`)
    return 0
  }
  let sql = args.positionals.join(" ")
  if (sql.trim() === "" && !process.stdin.isTTY) sql = fs.readFileSync(0, "utf8")
  if (sql.trim() === "")
    throw new UsageError(
      'usage: tunegraph query "<SQL>" [--json | --csv]   (tunegraph query --views lists the views)',
    )
  const conn = isDatabaseUrl(str(args, "store") ?? (process.env.TUNEGRAPH_STORE || undefined))
    ? QueryConnection.openShared(openExistingStore(args))
    : QueryConnection.open(existingStoreDir(str(args, "store")))
  try {
    const r = conn.run(sql)
    if (bool(args, "json"))
      out(
        `${JSON.stringify(r.rows.map((row) => Object.fromEntries(r.columns.map((c, i) => [c, row[i]]))))}\n`,
      )
    else if (bool(args, "csv")) out(toCsv(r))
    else out(toTable(r))
    return 0
  } finally {
    conn.close()
  }
}

const cell = (v: unknown): string =>
  v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v)

export const toCsv = (r: QueryResult): string => {
  const q = (s: string) => (/[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s)
  return [r.columns.map(q).join(","), ...r.rows.map((row) => row.map((v) => q(cell(v))).join(","))]
    .map((l) => `${l}\n`)
    .join("")
}

export const toTable = (r: QueryResult): string => {
  const MAX = 60
  const clip = (s: string) => {
    const one = s.replace(/\s*\n\s*/g, " ⏎ ")
    return one.length > MAX ? `${one.slice(0, MAX - 1)}…` : one
  }
  const cells = r.rows.map((row) => row.map((v) => clip(cell(v))))
  const widths = r.columns.map((c, i) => Math.max(c.length, ...cells.map((row) => row[i]!.length)))
  const numeric = r.columns.map(
    (_, i) => r.rows.length > 0 && r.rows.every((row) => typeof row[i] === "number" || row[i] === null),
  )
  const line = (vals: string[]) =>
    vals
      .map((v, i) => (numeric[i] ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd()
  return [
    bold(line(r.columns.map(String))),
    dim(widths.map((w) => "-".repeat(w)).join("  ")),
    ...cells.map(line),
    dim(`(${r.rows.length} row${r.rows.length === 1 ? "" : "s"})`),
  ]
    .map((l) => `${l}\n`)
    .join("")
}

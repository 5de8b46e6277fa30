/**
 * Parameters: decoded with each plugin's Schema before anything runs, with
 * `--set NODE.PARAM=VALUE` overrides applied first. A bad value names the
 * node, the field, what was expected and what was given.
 */
import { Exit, Schema } from "effect"
import type { Pipeline, StepNode } from "./Pipeline.ts"

export class ParamError extends Error {
  override readonly name = "ParamError"
}

export interface PreparedParams {
  /** Decoded values, given to the plugin. */
  readonly decoded: unknown
  /** Encoded with every default filled: what the step key sees. */
  readonly encoded: Readonly<Record<string, unknown>>
}

export interface Override {
  readonly node: string
  readonly path: ReadonlyArray<string>
  readonly value: unknown
  readonly raw: string
}

/** Parses `NODE.PARAM=VALUE` (PARAM may be a dotted path; VALUE is JSON, or else a plain string). */
export const parseOverride = (text: string, pipeline: Pipeline): Override => {
  const eq = text.indexOf("=")
  if (eq < 0) throw new ParamError(`--set ${text}: expected NODE.PARAM=VALUE`)
  const lhs = text.slice(0, eq)
  const raw = text.slice(eq + 1)
  // Node names may contain dots: take the longest node name that prefixes the left side.
  let node: string | undefined
  for (const name of pipeline.nodes.keys())
    if (lhs.startsWith(`${name}.`) && (node === undefined || name.length > node.length)) node = name
  if (node === undefined) {
    const guess = lhs.split(".")[0]
    throw new ParamError(
      `--set ${text}: no node named "${guess}" (nodes: ${[...pipeline.nodes.keys()].join(", ")})`,
    )
  }
  const path = lhs.slice(node.length + 1).split(".")
  let value: unknown = raw
  try {
    value = JSON.parse(raw)
  } catch {
    // a bare word stays a string
  }
  return { node, path, value, raw }
}

export const applyOverrides = (
  params: Readonly<Record<string, unknown>>,
  overrides: ReadonlyArray<Override>,
): Record<string, unknown> => {
  const out = structuredCloneish(params) as Record<string, unknown>
  for (const o of overrides) {
    let cur = out
    o.path.forEach((k, i) => {
      if (i === o.path.length - 1) cur[k] = o.value
      else {
        const next = cur[k]
        cur[k] = typeof next === "object" && next !== null ? { ...(next as object) } : {}
        cur = cur[k] as Record<string, unknown>
      }
    })
  }
  return out
}

const structuredCloneish = (v: unknown): unknown => {
  if (Array.isArray(v)) return v.map(structuredCloneish)
  if (typeof v === "object" && v !== null && Object.getPrototypeOf(v) === Object.prototype)
    return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, structuredCloneish(x)]))
  return v
}

export const prepareParams = (node: StepNode, overrides: ReadonlyArray<Override>): PreparedParams => {
  const mine = overrides.filter((o) => o.node === node.name)
  const input = applyOverrides(node.params, mine)
  const schema = node.plugin.params
  const exit = Schema.decodeUnknownExit(schema)(input, { errors: "all", onExcessProperty: "error" })
  if (Exit.isFailure(exit)) throw new ParamError(describeIssues(node, input, String(exit.cause)))
  const encoded = Schema.encodeSync(schema)(exit.value) as Record<string, unknown>
  return { decoded: exit.value, encoded }
}

/** Turns Schema's "Expected X / at ["a"]["b"]" lines into one line per bad field. */
const describeIssues = (node: StepNode, input: Record<string, unknown>, cause: string): string => {
  const lines = cause
    .replace(/^Cause\(\[Fail\(SchemaError\(/, "")
    .replace(/\)\)\]\)$/, "")
    .split("\n")
  const out: string[] = []
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.trim()
    if (line.startsWith("at ")) continue
    const at = lines[i + 1]?.trim()
    const path = at?.startsWith("at ")
      ? [...at.matchAll(/\["([^"]*)"\]|\[(\d+)\]/g)].map((m) => m[1] ?? m[2]!)
      : []
    const field = path.join(".")
    const given = path.reduce<unknown>(
      (v, k) => (typeof v === "object" && v !== null ? (v as never)[k] : undefined),
      input,
    )
    const expected = line.replace(/^Expected /, "")
    if (line === "Expected no excess property")
      out.push(`  ${field}: unknown parameter (${node.plugin.name} takes: ${knownFields(node).join(", ")})`)
    else if (line.startsWith("Missing key")) out.push(`  ${field}: missing (required)`)
    else if (!line.startsWith("Expected "))
      // A rule of the plugin's own (a check in its Schema): its message says what is wrong.
      out.push(`  ${field || "(params)"}: ${line}`)
    else out.push(`  ${field || "(params)"}: expected ${expected}, got ${JSON.stringify(given) ?? "nothing"}`)
  }
  return `invalid parameters for node "${node.name}" (plugin ${node.plugin.name}):\n${out.join("\n")}`
}

const knownFields = (node: StepNode): string[] => {
  const ast = (node.plugin.params as unknown as { fields?: Record<string, unknown> }).fields
  return ast === undefined ? [] : Object.keys(ast)
}

export const prepareAll = (
  pipeline: Pipeline,
  overrides: ReadonlyArray<Override>,
): Map<string, PreparedParams> => {
  const out = new Map<string, PreparedParams>()
  const errors: string[] = []
  for (const o of overrides) {
    const n = pipeline.nodes.get(o.node)
    if (n?._tag === "Source")
      errors.push(`--set ${o.node}.${o.path.join(".")}: "${o.node}" is a source and has no parameters`)
  }
  for (const node of pipeline.nodes.values()) {
    if (node._tag !== "Step") continue
    try {
      out.set(node.name, prepareParams(node, overrides))
    } catch (e) {
      errors.push((e as Error).message)
    }
  }
  if (errors.length > 0) throw new ParamError(errors.join("\n"))
  return out
}

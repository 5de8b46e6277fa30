/**
 * What a run records and reports of its steps: the outcome of each, the
 * execution rows (built here, written by the scheduler as they happen, so a
 * run killed with kill -9 keeps every row it already knew), and the views
 * of stored artifacts the steps read. Shared by the scheduler (core/Run.ts)
 * and the executors (core/run/Local.ts, core/run/Remote.ts).
 */
import { Cause } from "effect"
import type { ExecutionRecord, Store } from "../../cache/Store.ts"
import type { Artifact } from "../Artifact.ts"
import type { ChunkReuse } from "../Chunks.ts"
import type { Node, StepNode } from "../Pipeline.ts"
import type { Annotations, Failure } from "../Plugin.ts"

export type StepStatus = "cached" | "ran" | "failed" | "skipped"

export interface StepOutcome {
  readonly node: string
  readonly plugin: string
  readonly status: StepStatus
  readonly key: string | null
  readonly outputs: Readonly<Record<string, string>>
  readonly ms: number
  readonly error?: string
  readonly group?: string
  /** A chunked data step's reuse (core/Chunks.ts): its chunks, how many came from the store. */
  readonly chunks?: ChunkReuse
  /** Where a remote executor ran it: its attempts and each attempt's job and node. */
  readonly executor?: { readonly attempts: number; readonly jobs: ReadonlyArray<unknown> }
}

export type RunEvent =
  | { readonly type: "start"; readonly node: string; readonly plugin: string }
  | { readonly type: "end"; readonly outcome: StepOutcome }
  | {
      readonly type: "progress"
      readonly node: string
      readonly done: number
      readonly total?: number
      readonly detail?: string
    }
  | { readonly type: "log"; readonly node: string; readonly line: string }
  | { readonly type: "wait"; readonly node: string; readonly holder: string }

export class RunError extends Error {
  override readonly name = "RunError"
}

export interface NodeResult {
  readonly ok: boolean
  readonly outputs: Readonly<Record<string, Artifact>>
}

export const isReuse = (x: unknown): x is ChunkReuse =>
  typeof x === "object" && x !== null && typeof (x as ChunkReuse).chunks === "number"

/** Builds the runtime view of a stored artifact. */
export const storedArtifact = (store: Store, digest: string): Artifact => {
  const row = store.artifact(digest)
  if (row === undefined) throw new RunError(`artifact ${digest} is not in the store`)
  return {
    kind: row.kind,
    digest,
    path: store.objectPath(digest),
    isDir: row.isDir,
    size: row.size,
    meta: row.meta,
    files: row.isDir ? store.artifactFiles(digest) : [],
  }
}

export const digestsOf = (outs: Readonly<Record<string, Artifact>>) =>
  Object.fromEntries(Object.entries(outs).map(([k, a]) => [k, a.digest]))

export const backendOf = (a: Annotations) => (typeof a.backend === "string" ? { backend: a.backend } : {})

/** One line for the user: the error's message, with its tag and location when it has them. */
export const describeFailure = (cause: Cause.Cause<unknown>): string => {
  const e = Cause.squash(cause) as Partial<Failure> & {
    _tag?: string
    file?: string
    line?: number
    field?: string
  }
  const where = [
    e.file,
    e.line === undefined ? undefined : `line ${e.line}`,
    e.field === undefined ? undefined : `field ${e.field}`,
  ]
    .filter((x) => x !== undefined)
    .join(", ")
  const msg = typeof e.message === "string" && e.message.length > 0 ? e.message : String(e)
  const tag = typeof e._tag === "string" && e._tag !== "StepError" ? `${e._tag}: ` : ""
  return `${tag}${msg}${where.length > 0 && !msg.includes(where) ? ` (${where})` : ""}`.trimEnd()
}

/** A step's result, from any executor: what to report, what to record (if anything is left to), and its outputs. */
export interface StepResult {
  readonly outcome: StepOutcome
  readonly record: ExecutionRecord | undefined
  readonly result: NodeResult
}

export const stepResult = (
  outcome: StepOutcome,
  record: ExecutionRecord | undefined,
  result: NodeResult,
): StepResult => ({ outcome, record, result })

/** An execution row of a step node. */
export const baseRecord = (
  runId: string,
  node: StepNode,
  key: string | null,
  status: ExecutionRecord["status"],
  t0: number,
  extra: Partial<ExecutionRecord>,
): ExecutionRecord => ({
  runId,
  node: node.name,
  plugin: node.plugin.name,
  version: node.plugin.version,
  fingerprint: node.plugin.fingerprint,
  key,
  status,
  startedAt: t0,
  finishedAt: Date.now(),
  ms: Date.now() - t0,
  ...extra,
})

/** An execution row of a source node. */
export const sourceRecord = (
  runId: string,
  node: Extract<Node, { _tag: "Source" }>,
  t0: number,
  status: ExecutionRecord["status"],
  extra: Partial<ExecutionRecord>,
): ExecutionRecord => ({
  runId,
  node: node.name,
  plugin: "source",
  version: "1",
  fingerprint: "",
  key: null,
  status,
  startedAt: t0,
  finishedAt: Date.now(),
  ms: Date.now() - t0,
  ...extra,
})

/**
 * Runs a data plugin the way the engine does, without the engine: decoded
 * params, input artifacts built from real files, fresh output paths, and the
 * outputs' digests afterwards.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Exit, Schema } from "effect"
import type { Artifact } from "../../../core/Artifact.ts"
import { hashDirSync, hashFileSync } from "../../../core/Hash.ts"
import type { Plugin } from "../../../core/Plugin.ts"
import { forEachLine } from "../../../plugins/ingest/Records.ts"

export const tempDir = (prefix = "tunegraph-data-"): string => fs.mkdtempSync(path.join(os.tmpdir(), prefix))

/** A source artifact over real files (what `p.source(...)` hands a step). */
export const sourceArtifact = (files: ReadonlyArray<string>, root = path.dirname(files[0]!)): Artifact => {
  const entries = files
    .map((abs) => {
      const { digest, size } = hashFileSync(abs)
      return { abs, path: path.relative(root, abs).split(path.sep).join("/"), digest, size }
    })
    .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  return {
    kind: "Files",
    digest: entries.map((e) => e.digest).join(""),
    path: root,
    isDir: true,
    size: entries.reduce((n, e) => n + e.size, 0),
    meta: { root, pattern: "*", count: entries.length },
    files: entries,
  }
}

/** A step's output fed to the next step: a file, or a directory (a Records or Tokens artifact) with its files. */
export const fileArtifact = (file: string, kind: string, meta: unknown = {}): Artifact => {
  if (fs.statSync(file).isDirectory()) {
    const h = hashDirSync(file)
    const files = h.entries.map((e) => ({
      path: e.path,
      abs: path.join(file, e.path),
      digest: e.digest,
      size: e.size,
    }))
    return { kind, digest: h.digest, path: file, isDir: true, size: h.size, meta, files }
  }
  const { digest, size } = hashFileSync(file)
  return { kind, digest, path: file, isDir: false, size, meta, files: [] }
}

/** The digest of an output, a file or a directory (core/Hash.ts). */
export const digestOf = (p: string): string =>
  fs.statSync(p).isDirectory() ? hashDirSync(p).digest : hashFileSync(p).digest

export interface StepResult {
  readonly ok: boolean
  /** The failure (a tagged error with message, file, line, field) when not ok. */
  readonly error?: {
    readonly _tag?: string
    readonly message: string
    readonly file?: string
    readonly line?: number
    readonly field?: string
  }
  readonly meta?: Record<string, unknown>
  readonly outputs: Record<string, string>
  readonly digests: Record<string, string>
  readonly logs: string[]
  readonly dir: string
}

export const runStep = async (
  // biome-ignore lint/suspicious/noExplicitAny: any plugin
  plugin: Plugin<any, any, any>,
  inputs: Record<string, Artifact>,
  params: Record<string, unknown> = {},
  dir = tempDir(),
): Promise<StepResult> => {
  const decoded = Schema.decodeUnknownSync(plugin.params)(params)
  const outDir = path.join(dir, "out")
  const scratch = path.join(dir, "scratch")
  fs.mkdirSync(outDir, { recursive: true })
  fs.mkdirSync(scratch, { recursive: true })
  const logs: string[] = []
  const outputs: Record<string, string> = {}
  for (const name of Object.keys(plugin.outputs)) outputs[name] = path.join(outDir, name)
  const ctx = {
    node: plugin.name,
    key: "test",
    params: decoded,
    inputs,
    output: (name: string) => outputs[name]!,
    scratch,
    checkpoints: path.join(dir, "checkpoints"),
    threads: 1,
    signal: new AbortController().signal,
    log: (line: string) => logs.push(line),
    metric: () => {},
    progress: () => {},
    annotate: () => {},
  }
  const exit = await Effect.runPromiseExit(plugin.run(ctx))
  const digests: Record<string, string> = {}
  for (const [name, p] of Object.entries(outputs)) if (fs.existsSync(p)) digests[name] = digestOf(p)
  if (Exit.isSuccess(exit))
    return { ok: true, meta: (exit.value ?? {}) as Record<string, unknown>, outputs, digests, logs, dir }
  const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
  const error =
    failure !== undefined && "error" in failure
      ? (failure.error as StepResult["error"])
      : { message: String(exit.cause) }
  return { ok: false, ...(error === undefined ? {} : { error }), outputs, digests, logs, dir }
}

/** The non-empty lines of Records: a directory's parts in order, or a file. */
export const readLines = (records: string): string[] => {
  const out: string[] = []
  forEachLine(records, (l) => {
    if (l.length > 0) out.push(l)
  })
  return out
}

export const readJson = (file: string): Record<string, unknown> => JSON.parse(fs.readFileSync(file, "utf8"))

export const repoRoot = path.resolve(import.meta.dirname, "../../..")
export const sharedData = path.resolve(repoRoot, "../shared/data/datasets")

/**
 * Runs a plugin the way the engine does, without the engine: params decoded
 * with its Schema, inputs as artifacts over real files (digests computed as
 * the store does), outputs at fresh paths, logs and metrics collected.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Exit, Schema } from "effect"
import type { Artifact } from "../../../core/Artifact.ts"
import { hashDirSync, hashFileSync } from "../../../core/Hash.ts"
import type { Plugin } from "../../../core/Plugin.ts"

export const repoRoot = path.resolve(import.meta.dirname, "../../..")
export const stories = path.join(repoRoot, "pipelines/data/stories260K")
export const storiesBin = path.join(stories, "stories260K.bin")
export const tok512 = path.join(stories, "tok512.bin")

export const tempDir = (prefix: string): string => fs.mkdtempSync(path.join(os.tmpdir(), `tg-${prefix}-`))

/** An artifact over a file or a directory, as a step sees it. */
export const artifact = (p: string, kind = "", meta: unknown = {}): Artifact => {
  const st = fs.statSync(p)
  if (!st.isDirectory()) {
    const { digest, size } = hashFileSync(p)
    return { kind, digest, path: p, isDir: false, size, meta, files: [] }
  }
  const { digest, size, entries } = hashDirSync(p)
  return {
    kind,
    digest,
    path: p,
    isDir: true,
    size,
    meta,
    files: entries.map((e) => ({
      path: e.path,
      abs: path.join(p, e.path),
      digest: e.digest,
      size: fs.statSync(path.join(p, e.path)).size,
    })),
  }
}

export interface StepRun {
  readonly ok: boolean
  readonly error?: { readonly _tag?: string; readonly message: string; readonly field?: string }
  readonly meta: Record<string, unknown>
  /** Output name -> path. */
  readonly outputs: Record<string, string>
  readonly logs: string[]
  readonly metrics: Array<{ name: string; value: number; step?: number | undefined }>
  readonly annotations: Record<string, unknown>
}

export const runStep = async (
  // biome-ignore lint/suspicious/noExplicitAny: any plugin
  plugin: Plugin<any, any, any>,
  inputs: Record<string, Artifact | undefined>,
  params: Record<string, unknown>,
  node = plugin.name,
): Promise<StepRun> => {
  const dir = tempDir("step")
  const outputs: Record<string, string> = {}
  for (const name of Object.keys(plugin.outputs)) outputs[name] = path.join(dir, "out", name)
  fs.mkdirSync(path.join(dir, "out"))
  fs.mkdirSync(path.join(dir, "scratch"))
  const logs: string[] = []
  const metrics: StepRun["metrics"] = []
  const annotations: Record<string, unknown> = {}
  const ctx = {
    node,
    key: "test",
    params: Schema.decodeUnknownSync(plugin.params)(params),
    inputs,
    output: (name: string) => outputs[name] as string,
    scratch: path.join(dir, "scratch"),
    checkpoints: path.join(dir, "checkpoints"),
    threads: 1,
    signal: new AbortController().signal,
    log: (line: string) => logs.push(line),
    metric: (name: string, value: number, step?: number) => metrics.push({ name, value, step }),
    progress: () => {},
    annotate: (fields: Record<string, unknown>) => Object.assign(annotations, fields),
  }
  const exit = await Effect.runPromiseExit(plugin.run(ctx))
  if (Exit.isSuccess(exit))
    return {
      ok: true,
      meta: (exit.value ?? {}) as Record<string, unknown>,
      outputs,
      logs,
      metrics,
      annotations,
    }
  const failure = exit.cause.reasons.find((r) => r._tag === "Fail")
  const error =
    failure !== undefined && "error" in failure
      ? (failure.error as StepRun["error"])
      : { message: String(exit.cause) }
  return { ok: false, ...(error ? { error } : {}), meta: {}, outputs, logs, metrics, annotations }
}

/** Runs `f` with the process's working directory set to `dir`. */
export const inDir = async <A>(dir: string, f: () => Promise<A>): Promise<A> => {
  const before = process.cwd()
  process.chdir(dir)
  try {
    return await f()
  } finally {
    process.chdir(before)
  }
}

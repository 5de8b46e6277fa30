/** A hand-made step context, to run a training plugin the way the engine would. */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect, Schema } from "effect"
import type { Artifact } from "../../../core/Artifact.ts"
import { hashBytes } from "../../../core/Hash.ts"
import type { Plugin } from "../../../core/Plugin.ts"

export const artifact = (kind: string, p: string): Artifact => ({
  kind,
  digest: hashBytes(p),
  path: p,
  isDir: fs.statSync(p).isDirectory(),
  size: 0,
  meta: {},
  files: [],
})

export interface Recorded {
  logs: string[]
  metrics: Array<{ name: string; value: number; step: number | undefined }>
  annotations: Array<Record<string, unknown>>
  outputs: Record<string, string>
  checkpoints: string
}

/** Runs a plugin with decoded params and artifacts at the given paths; resolves with what it reported. */
export const runPlugin = async (
  // biome-ignore lint/suspicious/noExplicitAny: any training plugin
  plugin: Plugin<any, any, any>,
  params: Record<string, unknown>,
  inputs: Record<string, Artifact>,
  options: { checkpoints?: string; signal?: AbortSignal } = {},
): Promise<Recorded> => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "step-"))
  const rec: Recorded = {
    logs: [],
    metrics: [],
    annotations: [],
    outputs: {},
    checkpoints: options.checkpoints ?? path.join(root, "checkpoints"),
  }
  fs.mkdirSync(rec.checkpoints, { recursive: true })
  const ctx = {
    node: "train",
    key: "k",
    params: Schema.decodeUnknownSync(plugin.params)(params),
    inputs,
    output: (name: string) => {
      rec.outputs[name] = path.join(root, "out", name)
      fs.mkdirSync(path.dirname(rec.outputs[name] as string), { recursive: true })
      return rec.outputs[name] as string
    },
    scratch: path.join(root, "scratch"),
    checkpoints: rec.checkpoints,
    threads: 1,
    signal: options.signal ?? new AbortController().signal,
    log: (line: string) => rec.logs.push(line),
    metric: (name: string, value: number, step?: number) => rec.metrics.push({ name, value, step }),
    progress: () => {},
    annotate: (fields: Record<string, unknown>) => rec.annotations.push(fields),
  }
  await Effect.runPromise(plugin.run(ctx))
  return rec
}

export const series = (rec: Recorded, name: string): number[] =>
  rec.metrics.filter((m) => m.name === name).map((m) => m.value)

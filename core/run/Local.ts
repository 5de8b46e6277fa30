/**
 * The local executor: a step that must run runs here, in this process. It
 * gets a private tmp/ directory and its checkpoints, runs the plugin, and
 * commits its outputs: objects first, then the one transaction that records
 * the execution and its cache entry. An interrupted step leaves nothing
 * but its checkpoints and an "interrupted" row.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Effect, Exit, Schema } from "effect"
import { type ExecutionRecord, removeTree, type Store, type StoredObject } from "../../cache/Store.ts"
import type { Artifact, ArtifactKind } from "../Artifact.ts"
import { type ChunkCache, chunkSizes } from "../Chunks.ts"
import type { KnownFile } from "../Hash.ts"
import type { StepNode } from "../Pipeline.ts"
import type { Annotations } from "../Plugin.ts"
import { chunkRecipe, type KeyIngredients } from "../StepKey.ts"
import {
  backendOf,
  baseRecord,
  describeFailure,
  digestsOf,
  isReuse,
  RunError,
  type RunEvent,
  type StepOutcome,
  type StepResult,
  stepResult,
  storedArtifact,
} from "./Record.ts"

export interface LocalContext {
  readonly store: Store
  readonly runId: string
  readonly emit: (e: RunEvent) => void
  /** Directory relative paths outside the store (export targets) resolve against. */
  readonly workDir: string
  /** False: steps write nothing outside the store. */
  readonly sinks: boolean
}

export const executeLocally = (
  local: LocalContext,
  node: StepNode,
  key: string,
  decoded: unknown,
  artifacts: Record<string, Artifact | Artifact[] | undefined>,
  threads: number,
  common: Pick<ExecutionRecord, "ingredients" | "inputs">,
  t0: number,
): Effect.Effect<StepResult> => {
  const { store, runId, emit, workDir } = local
  // Chunks commit as they finish, so a step killed half-way leaves them for the next run.
  const chunkCacheFor = (
    node: StepNode,
    ingredients: KeyIngredients,
    scratch: string,
    known: Map<string, KnownFile>,
  ): ChunkCache => {
    let n = 0
    const chunkRoot = path.join(scratch, ".chunks")
    return {
      recipe: (chunked, unused) => chunkRecipe(ingredients, chunked, unused),
      get: (k) => store.chunkLookup(k, runId, node.name),
      put: (k, file) => {
        const stored = store.chunkCommit(k, file, node.plugin.name, runId, node.name)
        // what the step wrote beside it (a part's own file) is not needed any more
        const dir = path.dirname(file)
        if (path.dirname(dir) === chunkRoot) removeTree(dir)
        return stored
      },
      link: (stored, file, dest) => {
        const abs = path.resolve(dest)
        known.set(abs, store.chunkLink(stored, file, abs))
      },
      scratch: () => {
        const d = path.join(chunkRoot, `chunk-${n++}`)
        fs.mkdirSync(d, { recursive: true })
        return d
      },
      lineIndex: (digest) => store.lineIndex(digest, chunkSizes().target),
    }
  }

  const commitOutputs = (
    node: StepNode,
    outDir: string,
    meta: unknown,
    known: ReadonlyMap<string, KnownFile>,
  ) => {
    const result: Record<string, { object: StoredObject; kind: string; meta: unknown }> = {}
    const metas = (meta ?? {}) as Record<string, unknown>
    for (const [o, k] of Object.entries(node.plugin.outputs) as Array<[string, ArtifactKind]>) {
      const p = path.join(outDir, o)
      if (!fs.existsSync(p)) throw new RunError(`plugin ${node.plugin.name} did not write its output "${o}"`)
      let m = metas[o]
      if (m !== undefined) {
        const exit = Schema.decodeUnknownExit(k.meta)(m)
        if (Exit.isFailure(exit))
          throw new RunError(
            `plugin ${node.plugin.name}: metadata of output "${o}" (${k.name}) is invalid: ${String(exit.cause)}`,
          )
        m = Schema.encodeSync(k.meta)(exit.value)
      }
      result[o] = { object: store.putObject(p, known), kind: k.name, meta: m ?? null }
    }
    return result
  }

  return Effect.gen(function* () {
    const name = node.name
    emit({ type: "start", node: name, plugin: node.plugin.name })
    // A shared store's objects come down to this machine's cache only for the steps that read them.
    for (const a of Object.values(artifacts).flat()) if (a !== undefined) store.materialize(a.digest)
    const tmp = store.makeTmp(name)
    const outDir = path.join(tmp, "out")
    const scratch = path.join(tmp, "scratch")
    fs.mkdirSync(outDir)
    fs.mkdirSync(scratch)
    const checkpoints = path.join(store.checkpointsDir, key)
    fs.mkdirSync(checkpoints, { recursive: true })
    const log: string[] = []
    const metrics: Array<{ name: string; step: number | null; value: number; at: number }> = []
    let annotations: Annotations = {}
    // files of the outputs hard-linked from stored chunk results: their digests are known
    const known = new Map<string, KnownFile>()
    const abort = new AbortController()
    const started = Date.now()
    const ctx = {
      node: name,
      key,
      params: decoded,
      inputs: artifacts,
      output: (o: string) => {
        if (!(o in node.plugin.outputs)) throw new RunError(`plugin ${node.plugin.name} has no output "${o}"`)
        return path.join(outDir, o)
      },
      scratch,
      checkpoints,
      threads,
      signal: abort.signal,
      log: (line: string) => {
        log.push(line)
        emit({ type: "log", node: name, line })
      },
      metric: (m: string, value: number, step?: number) =>
        metrics.push({ name: m, step: step ?? null, value, at: Date.now() }),
      progress: (d: number, total?: number, detail?: string) =>
        emit({
          type: "progress",
          node: name,
          done: d,
          ...(total === undefined ? {} : { total }),
          ...(detail === undefined ? {} : { detail }),
        }),
      annotate: (fields: Annotations) => {
        annotations = { ...annotations, ...fields }
      },
      workDir,
      sinks: local.sinks,
      chunks: chunkCacheFor(node, common.ingredients as KeyIngredients, scratch, known),
    }
    const exit = yield* node.plugin.run(ctx as never).pipe(
      Effect.onInterrupt(() => Effect.sync(() => abort.abort())),
      // Objects, then their rows, while the step's files are still there (an object found present
      // keeps the new copy as a spare until the rows are in: cache/Store.ts putObject).
      Effect.flatMap((meta) =>
        Effect.try({
          try: () => {
            const stored = commitOutputs(node, outDir, meta, known)
            const ms = Date.now() - started
            store.record(
              {
                ...baseRecord(runId, node, key, "ran", t0, {}),
                ...common,
                ms,
                outputs: Object.entries(stored).map(([n, s]) => ({ name: n, digest: s.object.digest })),
                log: log.join("\n"),
                metrics,
                annotations,
                ...backendOf(annotations),
                cache: true,
              },
              Object.values(stored),
            )
            return { stored, ms }
          },
          catch: (e) => e as Error,
        }),
      ),
      Effect.exit,
      Effect.ensuring(
        Effect.sync(() => {
          store.flushChunkUses()
          removeTree(tmp)
        }),
      ),
      Effect.onInterrupt(() =>
        Effect.sync(() => {
          store.record({
            ...baseRecord(runId, node, key, "interrupted", t0, { error: "interrupted" }),
            ...common,
            log: log.join("\n"),
            metrics,
          })
        }),
      ),
    )
    const group = node.group === undefined ? {} : { group: node.group }
    if (Exit.isFailure(exit)) {
      const ms = Date.now() - started
      if (Cause.hasInterruptsOnly(exit.cause)) return yield* Effect.interrupt
      const error = describeFailure(exit.cause)
      log.push(`error: ${error}`)
      const outcome: StepOutcome = {
        node: name,
        plugin: node.plugin.name,
        status: "failed",
        key,
        outputs: {},
        ms,
        error,
        ...group,
      }
      return stepResult(
        outcome,
        {
          ...baseRecord(runId, node, key, "failed", t0, { error }),
          ...common,
          log: log.join("\n"),
          metrics,
          annotations,
          ...backendOf(annotations),
        },
        { ok: false, outputs: {} },
      )
    }
    const { stored, ms } = exit.value
    const outputs = Object.entries(stored).map(([n, s]) => ({ name: n, digest: s.object.digest }))
    removeTree(checkpoints)
    const outs: Record<string, Artifact> = {}
    for (const o of outputs) outs[o.name] = storedArtifact(store, o.digest)
    return stepResult(
      {
        node: name,
        plugin: node.plugin.name,
        status: "ran",
        key,
        outputs: digestsOf(outs),
        ms,
        ...group,
        ...(isReuse(annotations.chunks) ? { chunks: annotations.chunks } : {}),
      },
      undefined,
      { ok: true, outputs: outs },
    )
  })
}

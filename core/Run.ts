/**
 * The scheduler: runs a pipeline against a store.
 *
 * Every node is a fiber that waits for its inputs, builds its step key, and
 * either reuses the cached outputs or takes the key's lease and runs the
 * plugin within the resource limits. A failed node skips its dependants and
 * the rest go on (or, with failFast, everything stops). Interruption at any
 * point removes the step's temporary files, releases its lease, and records
 * nothing in the cache: objects and rows are only committed for finished steps.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Deferred, Effect, Exit, Fiber, Schema, Semaphore } from "effect"
import { type ExecutionRecord, removeTree, type Store, type StoredObject } from "../cache/Store.ts"
import type { Artifact, ArtifactKind, InputSpec, Ref } from "./Artifact.ts"
import { type ChunkCache, type ChunkReuse, chunkSizes } from "./Chunks.ts"
import type { Executor } from "./Executor.ts"
import type { KnownFile } from "./Hash.ts"
import { type Override, prepareAll } from "./Params.ts"
import { dependencies, type Node, type Pipeline, type StepNode, topoOrder } from "./Pipeline.ts"
import type { Annotations, Failure, InputArtifacts } from "./Plugin.ts"
import { fileDigest, resolveSource, sourceParams } from "./Sources.ts"
import { chunkRecipe, type KeyIngredients, stepKey } from "./StepKey.ts"

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

export interface RunResult {
  readonly run: string
  readonly status: "succeeded" | "failed" | "interrupted"
  readonly steps: ReadonlyArray<StepOutcome>
  readonly ms: number
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

export interface RunOptions {
  readonly store: Store
  readonly pipeline: Pipeline
  /** Absolute path of the pipeline file (recorded in the run). */
  readonly pipelinePath: string
  /** Directory source paths are relative to. */
  readonly baseDir: string
  readonly targets?: ReadonlyArray<string>
  readonly force?: ReadonlyArray<string>
  readonly overrides?: ReadonlyArray<Override>
  readonly failFast?: boolean
  readonly cpus?: number
  readonly gpus?: number
  readonly argv?: ReadonlyArray<string>
  readonly runId?: string
  readonly onEvent?: (e: RunEvent) => void
  /** Directory relative paths outside the store (export targets) resolve against; the process's by default. */
  readonly workDir?: string
  /** False: steps write nothing outside the store (sinks only build their artifacts), as `reproduce` runs. */
  readonly sinks?: boolean
  /** Where steps that must run do run: here (the default), or a cluster (core/Executor.ts). */
  readonly executor?: Executor
  /**
   * A worker's run (`tunegraph exec-step`): execute only `node`, whose key
   * must come out as `key` (the driver's), in the driver's run `runId`,
   * under the lease the driver holds. Everything upstream must be in the
   * store already and is neither recorded nor reported again.
   */
  readonly only?: { readonly node: string; readonly key: string }
}

/** A worker's recomputed key differs from the driver's: other code, versions or data on this machine. */
export class KeyMismatch extends Error {
  override readonly name = "KeyMismatch"
}

export class RunError extends Error {
  override readonly name = "RunError"
}

/** The nodes to run: the targets and everything upstream of them (all nodes without targets). */
export const selectNodes = (pipeline: Pipeline, targets: ReadonlyArray<string> = []): string[] => {
  const order = topoOrder(pipeline)
  if (targets.length === 0) return order
  for (const t of targets)
    if (!pipeline.nodes.has(t))
      throw new RunError(`--target ${t}: no such node (nodes: ${[...pipeline.nodes.keys()].join(", ")})`)
  const keep = new Set<string>()
  const visit = (n: string) => {
    if (keep.has(n)) return
    keep.add(n)
    for (const d of dependencies(pipeline.nodes.get(n)!)) visit(d)
  }
  targets.forEach(visit)
  return order.filter((n) => keep.has(n))
}

export const newRunId = (): string => {
  const d = new Date()
  const p = (n: number, w = 2) => String(n).padStart(w, "0")
  const stamp = `${d.getUTCFullYear()}${p(d.getUTCMonth() + 1)}${p(d.getUTCDate())}-${p(d.getUTCHours())}${p(d.getUTCMinutes())}${p(d.getUTCSeconds())}`
  return `${stamp}-${Math.random().toString(36).slice(2, 6)}`
}

interface NodeResult {
  readonly ok: boolean
  readonly outputs: Readonly<Record<string, Artifact>>
}

class FailFast extends Error {}

const isReuse = (x: unknown): x is ChunkReuse =>
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

/** Input digests of a step node as they go into its key. */
export const inputDigests = (
  node: StepNode,
  outputsOf: (ref: Ref) => Artifact,
): {
  digests: Record<string, string | string[]>
  artifacts: Record<string, Artifact | Artifact[] | undefined>
} => {
  const digests: Record<string, string | string[]> = {}
  const artifacts: Record<string, Artifact | Artifact[] | undefined> = {}
  for (const name of Object.keys(node.plugin.inputs)) {
    const wired = node.inputs[name]
    if (wired === undefined) {
      artifacts[name] = (node.plugin.inputs[name] as InputSpec)._tag === "Many" ? [] : undefined
      continue
    }
    if (Array.isArray(wired)) {
      const arts = (wired as Ref[]).map(outputsOf)
      artifacts[name] = arts
      digests[name] = arts.map((a) => a.digest)
    } else {
      const a = outputsOf(wired as Ref)
      artifacts[name] = a
      digests[name] = a.digest
    }
  }
  return { digests, artifacts }
}

/** The environment a step resolves to (its backend, device, library versions), or why it cannot run. */
export const environmentOf = (
  node: StepNode,
  decodedParams: unknown,
  inputs: InputArtifacts,
): { ok: true; environment: Readonly<Record<string, string>> | undefined } | { ok: false; error: string } => {
  const resolve = node.plugin.environment
  if (resolve === undefined) return { ok: true, environment: undefined }
  try {
    return { ok: true, environment: resolve(decodedParams as never, inputs) }
  } catch (e) {
    return { ok: false, error: e instanceof Error ? e.message : String(e) }
  }
}

export const ingredientsOf = (
  node: StepNode,
  encodedParams: Readonly<Record<string, unknown>>,
  digests: Readonly<Record<string, string | ReadonlyArray<string>>>,
  environment?: Readonly<Record<string, string>>,
): KeyIngredients => ({
  plugin: node.plugin.name,
  version: node.plugin.version,
  fingerprint: node.plugin.fingerprint,
  params: encodedParams,
  inputs: digests,
  ...(environment === undefined ? {} : { environment }),
})

export const run = (options: RunOptions): Effect.Effect<RunResult> =>
  Effect.suspend(() => {
    const { store, pipeline } = options
    const params = prepareAll(pipeline, options.overrides ?? [])
    const only = options.only
    if (only !== undefined && !pipeline.nodes.has(only.node))
      throw new RunError(
        `no node "${only.node}" in this pipeline (nodes: ${[...pipeline.nodes.keys()].join(", ")})`,
      )
    const selected = selectNodes(pipeline, only === undefined ? options.targets : [only.node])
    /** A worker's upstream nodes: resolved from the store, neither recorded nor reported. */
    const silent = (n: string) => only !== undefined && n !== only.node
    const remote =
      options.executor !== undefined && options.executor.name !== "local" ? options.executor : undefined
    for (const f of options.force ?? [])
      if (!pipeline.nodes.has(f)) throw new RunError(`--force ${f}: no such node`)
    const forced = new Set(options.force ?? [])
    const runId = options.runId ?? newRunId()
    const emit = options.onEvent ?? (() => {})
    const started = Date.now()
    store.sweepTmp()
    if (only === undefined)
      store.beginRun({
        id: runId,
        pipeline: pipeline.name,
        pipelinePath: options.pipelinePath,
        argv: options.argv ?? [],
      })

    const outcomes = new Map<string, StepOutcome>()
    const held = new Set<string>()
    const cpus = Math.max(1, options.cpus ?? 2)
    const workDir = options.workDir ?? process.cwd()

    return Effect.gen(function* () {
      const cpuSem = yield* Semaphore.make(cpus)
      // Without an accelerator, steps that want one run on CPU threads alone.
      const gpus = options.gpus ?? 0
      const gpuSem = yield* Semaphore.make(Math.max(1, gpus))
      const done = new Map<string, Deferred.Deferred<NodeResult>>()
      for (const n of selected) done.set(n, yield* Deferred.make<NodeResult>())

      const finish = (outcome: StepOutcome, record: ExecutionRecord | undefined, result: NodeResult) =>
        Effect.gen(function* () {
          outcomes.set(outcome.node, outcome)
          // Written as it happens: a run killed with kill -9 keeps every row it already knew.
          if (record !== undefined && !silent(outcome.node)) store.record(record)
          if (!silent(outcome.node)) emit({ type: "end", outcome })
          yield* Deferred.succeed(done.get(outcome.node)!, result)
          if (!result.ok && options.failFast === true) return yield* Effect.die(new FailFast())
        })

      const heartbeat = yield* Effect.forkChild(
        Effect.forever(
          Effect.sleep("10 seconds").pipe(Effect.andThen(Effect.sync(() => store.heartbeat([...held])))),
        ),
      )

      const runNode = (name: string) =>
        Effect.gen(function* () {
          const node = pipeline.nodes.get(name)!
          const deps = dependencies(node)
          const upstream = new Map<string, NodeResult>()
          for (const d of deps) upstream.set(d, yield* Deferred.await(done.get(d)!))
          const t0 = Date.now()
          if (node._tag === "Source") return yield* runSource(node, t0)
          const failedDep = deps.find((d) => !upstream.get(d)!.ok)
          const prepared = params.get(name)!
          if (failedDep !== undefined) {
            const outcome: StepOutcome = {
              node: name,
              plugin: node.plugin.name,
              status: "skipped",
              key: null,
              outputs: {},
              ms: 0,
              error: `upstream node "${failedDep}" failed`,
              ...(node.group === undefined ? {} : { group: node.group }),
            }
            return yield* finish(outcome, baseRecord(node, null, "skipped", t0, { error: outcome.error! }), {
              ok: false,
              outputs: {},
            })
          }
          const { digests, artifacts } = inputDigests(
            node,
            (ref) => upstream.get(ref.node)!.outputs[ref.output]!,
          )
          const env = environmentOf(node, prepared.decoded, artifacts)
          if (!env.ok) {
            const outcome: StepOutcome = {
              node: name,
              plugin: node.plugin.name,
              status: "failed",
              key: null,
              outputs: {},
              ms: Date.now() - t0,
              error: env.error,
              ...(node.group === undefined ? {} : { group: node.group }),
            }
            return yield* finish(outcome, baseRecord(node, null, "failed", t0, { error: env.error }), {
              ok: false,
              outputs: {},
            })
          }
          const ingredients = ingredientsOf(node, prepared.encoded, digests, env.environment)
          const key = stepKey(ingredients)
          const inputRows = Object.entries(digests).flatMap(([n, d]) =>
            (Array.isArray(d) ? d : [d]).map((digest, position) => ({ name: n, position, digest })),
          )
          const common = { ingredients, inputs: inputRows }

          const fromCache = (): NodeResult | undefined => {
            if (forced.has(name)) return undefined
            const hit = store.lookup(key)
            if (hit === undefined) return undefined
            const names = Object.keys(node.plugin.outputs)
            if (!names.every((o) => hit.outputs[o] !== undefined && store.objectIntact(hit.outputs[o]!))) {
              store.forget(key)
              return undefined
            }
            const outs: Record<string, Artifact> = {}
            for (const o of names) outs[o] = storedArtifact(store, hit.outputs[o]!)
            cachedFrom = hit.executionId
            return { ok: true, outputs: outs }
          }
          let cachedFrom = 0
          const cachedOutcome = (res: NodeResult) =>
            Effect.gen(function* () {
              const published = yield* publishCached(node, prepared.decoded, res.outputs).pipe(Effect.exit)
              if (Exit.isFailure(published)) {
                if (Cause.hasInterruptsOnly(published.cause)) return yield* Effect.interrupt
                const error = describeFailure(published.cause)
                return yield* finish(
                  {
                    node: name,
                    plugin: node.plugin.name,
                    status: "failed",
                    key,
                    outputs: {},
                    ms: Date.now() - t0,
                    error,
                    ...(node.group === undefined ? {} : { group: node.group }),
                  },
                  { ...baseRecord(node, key, "failed", t0, { error }), ...common },
                  { ok: false, outputs: {} },
                )
              }
              return yield* cachedFinish(res)
            })
          const cachedFinish = (res: NodeResult) =>
            finish(
              {
                node: name,
                plugin: node.plugin.name,
                status: "cached",
                key,
                outputs: digestsOf(res.outputs),
                ms: Date.now() - t0,
                ...(node.group === undefined ? {} : { group: node.group }),
              },
              {
                ...baseRecord(node, key, "cached", t0, {}),
                ...common,
                producedBy: cachedFrom,
                outputs: Object.entries(res.outputs).map(([n, a]) => ({ name: n, digest: a.digest })),
              },
              res,
            )

          if (silent(name)) {
            // A worker reads what the driver already has: a miss here means the store lost it meanwhile.
            const res = fromCache()
            if (res !== undefined)
              return yield* finish({ ...skippedOutcome(node), status: "cached" }, undefined, res)
            return yield* finish(
              { ...skippedOutcome(node), status: "failed", error: `"${name}" has no stored result` },
              undefined,
              { ok: false, outputs: {} },
            )
          }
          if (only !== undefined) {
            if (key !== only.key) {
              const error = new KeyMismatch(
                `refusing to run "${name}": its key here is ${key.slice(0, 16)}, the driver's ${only.key.slice(0, 16)}. ` +
                  `This machine has ${describeIngredients(ingredients)}: its code, library versions or source data differ from the driver's`,
              ).message
              return yield* finish(
                { ...skippedOutcome(node), status: "failed", key, ms: Date.now() - t0, error },
                { ...baseRecord(node, key, "failed", t0, { error }), ...common },
                { ok: false, outputs: {} },
              )
            }
            // The driver holds the key's lease for this job; the step runs here as it would there.
            const threads = Math.max(1, node.plugin.resources.cpu ?? 1)
            return yield* execute(node, key, prepared.decoded, artifacts, threads, common, t0)
          }

          const hit = fromCache()
          if (hit !== undefined) return yield* cachedOutcome(hit)

          // Take the key's lease: another process computing the same key is waited for, then reused.
          let announced = false
          for (;;) {
            const lease = store.tryLease(key, runId)
            if (lease.ok) break
            if (!announced) {
              emit({ type: "wait", node: name, holder: lease.holder })
              announced = true
            }
            yield* Effect.sleep("100 millis")
            const other = fromCache()
            if (other !== undefined) return yield* cachedOutcome(other)
          }
          held.add(key)
          const release = Effect.sync(() => {
            held.delete(key)
            store.releaseLease(key, runId)
          })
          return yield* Effect.ensuring(
            Effect.suspend(() => {
              const again = fromCache()
              if (again !== undefined) return cachedOutcome(again)
              if (remote !== undefined) return onCluster(remote, node, key, common, t0)
              const resources = node.plugin.resources
              const threads = Math.min(cpus, Math.max(1, resources.cpu ?? 1))
              const body = execute(node, key, prepared.decoded, artifacts, threads, common, t0)
              const withCpu = Semaphore.withPermits(cpuSem, threads)(body)
              return resources.gpu === true && gpus > 0 ? Semaphore.withPermits(gpuSem, 1)(withCpu) : withCpu
            }),
            release,
          )
        })

      /**
       * A step carried out by a remote executor: its job executes it against the
       * shared store and records it there; this reads the result back.
       */
      const onCluster = (
        executor: Executor,
        node: StepNode,
        key: string,
        common: Pick<ExecutionRecord, "ingredients" | "inputs">,
        t0: number,
      ) =>
        Effect.gen(function* () {
          const name = node.name
          emit({ type: "start", node: name, plugin: node.plugin.name })
          const resources = node.plugin.resources
          const report = yield* executor.runStep(
            {
              runId,
              node: name,
              plugin: node.plugin.name,
              key,
              cpus: Math.max(1, resources.cpu ?? 1),
              gpus: resources.gpu === true ? 1 : 0,
            },
            {
              log: (line) => emit({ type: "log", node: name, line }),
              // (the worker's clock may run behind this machine's: a margin of five minutes)
              recorded: (since) => store.executionSince(runId, name, key, since - 300_000),
            },
          )
          const group = node.group === undefined ? {} : { group: node.group }
          const placement = { [executor.name]: { attempts: report.attempts, jobs: report.placements } }
          const recorded = store.executionSince(runId, name, key, t0 - 300_000)
          const hit = recorded?.status === "ran" ? store.lookup(key) : undefined
          if (recorded !== undefined) store.annotateExecution(recorded.id, { executor: placement })
          if (
            hit !== undefined &&
            Object.keys(node.plugin.outputs).every((o) => hit.outputs[o] !== undefined)
          ) {
            const outs: Record<string, Artifact> = {}
            for (const o of Object.keys(node.plugin.outputs)) outs[o] = storedArtifact(store, hit.outputs[o]!)
            return yield* finish(
              {
                node: name,
                plugin: node.plugin.name,
                status: "ran",
                key,
                outputs: digestsOf(outs),
                ms: Date.now() - t0,
                ...group,
                executor: placement[executor.name]!,
              },
              undefined,
              { ok: true, outputs: outs },
            )
          }
          const error =
            recorded?.error ??
            `${executor.name}: the job ended without a result after ${report.attempts} attempt${report.attempts === 1 ? "" : "s"}: ${report.message}`
          return yield* finish(
            {
              node: name,
              plugin: node.plugin.name,
              status: "failed",
              key,
              outputs: {},
              ms: Date.now() - t0,
              error,
              ...group,
              executor: placement[executor.name]!,
            },
            // the worker recorded its failure itself; a job that never got that far is recorded here
            recorded === undefined
              ? {
                  ...baseRecord(node, key, "failed", t0, { error, annotations: { executor: placement } }),
                  ...common,
                }
              : undefined,
            { ok: false, outputs: {} },
          )
        })

      const skippedOutcome = (node: StepNode): StepOutcome => ({
        node: node.name,
        plugin: node.plugin.name,
        status: "skipped",
        key: null,
        outputs: {},
        ms: 0,
      })

      /** A sink's outside copy, checked on a cache hit and written again where it is missing or differs. */
      const publishCached = (
        node: StepNode,
        decoded: unknown,
        outputs: Readonly<Record<string, Artifact>>,
      ) => {
        const publish = node.plugin.publish
        if (publish === undefined || options.sinks === false) return Effect.void
        return publish({
          node: node.name,
          params: decoded,
          outputs,
          workDir,
          log: (line: string) => emit({ type: "log", node: node.name, line }),
          digest: (file: string) => fileDigest(store, file).digest,
        } as never)
      }

      const runSource = (node: Extract<Node, { _tag: "Source" }>, t0: number) =>
        Effect.gen(function* () {
          const resolved = yield* Effect.try({
            try: () => resolveSource(store, options.baseDir, node.name, node.spec),
            catch: (e) => e as Error,
          }).pipe(Effect.exit)
          if (Exit.isFailure(resolved)) {
            const error =
              Cause.squash(resolved.cause) instanceof Error
                ? (Cause.squash(resolved.cause) as Error).message
                : String(Cause.squash(resolved.cause))
            const outcome: StepOutcome = {
              node: node.name,
              plugin: "source",
              status: "failed",
              key: null,
              outputs: {},
              ms: Date.now() - t0,
              error,
            }
            return yield* finish(outcome, sourceRecord(node, t0, "failed", { error }), {
              ok: false,
              outputs: {},
            })
          }
          const art = { ...resolved.value.artifact, kind: node.kind }
          const last = store.lastOutputs(node.name)
          const status: StepStatus = last?.files === art.digest ? "cached" : "ran"
          const outcome: StepOutcome = {
            node: node.name,
            plugin: "source",
            status,
            key: null,
            outputs: { files: art.digest },
            ms: Date.now() - t0,
          }
          const files = Object.fromEntries(art.files.map((f) => [f.path, f.digest]))
          return yield* finish(
            outcome,
            sourceRecord(node, t0, status, {
              outputs: [{ name: "files", digest: art.digest }],
              sourceFiles: { digest: art.digest, files: art.files },
              ingredients: {
                plugin: "source",
                version: "1",
                fingerprint: "",
                params: sourceParams(node.spec, art),
                inputs: {},
                files,
              },
            }),
            { ok: true, outputs: { files: art } },
          )
        })

      const execute = (
        node: StepNode,
        key: string,
        decoded: unknown,
        artifacts: Record<string, Artifact | Artifact[] | undefined>,
        threads: number,
        common: Pick<ExecutionRecord, "ingredients" | "inputs">,
        t0: number,
      ) =>
        Effect.gen(function* () {
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
              if (!(o in node.plugin.outputs))
                throw new RunError(`plugin ${node.plugin.name} has no output "${o}"`)
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
            sinks: options.sinks !== false,
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
                      ...baseRecord(node, key, "ran", t0, {}),
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
                  ...baseRecord(node, key, "interrupted", t0, { error: "interrupted" }),
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
            return yield* finish(
              outcome,
              {
                ...baseRecord(node, key, "failed", t0, { error }),
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
          return yield* finish(
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
          if (!fs.existsSync(p))
            throw new RunError(`plugin ${node.plugin.name} did not write its output "${o}"`)
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

      const baseRecord = (
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

      const sourceRecord = (
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

      const fibers = yield* Effect.forEach(selected, (n) => Effect.forkChild(runNode(n)))
      // Interrupted, the run first interrupts its steps, so their cleanup and records land before it ends.
      const joined = yield* Fiber.joinAll(fibers).pipe(
        Effect.onInterrupt(() => Fiber.interruptAll(fibers)),
        Effect.exit,
      )
      yield* Fiber.interrupt(heartbeat)
      if (Exit.isFailure(joined) && !isFailFast(joined.cause)) return yield* Effect.failCause(joined.cause)
    }).pipe(
      Effect.onExit((exit) =>
        Effect.sync(() => {
          // Nodes never reached (fail-fast, interruption) are reported as skipped.
          for (const n of selected)
            if (!outcomes.has(n)) {
              const node = pipeline.nodes.get(n)!
              outcomes.set(n, {
                node: n,
                plugin: node._tag === "Source" ? "source" : node.plugin.name,
                status: "skipped",
                key: null,
                outputs: {},
                ms: 0,
              })
            }
          const interrupted = Exit.isFailure(exit) && Cause.hasInterrupts(exit.cause)
          const failed = [...outcomes.values()].some((o) => o.status === "failed")
          if (only === undefined)
            store.finishRun(
              runId,
              interrupted ? "interrupted" : failed || Exit.isFailure(exit) ? "failed" : "succeeded",
            )
        }),
      ),
      Effect.map(() => {
        const steps = selected.map((n) => outcomes.get(n)!)
        const status: RunResult["status"] = steps.some((s) => s.status === "failed") ? "failed" : "succeeded"
        return { run: runId, status, steps, ms: Date.now() - started }
      }),
      Effect.orDie,
    )
  })

const isFailFast = (cause: Cause.Cause<unknown>) => Cause.squash(cause) instanceof FailFast

const digestsOf = (outs: Readonly<Record<string, Artifact>>) =>
  Object.fromEntries(Object.entries(outs).map(([k, a]) => [k, a.digest]))

const backendOf = (a: Annotations) => (typeof a.backend === "string" ? { backend: a.backend } : {})

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

/** A key's ingredients in words, for a worker that computes another key than its driver. */
const describeIngredients = (i: KeyIngredients): string =>
  [
    `${i.plugin}@${i.version}`,
    `code ${i.fingerprint.slice(0, 12)}`,
    ...(i.environment === undefined
      ? []
      : [
          Object.entries(i.environment)
            .map(([k, v]) => `${k}=${v}`)
            .join(", "),
        ]),
    `inputs ${Object.entries(i.inputs)
      .map(([k, v]) => `${k}=${(Array.isArray(v) ? v : [v]).map((d) => String(d).slice(0, 12)).join("+")}`)
      .join(", ")}`,
  ].join("; ")

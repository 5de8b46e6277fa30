/**
 * The scheduler: runs a pipeline against a store.
 *
 * Every node is a fiber that waits for its inputs, builds its step key, and
 * either reuses the cached outputs or takes the key's lease and hands the
 * step to an executor: here (core/run/Local.ts, within the CPU and GPU
 * slots) or a cluster's (core/run/Remote.ts over core/Executor.ts). What
 * each step did is recorded as it happens (core/run/Record.ts builds the
 * rows). A failed node skips its dependants and the rest go on (or, with
 * failFast, everything stops). Interruption at any point removes the step's
 * temporary files, releases its lease, and records nothing in the cache:
 * objects and rows are only committed for finished steps.
 */
import { Cause, Deferred, Effect, Exit, Fiber, Semaphore } from "effect"
import type { ExecutionRecord, Store } from "../cache/Store.ts"
import { StoreService } from "../cache/StoreService.ts"
import type { Artifact, InputSpec, Ref } from "./Artifact.ts"
import type { Executor } from "./Executor.ts"
import { type Override, prepareAll } from "./Params.ts"
import { dependencies, type Node, type Pipeline, type StepNode, topoOrder } from "./Pipeline.ts"
import type { InputArtifacts } from "./Plugin.ts"
import { executeLocally } from "./run/Local.ts"
import {
  baseRecord,
  describeFailure,
  digestsOf,
  type NodeResult,
  RunError,
  type RunEvent,
  type StepOutcome,
  type StepResult,
  type StepStatus,
  sourceRecord,
  storedArtifact,
} from "./run/Record.ts"
import { executeRemotely } from "./run/Remote.ts"
import { fileDigest, resolveSource, sourceParams } from "./Sources.ts"
import { type KeyIngredients, stepKey } from "./StepKey.ts"

export {
  describeFailure,
  RunError,
  type RunEvent,
  type StepOutcome,
  type StepStatus,
  storedArtifact,
} from "./run/Record.ts"

export interface RunResult {
  readonly run: string
  readonly status: "succeeded" | "failed" | "interrupted"
  readonly steps: ReadonlyArray<StepOutcome>
  readonly ms: number
}

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

class FailFast extends Error {}

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

/** `run` against the store the program's context provides (cache/StoreService.ts). */
export const runWithStore = (
  options: Omit<RunOptions, "store">,
): Effect.Effect<RunResult, never, StoreService> =>
  Effect.gen(function* () {
    const store = yield* StoreService
    return yield* run({ ...options, store })
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
    if (only === undefined) {
      store.beginRun({
        id: runId,
        pipeline: pipeline.name,
        pipelinePath: options.pipelinePath,
        argv: options.argv ?? [],
      })
      store.prefetchCache(options.pipelinePath, pipeline.name)
    }

    const outcomes = new Map<string, StepOutcome>()
    const pendingCached: ExecutionRecord[] = []
    const flushCached = () => {
      if (pendingCached.length > 0) store.recordMany(pendingCached.splice(0))
    }
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
          // Written as it happens: a run killed with kill -9 keeps every row it already knew. (On a shared
          // store the rows of cached steps go in batches, a round trip each: at most the last 200 ms of
          // them are lost to a kill -9, and nothing a later run needs.)
          if (record !== undefined && !silent(outcome.node)) {
            if (store.shared && record.status === "cached") {
              pendingCached.push(record)
              if (pendingCached.length >= 64) flushCached()
            } else {
              flushCached()
              store.record(record)
            }
          }
          if (!silent(outcome.node)) emit({ type: "end", outcome })
          yield* Deferred.succeed(done.get(outcome.node)!, result)
          if (!result.ok && options.failFast === true) return yield* Effect.die(new FailFast())
        })

      /** A step's result, from whichever executor ran it, recorded and reported. */
      const settle = (r: StepResult) => finish(r.outcome, r.record, r.result)
      const local = { store, runId, emit, workDir, sinks: options.sinks !== false }

      const heartbeat = yield* Effect.forkChild(
        Effect.forever(
          Effect.sleep("10 seconds").pipe(
            Effect.andThen(
              Effect.sync(() => {
                store.heartbeat([...held])
                if (only === undefined) store.runHeartbeat(runId)
              }),
            ),
          ),
        ),
      )
      const flusher = store.shared
        ? yield* Effect.forkChild(
            Effect.forever(Effect.sleep("200 millis").pipe(Effect.andThen(Effect.sync(flushCached)))),
          )
        : undefined

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
            return yield* finish(
              outcome,
              baseRecord(runId, node, null, "skipped", t0, { error: outcome.error! }),
              {
                ok: false,
                outputs: {},
              },
            )
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
            return yield* finish(outcome, baseRecord(runId, node, null, "failed", t0, { error: env.error }), {
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
          /** The step executed in this process, on `threads` threads. */
          const here = (threads: number) =>
            executeLocally(local, node, key, prepared.decoded, artifacts, threads, common, t0).pipe(
              Effect.flatMap(settle),
            )

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
                  { ...baseRecord(runId, node, key, "failed", t0, { error }), ...common },
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
                ...baseRecord(runId, node, key, "cached", t0, {}),
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
                { ...baseRecord(runId, node, key, "failed", t0, { error }), ...common },
                { ok: false, outputs: {} },
              )
            }
            // The driver holds the key's lease for this job; the step runs here as it would there.
            return yield* here(Math.max(1, node.plugin.resources.cpu ?? 1))
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
              if (remote !== undefined)
                return executeRemotely(local, remote, node, key, common, t0).pipe(Effect.flatMap(settle))
              const resources = node.plugin.resources
              const threads = Math.min(cpus, Math.max(1, resources.cpu ?? 1))
              const withCpu = Semaphore.withPermits(cpuSem, threads)(here(threads))
              return resources.gpu === true && gpus > 0 ? Semaphore.withPermits(gpuSem, 1)(withCpu) : withCpu
            }),
            release,
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
        // A sink copies its outputs out: on a shared store they come into this machine's cache first.
        for (const a of Object.values(outputs)) store.materialize(a.digest)
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
            return yield* finish(outcome, sourceRecord(runId, node, t0, "failed", { error }), {
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
            sourceRecord(runId, node, t0, status, {
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

      const fibers = yield* Effect.forEach(selected, (n) => Effect.forkChild(runNode(n)))
      // Interrupted, the run first interrupts its steps, so their cleanup and records land before it ends.
      const joined = yield* Fiber.joinAll(fibers).pipe(
        Effect.onInterrupt(() => Fiber.interruptAll(fibers)),
        Effect.exit,
      )
      yield* Fiber.interrupt(heartbeat)
      if (flusher !== undefined) yield* Fiber.interrupt(flusher)
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
          flushCached()
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

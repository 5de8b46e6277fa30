/**
 * A step carried out by a remote executor (core/Executor.ts): its job
 * executes it against the shared store (`tunegraph exec-step`) and records
 * it there; the driver reads the result back, adds where each attempt ran to
 * the execution's annotations, and records a failure itself only when the
 * job never got as far as recording one.
 */
import { Effect } from "effect"
import type { ExecutionRecord, Store } from "../../cache/Store.ts"
import type { Artifact } from "../Artifact.ts"
import type { Executor } from "../Executor.ts"
import type { StepNode } from "../Pipeline.ts"
import {
  baseRecord,
  digestsOf,
  type RunEvent,
  type StepResult,
  stepResult,
  storedArtifact,
} from "./Record.ts"

export interface RemoteContext {
  readonly store: Store
  readonly runId: string
  readonly emit: (e: RunEvent) => void
}

export const executeRemotely = (
  ctx: RemoteContext,
  executor: Executor,
  node: StepNode,
  key: string,
  common: Pick<ExecutionRecord, "ingredients" | "inputs">,
  t0: number,
): Effect.Effect<StepResult> => {
  const { store, runId, emit } = ctx
  return Effect.gen(function* () {
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
    if (hit !== undefined && Object.keys(node.plugin.outputs).every((o) => hit.outputs[o] !== undefined)) {
      const outs: Record<string, Artifact> = {}
      for (const o of Object.keys(node.plugin.outputs)) outs[o] = storedArtifact(store, hit.outputs[o]!)
      return stepResult(
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
    return stepResult(
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
            ...baseRecord(runId, node, key, "failed", t0, { error, annotations: { executor: placement } }),
            ...common,
          }
        : undefined,
      { ok: false, outputs: {} },
    )
  })
}

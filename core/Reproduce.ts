/**
 * `reproduce`: computes an artifact again from scratch and says whether the
 * bytes are the same. The pipeline file its run recorded is loaded again,
 * with the run's `--set` overrides, and its producing node runs with
 * everything upstream in a fresh scratch store (no cache, no stat cache: every
 * source is read and hashed again). Each step is compared with the original
 * run, so a difference is traced to the first step whose recipe changed
 * (a source file, a parameter, the plugin) or that is not deterministic.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"
import { removeTree, Store } from "../cache/Store.ts"
import { overridesOf } from "./Diff.ts"
import { type ExecutionRow, LineageError, producerOf } from "./Lineage.ts"
import { loadPipeline } from "./Loader.ts"
import { parseOverride } from "./Params.ts"
import { newRunId, type RunEvent, run } from "./Run.ts"
import { describeEnvironmentChange, diffIngredients, type KeyIngredients } from "./StepKey.ts"

export interface ReproducedStep {
  readonly node: string
  readonly status: string
  readonly original: Readonly<Record<string, string>> | null
  readonly reproduced: Readonly<Record<string, string>>
  readonly sameKey: boolean | null
  readonly sameOutputs: boolean
  /** Why the recipe differs from the original (when the keys differ). */
  readonly reasons: ReadonlyArray<string>
}

export interface Reproduction {
  readonly digest: string
  readonly node: string
  readonly output: string
  /** The run that computed the artifact. */
  readonly run: string
  readonly pipelinePath: string
  readonly overrides: ReadonlyArray<string>
  readonly reproduced: string | null
  readonly identical: boolean
  readonly status: "succeeded" | "failed" | "interrupted"
  readonly steps: ReadonlyArray<ReproducedStep>
  /** The first step whose outputs differ, if any. */
  readonly divergedAt: string | null
  readonly ms: number
  readonly scratch: string | null
}

export interface ReproduceOptions {
  readonly scratchDir?: string
  readonly keep?: boolean
  readonly cpus?: number
  readonly gpus?: number
  readonly onEvent?: (e: RunEvent) => void
}

const short = (d: unknown) =>
  typeof d === "string" && /^[0-9a-f]{64}$/.test(d) ? `sha256:${d.slice(0, 12)}` : JSON.stringify(d)

export const reproduce = async (
  store: Store,
  digest: string,
  options: ReproduceOptions = {},
): Promise<Reproduction> => {
  const producer = producerOf(store, digest)
  if (producer === undefined) throw new LineageError(`sha256:${digest} has no recorded producer`)
  if (producer.plugin === "source")
    throw new LineageError(
      `sha256:${digest} is source data (${producer.node}): there is nothing to recompute`,
    )
  const runRow = store.sql("SELECT pipeline_path, argv FROM runs WHERE id = ?").get(producer.run_id) as
    | { pipeline_path: string; argv: string }
    | undefined
  if (runRow === undefined) throw new LineageError(`run ${producer.run_id} is not in the store`)
  if (!fs.existsSync(runRow.pipeline_path))
    throw new LineageError(`the pipeline file of run ${producer.run_id}, ${runRow.pipeline_path}, is gone`)
  const output =
    (
      store
        .sql("SELECT name FROM execution_outputs WHERE execution_id = ? AND digest = ?")
        .get(producer.id, digest) as { name: string } | undefined
    )?.name ?? ""
  const overrides = overridesOf(JSON.parse(runRow.argv) as string[])
  const scratch = options.scratchDir ?? fs.mkdtempSync(path.join(os.tmpdir(), "tunegraph-reproduce-"))
  const t0 = Date.now()
  const fresh = Store.open(scratch)
  try {
    const loaded = await loadPipeline(runRow.pipeline_path, path.join(scratch, "compiled"))
    if (!loaded.pipeline.nodes.has(producer.node))
      throw new LineageError(`node "${producer.node}" is no longer in ${runRow.pipeline_path}`)
    const result = await Effect.runPromise(
      run({
        store: fresh,
        pipeline: loaded.pipeline,
        pipelinePath: runRow.pipeline_path,
        baseDir: path.dirname(runRow.pipeline_path),
        targets: [producer.node],
        overrides: overrides.map((o) => parseOverride(o, loaded.pipeline)),
        argv: ["reproduce", `sha256:${digest}`],
        // Nothing outside the scratch store: exports only build their artifacts.
        sinks: false,
        workDir: scratch,
        runId: newRunId(),
        ...(options.cpus === undefined ? {} : { cpus: options.cpus }),
        ...(options.gpus === undefined ? {} : { gpus: options.gpus }),
        ...(options.onEvent === undefined ? {} : { onEvent: options.onEvent }),
      }),
    )
    const originalOf = (node: string) =>
      store
        .sql("SELECT * FROM executions WHERE run_id = ? AND node = ? ORDER BY id DESC LIMIT 1")
        .get(producer.run_id, node) as ExecutionRow | undefined
    const outputsOf = (s: Store, id: number) =>
      Object.fromEntries(
        (
          s.sql("SELECT name, digest FROM execution_outputs WHERE execution_id = ?").all(id) as Array<{
            name: string
            digest: string
          }>
        ).map((o) => [o.name, o.digest]),
      )
    const steps = result.steps.map((s): ReproducedStep => {
      const orig = originalOf(s.node)
      const original = orig === undefined ? null : outputsOf(store, orig.id)
      const sameOutputs =
        original !== null && JSON.stringify(sortKeys(original)) === JSON.stringify(sortKeys(s.outputs))
      const again = fresh.lastIngredients(s.node)?.ingredients as
        | (KeyIngredients & { files?: Record<string, string> })
        | undefined
      const before =
        orig?.ingredients === null || orig === undefined
          ? undefined
          : (JSON.parse(orig.ingredients) as KeyIngredients & { files?: Record<string, string> })
      const reasons: string[] = []
      if (s.plugin === "source") {
        const a = before?.files ?? {}
        const b = again?.files ?? {}
        for (const f of [...new Set([...Object.keys(a), ...Object.keys(b)])].sort())
          if (a[f] !== b[f])
            reasons.push(`file ${f}: ${a[f] ? short(a[f]) : "absent"} -> ${b[f] ? short(b[f]) : "absent"}`)
      } else if (before !== undefined && again !== undefined)
        for (const d of diffIngredients(before, again))
          reasons.push(
            d.ingredient === "param" || d.ingredient === "input"
              ? `${d.ingredient} ${d.name}: ${short(d.from)} -> ${short(d.to)}`
              : d.ingredient === "environment"
                ? describeEnvironmentChange(d)
                : `plugin ${d.ingredient}: ${d.from} -> ${d.to}`,
          )
      return {
        node: s.node,
        status: s.status,
        original,
        reproduced: s.outputs,
        sameKey: s.plugin === "source" || orig === undefined ? null : orig.step_key === s.key,
        sameOutputs,
        reasons,
      }
    })
    const target = result.steps.find((s) => s.node === producer.node)
    const reproduced = target?.outputs[output] ?? null
    return {
      digest,
      node: producer.node,
      output,
      run: producer.run_id,
      pipelinePath: runRow.pipeline_path,
      overrides,
      reproduced,
      identical: reproduced === digest,
      status: result.status,
      steps,
      divergedAt: steps.find((s) => !s.sameOutputs)?.node ?? null,
      ms: Date.now() - t0,
      scratch: options.keep === true ? scratch : null,
    }
  } finally {
    fresh.close()
    if (options.keep !== true && options.scratchDir === undefined) removeTree(scratch)
  }
}

const sortKeys = (o: Readonly<Record<string, string>>) =>
  Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)))

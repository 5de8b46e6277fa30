/**
 * `plan`: what a run would do, and why. For each node: cached, or will run
 * with the ingredients of its key that differ from the node's last execution
 * (a parameter from a to b, a source file's digest, an input digest, the
 * plugin version or code). Nothing runs and nothing is written but the stat cache.
 */
import type { Store } from "../cache/Store.ts"
import type { Artifact, Ref } from "./Artifact.ts"
import { type ChunkReuse, chunkSizes, describeReuse } from "./Chunks.ts"
import { type Override, prepareAll } from "./Params.ts"
import { dependencies, type Pipeline, type StepNode } from "./Pipeline.ts"
import type { ChunkPlan } from "./Plugin.ts"
import { environmentOf, ingredientsOf, inputDigests, selectNodes, storedArtifact } from "./Run.ts"
import { resolveSource } from "./Sources.ts"
import {
  chunkRecipe,
  describeEnvironmentChange,
  diffIngredients,
  type KeyIngredients,
  stepKey,
} from "./StepKey.ts"

export interface PlanStep {
  readonly node: string
  readonly plugin: string
  readonly status: "cached" | "run"
  readonly key: string | null
  readonly reasons: ReadonlyArray<string>
  /** For a chunked step whose inputs exist: its chunks, how many are in the store, how many to compute. */
  readonly chunks?: ChunkReuse
}

export interface PlanOptions {
  readonly store: Store
  readonly pipeline: Pipeline
  readonly baseDir: string
  readonly targets?: ReadonlyArray<string>
  readonly force?: ReadonlyArray<string>
  readonly overrides?: ReadonlyArray<Override>
}

const short = (d: unknown) =>
  typeof d === "string" && /^[0-9a-f]{64}$/.test(d) ? `sha256:${d.slice(0, 12)}` : JSON.stringify(d)

export const plan = (options: PlanOptions): PlanStep[] => {
  const { store, pipeline } = options
  const params = prepareAll(pipeline, options.overrides ?? [])
  const forced = new Set(options.force ?? [])
  const known = new Map<string, Record<string, Artifact>>() // outputs of nodes that stay cached
  const steps: PlanStep[] = []
  for (const name of selectNodes(pipeline, options.targets)) {
    const node = pipeline.nodes.get(name)!
    if (node._tag === "Source") {
      try {
        const art = resolveSource(store, options.baseDir, name, node.spec).artifact
        known.set(name, { files: art })
        const last = store.lastIngredients(name)?.ingredients as
          | { files?: Record<string, string> }
          | undefined
        const now = Object.fromEntries(art.files.map((f) => [f.path, f.digest]))
        const reasons: string[] = []
        if (last?.files === undefined) reasons.push("never read before")
        else
          for (const p of [...new Set([...Object.keys(last.files), ...Object.keys(now)])].sort()) {
            if (last.files[p] === now[p]) continue
            if (last.files[p] === undefined) reasons.push(`file ${p} added (${short(now[p])})`)
            else if (now[p] === undefined) reasons.push(`file ${p} removed`)
            else reasons.push(`file ${p}: ${short(last.files[p])} -> ${short(now[p])}`)
          }
        steps.push({
          node: name,
          plugin: "source",
          status: reasons.length === 0 ? "cached" : "run",
          key: null,
          reasons,
        })
      } catch (e) {
        steps.push({
          node: name,
          plugin: "source",
          status: "run",
          key: null,
          reasons: [`error: ${(e as Error).message}`],
        })
      }
      continue
    }
    // Outputs of a node that will run are unknown until it runs: its dependants run too (or hit early cutoff).
    const pending = dependencies(node).filter((d) => !known.has(d))
    if (pending.length > 0) {
      steps.push({
        node: name,
        plugin: node.plugin.name,
        status: "run",
        key: null,
        reasons: pending.map((d) => `upstream "${d}" will run`),
      })
      continue
    }
    const { digests, artifacts } = inputDigests(node, (ref: Ref) => known.get(ref.node)![ref.output]!)
    const env = environmentOf(node, params.get(name)!.decoded, artifacts)
    if (!env.ok) {
      steps.push({
        node: name,
        plugin: node.plugin.name,
        status: "run",
        key: null,
        reasons: [`error: ${env.error}`],
      })
      continue
    }
    const ingredients = ingredientsOf(node, params.get(name)!.encoded, digests, env.environment)
    const key = stepKey(ingredients)
    const hit = forced.has(name) ? undefined : store.lookup(key)
    const intact =
      hit !== undefined &&
      Object.keys(node.plugin.outputs).every(
        (o) => hit.outputs[o] !== undefined && store.objectIntact(hit.outputs[o]!),
      )
    if (hit !== undefined && intact) {
      known.set(
        name,
        Object.fromEntries(Object.entries(hit.outputs).map(([o, d]) => [o, storedArtifact(store, d)])),
      )
      steps.push({ node: name, plugin: node.plugin.name, status: "cached", key, reasons: [] })
      continue
    }
    const reasons: string[] = []
    if (forced.has(name)) reasons.push("forced")
    else if (hit !== undefined) reasons.push("cached outputs are missing or damaged in the store")
    const last = store.lastIngredients(name)
    if (last === undefined) reasons.push("never ran")
    else
      for (const d of diffIngredients(last.ingredients as KeyIngredients, ingredients)) {
        if (d.ingredient === "param")
          reasons.push(`param ${d.name}: ${JSON.stringify(d.from)} -> ${JSON.stringify(d.to)}`)
        else if (d.ingredient === "input") {
          const wired = node.inputs[d.name]
          const from = Array.isArray(wired)
            ? wired.map((r) => r.node).join(",")
            : (wired as Ref | undefined)?.node
          reasons.push(
            `input ${d.name}${from ? ` (from "${from}")` : ""}: ${short(d.from)} -> ${short(d.to)}`,
          )
        } else if (d.ingredient === "environment") reasons.push(describeEnvironmentChange(d))
        else reasons.push(`plugin ${d.ingredient}: ${d.from} -> ${d.to}`)
      }
    if (reasons.length === 0) reasons.push("not in the cache")
    const chunks = planChunks(node, params.get(name)!.decoded, ingredients, known, store)
    if (chunks !== undefined) reasons.push(describeReuse(name, chunks.verb, chunks.reuse))
    steps.push({
      node: name,
      plugin: node.plugin.name,
      status: "run",
      key,
      reasons,
      ...(chunks === undefined ? {} : { chunks: chunks.reuse }),
    })
  }
  return steps
}

/** A chunked step's own estimate of what it would reuse (Plugin.chunkPlan); undefined when it has none or fails. */
const planChunks = (
  node: StepNode,
  decoded: unknown,
  ingredients: KeyIngredients,
  known: ReadonlyMap<string, Record<string, Artifact>>,
  store: Store,
): ChunkPlan | undefined => {
  const estimate = node.plugin.chunkPlan
  if (estimate === undefined) return undefined
  const inputs: Record<string, unknown> = {}
  for (const [k, wired] of Object.entries(node.inputs) as Array<
    [string, Ref | ReadonlyArray<Ref> | undefined]
  >)
    inputs[k] =
      wired === undefined
        ? undefined
        : Array.isArray(wired)
          ? wired.map((r: Ref) => known.get(r.node)![r.output])
          : known.get((wired as Ref).node)![(wired as Ref).output]
  try {
    return estimate({
      params: decoded,
      inputs: inputs as never,
      recipe: (chunked) => chunkRecipe(ingredients, chunked),
      peek: (k) => store.chunkPeek(k),
      lineIndex: (digest) => store.lineIndex(digest, chunkSizes().target),
    })
  } catch {
    return undefined
  }
}

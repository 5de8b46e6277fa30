/**
 * sweep: a grid or random search over any parameters of a training node.
 *
 * Each trial is an ordinary node of the pipeline (`<name>/lr=0.001,rank=8`),
 * so it is cached on its own: adding one value to the grid runs only the new
 * trial, and trials run concurrently within the scheduler's resource limits.
 * A select node reads each trial's `training.json` (written by the training
 * steps into their output directory), picks the best by a named metric and
 * exposes it as an output of the trained kind, which eval and export take
 * like any model or adapter.
 */
import { Effect, Schema } from "effect"
import type { ArtifactKind, InputSpec, OutputRefs, Ref, Wiring } from "../../core/Artifact.ts"
import { many } from "../../core/Artifact.ts"
import type { NodeParams, Pipeline } from "../../core/Pipeline.ts"
import { definePlugin, type ParamsSchema, type Plugin, withDefault } from "../../core/Plugin.ts"
import { Report } from "../kinds.ts"

export type Range =
  | ReadonlyArray<string | number | boolean>
  | { readonly min: number; readonly max: number; readonly log?: boolean; readonly int?: boolean }

export interface SweepOptions<
  P extends ParamsSchema,
  I extends Record<string, InputSpec>,
  O extends Record<string, ArtifactKind>,
> {
  readonly inputs: Wiring<I>
  /** Parameters shared by every trial. */
  readonly params?: NodeParams<P>
  /** Every combination of these values is a trial. */
  readonly grid?: Readonly<Record<string, ReadonlyArray<string | number | boolean>>>
  /** Or: `trials` draws from these ranges with a seeded generator (the same seed draws the same trials). */
  readonly random?: {
    readonly trials: number
    readonly seed?: number
    readonly space: Readonly<Record<string, Range>>
  }
  /** The metric in each trial's training.json to compare (default val_loss). */
  readonly metric?: string
  readonly mode?: "min" | "max"
  /** Which output of the trained node is the candidate (default: its first output). */
  readonly output?: keyof O & string
}

export interface SweepRefs<O extends Record<string, ArtifactKind>, K extends string> {
  readonly trials: Readonly<Record<string, OutputRefs<O>>>
  readonly best: Ref<K>
  readonly table: Ref<"Report">
}

const format = (v: string | number | boolean) =>
  typeof v === "number" ? String(Number(v.toPrecision(6))) : String(v).replace(/[^A-Za-z0-9_.-]/g, "_")

export const trialLabel = (values: Readonly<Record<string, string | number | boolean>>) =>
  Object.keys(values)
    .sort()
    .map((k) => `${k}=${format(values[k]!)}`)
    .join(",")

/** Every combination of a grid, in key order. */
export const gridTrials = (grid: Readonly<Record<string, ReadonlyArray<string | number | boolean>>>) => {
  let out: Array<Record<string, string | number | boolean>> = [{}]
  for (const key of Object.keys(grid)) out = out.flatMap((t) => grid[key]!.map((v) => ({ ...t, [key]: v })))
  return out
}

/** Seeded draws (mulberry32) from ranges: lists pick a value, {min, max} draw uniformly (log-uniform with log). */
export const randomTrials = (trials: number, seed: number, space: Readonly<Record<string, Range>>) => {
  let s = seed >>> 0
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return Array.from({ length: trials }, () => {
    const t: Record<string, string | number | boolean> = {}
    for (const key of Object.keys(space).sort()) {
      const r = space[key]!
      if (Array.isArray(r)) t[key] = r[Math.floor(next() * r.length)]!
      else {
        const range = r as { min: number; max: number; log?: boolean; int?: boolean }
        const u = next()
        let v = range.log
          ? Math.exp(Math.log(range.min) + u * (Math.log(range.max) - Math.log(range.min)))
          : range.min + u * (range.max - range.min)
        v = range.int ? Math.round(v) : Number(v.toPrecision(4))
        t[key] = v
      }
    }
    return t
  })
}

const selectors = new Map<string, Plugin>()

/** The select step for one kind: its `best` output has the kind of the trials. */
export const selectBest = <K extends ArtifactKind>(kind: K) => {
  const made = selectors.get(kind.name)
  if (made !== undefined) return made as unknown as ReturnType<typeof makeSelect<K>>
  const p = makeSelect(kind)
  selectors.set(kind.name, p as unknown as Plugin)
  return p
}

const makeSelect = <K extends ArtifactKind>(kind: K) =>
  definePlugin({
    name: "sweep-select",
    version: 1,
    params: Schema.Struct({
      metric: Schema.String.pipe(withDefault("val_loss")),
      mode: Schema.Literals(["min", "max"]).pipe(withDefault("min")),
      labels: Schema.Array(Schema.String),
      values: Schema.Array(
        Schema.Record(Schema.String, Schema.Union([Schema.String, Schema.Number, Schema.Boolean])),
      ),
    }),
    inputs: { trials: many(kind) },
    outputs: { best: kind, table: Report },
    code: ["plugins/sweep"],
    run: (ctx) =>
      Effect.flatMap(
        Effect.promise(() => import("./Select.ts")),
        (m) => m.select(ctx as never),
      ),
  })

/** Adds one node per trial and a select node `<name>` to the pipeline. */
export const sweep = <
  P extends ParamsSchema,
  const I extends Record<string, InputSpec>,
  const O extends Record<string, ArtifactKind>,
>(
  pipeline: Pipeline,
  name: string,
  plugin: Plugin<P, I, O>,
  options: SweepOptions<P, I, O>,
): SweepRefs<O, O[keyof O & string]["name"]> => {
  const values =
    options.grid !== undefined
      ? gridTrials(options.grid)
      : options.random !== undefined
        ? randomTrials(options.random.trials, options.random.seed ?? 0, options.random.space)
        : []
  if (values.length === 0) throw new Error(`sweep "${name}": give a non-empty grid or random search`)
  const output = options.output ?? (Object.keys(plugin.outputs)[0] as keyof O & string)
  const kind = plugin.outputs[output]!
  const trials: Record<string, OutputRefs<O>> = {}
  const labels: string[] = []
  for (const v of values) {
    const label = trialLabel(v)
    if (trials[label] !== undefined) continue
    labels.push(label)
    trials[label] = pipeline.node(`${name}/${label}`, plugin, {
      inputs: options.inputs,
      params: { ...(options.params ?? {}), ...v } as NodeParams<P>,
      group: name,
    })
  }
  const refs = pipeline.node(name, selectBest(kind), {
    inputs: { trials: labels.map((l) => trials[l]![output]) } as never,
    params: {
      metric: options.metric ?? "val_loss",
      mode: options.mode ?? "min",
      labels,
      values: labels.map((l) => values.find((v) => trialLabel(v) === l)!),
    },
  })
  return { trials, best: refs.best as Ref<O[keyof O & string]["name"]>, table: refs.table }
}

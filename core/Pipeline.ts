/**
 * A pipeline: named nodes and typed references between them.
 *
 *   const p = Pipeline.make("quickstart")
 *   const raw = p.source("raw", "data/train.jsonl")
 *   const { records } = p.node("ingest", ingest, { inputs: { files: raw }, params: { format: "jsonl" } })
 *
 * `node` checks at the type level that each wired reference has the kind the
 * plugin's input declares, so raw records wired into a trainer do not compile.
 */
import type { ArtifactKind, InputSpec, OutputRefs, Ref, Wiring } from "./Artifact.ts"
import { Files } from "./Artifact.ts"
import type { HfSpec } from "./Hf.ts"
import type { ParamsSchema, Plugin } from "./Plugin.ts"

export interface SourceSpec {
  /** A path or glob (relative to the pipeline file), or several. A directory means every file in it. */
  readonly path: string | ReadonlyArray<string>
  /** Globs to leave out. */
  readonly exclude?: ReadonlyArray<string>
  /** A model in the local Hugging Face hub cache (made by `hf()`, core/Hf.ts); `path` is its folder there. */
  readonly hf?: HfSpec
}

export interface SourceNode {
  readonly _tag: "Source"
  readonly name: string
  readonly spec: SourceSpec
  readonly kind: string
}

export interface StepNode {
  readonly _tag: "Step"
  readonly name: string
  readonly plugin: Plugin
  /** Wired inputs: a ref, a list of refs (many-inputs), or absent. */
  readonly inputs: Readonly<Record<string, Ref | ReadonlyArray<Ref> | undefined>>
  /** Parameters as the author wrote them (the Schema's encoded side); decoded before anything runs. */
  readonly params: Readonly<Record<string, unknown>>
  /** Groups nodes for display (a sweep's trials). */
  readonly group?: string
}

export type Node = SourceNode | StepNode

export type NodeParams<P extends ParamsSchema> = Partial<P["Encoded"]>

export interface NodeConfig<P extends ParamsSchema, I extends Record<string, InputSpec>> {
  readonly inputs: Wiring<I>
  readonly params?: NodeParams<P>
  readonly group?: string
}

export class PipelineError extends Error {
  override readonly name = "PipelineError"
}

export class Pipeline {
  readonly nodes = new Map<string, Node>()
  private constructor(readonly name: string) {}

  static make(name: string): Pipeline {
    return new Pipeline(name)
  }

  /** Files the pipeline reads. Their digests come through the stat cache; nothing is copied. */
  source(name: string, spec: string | ReadonlyArray<string> | SourceSpec): Ref<"Files">
  source<const N extends string>(
    name: string,
    spec: string | ReadonlyArray<string> | SourceSpec,
    kind: ArtifactKind<N>,
  ): Ref<N>
  source(name: string, spec: string | ReadonlyArray<string> | SourceSpec, kind: ArtifactKind = Files): Ref {
    this.checkName(name)
    const s: SourceSpec =
      typeof spec === "string" || Array.isArray(spec) ? { path: spec as string } : (spec as SourceSpec)
    this.nodes.set(name, { _tag: "Source", name, spec: s, kind: kind.name })
    return { _tag: "Ref", kind: kind.name, node: name, output: "files" }
  }

  node<
    P extends ParamsSchema,
    const I extends Record<string, InputSpec>,
    const O extends Record<string, ArtifactKind>,
  >(name: string, plugin: Plugin<P, I, O>, config: NodeConfig<P, I>): OutputRefs<O> {
    this.checkName(name)
    const inputs = config.inputs as Record<string, Ref | ReadonlyArray<Ref> | undefined>
    for (const [input, spec] of Object.entries(plugin.inputs)) {
      const wired = inputs[input]
      if (wired === undefined && spec._tag !== "Optional")
        throw new PipelineError(`node "${name}": input "${input}" of plugin ${plugin.name} is not wired`)
      for (const ref of wired === undefined ? [] : Array.isArray(wired) ? wired : [wired as Ref]) {
        if (!this.nodes.has(ref.node))
          throw new PipelineError(`node "${name}": input "${input}" refers to unknown node "${ref.node}"`)
        const expected = spec._tag === "ArtifactKind" ? spec.name : spec.kind.name
        if (ref.kind !== expected)
          throw new PipelineError(
            `node "${name}": input "${input}" expects ${expected}, got ${ref.kind} from "${ref.node}"`,
          )
      }
    }
    for (const input of Object.keys(inputs))
      if (!(input in plugin.inputs))
        throw new PipelineError(`node "${name}": plugin ${plugin.name} has no input "${input}"`)
    this.nodes.set(name, {
      _tag: "Step",
      name,
      plugin: plugin as unknown as Plugin,
      inputs,
      params: (config.params ?? {}) as Record<string, unknown>,
      ...(config.group === undefined ? {} : { group: config.group }),
    })
    const refs: Record<string, Ref> = {}
    for (const [out, k] of Object.entries(plugin.outputs))
      refs[out] = { _tag: "Ref", kind: k.name, node: name, output: out }
    return refs as OutputRefs<O>
  }

  private checkName(name: string) {
    if (!/^[A-Za-z0-9_][A-Za-z0-9_.\-/=,]*$/.test(name))
      throw new PipelineError(`node name "${name}" may hold only letters, digits and _ . - / = ,`)
    if (this.nodes.has(name)) throw new PipelineError(`node "${name}" is defined twice`)
  }
}

/** Upstream node names of a node, in wiring order. */
export const dependencies = (node: Node): string[] => {
  if (node._tag === "Source") return []
  const out: string[] = []
  for (const wired of Object.values(node.inputs)) {
    if (wired === undefined) continue
    for (const ref of Array.isArray(wired) ? wired : [wired as Ref])
      if (!out.includes(ref.node)) out.push(ref.node)
  }
  return out
}

/** Topological order (Kahn, ties broken by definition order); throws on a cycle. */
export const topoOrder = (pipeline: Pipeline): string[] => {
  const names = [...pipeline.nodes.keys()]
  const indeg = new Map<string, number>(names.map((n) => [n, 0]))
  const children = new Map<string, string[]>(names.map((n) => [n, []]))
  for (const n of names)
    for (const d of dependencies(pipeline.nodes.get(n)!)) {
      indeg.set(n, indeg.get(n)! + 1)
      children.get(d)!.push(n)
    }
  const ready = names.filter((n) => indeg.get(n) === 0)
  const out: string[] = []
  while (ready.length > 0) {
    const n = ready.shift()!
    out.push(n)
    for (const c of children.get(n)!) {
      indeg.set(c, indeg.get(c)! - 1)
      if (indeg.get(c) === 0) ready.push(c)
    }
  }
  if (out.length !== names.length) throw new PipelineError("the pipeline has a cycle")
  return out
}

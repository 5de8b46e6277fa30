/**
 * Step plugins: a name, a version, a parameter Schema with defaults, typed
 * inputs and outputs, the resources a step needs, and an Effect that runs it.
 *
 * A plugin reads its inputs (read-only files in the store), writes each output
 * at the path `ctx.output(name)` gives it (a file, or a directory it creates
 * there), and returns optional metadata per output. The engine hashes the
 * outputs, moves them into the store and records them in one transaction, so a
 * plugin never sees the store and a crash never leaves a partial result.
 */
import { createHash } from "node:crypto"
import { Effect, Schema } from "effect"
import type { Artifact, ArtifactKind, InputSpec, RuntimeInput } from "./Artifact.ts"
import type { ChunkCache, ChunkReuse, LineIndex } from "./Chunks.ts"
import { npmEnvironment } from "./Packages.ts"

export interface Resources {
  /** Wants the accelerator: takes one GPU slot (steps still run on CPU or WebAssembly without one). */
  readonly gpu?: boolean
  /** CPU threads the step keeps busy (defaults to 1). */
  readonly cpu?: number
  /** Rough peak memory in MiB, for the user's information. */
  readonly memoryMb?: number
}

/** The facts a step reports about itself for lineage (`backend` above all). */
export interface Annotations {
  readonly backend?: string
  readonly [key: string]: unknown
}

export interface StepContext<P, I extends Record<string, InputSpec>, O extends Record<string, ArtifactKind>> {
  readonly node: string
  readonly key: string
  readonly params: P
  readonly inputs: { readonly [K in keyof I]: RuntimeInput<I[K]> }
  /** Where output `name` must be written: a file, or a directory created there. Nothing exists there yet. */
  readonly output: (name: keyof O & string) => string
  /** A private scratch directory, removed when the step ends. */
  readonly scratch: string
  /** A directory kept per step key until the step succeeds: training checkpoints live here and resume. */
  readonly checkpoints: string
  /** Threads this step may use. */
  readonly threads: number
  /** Fires when the run is interrupted: long non-Effect work should stop promptly. */
  readonly signal: AbortSignal
  readonly log: (line: string) => void
  readonly metric: (name: string, value: number, step?: number) => void
  readonly progress: (done: number, total?: number, detail?: string) => void
  readonly annotate: (fields: Annotations) => void
  /** Directory a relative path outside the store resolves against (where `tunegraph run` started). */
  readonly workDir?: string
  /** The store's per-chunk cache, for steps that work chunk by chunk (core/Chunks.ts). */
  readonly chunks?: ChunkCache
  /** False where the step must write nothing outside the store (`reproduce`): a sink only builds its artifact. */
  readonly sinks?: boolean
}

/**
 * What a sink's `publish` sees on a cache hit: the stored outputs, to check
 * that what lives outside the store (an export directory) still matches them.
 */
export interface PublishContext<P, O extends Record<string, ArtifactKind>> {
  readonly node: string
  readonly params: P
  readonly outputs: { readonly [K in keyof O]: Artifact }
  readonly workDir: string
  readonly log: (line: string) => void
  /** SHA-256 of a file outside the store, through the stat cache (an unchanged file is not read again). */
  readonly digest: (file: string) => string
}

type MetaOf<K> = K extends ArtifactKind<string, infer M> ? M : never
export type OutputMeta<O extends Record<string, ArtifactKind>> = { readonly [K in keyof O]?: MetaOf<O[K]> }

/** What `plan` gives a chunked step to tell, before it runs, how much of its work is in the store. */
export interface ChunkPlanContext<P, I extends Record<string, InputSpec>> {
  readonly params: P
  readonly inputs: { readonly [K in keyof I]: RuntimeInput<I[K]> }
  /** The step's recipe without the `chunked` inputs (core/StepKey.ts chunkRecipe). */
  readonly recipe: (chunked: ReadonlyArray<string>) => string
  /** A chunk entry's stored file, or undefined; records nothing. */
  readonly peek: (key: string) => string | undefined
  /** A source file's line index by its digest (core/Chunks.ts LineIndex), when it was made. */
  readonly lineIndex?: (digest: string) => LineIndex | undefined
}

/** "parse" and the counts: `plan` prints "ingest: 2 of 412 chunks to parse (410 reused)". */
export interface ChunkPlan {
  readonly verb: string
  readonly reuse: ChunkReuse
}

/** The failure of a step: what went wrong and where, in the user's terms. */
export class StepError extends Schema.TaggedError<StepError>()("StepError", {
  message: Schema.String,
  file: Schema.optionalKey(Schema.String),
  line: Schema.optionalKey(Schema.Number),
  field: Schema.optionalKey(Schema.String),
}) {}

/** A step's input artifacts by input name, as the engine resolved them (a list for a many-input). */
export type InputArtifacts = Readonly<Record<string, Artifact | ReadonlyArray<Artifact> | undefined>>

/** Anything a plugin may fail with: the engine reports its message (and tag, file, line, field when present). */
export interface Failure {
  readonly message: string
}

// biome-ignore lint/suspicious/noExplicitAny: the parameter Schema is any struct codec
export type ParamsSchema = Schema.Codec<any, any>

export interface Plugin<
  P extends ParamsSchema = ParamsSchema,
  I extends Record<string, InputSpec> = Record<string, InputSpec>,
  O extends Record<string, ArtifactKind> = Record<string, ArtifactKind>,
> {
  readonly _tag: "Plugin"
  readonly name: string
  readonly version: string
  readonly fingerprint: string
  readonly params: P
  readonly inputs: I
  readonly outputs: O
  readonly resources: Resources
  /** What the step will compute with, resolved before its key is built (core/StepKey.ts); throws when it cannot run here. */
  readonly environment?: (params: P["Type"], inputs: InputArtifacts) => Readonly<Record<string, string>>
  readonly run: (ctx: StepContext<P["Type"], I, O>) => Effect.Effect<OutputMeta<O> | undefined, Failure>
  /** A sink's check on a cache hit (see PluginOptions.publish). */
  readonly publish?: (ctx: PublishContext<P["Type"], O>) => Effect.Effect<void, Failure>
  /** A chunked step's estimate for `plan` (see PluginOptions.chunkPlan). */
  readonly chunkPlan?: (ctx: ChunkPlanContext<P["Type"], I>) => ChunkPlan | undefined
}

export interface PluginOptions<
  P extends ParamsSchema,
  I extends Record<string, InputSpec>,
  O extends Record<string, ArtifactKind>,
> {
  readonly name: string
  readonly version: string | number
  readonly params: P
  readonly inputs: I
  readonly outputs: O
  readonly resources?: Resources
  /**
   * Identifies the implementation's code, so a code change re-runs the step.
   * Built-in plugins get, at build time, the hash of the modules their
   * folder's index.ts really imports (scripts/fingerprints.mjs: core included,
   * minified so comments do not count); plugins written in a pipeline file
   * default to the hash of `run`'s source.
   */
  readonly fingerprint?: string
  /**
   * Plugin folders (relative to the package root, each with an index.ts)
   * whose import graph is this plugin's fingerprint; the npm packages that
   * graph loads enter its environment as `npm:<name>` with their versions.
   */
  readonly code?: ReadonlyArray<string>
  /**
   * The backend, device and library versions the step resolves to for these
   * parameters: they enter its key, so a cached result is reused only where
   * the same libraries would compute it. Must be cheap on a no-op re-run
   * (cache any probe), and throws with the reason when the step cannot run.
   * It sees the input artifacts (their digests are in the key already) for
   * what a step takes from them beyond their bytes, such as the name a
   * trainer records of its base model.
   */
  readonly environment?: (params: P["Type"], inputs: InputArtifacts) => Readonly<Record<string, string>>
  readonly run: (ctx: StepContext<P["Type"], I, O>) => Effect.Effect<RunResult<O>, Failure>
  /**
   * Makes the step a sink: its outputs also live outside the store (an
   * export's directory). `run` writes them there; on every cache hit the
   * engine calls `publish`, which checks that the outside copy still matches
   * the stored outputs and writes it again where it is missing or differs.
   * Not called where writing outside the store is off (`reproduce`).
   */
  readonly publish?: (ctx: PublishContext<P["Type"], O>) => Effect.Effect<void, Failure>
  /**
   * For a chunked step (core/Chunks.ts): how many of its chunks a run would
   * compute and how many it finds in the store, from its inputs, without
   * running. Called by `plan` when the step will run and its inputs exist;
   * must be cheap (it may read the inputs, never write).
   */
  readonly chunkPlan?: (ctx: ChunkPlanContext<P["Type"], I>) => ChunkPlan | undefined
}

/** What a step's Effect yields: metadata per output, or nothing (Effect.void). */
// biome-ignore lint/suspicious/noConfusingVoidType: a step with nothing to say about its outputs returns Effect.void
export type RunResult<O extends Record<string, ArtifactKind>> = OutputMeta<O> | undefined | void

declare const __TUNEGRAPH_CODE_HASHES__: Record<string, string> | undefined
declare const __TUNEGRAPH_CODE_PACKAGES__: Record<string, ReadonlyArray<string>> | undefined

const codeHashes = (): Record<string, string> =>
  typeof __TUNEGRAPH_CODE_HASHES__ === "undefined" ? {} : __TUNEGRAPH_CODE_HASHES__
const codePackages = (): Record<string, ReadonlyArray<string>> =>
  typeof __TUNEGRAPH_CODE_PACKAGES__ === "undefined" ? {} : __TUNEGRAPH_CODE_PACKAGES__

export const definePlugin = <
  P extends ParamsSchema,
  const I extends Record<string, InputSpec>,
  const O extends Record<string, ArtifactKind>,
>(
  options: PluginOptions<P, I, O>,
): Plugin<P, I, O> => {
  const hashes = codeHashes()
  const fromCode = options.code?.map((dir) => hashes[dir] ?? `unhashed:${dir}`).join(",")
  const fingerprint =
    options.fingerprint ??
    (fromCode !== undefined && fromCode.length > 0
      ? createHash("sha256").update(fromCode).digest("hex").slice(0, 16)
      : createHash("sha256").update(options.run.toString()).digest("hex").slice(0, 16))
  // The exact versions of the npm packages its code loads are part of its environment.
  const packages = [...new Set((options.code ?? []).flatMap((dir) => codePackages()[dir] ?? []))].sort()
  const own = options.environment
  const environment =
    packages.length === 0
      ? own
      : (params: P["Type"], inputs: InputArtifacts) => ({
          ...npmEnvironment(packages),
          ...(own === undefined ? {} : own(params, inputs)),
        })
  return {
    _tag: "Plugin",
    name: options.name,
    version: String(options.version),
    fingerprint,
    params: options.params,
    inputs: options.inputs,
    outputs: options.outputs,
    resources: options.resources ?? {},
    ...(environment === undefined ? {} : { environment }),
    ...(options.publish === undefined ? {} : { publish: options.publish }),
    ...(options.chunkPlan === undefined ? {} : { chunkPlan: options.chunkPlan }),
    run: (ctx) => Effect.map(options.run(ctx), (m) => (m === undefined ? undefined : (m as OutputMeta<O>))),
  }
}

/** A parameter with a default value (filled before the step key is built). */
export const withDefault =
  <S extends Schema.Top>(value: S["Encoded"]) =>
  (schema: S) =>
    schema.pipe(Schema.withDecodingDefaultKey(Effect.succeed(value)))

/** Runs a Promise-returning function as a step body, failing with its error's message. */
export const fromPromise = <A>(f: (signal: AbortSignal) => Promise<A>): Effect.Effect<A, Failure> =>
  Effect.tryPromise({
    try: f,
    catch: (e) => (e instanceof Error ? (e as Failure) : new StepError({ message: String(e) })),
  })

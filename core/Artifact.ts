/**
 * Artifacts: immutable values named by the SHA-256 of their content. Each has
 * a kind (a name and a Schema for its metadata). Kinds are what make a wrong
 * wiring a type error: a `Ref<"Records">` does not fit an input of kind
 * `"Tokens"`.
 */
import { Schema } from "effect"

export interface ArtifactKind<Name extends string = string, Meta = unknown> {
  readonly _tag: "ArtifactKind"
  readonly name: Name
  readonly meta: Schema.Codec<Meta, unknown>
}

/** Declares a kind of artifact with a Schema for its metadata. */
export const kind = <const Name extends string, Meta = unknown>(
  name: Name,
  meta?: Schema.Codec<Meta, unknown>,
): ArtifactKind<Name, Meta> => ({
  _tag: "ArtifactKind",
  name,
  meta: (meta ?? Schema.Unknown) as Schema.Codec<Meta, unknown>,
})

/** An input that may be left unwired. */
export interface Optional<K extends ArtifactKind> {
  readonly _tag: "Optional"
  readonly kind: K
}
/** An input that takes a list of artifacts of one kind (in order). */
export interface Many<K extends ArtifactKind> {
  readonly _tag: "Many"
  readonly kind: K
}
export const optional = <K extends ArtifactKind>(k: K): Optional<K> => ({ _tag: "Optional", kind: k })
export const many = <K extends ArtifactKind>(k: K): Many<K> => ({ _tag: "Many", kind: k })

export type InputSpec = ArtifactKind | Optional<ArtifactKind> | Many<ArtifactKind>

export const kindOfSpec = (spec: InputSpec): ArtifactKind => (spec._tag === "ArtifactKind" ? spec : spec.kind)

/** A typed reference to one output of one node of a pipeline. */
export interface Ref<Name extends string = string> {
  readonly _tag: "Ref"
  readonly kind: Name
  readonly node: string
  readonly output: string
}

/** A file that belongs to an artifact (a directory artifact or a source). */
export interface ArtifactFile {
  /** Path relative to the artifact root, forward slashes. */
  readonly path: string
  /** Absolute path on disk, to read it. */
  readonly abs: string
  readonly digest: string
  readonly size: number
}

/** An artifact as a step sees it at run time: read-only files plus metadata. */
export interface Artifact<Meta = unknown> {
  readonly kind: string
  readonly digest: string
  /** Absolute path: the object file, or the object directory. */
  readonly path: string
  readonly isDir: boolean
  readonly size: number
  readonly meta: Meta
  /** The files of a directory artifact or of a source, sorted by path. */
  readonly files: ReadonlyArray<ArtifactFile>
}

/** Files read from outside the store (datasets, base models, tokenizers). */
export const Files = kind(
  "Files",
  Schema.Struct({
    root: Schema.String,
    pattern: Schema.String,
    count: Schema.Number,
    /** For an hf() source (core/Hf.ts): the repo, the revision asked for and the commit it resolved to. */
    hf: Schema.optionalKey(
      Schema.Struct({ repo: Schema.String, revision: Schema.String, commit: Schema.String }),
    ),
  }),
)
export type Files = typeof Files

export type RuntimeInput<S> =
  S extends Many<ArtifactKind<string, infer M>>
    ? ReadonlyArray<Artifact<M>>
    : S extends Optional<ArtifactKind<string, infer M>>
      ? Artifact<M> | undefined
      : S extends ArtifactKind<string, infer M>
        ? Artifact<M>
        : never

export type WiredInput<S> =
  S extends Many<ArtifactKind<infer N>>
    ? ReadonlyArray<Ref<N>>
    : S extends Optional<ArtifactKind<infer N>>
      ? Ref<N> | undefined
      : S extends ArtifactKind<infer N>
        ? Ref<N>
        : never

type OptionalKeys<I> = { [K in keyof I]: I[K] extends Optional<ArtifactKind> ? K : never }[keyof I]

/** What a pipeline author wires into a node: required inputs must be given. */
export type Wiring<I extends Record<string, InputSpec>> = {
  readonly [K in Exclude<keyof I, OptionalKeys<I>>]: WiredInput<I[K]>
} & {
  readonly [K in OptionalKeys<I>]?: WiredInput<I[K]>
}

export type OutputRefs<O extends Record<string, ArtifactKind>> = {
  readonly [K in keyof O]: Ref<O[K]["name"]>
}

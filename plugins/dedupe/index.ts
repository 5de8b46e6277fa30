/**
 * dedupe: drops exact duplicates (normalised text) and, when asked, near
 * duplicates (MinHash LSH over word n-grams, verified by exact Jaccard),
 * keeping each first occurrence. The implementation (Run.ts) loads on first use.
 */
import { Effect, Schema } from "effect"
import { definePlugin, type StepContext, withDefault } from "../../core/Plugin.ts"
import { Records, Report } from "../kinds.ts"
import { dedupeProblem } from "./Options.ts"

export const DedupeParams = Schema.Struct({
  /** Drop records whose normalised text (NFKC, whitespace collapsed, trimmed) equals an earlier one's. */
  exact: Schema.Boolean.pipe(withDefault(true)),
  /** Also drop near duplicates (MinHash LSH). */
  near: Schema.Boolean.pipe(withDefault(false)),
  /** Compare whole examples, or only prompts (instruction and input, prompt, messages before the last answer). */
  on: Schema.Literals(["example", "prompt"]).pipe(withDefault("example")),
  /** Exact matching ignores letter case. (Near matching always does.) */
  caseFold: Schema.Boolean.pipe(withDefault(false)),
  /** Words per shingle. */
  ngram: Schema.Number.pipe(withDefault(5)),
  /** MinHash permutations (signature length). */
  permutations: Schema.Number.pipe(withDefault(128)),
  /** LSH bands × rows (at most `permutations` values are used). */
  bands: Schema.Number.pipe(withDefault(16)),
  rows: Schema.Number.pipe(withDefault(8)),
  /** Jaccard similarity of shingle sets at or above which a record is a near duplicate. */
  threshold: Schema.Number.pipe(withDefault(0.8)),
  /** Seed of the MinHash permutations. */
  seed: Schema.Number.pipe(withDefault(1)),
}).check(
  Schema.makeFilter((o) => {
    const p = dedupeProblem(o)
    return p === undefined ? undefined : { path: [p.field], issue: p.message }
  }),
)
export type DedupeParams = typeof DedupeParams.Type

const inputs = { records: Records }
const outputs = { records: Records, report: Report }
export type DedupeContext = StepContext<DedupeParams, typeof inputs, typeof outputs>

export const dedupe = definePlugin({
  name: "dedupe",
  version: 2,
  params: DedupeParams,
  inputs,
  outputs,
  resources: { cpu: 1 },
  code: ["plugins/dedupe"],
  run: (ctx) =>
    Effect.flatMap(
      Effect.promise(() => import("./Run.ts")),
      (m) => m.run(ctx),
    ),
})

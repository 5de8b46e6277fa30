/**
 * split: Records into train, validation and test by a seeded hash of each
 * record's content, so that adding data never moves an existing record and a
 * test set stays honest as the dataset grows. The implementation (Run.ts)
 * loads on first use.
 */
import { Effect, Schema } from "effect"
import { definePlugin, type StepContext, withDefault } from "../../core/Plugin.ts"
import { Records, Report } from "../kinds.ts"
import { ratiosProblem } from "./Ratios.ts"

export const SplitParams = Schema.Struct({
  /** Shares of the three splits; they must add up to 1 (a share may be 0). */
  ratios: Schema.Struct({ train: Schema.Number, validation: Schema.Number, test: Schema.Number })
    .check(
      Schema.makeFilter((r) => {
        const p = ratiosProblem(r)
        return p === undefined
          ? undefined
          : p.field === undefined
            ? p.message
            : { path: [p.field], issue: p.message }
      }),
    )
    .pipe(withDefault({ train: 0.8, validation: 0.1, test: 0.1 })),
  /** Seed of the assignment hash: another seed, another (equally stable) split. */
  seed: Schema.Number.pipe(withDefault(0)),
  /** A field path (e.g. "meta.intent"): records with the same value stay on one side. */
  groupBy: Schema.optionalKey(Schema.String),
  /** A field path whose per-value shares the report checks in every split (see Run.ts on how close they stay). */
  stratifyBy: Schema.optionalKey(Schema.String),
  /** What counts as the same example in two splits: the whole normalised example, or its prompt. */
  leakOn: Schema.Literals(["example", "prompt"]).pipe(withDefault("example")),
  /** An example found in two splits fails the step, or is only reported. */
  onLeak: Schema.Literals(["fail", "report"]).pipe(withDefault("fail")),
})
export type SplitParams = typeof SplitParams.Type

const inputs = { records: Records }
const outputs = { train: Records, validation: Records, test: Records, report: Report }
export type SplitContext = StepContext<SplitParams, typeof inputs, typeof outputs>

export const split = definePlugin({
  name: "split",
  version: 2,
  params: SplitParams,
  inputs,
  outputs,
  resources: { cpu: 1 },
  code: ["plugins/split"],
  run: (ctx) =>
    Effect.flatMap(
      Effect.promise(() => import("./Run.ts")),
      (m) => m.run(ctx),
    ),
})

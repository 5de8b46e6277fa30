/**
 * Wiring is typed: an output of the wrong kind does not compile. `tsc` (run
 * by CI's type check) fails if any @ts-expect-error below stops being an error.
 */
import { Effect, Schema } from "effect"
import { describe, expect, it } from "vitest"
import { kind, many, optional } from "../../core/Artifact.ts"
import { Pipeline, PipelineError } from "../../core/Pipeline.ts"
import { definePlugin } from "../../core/Plugin.ts"

const Records = kind("Records")
const Tokens = kind("Tokens")
const Model = kind("Model")

const ingest = definePlugin({
  name: "ingest",
  version: 1,
  params: Schema.Struct({}),
  inputs: { files: kind("Files") },
  outputs: { records: Records },
  run: () => Effect.void,
})
const tokenize = definePlugin({
  name: "tokenize",
  version: 1,
  params: Schema.Struct({ maxLength: Schema.Number }),
  inputs: { records: Records },
  outputs: { tokens: Tokens },
  run: () => Effect.void,
})
const train = definePlugin({
  name: "train",
  version: 1,
  params: Schema.Struct({}),
  inputs: { train: Tokens, validation: optional(Tokens), extra: many(Records) },
  outputs: { model: Model },
  run: () => Effect.void,
})

describe("typed wiring", () => {
  it("accepts a well-typed pipeline and rejects wrong kinds at compile time and at run time", () => {
    const p = Pipeline.make("typed")
    const files = p.source("data", "data.jsonl")
    const { records } = p.node("ingest", ingest, { inputs: { files } })
    const { tokens } = p.node("tokenize", tokenize, { inputs: { records }, params: { maxLength: 128 } })
    p.node("train", train, { inputs: { train: tokens, extra: [records] } })

    // Raw records into a trainer:
    // @ts-expect-error Ref<"Records"> is not a Ref<"Tokens">
    expect(() => p.node("bad", train, { inputs: { train: records, extra: [] } })).toThrow(PipelineError)
    // A required input left out:
    // @ts-expect-error `train` is required
    expect(() => p.node("bad2", train, { inputs: { extra: [] } })).toThrow(/not wired/)
    // A parameter of the wrong type:
    // @ts-expect-error maxLength is a number
    p.node("bad3", tokenize, { inputs: { records }, params: { maxLength: "long" } })
    // A list of the wrong kind into a many-input:
    // @ts-expect-error extra takes Records
    expect(() => p.node("bad4", train, { inputs: { train: tokens, extra: [tokens] } })).toThrow(
      /expects Records/,
    )
    expect(() => p.node("ingest", ingest, { inputs: { files } })).toThrow(/defined twice/)
  })
})

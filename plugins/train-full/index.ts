/**
 * train-full: fine-tunes every weight of a Llama base model on Tokens and
 * outputs a Hugging Face model directory. The model code and the trainer
 * (plugins/train) load only when the step runs, in a worker thread.
 */
import { Effect } from "effect"
import { optional } from "../../core/Artifact.ts"
import { definePlugin } from "../../core/Plugin.ts"
import { Model, Tokens } from "../kinds.ts"
import { trainEnvironment } from "../train/BaseName.ts"
import { FullParams } from "../train/Params.ts"

export const trainFull = definePlugin({
  name: "train-full",
  version: 1,
  params: FullParams,
  inputs: {
    train: Tokens,
    validation: optional(Tokens),
    base: Model,
    /** An earlier result to continue from (sequential fine-tuning), keyed by its digest. */
    init: optional(Model),
  },
  outputs: { model: Model },
  // Two data-parallel shards on the CPU backends by default (params.shards).
  resources: { gpu: true, cpu: 2 },
  environment: trainEnvironment,
  code: ["plugins/train-full"],
  run: (ctx) =>
    Effect.flatMap(
      Effect.promise(() => import("../train/Step.ts")),
      (m) => m.runTrainStep("full", ctx, "model"),
    ),
})

/**
 * train-lora: trains LoRA adapters (Hu et al. 2021) on a frozen Llama base
 * and outputs a PEFT adapter directory. The model code and the trainer
 * (plugins/train) load only when the step runs, in a worker thread.
 */
import { Effect } from "effect"
import { optional } from "../../core/Artifact.ts"
import { definePlugin } from "../../core/Plugin.ts"
import { Adapter, Model, Tokens } from "../kinds.ts"
import { trainEnvironment } from "../train/BaseName.ts"
import { LoraParams } from "../train/Params.ts"

export const trainLora = definePlugin({
  name: "train-lora",
  version: 1,
  params: LoraParams,
  inputs: {
    train: Tokens,
    validation: optional(Tokens),
    base: Model,
    /** An earlier result to continue from (sequential fine-tuning), keyed by its digest. */
    init: optional(Adapter),
  },
  outputs: { adapter: Adapter },
  // Two data-parallel shards on the CPU backends by default (params.shards).
  resources: { gpu: true, cpu: 2 },
  environment: trainEnvironment,
  code: ["plugins/train-lora"],
  run: (ctx) =>
    Effect.flatMap(
      Effect.promise(() => import("../train/Step.ts")),
      (m) => m.runTrainStep("lora", ctx, "adapter"),
    ),
})

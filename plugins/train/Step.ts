/**
 * The body shared by train-full, train-lora and train-qlora: build the job
 * from the step's context, run it in a worker, and report to the engine.
 */
import * as path from "node:path"
import { Effect } from "effect"
import type { Artifact } from "../../core/Artifact.ts"
import { type Failure, StepError } from "../../core/Plugin.ts"
import type { TrainParams } from "./Params.ts"
import type { TrainKind } from "./Trainer.ts"
import { runInWorker } from "./TrainRunner.ts"

/** What the three steps' contexts have in common. */
export interface TrainContext {
  readonly params: TrainParams
  readonly inputs: {
    readonly train: Artifact
    readonly validation?: Artifact | undefined
    readonly base: Artifact
  }
  readonly output: (name: never) => string
  readonly checkpoints: string
  readonly signal: AbortSignal
  readonly log: (line: string) => void
  readonly metric: (name: string, value: number, step?: number) => void
  readonly progress: (done: number, total?: number, detail?: string) => void
  readonly annotate: (fields: { readonly backend?: string; readonly [k: string]: unknown }) => void
}

export const runTrainStep = (
  kind: TrainKind,
  ctx: TrainContext,
  output: "model" | "adapter",
): Effect.Effect<undefined, Failure> =>
  Effect.tryPromise({
    try: async (signal) => {
      const stop = AbortSignal.any([ctx.signal, signal])
      const base = ctx.inputs.base
      await runInWorker(
        {
          kind,
          base: base.path,
          baseName: path.basename(base.path),
          train: ctx.inputs.train.path,
          ...(ctx.inputs.validation ? { validation: ctx.inputs.validation.path } : {}),
          output: (ctx.output as (name: string) => string)(output),
          checkpoints: ctx.checkpoints,
          params: ctx.params,
        },
        { log: ctx.log, metric: ctx.metric, progress: ctx.progress, annotate: ctx.annotate },
        stop,
      )
      return undefined
    },
    catch: (e) => new StepError({ message: e instanceof Error ? e.message : String(e) }),
  })

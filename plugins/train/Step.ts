/**
 * The body shared by train-full, train-lora and train-qlora: resolve the
 * backend (as the step key did), build the job from the step's context, run
 * it in a tfjs worker thread or a torch worker process, and report to the
 * engine.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import type { Artifact } from "../../core/Artifact.ts"
import { canonicalJson } from "../../core/Canonical.ts"
import { type Failure, StepError } from "../../core/Plugin.ts"
import { type ResolvedBackend, resolveBackend } from "./BackendChoice.ts"
import { baseNameOf } from "./BaseName.ts"
import { configFromHf } from "./LlamaConfig.ts"
import type { TrainParams } from "./Params.ts"
import type { TrainHooks, TrainKind, TrainResult } from "./Trainer.ts"
import { runInWorker } from "./TrainRunner.ts"

/** What the three steps' contexts have in common. */
export interface TrainContext {
  readonly params: TrainParams
  readonly inputs: {
    readonly train: Artifact
    readonly validation?: Artifact | undefined
    readonly base: Artifact
    /** An earlier result to continue from: an adapter (LoRA, QLoRA) or a model (full). */
    readonly init?: Artifact | undefined
  }
  readonly output: (name: never) => string
  readonly checkpoints: string
  readonly scratch: string
  readonly signal: AbortSignal
  readonly log: (line: string) => void
  readonly metric: (name: string, value: number, step?: number) => void
  readonly progress: (done: number, total?: number, detail?: string) => void
  readonly annotate: (fields: { readonly backend?: string; readonly [k: string]: unknown }) => void
}

/**
 * A base as the torch worker loads it: a Hugging Face directory as it is, a
 * llama2.c checkpoint converted to one (plugins/train/Llama2c.ts) in scratch.
 */
export const hfBaseDir = async (base: string, scratch: string): Promise<string> => {
  if (fs.statSync(base).isDirectory() && fs.existsSync(path.join(base, "config.json"))) return base
  const { loadModel, saveHfModel } = await import("./ModelIO.ts")
  const host = loadModel(base)
  const dir = path.join(scratch, "base-hf")
  saveHfModel(dir, host)
  return dir
}

const runTorch = async (
  kind: TrainKind,
  ctx: TrainContext,
  output: string,
  backend: ResolvedBackend,
  hooks: TrainHooks,
  signal: AbortSignal,
): Promise<TrainResult> => {
  const { runTorchJob } = await import("./torch/Worker.ts")
  const p = ctx.params
  const baseDir = await hfBaseDir(ctx.inputs.base.path, ctx.scratch)
  const baseName = baseNameOf(ctx.inputs.base)
  const jobKey = createHash("sha256")
    .update(
      canonicalJson({
        backend: backend.environment,
        kind,
        base: ctx.inputs.base.digest,
        train: ctx.inputs.train.digest,
        val: ctx.inputs.validation?.digest ?? null,
        ...(ctx.inputs.init === undefined ? {} : { init: ctx.inputs.init.digest }),
        p,
      }),
    )
    .digest("hex")
    .slice(0, 16)
  hooks.annotate({ backend: backend.name, ...backend.environment })
  hooks.log(`backend: ${backend.name} (${backend.device})`)
  const r = (await runTorchJob(
    {
      kind,
      base: baseDir,
      baseName,
      train: ctx.inputs.train.path,
      ...(ctx.inputs.validation ? { validation: ctx.inputs.validation.path } : {}),
      ...(ctx.inputs.init === undefined
        ? {}
        : {
            init:
              kind === "full"
                ? await hfBaseDir(ctx.inputs.init.path, path.join(ctx.scratch, "init"))
                : ctx.inputs.init.path,
          }),
      output,
      checkpoints: ctx.checkpoints,
      params: p,
      jobKey,
      device: backend.name === "torch-cuda" ? "cuda" : "cpu",
      deviceName: backend.device,
      threads: p.shards,
    },
    hooks,
    signal,
  )) as Omit<TrainResult, "backend">
  // The same record the tfjs trainer writes: no timings and no paths.
  const record = {
    backend: backend.name,
    baseName,
    bestStep: r.bestStep,
    bestValLoss: r.bestValLoss,
    finalTrainLoss: r.finalTrainLoss,
    kind,
    params: p,
    steps: r.steps,
    stoppedEarly: r.stoppedEarly,
    totalSteps: r.totalSteps,
  }
  fs.writeFileSync(path.join(output, "training.json"), `${canonicalJson(record)}\n`)
  return { ...r, backend: backend.name }
}

/**
 * Refuses, before a worker starts, a Hugging Face model the tfjs decoder
 * cannot compute (another model_type, a RoPE scaling, sliding-window
 * layers...): the error names config.json, the field and its value, and the
 * torch backend. A llama2.c checkpoint or an unreadable config.json is the
 * loader's to report.
 */
const checkTfjsRuns = (model: string): void => {
  const file = path.join(model, "config.json")
  if (!fs.existsSync(file)) return
  let json: unknown
  try {
    json = JSON.parse(fs.readFileSync(file, "utf8"))
  } catch {
    return
  }
  if (typeof json === "object" && json !== null) configFromHf(json as Record<string, unknown>, file)
}

/**
 * Runs the job. Interrupted, the step waits for the trainer to stop (the
 * torch worker saves a checkpoint first), so the next run finds it.
 */
export const runTrainStep = (
  kind: TrainKind,
  ctx: TrainContext,
  output: "model" | "adapter",
): Effect.Effect<undefined, Failure> =>
  Effect.callback<undefined, Failure>((resume, signal) => {
    const done = trainWith(kind, ctx, output, AbortSignal.any([ctx.signal, signal])).then(
      () => resume(Effect.succeed(undefined)),
      (e) => resume(Effect.fail(new StepError({ message: e instanceof Error ? e.message : String(e) }))),
    )
    return Effect.promise(() => done)
  })

const trainWith = async (
  kind: TrainKind,
  ctx: TrainContext,
  output: "model" | "adapter",
  stop: AbortSignal,
): Promise<void> => {
  const backend = resolveBackend(ctx.params.backend)
  const hooks = { log: ctx.log, metric: ctx.metric, progress: ctx.progress, annotate: ctx.annotate }
  const out = (ctx.output as (name: string) => string)(output)
  if (backend.family === "torch") {
    await runTorch(kind, ctx, out, backend, hooks, stop)
    return
  }
  const base = ctx.inputs.base
  checkTfjsRuns(base.path)
  if (kind === "full" && ctx.inputs.init !== undefined) checkTfjsRuns(ctx.inputs.init.path)
  await runInWorker(
    {
      kind,
      base: base.path,
      baseName: baseNameOf(base),
      train: ctx.inputs.train.path,
      ...(ctx.inputs.validation ? { validation: ctx.inputs.validation.path } : {}),
      ...(ctx.inputs.init === undefined ? {} : { init: ctx.inputs.init.path }),
      output: out,
      checkpoints: ctx.checkpoints,
      params: { ...ctx.params, backend: backend.name as TrainParams["backend"] },
    },
    hooks,
    stop,
  )
}

/**
 * The export steps' bodies: build the directory as the step's output, mark
 * it, then publish a copy at `to` (Target.ts).
 */
import * as fs from "node:fs"
import type { Effect } from "effect"
import { type Failure, fromPromise, type OutputMeta, type StepContext, StepError } from "../../core/Plugin.ts"
import { checkAdapter, readAdapter } from "../train/Lora.ts"
import { loadModel } from "../train/ModelIO.ts"
import { writeHfModel, writeTokenizer } from "./HfModel.ts"
import type {
  ExportAdapterParams,
  ExportMergedParams,
  exportAdapterInputs,
  exportMergedInputs,
  exportOutputs,
} from "./index.ts"
import { adapterBaseQuantization, mergedModel } from "./Merge.ts"
import { checkPeftAdapter, writePeftAdapter } from "./Peft.ts"
import { checkTarget, publishDirectory, resolveTarget, TargetError, writeMarker } from "./Target.ts"

type AdapterContext = StepContext<ExportAdapterParams, typeof exportAdapterInputs, typeof exportOutputs>
type MergedContext = StepContext<ExportMergedParams, typeof exportMergedInputs, typeof exportOutputs>
type Meta = OutputMeta<typeof exportOutputs>

/** Errors of the library code, as step failures naming the parameter or file at fault. */
const asStepError = (e: unknown): Failure => {
  if (e instanceof StepError) return e
  if (e instanceof TargetError) return new StepError({ message: e.message, field: "to" })
  return new StepError({ message: e instanceof Error ? e.message : String(e) })
}

const attempt = <A>(f: () => Promise<A>): Effect.Effect<A, Failure> =>
  fromPromise(() =>
    f().catch((e: unknown) => {
      throw asStepError(e)
    }),
  )

/** Resolves and checks `to` before any work, so a refused target fails fast. */
const prepareTarget = (to: string, overwrite: boolean): string => {
  const target = resolveTarget(to)
  checkTarget(target, overwrite)
  return target
}

export const runExportAdapter = (ctx: AdapterContext): Effect.Effect<Meta, Failure> =>
  attempt(async () => {
    const target = prepareTarget(ctx.params.to, ctx.params.overwrite)
    const source = ctx.inputs.adapter.path
    const adapter = checkPeftAdapter(source)
    const base = ctx.inputs.base
    if (base !== undefined) {
      const model = loadModel(base.path)
      checkAdapter(model.config, model, readAdapter(source))
    }
    const out = ctx.output("export")
    writePeftAdapter(source, adapter, out, { baseModel: ctx.params.baseModel })
    const marker = writeMarker(out, {
      artifact: ctx.inputs.adapter.digest,
      node: ctx.node,
      kind: "peft-adapter",
    })
    const state = publishDirectory(out, target, ctx.params.overwrite)
    ctx.log(
      `${state.exists ? "replaced" : "wrote"} ${target}: PEFT LoRA r=${adapter.r} on ${adapter.targets.join(", ")}, ${adapter.layers.length} layers, ${adapter.tensors.size} tensors`,
    )
    return { export: { to: target, kind: marker.kind, files: [...marker.files] } }
  })

export const runExportMerged = (ctx: MergedContext): Effect.Effect<Meta, Failure> =>
  attempt(async () => {
    const target = prepareTarget(ctx.params.to, ctx.params.overwrite)
    const modelInput = ctx.inputs.model
    const adapterInput = ctx.inputs.adapter
    const base = loadModel(modelInput.path)
    let model = base
    let note = "the model as it is"
    if (adapterInput !== undefined) {
      const recorded = adapterBaseQuantization(adapterInput.path)
      const quantization = ctx.params.adapterBase === "auto" ? (recorded ?? "none") : ctx.params.adapterBase
      if (ctx.params.adapterBase === "auto" && recorded === undefined)
        ctx.log(
          "the adapter does not record how its base was held (training.json): merging into the float base",
        )
      model = mergedModel(base, readAdapter(adapterInput.path), quantization)
      note = `adapter merged into the ${quantization === "nf4" ? "NF4-dequantised" : "float"} base`
    }
    const out = ctx.output("export")
    writeHfModel(out, model, ctx.params.dtype)
    const tokenizer = ctx.inputs.tokenizer?.path ?? base.tokenizer?.path
    if (tokenizer !== undefined && fs.existsSync(tokenizer))
      ctx.log(`tokenizer: ${writeTokenizer(out, { path: tokenizer }, base.config.maxSeqLen)}`)
    else ctx.log("no tokenizer beside the model and none wired: the directory holds no tokenizer files")
    const marker = writeMarker(out, {
      artifact: adapterInput?.digest ?? modelInput.digest,
      ...(adapterInput === undefined ? {} : { base: modelInput.digest }),
      node: ctx.node,
      kind: "merged-model",
    })
    const state = publishDirectory(out, target, ctx.params.overwrite)
    ctx.log(
      `${state.exists ? "replaced" : "wrote"} ${target}: Hugging Face Llama (${ctx.params.dtype}), ${note}`,
    )
    return { export: { to: target, kind: marker.kind, files: [...marker.files] } }
  })

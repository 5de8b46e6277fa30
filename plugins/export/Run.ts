/**
 * The export steps' bodies: build the directory as the step's output, mark
 * it, then publish a copy at `to` (Target.ts).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { Effect } from "effect"
import type { Artifact } from "../../core/Artifact.ts"
import {
  type Failure,
  fromPromise,
  type OutputMeta,
  type PublishContext,
  type StepContext,
  StepError,
} from "../../core/Plugin.ts"
import { checkAdapter, readAdapter } from "../train/Lora.ts"
import { loadModel } from "../train/ModelIO.ts"
import { dtypeName, writeHfModel, writeTokenizer } from "./HfModel.ts"
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

/** Resolves and checks `to` before any work, so a refused target fails fast (not checked where sinks are off). */
const prepareTarget = (ctx: {
  params: { to: string; overwrite: boolean }
  workDir?: string
  sinks?: boolean
}) => {
  const target = resolveTarget(ctx.params.to, ctx.workDir ?? process.cwd())
  if (ctx.sinks !== false) checkTarget(target, ctx.params.overwrite)
  return target
}

/** Copies the built directory to the target, unless sinks are off; says what it did. */
const publish = (
  ctx: { params: { overwrite: boolean }; sinks?: boolean },
  out: string,
  target: string,
): string => {
  if (ctx.sinks === false) return `built (not written to ${target}: writing outside the store is off)`
  return publishDirectory(out, target, ctx.params.overwrite).exists ? `replaced ${target}` : `wrote ${target}`
}

/** Whether `target` holds exactly the artifact's files, byte for byte. */
const sameFiles = (target: string, art: Artifact, digest: (file: string) => string): boolean => {
  try {
    const st = fs.lstatSync(target)
    if (!st.isDirectory()) return false
    const names = fs.readdirSync(target).sort()
    const want = art.files.map((f) => f.path).sort()
    if (names.length !== want.length || names.some((n, i) => n !== want[i])) return false
    return art.files.every((f) => {
      const p = path.join(target, f.path)
      const s = fs.lstatSync(p)
      return s.isFile() && s.size === f.size && digest(p) === f.digest
    })
  } catch {
    return false
  }
}

/**
 * An export is a sink: on a cache hit its directory is checked against the
 * artifact, and written again where it is missing or differs (a deleted
 * target, an edited file, another working directory).
 */
export const republish = (
  ctx: PublishContext<{ to: string; overwrite: boolean }, typeof exportOutputs>,
): Effect.Effect<void, Failure> =>
  attempt(async () => {
    const art = ctx.outputs.export
    const target = resolveTarget(ctx.params.to, ctx.workDir)
    if (sameFiles(target, art, ctx.digest)) return
    const state = publishDirectory(art.path, target, ctx.params.overwrite)
    ctx.log(`${state.exists ? "rewrote" : "wrote"} ${target} from the cached export`)
  })

export const runExportAdapter = (ctx: AdapterContext): Effect.Effect<Meta, Failure> =>
  attempt(async () => {
    const target = prepareTarget(ctx)
    const source = ctx.inputs.adapter.path
    const adapter = checkPeftAdapter(source)
    const base = ctx.inputs.base
    if (base !== undefined) {
      const model = loadModel(base.path)
      checkAdapter(model.config, model, readAdapter(source))
    }
    const out = ctx.output("export")
    writePeftAdapter(source, adapter, out, { baseModel: ctx.params.baseModel, dtype: ctx.params.dtype })
    const marker = writeMarker(out, {
      artifact: ctx.inputs.adapter.digest,
      node: ctx.node,
      kind: "peft-adapter",
    })
    ctx.log(
      `${publish(ctx, out, target)}: PEFT LoRA r=${adapter.r} on ${adapter.targets.join(", ")}, ${adapter.layers.length} layers, ${adapter.tensors.size} tensors`,
    )
    return { export: { to: target, kind: marker.kind, files: [...marker.files] } }
  })

export const runExportMerged = (ctx: MergedContext): Effect.Effect<Meta, Failure> =>
  attempt(async () => {
    const target = prepareTarget(ctx)
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
    const dtype = ctx.params.dtype === "source" ? dtypeName(base.dtype ?? "F32") : ctx.params.dtype
    writeHfModel(out, model, dtype)
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
    ctx.log(
      `${publish(ctx, out, target)}: Hugging Face Llama (${dtype}${ctx.params.dtype === "source" ? ", the model's own" : ""}), ${note}`,
    )
    return { export: { to: target, kind: marker.kind, files: [...marker.files] } }
  })

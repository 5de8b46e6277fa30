/**
 * export: writes a trained result outside the store, where other tools load
 * it, and keeps a copy in the store as the step's `export` artifact.
 *
 *   export-adapter  a PEFT LoRA directory (adapter_config.json, adapter_model.safetensors)
 *   export-merged   a Hugging Face Llama directory (config.json, model.safetensors,
 *                   tokenizer files): a model as it is, or a base with an adapter merged in
 *
 * `to` is the directory to write: a relative path is taken from the working
 * directory `tunegraph run` started in. The export replaces only a directory
 * it wrote itself (marked by tunegraph-export.json) unless `overwrite` is set,
 * never writes through a symbolic link or a `..`, and swaps the directory in
 * whole (Target.ts). An export is a sink: on a cache hit its directory is
 * checked against the cached artifact and written again when it is missing or
 * its files differ, so a deleted target, an edited file or a run from another
 * working directory needs no `--force`. `reproduce` writes no export.
 *
 * This module loads nothing heavy: the work lives in Run.ts.
 */
import { Effect, Schema } from "effect"
import { optional } from "../../core/Artifact.ts"
import { definePlugin, withDefault } from "../../core/Plugin.ts"
import { Adapter, Export, Model, Tokenizer } from "../kinds.ts"

const target = {
  /** Directory to write (relative to the working directory). */
  to: Schema.String.check(
    Schema.isMinLength(1),
    Schema.makeFilter((to) =>
      to.includes("\0")
        ? `"to" holds a NUL character`
        : to.split(/[\\/]+/).includes("..")
          ? `"to" (${to}) holds a ".." segment; name the directory without it`
          : undefined,
    ),
  ),
  /** Replace a directory the export did not write (never needed for its own). */
  overwrite: Schema.Boolean.pipe(withDefault(false)),
  /** Register the export in MLflow's model registry under this name when runs are logged there (core/mlflow). */
  registerAs: Schema.optionalKey(Schema.String.check(Schema.isMinLength(1))),
}

export const ExportAdapterParams = Schema.Struct({
  ...target,
  /** base_model_name_or_path for adapter_config.json (a Hugging Face id, say); the adapter's own when absent. */
  baseModel: Schema.optionalKey(Schema.String),
  /** Weight type of adapter_model.safetensors: float32, as PEFT saves adapters, unless told otherwise. */
  dtype: Schema.Literals(["float32", "float16", "bfloat16"]).pipe(withDefault("float32")),
})
export type ExportAdapterParams = typeof ExportAdapterParams.Type

export const ExportMergedParams = Schema.Struct({
  ...target,
  /**
   * Weight type of model.safetensors: "source" keeps the model's own (a
   * bfloat16 checkpoint, or a full fine-tune of one, exports as bfloat16).
   */
  dtype: Schema.Literals(["source", "float32", "float16", "bfloat16"]).pipe(withDefault("source")),
  /** How the base was held while the adapter trained: "auto" reads the adapter's training.json; "nf4" for QLoRA. */
  adapterBase: Schema.Literals(["auto", "nf4", "none"]).pipe(withDefault("auto")),
})
export type ExportMergedParams = typeof ExportMergedParams.Type

export const exportAdapterInputs = {
  adapter: Adapter,
  /** When wired, the adapter's shapes are checked against this base. */
  base: optional(Model),
}
export const exportMergedInputs = {
  /** The base the adapter was trained on, or a fully fine-tuned model on its own. */
  model: Model,
  adapter: optional(Adapter),
  /** The tokenizer to ship; the one beside the model when absent. */
  tokenizer: optional(Tokenizer),
}
export const exportOutputs = { export: Export }

const CODE = ["plugins/export"]

export const exportAdapter = definePlugin({
  name: "export-adapter",
  version: 1,
  params: ExportAdapterParams,
  inputs: exportAdapterInputs,
  outputs: exportOutputs,
  resources: { cpu: 1 },
  code: CODE,
  run: (ctx) =>
    Effect.flatMap(
      Effect.promise(() => import("./Run.ts")),
      (m) => m.runExportAdapter(ctx),
    ),
  publish: (ctx) =>
    Effect.flatMap(
      Effect.promise(() => import("./Run.ts")),
      (m) => m.republish(ctx),
    ),
})

export const exportMerged = definePlugin({
  name: "export-merged",
  version: 1,
  params: ExportMergedParams,
  inputs: exportMergedInputs,
  outputs: exportOutputs,
  resources: { cpu: 1 },
  code: CODE,
  run: (ctx) =>
    Effect.flatMap(
      Effect.promise(() => import("./Run.ts")),
      (m) => m.runExportMerged(ctx),
    ),
  publish: (ctx) =>
    Effect.flatMap(
      Effect.promise(() => import("./Run.ts")),
      (m) => m.republish(ctx),
    ),
})

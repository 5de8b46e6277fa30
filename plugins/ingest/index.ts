/**
 * ingest: source files (JSONL, JSON, CSV, Parquet, text; gzip or not) to
 * canonical Records (a directory of parts) and a Report. The implementation (Run.ts) loads on
 * first use, so defining a pipeline costs nothing.
 */
import { Effect, Schema } from "effect"
import { Files } from "../../core/Artifact.ts"
import { chunkSizes } from "../../core/Chunks.ts"
import { definePlugin, type StepContext, withDefault } from "../../core/Plugin.ts"
import { Records, Report } from "../kinds.ts"
import { planUnits } from "./Units.ts"

const Role = Schema.Literals(["system", "user", "assistant"])

export const IngestParams = Schema.Struct({
  /** File format for every file; "auto" tells it from each file's name and magic bytes. */
  format: Schema.Literals(["auto", "jsonl", "json", "csv", "tsv", "parquet", "text"]).pipe(
    withDefault("auto"),
  ),
  /** Canonical record kind; inferred from the first record's fields when absent. */
  kind: Schema.optionalKey(Schema.Literals(["instruction", "completion", "chat"])),
  /** Source field (dotted path) to canonical field or meta name: { question: "instruction", answer: "output" }. */
  rename: Schema.Record(Schema.String, Schema.String).pipe(withDefault({})),
  /** Source fields kept under `meta` (e.g. ["intent", "category"]). */
  keep: Schema.Array(Schema.String).pipe(withDefault([])),
  /** A list field whose elements each become one record, merged over the parent's fields (e.g. "instances"). */
  expand: Schema.optionalKey(Schema.String),
  /** Extra chat role names: { narrator: "system" }. */
  roles: Schema.Record(Schema.String, Role).pipe(withDefault({})),
  /** "fail": the first bad record fails the step, naming file, line and field; "skip": count and report them. */
  onInvalid: Schema.Literals(["fail", "skip"]).pipe(withDefault("fail")),
  /** CSV field delimiter (default "," and tab for .tsv). */
  delimiter: Schema.optionalKey(Schema.String),
  /** Plain text: one example per line, or per file. */
  textUnit: Schema.Literals(["line", "file"]).pipe(withDefault("line")),
  /** Longest line (or CSV field, JSON element, text file) accepted; memory use stays below a few times this. */
  maxLineBytes: Schema.Number.pipe(withDefault(64 * 1024 * 1024)),
})
export type IngestParams = typeof IngestParams.Type

const inputs = { files: Files }
const outputs = { records: Records, report: Report }
export type IngestContext = StepContext<IngestParams, typeof inputs, typeof outputs>

export const ingest = definePlugin({
  name: "ingest",
  version: 2,
  params: IngestParams,
  inputs,
  outputs,
  resources: { cpu: 1 },
  code: ["plugins/ingest"],
  // The output's parts follow the chunks' cuts (RecordParts.ts): the chunk size shapes the bytes.
  environment: () => ({ "chunk bytes": String(chunkSizes().target) }),
  run: (ctx) =>
    Effect.flatMap(
      Effect.promise(() => import("./Run.ts")),
      (m) => m.run(ctx),
    ),
  // `plan`: which chunks of the sources a run would parse again.
  chunkPlan: (ctx) => {
    const a = ctx.inputs.files
    const files =
      a.files.length > 0
        ? a.files.map((f) => ({ abs: f.abs, size: f.size, digest: f.digest }))
        : [{ abs: a.path, size: a.size, digest: a.digest }]
    return {
      verb: "parse",
      reuse: planUnits(files, ctx.params, ctx.recipe(["files"]), ctx.peek, ctx.lineIndex),
    }
  },
})

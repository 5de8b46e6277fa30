/**
 * The ingest step: reads every source file in path order, maps each record
 * onto its canonical shape and streams the canonical lines to the output.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { pipeline } from "node:stream/promises"
import * as zlib from "node:zlib"
import { Effect } from "effect"
import type { Artifact } from "../../core/Artifact.ts"
import { type Failure, StepError } from "../../core/Plugin.ts"
import { CsvParser } from "./Csv.ts"
import { FastJsonl } from "./FastJsonl.ts"
import { detect, type Format, openBytes } from "./Format.ts"
import type { IngestContext } from "./index.ts"
import { JsonParser } from "./Json.ts"
import { type FastSink, JsonlParser } from "./Jsonl.ts"
import { type BytesHandler, type SegmentHandler, Utf8Lines } from "./Lines.ts"
import { Mapper, type MappingOptions } from "./Mapping.ts"
import { readParquet } from "./Parquet.ts"
import { describe, type Problem, type RawSink, SourceError, type Where } from "./Problem.ts"
import { type RecordKind, recordLine } from "./Records.ts"
import { RecordWriter } from "./RecordWriter.ts"
import { TextFileParser, TextLinesParser } from "./Text.ts"

export interface IngestOptions extends MappingOptions {
  readonly format: Format | "auto"
  readonly onInvalid: "fail" | "skip"
  readonly delimiter?: string
  readonly textUnit: "line" | "file"
  readonly maxLineBytes: number
  /** How many invalid records the report shows. */
  readonly examples?: number
}

export interface SourceFile {
  /** Absolute path, to read it. */
  readonly abs: string
  /** Path relative to the source root, for the report. */
  readonly path: string
  readonly size: number
}

export interface InvalidExample {
  readonly file: string
  readonly line?: number
  readonly row?: number
  readonly field?: string
  readonly problem: string
}

export interface FileSummary {
  readonly path: string
  readonly format: Format
  readonly gzip: boolean
  readonly bytes: number
  records: number
  skipped: number
}

export interface IngestSummary {
  readonly recordKind: RecordKind
  readonly records: number
  readonly skipped: number
  readonly expanded: number
  readonly emptyExpansions: number
  readonly files: ReadonlyArray<FileSummary>
  readonly invalid: ReadonlyArray<InvalidExample>
}

/** A record or file the step cannot read, with where and what. */
export class IngestError extends Error {
  constructor(
    readonly file: string,
    readonly where: Where,
    readonly problem: Problem,
  ) {
    super(describe(file, where, problem))
  }
}

const parserFor = (
  format: Exclude<Format, "parquet">,
  sink: RawSink,
  options: IngestOptions,
  fast: FastSink,
): { segment: SegmentHandler; bytes?: BytesHandler; end(): void } => {
  switch (format) {
    case "jsonl": {
      const p = new JsonlParser(sink, fast)
      return { segment: p.segment, bytes: p.bytes, end: () => {} }
    }
    case "json":
      return new JsonParser(sink, options.maxLineBytes)
    case "csv":
    case "tsv":
      return new CsvParser(sink, {
        delimiter: options.delimiter ?? (format === "tsv" ? "\t" : ","),
        maxFieldChars: options.maxLineBytes,
      })
    case "text":
      return options.textUnit === "file"
        ? new TextFileParser(sink, options.maxLineBytes)
        : new TextLinesParser(sink)
  }
}

/**
 * Reads `files` in order into the Records file `output`. `scratch` holds
 * decompressed Parquet (which needs random access). Throws IngestError.
 */
export const ingestFiles = async (
  files: ReadonlyArray<SourceFile>,
  output: string,
  options: IngestOptions,
  scratch: string,
  signal: AbortSignal = new AbortController().signal,
  progress: (done: number, total: number, detail: string) => void = () => {},
): Promise<IngestSummary> => {
  const writer = new RecordWriter(output)
  const mapper = new Mapper(options)
  const maxExamples = options.examples ?? 10
  const invalid: InvalidExample[] = []
  const summaries: FileSummary[] = []
  let skipped = 0
  const total = files.reduce((n, f) => n + f.size, 0)
  let before = 0
  let fast: FastJsonl | undefined | null = null
  let current: FileSummary | undefined
  const fastSink: FastSink = {
    fast: () => {
      if (fast === null && mapper.kind !== undefined)
        fast = FastJsonl.make({ ...options, kind: mapper.kind }) ?? undefined
      return fast ?? undefined
    },
    line: (buf, length) => {
      writer.lineBytes(buf, 0, length)
      current!.records++
    },
  }
  try {
    for (const f of files) {
      const detected = detect(f.abs, options.format)
      if (typeof detected === "string") throw new IngestError(f.abs, {}, { message: detected })
      const summary: FileSummary = { path: f.path, ...detected, bytes: f.size, records: 0, skipped: 0 }
      summaries.push(summary)
      current = summary
      const fail = (where: Where, problem: Problem) => {
        if (options.onInvalid === "fail") throw new IngestError(f.abs, where, problem)
        skipped++
        summary.skipped++
        if (invalid.length < maxExamples)
          invalid.push({
            file: f.path,
            ...where,
            ...(problem.field === undefined ? {} : { field: problem.field }),
            problem: problem.message,
          })
      }
      const emit = (r: Parameters<Parameters<Mapper["map"]>[1]>[0]) => {
        writer.line(recordLine(r))
        summary.records++
      }
      const sink: RawSink = {
        record: (value, where) => {
          const p = mapper.map(value, emit)
          if (p !== undefined) fail(where, p)
        },
        invalid: fail,
      }
      try {
        if (f.size === 0) {
          fail({}, { message: "the file is empty (0 bytes): no records" })
          continue
        }
        if (detected.format === "parquet") {
          let file = f.abs
          if (detected.gzip) {
            file = path.join(scratch, `${summaries.length}.parquet`)
            await pipeline(fs.createReadStream(f.abs), zlib.createGunzip(), fs.createWriteStream(file), {
              signal,
            })
          }
          await readParquet(file, sink, signal, (rows, all) =>
            progress(before + (f.size * rows) / Math.max(all, 1), total, f.path),
          )
        } else {
          const parser = parserFor(detected.format, sink, options, fastSink)
          const lines = new Utf8Lines(parser.segment, options.maxLineBytes, parser.bytes)
          let read = 0
          for await (const chunk of openBytes(f.abs, detected.gzip, signal)) {
            lines.push(chunk)
            read += chunk.length
            progress(before + (detected.gzip ? 0 : read), total, f.path)
          }
          lines.end()
          parser.end()
          if (read === 0) fail({}, { message: "the file is empty after decompression: no records" })
        }
      } catch (e) {
        if (e instanceof SourceError) throw new IngestError(f.abs, e.where, e.problem)
        if (e instanceof IngestError || signal.aborted) throw e
        const code = (e as { code?: string }).code
        if (detected.gzip && typeof code === "string" && code.startsWith("Z_"))
          throw new IngestError(
            f.abs,
            {},
            { message: `gzip data is corrupt or truncated (${(e as Error).message})` },
          )
        if (detected.format === "parquet")
          throw new IngestError(
            f.abs,
            {},
            { message: `cannot read Parquet: ${e instanceof Error ? e.message : String(e)}` },
          )
        throw e
      }
      before += f.size
      progress(before, total, f.path)
    }
  } finally {
    writer.close()
  }
  if (writer.count === 0 || mapper.kind === undefined) {
    const first = invalid[0]
    throw new IngestError(
      files.length === 1 ? files[0]!.abs : `${files.length} files`,
      {},
      {
        message:
          skipped > 0
            ? `no valid records: all ${skipped} were skipped; the first: ${first === undefined ? "" : describe(first.file, first, { ...first, message: first.problem })}`
            : "no records found",
      },
    )
  }
  return {
    recordKind: mapper.kind,
    records: writer.count,
    skipped,
    expanded: mapper.expanded,
    emptyExpansions: mapper.emptyExpansions,
    files: summaries,
    invalid,
  }
}

/** The files of a source artifact (a single-file source lists none: the file is its path). */
export const sourceFiles = (a: Artifact): SourceFile[] =>
  a.files.length > 0
    ? a.files.map((f) => ({ abs: f.abs, path: f.path, size: f.size }))
    : [{ abs: a.path, path: path.basename(a.path), size: a.size }]

export const run = (
  ctx: IngestContext,
): Effect.Effect<{ records: { count: number; recordKind: RecordKind } }, Failure> =>
  Effect.tryPromise({
    try: async (signal) => {
      const both = AbortSignal.any([signal, ctx.signal])
      const { examples: _e, ...params } = { examples: 10, ...ctx.params }
      const summary = await ingestFiles(
        sourceFiles(ctx.inputs.files),
        ctx.output("records"),
        params,
        ctx.scratch,
        both,
        (done, total, detail) => ctx.progress(done, total, detail),
      )
      const report = { step: "ingest", ...summary }
      fs.writeFileSync(ctx.output("report"), `${JSON.stringify(report, null, 2)}\n`)
      ctx.log(
        `ingest: ${summary.records} ${summary.recordKind} records from ${summary.files.length} file(s)` +
          (summary.skipped > 0 ? `, ${summary.skipped} invalid skipped` : ""),
      )
      return { records: { count: summary.records, recordKind: summary.recordKind } }
    },
    catch: (e) =>
      e instanceof IngestError
        ? new StepError({
            message: e.message,
            file: e.file,
            ...(e.where.line === undefined ? {} : { line: e.where.line }),
            ...(e.problem.field === undefined ? {} : { field: e.problem.field }),
          })
        : new StepError({ message: e instanceof Error ? e.message : String(e) }),
  })

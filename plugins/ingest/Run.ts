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
import {
  type ChunkCache,
  chunkSizes,
  chunksOf,
  chunksOfSync,
  describeReuse,
  LineTooLong,
  noChunkCache,
  ReuseCounter,
  readIndexedChunk,
} from "../../core/Chunks.ts"
import { hashFileSync } from "../../core/Hash.ts"
import { type Failure, StepError } from "../../core/Plugin.ts"
import { CsvParser } from "./Csv.ts"
import { FastJsonl } from "./FastJsonl.ts"
import { type Detected, detect, type Format, openBytes } from "./Format.ts"
import type { IngestContext } from "./index.ts"
import { JsonParser } from "./Json.ts"
import { type FastSink, JsonlParser } from "./Jsonl.ts"
import { type BytesHandler, type SegmentHandler, Utf8Lines } from "./Lines.ts"
import { Mapper, type MappingOptions } from "./Mapping.ts"
import { readParquet } from "./Parquet.ts"
import { describe, type Problem, type RawSink, SourceError, type Where } from "./Problem.ts"
import { type PartEntry, RecordPartsWriter } from "./RecordParts.ts"
import { type RecordKind, recordLine } from "./Records.ts"
import { RecordWriter } from "./RecordWriter.ts"
import { TextFileParser, TextLinesParser } from "./Text.ts"
import { lineBased, unitKey } from "./Units.ts"

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
  /** SHA-256 of the file, when the source knows it (else it is hashed when needed). */
  readonly digest?: string
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

/** One unit of work: a content-defined chunk of a line-based file, or a whole file of another format. */
interface Unit {
  readonly index: number
  /** 0-based line of the file the unit starts at (0 for a whole file). */
  readonly firstLine: number
  readonly offset: number
  readonly size: number
  readonly digest: string
  /** The chunk's bytes; undefined for a whole file, read from its path. */
  readonly bytes?: Buffer
  /** A chunk of a line index: its bytes are read when it is parsed. */
  readonly load?: () => Buffer
}

/** What one unit produced, as its chunk entry keeps it (beside its records.jsonl). */
interface UnitSummary {
  readonly records: number
  readonly skipped: number
  readonly expanded: number
  readonly emptyExpansions: number
  /** The record kind after it (inferred from the first record when not given). */
  readonly kind: RecordKind | null
  /** Invalid records skipped, lines relative to the unit (the first `examples`). */
  readonly invalid: ReadonlyArray<Omit<InvalidExample, "file">>
  /** Bytes read after decompression (a gzip file that decompresses to nothing has no records). */
  readonly read: number
}

const shift = (where: Where, lines: number): Where =>
  lines === 0 || where.line === undefined ? where : { ...where, line: where.line + lines }

/** Parses one unit into `records` (canonical lines); throws IngestError with the file's own line numbers. */
const parseUnit = async (
  f: SourceFile,
  detected: Detected,
  unit: Unit,
  kind: RecordKind | undefined,
  records: string,
  options: IngestOptions,
  scratch: string,
  signal: AbortSignal,
  progress: (done: number) => void,
): Promise<UnitSummary> => {
  const writer = new RecordWriter(records)
  const mapper = new Mapper(kind === undefined ? options : { ...options, kind })
  const maxExamples = options.examples ?? 10
  const invalid: Array<Omit<InvalidExample, "file">> = []
  let skipped = 0
  let read = 0
  let fast: FastJsonl | undefined | null = null
  const fastSink: FastSink = {
    fast: () => {
      if (fast === null && mapper.kind !== undefined)
        fast = FastJsonl.make({ ...options, kind: mapper.kind }) ?? undefined
      return fast ?? undefined
    },
    line: (buf, length) => writer.lineBytes(buf, 0, length),
  }
  const fail = (where: Where, problem: Problem) => {
    if (options.onInvalid === "fail") throw new IngestError(f.abs, shift(where, unit.firstLine), problem)
    skipped++
    if (invalid.length < maxExamples)
      invalid.push({
        ...where,
        ...(problem.field === undefined ? {} : { field: problem.field }),
        problem: problem.message,
      })
  }
  const emit = (r: Parameters<Parameters<Mapper["map"]>[1]>[0]) => writer.line(recordLine(r))
  const sink: RawSink = {
    record: (value, where) => {
      const p = mapper.map(value, emit)
      if (p !== undefined) fail(where, p)
    },
    invalid: fail,
  }
  try {
    if (detected.format === "parquet") {
      let file = f.abs
      if (detected.gzip) {
        file = path.join(scratch, `${unit.digest}.parquet`)
        await pipeline(fs.createReadStream(f.abs), zlib.createGunzip(), fs.createWriteStream(file), {
          signal,
        })
      }
      await readParquet(file, sink, signal, (rows, all) => progress((f.size * rows) / Math.max(all, 1)))
      read = 1
    } else {
      const parser = parserFor(detected.format, sink, options, fastSink)
      const lines = new Utf8Lines(parser.segment, options.maxLineBytes, parser.bytes, unit.index === 0)
      if (unit.bytes !== undefined) {
        lines.push(unit.bytes)
        read = unit.bytes.length
      } else
        for await (const chunk of openBytes(f.abs, detected.gzip, signal)) {
          lines.push(chunk)
          read += chunk.length
          progress(detected.gzip ? 0 : read)
        }
      lines.end()
      parser.end()
    }
  } catch (e) {
    if (e instanceof SourceError) throw new IngestError(f.abs, shift(e.where, unit.firstLine), e.problem)
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
  } finally {
    writer.close()
  }
  return {
    records: writer.count,
    skipped,
    expanded: mapper.expanded,
    emptyExpansions: mapper.emptyExpansions,
    kind: mapper.kind ?? null,
    invalid,
    read,
  }
}

/** The units, with a line past maxLineBytes reported as the file's error at that line. */
async function* lineLimit(f: SourceFile, units: AsyncGenerator<Unit>): AsyncGenerator<Unit> {
  try {
    yield* units
  } catch (e) {
    if (e instanceof LineTooLong) throw new IngestError(f.abs, { line: e.line }, { message: e.message })
    throw e
  }
}

/** The units of a file: its content-defined chunks when line-based, else the whole file. */
async function* unitsOf(
  f: SourceFile,
  detected: Detected,
  options: IngestOptions,
  signal: AbortSignal,
  chunks: ChunkCache,
  log: (line: string) => void,
): AsyncGenerator<Unit> {
  if (lineBased(detected, options.textUnit)) {
    // The chunks as they were cut when the file was hashed: only those parsed now are read.
    const index = f.digest === undefined ? undefined : chunks.lineIndex?.(f.digest)
    if (index !== undefined && index.longestLine <= options.maxLineBytes) {
      const fd = fs.openSync(f.abs, "r")
      let read = 0
      try {
        for (const [i, c] of index.chunks.entries()) {
          signal.throwIfAborted()
          yield {
            index: i,
            ...c,
            load: () => {
              read++
              return readIndexedChunk(fd, f.abs, c)
            },
          }
        }
      } finally {
        fs.closeSync(fd)
      }
      log(
        `ingest: ${f.path}: ${read} of ${index.chunks.length} chunks read (its line index, made when it was hashed)`,
      )
      return
    }
    for await (const c of chunksOf(f.abs, chunkSizes(), signal, options.maxLineBytes))
      yield {
        index: c.index,
        firstLine: c.firstLine,
        offset: c.offset,
        size: c.bytes.length,
        digest: c.digest,
        bytes: c.bytes,
      }
    return
  }
  yield { index: 0, firstLine: 0, offset: 0, size: f.size, digest: f.digest ?? hashFileSync(f.abs).digest }
}

/** A unit's chunk result as stored: its summary and the parts its records were cut into. */
interface StoredUnit extends UnitSummary {
  readonly parts: ReadonlyArray<PartEntry>
}

/**
 * A unit's chunk result, a directory: `summary.json` and its records as
 * parts (records-0.jsonl, ...). A chunk of a line-based file is one part; a
 * whole file's records are cut into content-defined parts like any chunk,
 * so the steps after ingest work on them incrementally too.
 */
const unitResult = (dir: string, records: string, s: UnitSummary, whole: boolean): string => {
  fs.mkdirSync(dir)
  const parts: PartEntry[] = []
  const size = fs.statSync(records).size
  if (!whole || size === 0) {
    if (s.records > 0) {
      fs.renameSync(records, path.join(dir, "records-0.jsonl"))
      parts.push({ file: "records-0.jsonl", records: s.records, bytes: size })
    }
  } else
    for (const c of chunksOfSync(records, chunkSizes())) {
      const file = `records-${c.index}.jsonl`
      fs.writeFileSync(path.join(dir, file), c.bytes)
      parts.push({ file, records: c.lines, bytes: c.bytes.length })
    }
  fs.writeFileSync(path.join(dir, "summary.json"), JSON.stringify({ ...s, parts } satisfies StoredUnit))
  return dir
}

/**
 * Reads `files` in order into the Records directory `output` (RecordParts.ts). `scratch` holds
 * decompressed Parquet (which needs random access). Throws IngestError.
 *
 * Line-based files (JSONL, text by line) are read chunk by chunk and other
 * files whole (core/Chunks.ts); each unit's records and counts are kept in
 * `chunks` under the unit's digest and the record kind carried into it, so
 * an append parses only the new bytes. The output is the units' parts in
 * order, hard-linked from the chunk results: the same bytes however much was
 * reused, and no copy of the unchanged ones.
 */
export const ingestFiles = async (
  files: ReadonlyArray<SourceFile>,
  output: string,
  options: IngestOptions,
  scratch: string,
  signal: AbortSignal = new AbortController().signal,
  progress: (done: number, total: number, detail: string) => void = () => {},
  chunks: ChunkCache = noChunkCache(scratch),
  reuse: ReuseCounter = new ReuseCounter(),
  log: (line: string) => void = () => {},
): Promise<IngestSummary> => {
  const maxExamples = options.examples ?? 10
  const invalid: InvalidExample[] = []
  const summaries: FileSummary[] = []
  const recipe = chunks.recipe(["files"])
  let kind: RecordKind | undefined = options.kind
  let skipped = 0
  let count = 0
  let expanded = 0
  let emptyExpansions = 0
  const total = files.reduce((n, f) => n + f.size, 0)
  let before = 0
  const out = new RecordPartsWriter(output, chunks)
  try {
    for (const f of files) {
      const detected = detect(f.abs, options.format)
      if (typeof detected === "string") throw new IngestError(f.abs, {}, { message: detected })
      const summary: FileSummary = { path: f.path, ...detected, bytes: f.size, records: 0, skipped: 0 }
      summaries.push(summary)
      const fail = (problem: Problem) => {
        if (options.onInvalid === "fail") throw new IngestError(f.abs, {}, problem)
        skipped++
        summary.skipped++
        if (invalid.length < maxExamples) invalid.push({ file: f.path, problem: problem.message })
      }
      if (f.size === 0) {
        fail({ message: "the file is empty (0 bytes): no records" })
        continue
      }
      let read = 0
      for await (const listed of lineLimit(f, unitsOf(f, detected, options, signal, chunks, log))) {
        signal.throwIfAborted()
        const key = unitKey(recipe, listed.digest, kind, detected, listed.index)
        let dir = chunks.get(key)
        const unit =
          dir === undefined && listed.load !== undefined ? { ...listed, bytes: listed.load() } : listed
        if (dir !== undefined) reuse.hit()
        else {
          reuse.miss()
          const fresh = chunks.scratch()
          const records = path.join(fresh, "records.jsonl")
          const s = await parseUnit(f, detected, unit, kind, records, options, scratch, signal, (done) =>
            progress(before + unit.offset + done, total, f.path),
          )
          dir = chunks.put(key, unitResult(path.join(fresh, "chunk"), records, s, unit.bytes === undefined))
        }
        const s = JSON.parse(fs.readFileSync(path.join(dir, "summary.json"), "utf8")) as StoredUnit
        for (const p of s.parts) out.link(dir, p.file, p.records, p.bytes)
        kind = s.kind ?? kind
        count += s.records
        summary.records += s.records
        skipped += s.skipped
        summary.skipped += s.skipped
        expanded += s.expanded
        emptyExpansions += s.emptyExpansions
        read += s.read
        for (const x of s.invalid)
          if (invalid.length < maxExamples)
            invalid.push({ file: f.path, ...(shift(x, unit.firstLine) as typeof x) })
        progress(before + unit.offset + unit.size, total, f.path)
      }
      if (read === 0) fail({ message: "the file is empty after decompression: no records" })
      before += f.size
      progress(before, total, f.path)
    }
  } finally {
    out.close()
  }
  if (count === 0 || kind === undefined) {
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
    recordKind: kind,
    records: count,
    skipped,
    expanded,
    emptyExpansions,
    files: summaries,
    invalid,
  }
}

/** The files of a source artifact (a single-file source lists none: the file is its path). */
export const sourceFiles = (a: Artifact): SourceFile[] =>
  a.files.length > 0
    ? a.files.map((f) => ({ abs: f.abs, path: f.path, size: f.size, digest: f.digest }))
    : [{ abs: a.path, path: path.basename(a.path), size: a.size, digest: a.digest }]

export const run = (
  ctx: IngestContext,
): Effect.Effect<{ records: { count: number; recordKind: RecordKind } }, Failure> =>
  Effect.tryPromise({
    try: async (signal) => {
      const both = AbortSignal.any([signal, ctx.signal])
      const { examples: _e, ...params } = { examples: 10, ...ctx.params }
      const reuse = new ReuseCounter()
      const summary = await ingestFiles(
        sourceFiles(ctx.inputs.files),
        ctx.output("records"),
        params,
        ctx.scratch,
        both,
        (done, total, detail) => ctx.progress(done, total, detail),
        ctx.chunks,
        reuse,
        (line) => ctx.log(line),
      )
      ctx.log(describeReuse("ingest", "parse", reuse.value))
      ctx.annotate({ chunks: reuse.value })
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

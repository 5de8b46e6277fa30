/**
 * The Records layout (plugins/kinds.ts): a directory of JSON Lines parts and
 * their index, so that a data step appending to a dataset shares the
 * unchanged parts with the previous output instead of writing them again.
 *
 *   parts.json          {"parts": [{"file": "part-000000.jsonl", "records": 812, "bytes": 2093211}, ...]}
 *   part-000000.jsonl   canonical records, one per line (core/Canonical.ts)
 *   part-000001.jsonl   ...
 *
 * The records are the parts' lines in the order parts.json lists them. A
 * part is the output of one chunk of the step's input (core/Chunks.ts), so
 * part boundaries follow the data's own content-defined cuts and a from-
 * scratch run writes the same parts, byte for byte. No part is empty.
 *
 * Readers here accept a single JSON Lines file too (a Records file written
 * by hand, or by tunegraph before this layout).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { type Chunk, type ChunkCache, chunkSizes, chunksOf } from "../../core/Chunks.ts"
import { hashFileSync } from "../../core/Hash.ts"

export const PARTS_INDEX = "parts.json"

/** The name of the `i`-th part: zero-padded, so sorting by name keeps the order. */
export const partName = (i: number): string => `part-${String(i).padStart(6, "0")}.jsonl`

export interface PartEntry {
  readonly file: string
  readonly records: number
  readonly bytes: number
}

export interface RecordPart extends PartEntry {
  readonly index: number
  /** Absolute path of the part file. */
  readonly abs: string
  /** 0-based index of its first record among all the records. */
  readonly firstRecord: number
  /** Byte offset of the part in the records' concatenation. */
  readonly offset: number
}

/** Thrown on a Records directory whose index does not match its files. */
export class RecordPartsError extends Error {
  constructor(
    readonly file: string,
    message: string,
  ) {
    super(`${file}: ${message}`)
  }
}

/** The parts of a Records directory, checked against the files (sizes; stats only). */
export const readRecordParts = (dir: string): RecordPart[] => {
  const index = path.join(dir, PARTS_INDEX)
  let parsed: { parts?: unknown }
  try {
    parsed = JSON.parse(fs.readFileSync(index, "utf8")) as { parts?: unknown }
  } catch (e) {
    throw new RecordPartsError(
      index,
      `cannot read the parts index: ${e instanceof Error ? e.message : String(e)}`,
    )
  }
  if (!Array.isArray(parsed.parts)) throw new RecordPartsError(index, `"parts" must be a list`)
  const out: RecordPart[] = []
  let firstRecord = 0
  let offset = 0
  parsed.parts.forEach((p: unknown, i: number) => {
    const e = p as Partial<PartEntry>
    if (
      typeof e?.file !== "string" ||
      !Number.isInteger(e.records) ||
      !Number.isInteger(e.bytes) ||
      e.file.includes("/") ||
      e.file.includes("\\")
    )
      throw new RecordPartsError(index, `parts[${i}] must be {file, records, bytes} naming a file beside it`)
    const abs = path.join(dir, e.file)
    let size: number
    try {
      size = fs.statSync(abs).size
    } catch {
      throw new RecordPartsError(index, `parts[${i}]: ${e.file} is missing`)
    }
    if (size !== e.bytes) throw new RecordPartsError(abs, `${size} bytes, the parts index says ${e.bytes}`)
    out.push({ file: e.file, records: e.records!, bytes: e.bytes!, index: i, abs, firstRecord, offset })
    firstRecord += e.records!
    offset += e.bytes!
  })
  return out
}

/** The files holding the records, in order: the parts of a directory, or the file itself. */
export const recordFiles = (records: string): string[] =>
  fs.statSync(records).isDirectory() ? readRecordParts(records).map((p) => p.abs) : [records]

/** How many chunks `recordChunks` gives: the parts of a directory; unknown for a file (cut as it is read). */
export const partCount = (records: string): number | undefined =>
  fs.statSync(records).isDirectory() ? readRecordParts(records).length : undefined

/** Total bytes of the records (the parts' sum, or the file's size). */
export const recordBytes = (records: string): number =>
  recordFiles(records).reduce((n, f) => n + fs.statSync(f).size, 0)

/**
 * One chunk of a step's Records input: a part of a Records directory (whose
 * digest the store gave, so nothing is read unless the step needs the
 * bytes), or a content-defined chunk of a single Records file.
 */
export interface RecordChunk {
  readonly index: number
  /** 0-based index of its first line (record) among all. */
  readonly firstLine: number
  readonly lines: number
  /** Byte offset of the chunk in the records' concatenation. */
  readonly offset: number
  readonly size: number
  readonly digest: string
  /** The file its bytes are in, from `fileOffset`. */
  readonly file: string
  readonly fileOffset: number
  /** Its bytes (read once, when first asked for). */
  readonly bytes: () => Buffer
}

const fromCut = (file: string, c: Chunk): RecordChunk => ({
  index: c.index,
  firstLine: c.firstLine,
  lines: c.lines,
  offset: c.offset,
  size: c.bytes.length,
  digest: c.digest,
  file,
  fileOffset: c.offset,
  bytes: () => c.bytes,
})

const readWhole = (file: string): Buffer => fs.readFileSync(file)

/**
 * The chunks of a Records input, in order. `digests` maps a part's path
 * inside the directory to its digest (the artifact's files, from the store);
 * a part it does not name is hashed.
 */
export async function* recordChunks(
  records: string,
  digests: ReadonlyMap<string, string> = new Map(),
  signal?: AbortSignal,
): AsyncGenerator<RecordChunk> {
  if (!fs.statSync(records).isDirectory()) {
    for await (const c of chunksOf(records, chunkSizes(), signal)) yield fromCut(records, c)
    return
  }
  for (const p of readRecordParts(records)) {
    signal?.throwIfAborted()
    let cached: Buffer | undefined
    yield {
      index: p.index,
      firstLine: p.firstRecord,
      lines: p.records,
      offset: p.offset,
      size: p.bytes,
      digest: digests.get(p.file) ?? hashFileSync(p.abs).digest,
      file: p.abs,
      fileOffset: 0,
      bytes: () => {
        cached ??= readWhole(p.abs)
        return cached
      },
    }
  }
}

/** The digests of a directory artifact's files by path (what `recordChunks` takes). */
export const digestsOf = (a: {
  readonly files: ReadonlyArray<{ readonly path: string; readonly digest: string }>
}): Map<string, string> => new Map(a.files.map((f) => [f.path, f.digest]))

/**
 * Writes a Records directory part by part: each part is a file of a stored
 * chunk result, hard-linked in (core/Chunks.ts ChunkCache.link), so an
 * unchanged part costs neither a copy nor a hash.
 */
export class RecordPartsWriter {
  private readonly parts: PartEntry[] = []
  records = 0
  bytes = 0

  constructor(
    readonly dir: string,
    private readonly chunks: ChunkCache,
  ) {
    fs.mkdirSync(dir, { recursive: true })
  }

  /** The next part: file `name` of the stored chunk result `stored`; nothing when it holds no records. */
  link(stored: string, name: string, records: number, bytes: number): void {
    if (records === 0) return
    const file = partName(this.parts.length)
    this.chunks.link(stored, name, path.join(this.dir, file))
    this.parts.push({ file, records, bytes })
    this.records += records
    this.bytes += bytes
  }

  get count(): number {
    return this.parts.length
  }

  /** Writes the index; the directory is then a complete Records artifact. */
  close(): void {
    fs.writeFileSync(path.join(this.dir, PARTS_INDEX), `${JSON.stringify({ parts: this.parts })}\n`)
  }
}

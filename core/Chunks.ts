/**
 * Chunked, incremental data steps.
 *
 * A line-based input (a Records file, a JSONL or text source) is cut into
 * content-defined chunks at line ends. The cut after a line depends only on
 * that line's own bytes and on how far the chunk has grown since the last
 * cut: past `min` bytes, a line ends the chunk when a 32-bit hash of its
 * bytes falls under a threshold proportional to its length (so the average
 * chunk is about `target` bytes whatever the line lengths), and any line
 * reaching `max` ends it. An append, insert or edit therefore moves only the
 * cuts near it: the chunks before it are the same bytes, and the ones after
 * it fall back onto the same cuts within a chunk or two.
 *
 * A chunk's digest is the SHA-256 of its bytes. Its work is cached under a
 * sub-key (chunkKey): the step's recipe (core/StepKey.ts chunkRecipe: its
 * key less the chunked input), the chunk digest, and for a step that carries
 * state from chunk to chunk, the digest of that state (a chain over the
 * chunks before it). A chunk result is an object in the store (a directory),
 * committed the moment it is done (object first, then its row, in one
 * transaction: cache/Store.ts chunkCommit), so a killed step leaves its
 * finished chunks for the next run. The store records which run and node
 * used each entry; gc keeps the entries of kept runs and collects the rest,
 * and verify re-hashes them like every object.
 *
 * A step's output is assembled from its chunks' results in order, so it is
 * byte-identical to what the same step writes from scratch on the same
 * input. A sharded output (a Records or Tokens directory of parts, one per
 * chunk) hard-links each reused chunk's part from the store (ChunkCache.link),
 * so an append writes and hashes only the new parts: the engine takes a
 * linked file's digest from the store (core/Hash.ts KnownFile).
 *
 * The target size comes from TUNEGRAPH_CHUNK_BYTES (default 2 MiB). Parts
 * follow the cuts, so the size shapes the outputs' bytes: ingest, where the
 * cuts are made, has it in its key (the steps after it take their chunks
 * from its parts).
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { readAt } from "./Hash.ts"

export interface ChunkSizes {
  readonly target: number
  readonly min: number
  readonly max: number
}

export const DEFAULT_CHUNK_BYTES = 2 * 1024 * 1024

export const chunkSizes = (
  target = Number(process.env.TUNEGRAPH_CHUNK_BYTES ?? DEFAULT_CHUNK_BYTES),
): ChunkSizes => {
  const t = Number.isFinite(target) && target >= 64 ? Math.floor(target) : DEFAULT_CHUNK_BYTES
  return { target: t, min: Math.floor(t / 4), max: t * 4 }
}

export interface Chunk {
  /** 0-based position of the chunk in the file. */
  readonly index: number
  /** 0-based index of its first line in the file. */
  readonly firstLine: number
  /** Lines in it (a final line without a newline counts). */
  readonly lines: number
  /** Byte offset of the chunk in the file. */
  readonly offset: number
  /** Its length in bytes. */
  readonly size: number
  /** Its bytes, newlines included (empty from a LineIndexer). */
  readonly bytes: Buffer
  /** SHA-256 of its bytes, hex. */
  readonly digest: string
}

/** A 32-bit hash of a line, from at most its first and last 128 bytes and its length (murmur3 mixing). */
const lineHash = (buf: Buffer, s: number, e: number): number => {
  const len = e - s
  let h = 0x9747b28c ^ len
  const mix = (from: number, to: number) => {
    let i = from
    for (; i + 4 <= to; i += 4) {
      let k = buf[i]! | (buf[i + 1]! << 8) | (buf[i + 2]! << 16) | (buf[i + 3]! << 24)
      k = Math.imul(k, 0xcc9e2d51)
      k = (k << 15) | (k >>> 17)
      h ^= Math.imul(k, 0x1b873593)
      h = (h << 13) | (h >>> 19)
      h = (Math.imul(h, 5) + 0xe6546b64) | 0
    }
    for (; i < to; i++) h = Math.imul(h ^ buf[i]!, 0x01000193)
  }
  if (len <= 256) mix(s, e)
  else {
    mix(s, s + 128)
    mix(e - 128, e)
  }
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

const READ = 4 * 1024 * 1024

/** A line longer than the reader allows (a file with no line breaks is not line-based). */
export class LineTooLong extends Error {
  constructor(
    /** 1-based line number. */
    readonly line: number,
    readonly maxLineBytes: number,
  ) {
    super(
      `line is longer than maxLineBytes (${maxLineBytes} bytes) and has no line break yet: not a line-based file, or raise maxLineBytes`,
    )
  }
}

/** Cuts blocks of a file's bytes into chunks as they come (the one place cuts are decided). */
class Cutter {
  private parts: Buffer[] = []
  private partBytes = 0
  private hash = createHash("sha256")
  private index = 0
  private firstLine = 0
  private lines = 0
  private offset = 0
  private carry: Buffer = Buffer.alloc(0)
  private readonly span: number

  /** The longest line seen, newline included. */
  longest = 0

  constructor(
    private readonly sizes: ChunkSizes,
    private readonly maxLine = Number.POSITIVE_INFINITY,
    /** False: chunks come without their bytes (an index), and blocks may be reused. */
    private readonly keepBytes = true,
  ) {
    this.span = sizes.target - sizes.min
  }

  /** Adds bytes to the open chunk: a view, so the block it is in must not be reused (blocks are fresh). */
  private add(piece: Buffer) {
    if (piece.length === 0) return
    if (this.keepBytes) this.parts.push(piece)
    this.partBytes += piece.length
    this.hash.update(piece)
  }

  private cut(): Chunk {
    const bytes = !this.keepBytes
      ? EMPTY
      : this.parts.length === 1
        ? this.parts[0]!
        : Buffer.concat(this.parts, this.partBytes)
    const c: Chunk = {
      index: this.index++,
      firstLine: this.firstLine,
      lines: this.lines,
      offset: this.offset,
      size: this.partBytes,
      bytes,
      digest: this.hash.digest("hex"),
    }
    this.offset += this.partBytes
    this.firstLine += this.lines
    this.lines = 0
    this.parts = []
    this.partBytes = 0
    this.hash = createHash("sha256")
    return c
  }

  /** Whether the chunk ends after a line of `lineBytes` that brings it to `grown` bytes. */
  private cutsAfter(buf: Buffer, lineStart: number, nl: number, grown: number): boolean {
    const { min, max } = this.sizes
    return (
      grown >= max ||
      (grown >= min && lineHash(buf, lineStart, nl) / 4294967296 < (nl + 1 - lineStart) / this.span)
    )
  }

  /** The chunks the next block of bytes completes. The block must be fresh memory: parts are views of it. */
  push(block: Buffer): Chunk[] {
    const out: Chunk[] = []
    let from = 0
    if (this.carry.length > 0) {
      // the line the last block left unfinished, completed: one small copy
      const nl = block.indexOf(10)
      if (nl < 0) {
        this.carry = Buffer.concat([this.carry, block])
        if (this.carry.length > this.maxLine)
          throw new LineTooLong(this.firstLine + this.lines + 1, this.maxLine)
        return out
      }
      const line = Buffer.concat([this.carry, block.subarray(0, nl + 1)])
      this.carry = Buffer.alloc(0)
      this.lines++
      if (line.length > this.longest) this.longest = line.length
      const cut = this.cutsAfter(line, 0, line.length - 1, this.partBytes + line.length)
      this.add(line)
      if (cut) out.push(this.cut())
      from = nl + 1
    }
    let start = from // start of the bytes of block not yet in a part
    let lineStart = from
    for (;;) {
      const nl = block.indexOf(10, lineStart)
      if (nl < 0) break
      this.lines++
      if (nl + 1 - lineStart > this.longest) this.longest = nl + 1 - lineStart
      if (this.cutsAfter(block, lineStart, nl, this.partBytes + (nl + 1 - start))) {
        this.add(block.subarray(start, nl + 1))
        out.push(this.cut())
        start = nl + 1
      }
      lineStart = nl + 1
    }
    this.add(block.subarray(start, lineStart))
    this.carry = Buffer.from(block.subarray(lineStart))
    // memory stays bounded: an unfinished line past the limit is refused, not gathered
    if (this.carry.length > this.maxLine) throw new LineTooLong(this.firstLine + this.lines + 1, this.maxLine)
    return out
  }

  /** The last chunk (a final line without a newline included), if any bytes are left. */
  end(): Chunk | undefined {
    if (this.carry.length > 0) {
      this.lines++
      if (this.carry.length > this.longest) this.longest = this.carry.length
      this.add(this.carry)
      this.carry = Buffer.alloc(0)
    }
    return this.partBytes > 0 ? this.cut() : undefined
  }
}

const EMPTY = Buffer.alloc(0)

/** One chunk of a line index: where it is, and its digest. */
export interface IndexedChunk {
  readonly offset: number
  readonly size: number
  readonly firstLine: number
  readonly lines: number
  readonly digest: string
}

/**
 * A line-based file's chunks as chunksOf cuts them at `target`, without
 * their bytes: made while the file is hashed as a source (core/Sources.ts),
 * so that a chunked step finds which chunks it already has without reading
 * the file again, and reads only the others (readIndexedChunk).
 */
export interface LineIndex {
  readonly target: number
  /** The longest line, newline included: a reader with a lower line limit cuts the file itself. */
  readonly longestLine: number
  readonly chunks: ReadonlyArray<IndexedChunk>
}

/**
 * The files a source gets a line index for: line-based by name (what ingest
 * reads chunk by chunk), of a few chunks at least (reading a smaller one
 * again costs nothing worth keeping).
 */
export const wantsLineIndex = (file: string, size: number, sizes: ChunkSizes = chunkSizes()): boolean =>
  size >= 4 * sizes.target && /\.(jsonl|ndjson|jsonlines|txt)$/i.test(file)

/** Cuts as bytes come, remembering only where the chunks are (LineIndex). Blocks may be reused. */
export class LineIndexer {
  private readonly cutter: Cutter
  private readonly chunks: IndexedChunk[] = []
  private failed = false

  constructor(
    private readonly sizes: ChunkSizes = chunkSizes(),
    maxLine = 64 * 1024 * 1024,
  ) {
    this.cutter = new Cutter(sizes, maxLine, false)
  }

  private keep(c: Chunk) {
    this.chunks.push({
      offset: c.offset,
      size: c.size,
      firstLine: c.firstLine,
      lines: c.lines,
      digest: c.digest,
    })
  }

  push(block: Buffer) {
    if (this.failed) return
    try {
      for (const c of this.cutter.push(block)) this.keep(c)
    } catch (e) {
      // a line past the limit: no index (the reader cuts the file itself and reports the line)
      if (!(e instanceof LineTooLong)) throw e
      this.failed = true
    }
  }

  /** The index, or undefined when a line was too long to index. */
  end(): LineIndex | undefined {
    if (this.failed) return undefined
    const last = this.cutter.end()
    if (last !== undefined) this.keep(last)
    return { target: this.sizes.target, longestLine: this.cutter.longest, chunks: this.chunks }
  }
}

/**
 * The bytes of an indexed chunk, read at its offset and checked against its
 * digest (the file changed since it was indexed: throws).
 */
export const readIndexedChunk = (fd: number, file: string, c: IndexedChunk): Buffer => {
  const bytes = Buffer.allocUnsafe(c.size)
  if (readAt(fd, bytes, c.offset) !== c.size || createHash("sha256").update(bytes).digest("hex") !== c.digest)
    throw new Error(
      `${file}: bytes ${c.offset}-${c.offset + c.size} changed after the file was hashed (it is being written to?); run again`,
    )
  return bytes
}

/**
 * The chunks of a line-based file, in order, read in large blocks. Memory
 * holds one block and one chunk (at most `max` bytes plus one line). Yields
 * to the event loop between blocks; `signal` is checked there. A line longer
 * than `maxLineBytes` throws LineTooLong.
 */
export async function* chunksOf(
  file: string,
  sizes: ChunkSizes = chunkSizes(),
  signal?: AbortSignal,
  maxLineBytes?: number,
): AsyncGenerator<Chunk> {
  const fh = await fs.promises.open(file, "r")
  const cutter = new Cutter(sizes, maxLineBytes)
  try {
    for (;;) {
      signal?.throwIfAborted()
      const block = Buffer.allocUnsafe(READ)
      const { bytesRead } = await fh.read(block, 0, READ, null)
      if (bytesRead === 0) break
      for (const c of cutter.push(block.subarray(0, bytesRead))) yield c
    }
    const last = cutter.end()
    if (last !== undefined) yield last
  } finally {
    await fh.close()
  }
}

/** chunksOf without yielding to the event loop (for `plan`, which reads but never runs). */
export function* chunksOfSync(file: string, sizes: ChunkSizes = chunkSizes()): Generator<Chunk> {
  const fd = fs.openSync(file, "r")
  const cutter = new Cutter(sizes)
  try {
    for (;;) {
      const block = Buffer.allocUnsafe(READ)
      const n = fs.readSync(fd, block, 0, READ, null)
      if (n === 0) break
      for (const c of cutter.push(block.subarray(0, n))) yield c
    }
    const last = cutter.end()
    if (last !== undefined) yield last
  } finally {
    fs.closeSync(fd)
  }
}

/** The sub-key of one chunk's work: recipe, chunk digest and, for a stateful step, the state carried in. */
export const chunkKey = (recipe: string, chunkDigest: string, state?: string): string =>
  createHash("sha256")
    .update(`tunegraph-chunk/1\n${recipe}\n${chunkDigest}\n${state ?? ""}`)
    .digest("hex")

/** The state after one more chunk, as a chain: H(previous state, chunk digest). */
export const chainState = (previous: string, chunkDigest: string): string =>
  createHash("sha256").update(`${previous}\n${chunkDigest}`).digest("hex")

/**
 * What the engine gives a chunked step (StepContext.chunks): the store's
 * chunk index, without the store. Plugins know files, never SQLite.
 */
export interface ChunkCache {
  /**
   * The step's recipe: its key without the digests of the `chunked` inputs
   * (the rest still count), and without the parameters a piece of its work
   * does not read (`unused`), so changing one of those keeps that work.
   */
  readonly recipe: (chunked: ReadonlyArray<string>, unused?: ReadonlyArray<string>) => string
  /** The stored result of a chunk (a read-only file of parts), or undefined. Records that this run used it. */
  readonly get: (key: string) => string | undefined
  /** Commits a finished chunk result (a file the step wrote, see packParts, or a directory) and returns its stored path. */
  readonly put: (key: string, file: string) => string
  /** A fresh directory to write one chunk's parts into. */
  readonly scratch: () => string
  /**
   * Hard-links file `name` of a stored chunk result directory (from get or put)
   * to `dest` inside one of the step's outputs: the output shares the stored
   * bytes, and the engine takes their digest from the store rather than
   * reading them again. This is how a sharded output is assembled.
   */
  readonly link: (stored: string, name: string, dest: string) => void
  /** The line index of a file by its digest (made when it was hashed as a source), at the current chunk size. */
  readonly lineIndex?: (digest: string) => LineIndex | undefined
}

/** How much of a chunked step was reused: for the log, the report and the run summary. */
export interface ChunkReuse {
  readonly chunks: number
  readonly reused: number
  readonly computed: number
}

/** "tokenize: 2 of 412 chunks to encode (410 reused)" */
export const describeReuse = (step: string, verb: string, r: ChunkReuse): string =>
  `${step}: ${r.computed} of ${r.chunks} chunk${r.chunks === 1 ? "" : "s"} to ${verb} (${r.reused} reused)`

/** Counts reuse as a step goes. */
export class ReuseCounter {
  chunks = 0
  reused = 0
  get computed(): number {
    return this.chunks - this.reused
  }
  hit(): void {
    this.chunks++
    this.reused++
  }
  miss(): void {
    this.chunks++
  }
  get value(): ChunkReuse {
    return { chunks: this.chunks, reused: this.reused, computed: this.computed }
  }
}

/**
 * A chunk cache that keeps nothing (a step run outside the engine, or a test
 * of the step's body): every chunk is computed.
 */
export const noChunkCache = (scratchRoot: string): ChunkCache => {
  let n = 0
  let last: string | undefined
  return {
    recipe: () => "none",
    get: () => undefined,
    put: (_key, file) => file,
    link: (stored, name, dest) => fs.linkSync(path.join(stored, name), dest),
    // Nothing is kept: a chunk's result is read (or linked) before the next chunk asks for a directory.
    scratch: () => {
      if (last !== undefined) fs.rmSync(last, { recursive: true, force: true })
      last = path.join(scratchRoot, `chunk-${n++}`)
      fs.mkdirSync(last, { recursive: true })
      return last
    },
  }
}

/** Runs `f` with `cache`, or without one with a private temporary directory removed afterwards. */
export const withChunkCache = async <A>(
  cache: ChunkCache | undefined,
  f: (cache: ChunkCache) => Promise<A>,
): Promise<A> => {
  if (cache !== undefined) return f(cache)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tunegraph-chunks-"))
  try {
    return await f(noChunkCache(dir))
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const COPY = 4 * 1024 * 1024

/** Appends a file's bytes to an open file, a block at a time (a chunk's part onto the step's output). */
export const appendFile = (fd: number, file: string, buf: Buffer = Buffer.allocUnsafe(COPY)) => {
  const src = fs.openSync(file, "r")
  try {
    for (;;) {
      const n = fs.readSync(src, buf, 0, buf.length, null)
      if (n === 0) return
      let off = 0
      while (off < n) off += fs.writeSync(fd, buf, off, n - off)
    }
  } finally {
    fs.closeSync(src)
  }
}

// ---------------------------------------------------------------- chunk result files

const MAGIC = "tunegraph-chunk/1\n"

export type PartSource = string | Uint8Array | { readonly file: string }

/**
 * Writes one chunk result: a header line naming each part and its length,
 * then the parts' bytes in order. One file per chunk keeps a commit to one
 * fsync (a directory of parts costs one per file).
 */
export const packParts = (dest: string, parts: ReadonlyArray<readonly [string, PartSource]>): string => {
  const bytes = parts.map(([name, src]): [string, Uint8Array | string, number] => {
    if (typeof src === "string") {
      const b = Buffer.from(src)
      return [name, b, b.length]
    }
    if (src instanceof Uint8Array) return [name, src, src.byteLength]
    return [name, src.file, fs.statSync(src.file).size]
  })
  const header = `${MAGIC}${JSON.stringify(bytes.map(([n, , len]) => [n, len]))}\n`
  const fd = fs.openSync(dest, "w")
  try {
    const h = Buffer.from(header)
    fs.writeSync(fd, h, 0, h.length)
    for (const [, b] of bytes) {
      if (typeof b === "string") appendFile(fd, b)
      else {
        let off = 0
        while (off < b.byteLength) off += fs.writeSync(fd, b, off, b.byteLength - off)
      }
    }
  } finally {
    fs.closeSync(fd)
  }
  return dest
}

/** A typed array's bytes, for packParts. */
export const bytesOf = (a: Uint32Array | Int32Array): Uint8Array =>
  new Uint8Array(a.buffer, a.byteOffset, a.byteLength)

export interface Parts {
  readonly file: string
  readonly index: ReadonlyMap<string, { readonly offset: number; readonly length: number }>
  /** The whole file, when it was small enough to read at once. */
  readonly bytes?: Buffer
}

/** A chunk result up to this size is read with one call; a larger one part by part. */
const WHOLE = 16 * 1024 * 1024

/** The parts of a chunk result file: read at once when small, else only its header. */
export const openParts = (file: string): Parts => {
  const fd = fs.openSync(file, "r")
  try {
    const size = fs.fstatSync(fd).size
    const head = Buffer.allocUnsafe(size <= WHOLE ? size : 64 * 1024)
    let n = 0
    while (n < head.length) {
      const got = fs.readSync(fd, head, n, head.length - n, n)
      if (got === 0) break
      n += got
    }
    const text = head.toString("latin1", 0, Math.min(n, 64 * 1024))
    const second = text.indexOf("\n", MAGIC.length)
    if (!text.startsWith(MAGIC) || second < 0) throw new Error(`${file}: not a tunegraph chunk result`)
    const list = JSON.parse(text.slice(MAGIC.length, second)) as Array<[string, number]>
    const index = new Map<string, { offset: number; length: number }>()
    let offset = second + 1
    for (const [name, length] of list) {
      index.set(name, { offset, length })
      offset += length
    }
    return size <= WHOLE && n === size ? { file, index, bytes: head } : { file, index }
  } finally {
    fs.closeSync(fd)
  }
}

const partOf = (p: Parts, name: string) => {
  const at = p.index.get(name)
  if (at === undefined) throw new Error(`${p.file}: no part "${name}"`)
  return at
}

/** One part's bytes (an aligned copy, so typed arrays can view it). */
export const readPart = (p: Parts, name: string): Buffer => {
  const at = partOf(p, name)
  const buf = Buffer.alloc(at.length)
  if (p.bytes !== undefined) {
    p.bytes.copy(buf, 0, at.offset, at.offset + at.length)
    return buf
  }
  const fd = fs.openSync(p.file, "r")
  try {
    if (readAt(fd, buf, at.offset) !== at.length) throw new Error(`${p.file}: part "${name}" is cut short`)
  } finally {
    fs.closeSync(fd)
  }
  return buf
}

export const readPartText = (p: Parts, name: string): string => readPart(p, name).toString("utf8")
export const readPartU32 = (p: Parts, name: string): Uint32Array => {
  const b = readPart(p, name)
  return new Uint32Array(b.buffer, b.byteOffset, b.byteLength / 4)
}
export const readPartI32 = (p: Parts, name: string): Int32Array => {
  const b = readPart(p, name)
  return new Int32Array(b.buffer, b.byteOffset, b.byteLength / 4)
}

/** Appends one part to an open file, a block at a time (a chunk's records onto the step's output). */
export const copyPart = (fd: number, p: Parts, name: string, buf: Buffer = Buffer.allocUnsafe(COPY)) => {
  const at = partOf(p, name)
  if (p.bytes !== undefined) {
    let off = 0
    while (off < at.length) off += fs.writeSync(fd, p.bytes, at.offset + off, at.length - off)
    return
  }
  const src = fs.openSync(p.file, "r")
  try {
    let done = 0
    while (done < at.length) {
      const n = fs.readSync(src, buf, 0, Math.min(buf.length, at.length - done), at.offset + done)
      if (n === 0) throw new Error(`${p.file}: part "${name}" is cut short`)
      let off = 0
      while (off < n) off += fs.writeSync(fd, buf, off, n - off)
      done += n
    }
  } finally {
    fs.closeSync(src)
  }
}

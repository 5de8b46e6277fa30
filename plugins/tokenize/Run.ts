/**
 * The tokenize step's body. Records stream in by batches; each batch is
 * parsed and rendered on the main thread while the previous batch is being
 * tokenized (the `tokenizers` package encodes off the main thread), and
 * finished sequences stream out into the Tokens arrays. Memory stays bounded
 * by a few batches, the packer's open sequences and one count per length.
 */

import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import {
  bytesOf,
  type ChunkCache,
  type ChunkReuse,
  chunkKey,
  describeReuse,
  openParts,
  packParts,
  ReuseCounter,
  readPartI32,
  readPartU32,
  withChunkCache,
} from "../../core/Chunks.ts"
import { type Failure, fromPromise, type OutputMeta, type StepContext, StepError } from "../../core/Plugin.ts"
import { digestsOf, type RecordChunk, recordBytes, recordChunks } from "../ingest/RecordParts.ts"
import { type ChunkArrays, ChunkBuilder, NO_REPLY, type PartIds } from "./Encode.ts"
import type { Example } from "./Example.ts"
import type { TokenizeParams, tokenizeInputs, tokenizeOutputs } from "./index.ts"
import { type Bucket, type Distribution, LengthStats, lengthEdges } from "./LengthStats.ts"
import { collectGarbage } from "./NativeMemory.ts"
import { Packer } from "./Packer.ts"
import { type Line, parseRecord } from "./RecordReader.ts"
import { makeRenderer, type Part, TemplateError, tokenizerTemplateOptions } from "./Template.ts"
import { loadTokenizer, type TextTokenizer } from "./Tokenizer.ts"
import { TOKENS_PART, type TokensMeta, type TokensPartEntry, TokensWriter } from "./TokensFile.ts"

type Context = StepContext<TokenizeParams, typeof tokenizeInputs, typeof tokenizeOutputs>

export interface TokenizeOptions {
  readonly recordsFile: string
  /** A Tokenizer artifact's path: tokenizer.json, a directory, or tok*.bin. */
  readonly tokenizer: string
  readonly tokenizerDigest?: string
  readonly tokensDir: string
  readonly reportFile: string
  readonly params: TokenizeParams
  readonly signal?: AbortSignal
  readonly log?: (line: string) => void
  readonly progress?: (done: number, total?: number, detail?: string) => void
  /** The store's chunk cache: chunks whose records were encoded before are not encoded again. */
  readonly chunks?: ChunkCache
  /** Digests of the Records parts by name (the input artifact's files), so they are not hashed again. */
  readonly recordDigests?: ReadonlyMap<string, string>
  readonly onReuse?: (reuse: ChunkReuse) => void
}

export interface Sample {
  readonly line: number
  readonly tokens: number
  /** The sequence decoded as the model sees it. */
  readonly text: string
  /** Only the tokens in the loss, decoded. */
  readonly trained: string
}

export interface TokenizeReport {
  readonly tokenizer: {
    readonly type: string
    readonly vocabSize: number
    readonly bosId: number | null
    readonly eosId: number
    readonly padId: number
    readonly notes: ReadonlyArray<string>
  }
  readonly template: string
  readonly maxLength: number
  readonly overflowPolicy: "truncate" | "drop" | "fail"
  readonly trainOnInputs: boolean
  readonly addBos: boolean
  readonly addEos: boolean
  readonly records: number
  /** Examples written (alone or packed). */
  readonly examples: number
  readonly sequences: number
  readonly tokens: number
  readonly trainTokens: number
  /** Lengths of every rendered example, before the overflow policy. */
  readonly lengths: Distribution & { readonly histogram: ReadonlyArray<Bucket> }
  readonly overflow: {
    readonly examples: number
    /** By how many tokens they exceeded maxLength. */
    readonly excess: Distribution
    readonly truncated: number
    readonly tokensCut: number
    readonly dropped: number
    /** Truncated ones whose reply was cut off entirely, so nothing was left to train: left out. */
    readonly droppedNoTarget: number
    /** First lines over maxLength, to look at. */
    readonly lines: ReadonlyArray<number>
  }
  /** Records with no reply to train on (a chat ending with a user turn, an empty output): left out. */
  readonly skippedNoReply: { readonly count: number; readonly lines: ReadonlyArray<number> }
  readonly packing: { readonly sequences: number; readonly examples: number; readonly fill: number } | null
  readonly samples: ReadonlyArray<Sample>
}

interface Item {
  readonly line: number
  readonly parts: Part[]
  readonly first: number // index of the item's first text in the batch
}

interface Batch {
  readonly items: Item[]
  readonly texts: string[]
  readonly continued: boolean[]
  /** Lines (in record order with the items) that have no reply to train on. */
  readonly noReply: number[]
}

/** Per record of a chunk: its line (relative to the chunk) and its example's length, or NO_REPLY. */
type EncodedChunk = ChunkArrays
interface StoredChunk {
  readonly items: Uint32Array
  readonly ids: Uint32Array
  readonly labels: Int32Array
}

const packEncoded = (file: string, c: StoredChunk): string =>
  packParts(file, [
    ["items", bytesOf(c.items)],
    ["ids", bytesOf(c.ids)],
    ["labels", bytesOf(c.labels)],
  ])

const readEncoded = (file: string): StoredChunk => {
  const p = openParts(file)
  return { items: readPartU32(p, "items"), ids: readPartU32(p, "ids"), labels: readPartI32(p, "labels") }
}

/** The files of one Tokens part (TokensFile.ts). */
const arraysOf = (packed: boolean): string[] =>
  packed
    ? ["tokens.u32", "labels.i32", "offsets.u32", "segments.u32"]
    : ["tokens.u32", "labels.i32", "offsets.u32"]

/** The parameters that act only on encoded examples: changing one encodes nothing again. */
const AFTER_ENCODING = ["maxLength", "overflow", "pack", "samples"]

/** No open sequences: what the first chunk starts from. */
const EMPTY_STATE = "none"
const EMPTY_PACKER = new Uint8Array(4)

/** What examples add to the report: one chunk's (Tally), or all of them merged (Totals). */
class Counts {
  readonly lengths = new LengthStats()
  readonly excess = new LengthStats()
  readonly overLines: number[] = []
  readonly noReplyLines: number[] = []
  readonly samples: Array<{ line: number; ids: number[]; labels: number[] }> = []
  records = 0
  examples = 0
  truncated = 0
  tokensCut = 0
  dropped = 0
  droppedNoTarget = 0
  noReply = 0
}

/** One chunk's share of the report, its lines relative to the chunk (1-based). */
class Tally extends Counts {
  stored(): Omit<StoredTally, "count" | "tokens" | "trainTokens" | "carry"> {
    return {
      lengths: this.lengths.entries(),
      excess: this.excess.entries(),
      overLines: this.overLines,
      noReplyLines: this.noReplyLines,
      samples: this.samples,
      records: this.records,
      examples: this.examples,
      truncated: this.truncated,
      tokensCut: this.tokensCut,
      dropped: this.dropped,
      droppedNoTarget: this.droppedNoTarget,
      noReply: this.noReply,
    }
  }
}

/** A chunk's part as its entry keeps it (summary.json), beside its arrays and the packer's carry.bin. */
interface StoredTally {
  readonly lengths: ReadonlyArray<[number, number]>
  readonly excess: ReadonlyArray<[number, number]>
  readonly overLines: ReadonlyArray<number>
  readonly noReplyLines: ReadonlyArray<number>
  readonly samples: ReadonlyArray<{ line: number; ids: number[]; labels: number[] }>
  readonly records: number
  readonly examples: number
  readonly truncated: number
  readonly tokensCut: number
  readonly dropped: number
  readonly droppedNoTarget: number
  readonly noReply: number
  /** Sequences and tokens of the part. */
  readonly count: number
  readonly tokens: number
  readonly trainTokens: number
  /** Digest of the packer's open sequences after the chunk (EMPTY_STATE unpacked). */
  readonly carry: string
}

/** The chunks' tallies merged in order: the report of the whole input. */
class Totals extends Counts {
  sequences = 0
  tokens = 0
  trainTokens = 0

  constructor(private readonly keepSamples: number) {
    super()
  }

  add(t: StoredTally, firstLine: number): void {
    this.lengths.merge(t.lengths)
    this.excess.merge(t.excess)
    for (const l of t.overLines) if (this.overLines.length < LINES_KEPT) this.overLines.push(firstLine + l)
    for (const l of t.noReplyLines)
      if (this.noReplyLines.length < LINES_KEPT) this.noReplyLines.push(firstLine + l)
    for (const x of t.samples)
      if (this.samples.length < this.keepSamples) this.samples.push({ ...x, line: firstLine + x.line })
    this.records += t.records
    this.examples += t.examples
    this.truncated += t.truncated
    this.tokensCut += t.tokensCut
    this.dropped += t.dropped
    this.droppedNoTarget += t.droppedNoTarget
    this.noReply += t.noReply
    this.sequences += t.count
    this.tokens += t.tokens
    this.trainTokens += t.trainTokens
  }
}

const BATCH_BYTES = 256 * 1024

/** The non-empty lines of a chunk (CR before LF dropped), with their 1-based line numbers in the file, in batches. */
function* linesOf(chunk: RecordChunk): Generator<Line[]> {
  const buf = chunk.bytes()
  let batch: Line[] = []
  let size = 0
  let start = 0
  let lineNo = chunk.firstLine
  while (start < buf.length) {
    let nl = buf.indexOf(10, start)
    if (nl < 0) nl = buf.length
    lineNo++
    const stop = nl > start && buf[nl - 1] === 13 ? nl - 1 : nl
    if (stop > start) {
      batch.push({ line: lineNo, text: buf.toString("utf8", start, stop) })
      size += stop - start
      // Small batches keep the tokenizer's native allocations small: big ones fragment its heap for good.
      if (size >= BATCH_BYTES) {
        yield batch
        batch = []
        size = 0
      }
    }
    start = nl + 1
  }
  if (batch.length > 0) yield batch
}

const PIPELINE_DEPTH = 3
/** Native memory behind `tokenizers` encodings is freed only by a JS collection: force one this often (NativeMemory.ts). */
const COLLECT_EVERY_TOKENS = 8_000_000
const LINES_KEPT = 20

export const tokenizeRecords = async (
  o: TokenizeOptions,
): Promise<{ meta: TokensMeta; report: TokenizeReport }> => {
  const p = o.params
  const tok = await loadTokenizer(o.tokenizer)
  const renderer = await makeRenderer(p.template, tokenizerTemplateOptions(tok, p.templateKwargs)).catch(
    (e: unknown) => {
      if (e instanceof TemplateError)
        throw new StepError({
          message: e.message,
          file: tok.chatTemplateFile ?? tok.file,
          field: "chat_template",
        })
      throw e
    },
  )
  const addBos = p.addBos === "auto" ? tok.addsBos && p.template !== "chat_template" : p.addBos
  if (addBos && tok.bosId === undefined) {
    throw new StepError({
      message: `addBos is set but ${tok.file} has no BOS token`,
      file: tok.file,
      field: "bos_token",
    })
  }
  const exampleOptions = {
    bosId: addBos ? tok.bosId : undefined,
    eosId: p.addEos ? tok.eosId : undefined,
    endIds: p.template === "chat_template" ? tok.eosIds : undefined,
    trainOnInputs: p.trainOnInputs,
  }
  for (const note of tok.notes) o.log?.(note)
  const totalBytes = recordBytes(o.recordsFile)
  fs.mkdirSync(o.tokensDir, { recursive: true })

  /** What the examples of one chunk add to the report (kept with the chunk's part, merged in order). */
  let tally = new Tally()
  let writer: TokensWriter | undefined
  const packer = p.pack
    ? new Packer(p.maxLength, (seq) => {
        const ids = new Uint32Array(seq.length)
        const labels = new Int32Array(seq.length)
        const segments = new Uint32Array(seq.length)
        let at = 0
        seq.examples.forEach((e, k) => {
          ids.set(e.ids, at)
          labels.set(e.labels, at)
          segments.fill(k, at, at + e.ids.length)
          at += e.ids.length
        })
        writer!.write({ ids, labels, segments })
      })
    : undefined

  const accept = (line: number, example: Example) => {
    let e = example
    const len = e.ids.length
    tally.lengths.add(len)
    if (len > p.maxLength) {
      tally.excess.add(len - p.maxLength)
      if (tally.overLines.length < LINES_KEPT) tally.overLines.push(line)
      if (p.overflow === "fail") return
      if (p.overflow === "drop") {
        tally.dropped++
        return
      }
      e = { ids: e.ids.slice(0, p.maxLength), labels: e.labels.slice(0, p.maxLength) }
      if (!e.labels.some((l) => l !== -100)) {
        tally.droppedNoTarget++
        return
      }
      tally.truncated++
      tally.tokensCut += len - p.maxLength
    }
    tally.examples++
    if (tally.samples.length < p.samples)
      tally.samples.push({ line, ids: Array.from(e.ids), labels: Array.from(e.labels) })
    if (packer) packer.add(e)
    else writer!.write(e)
  }

  /** The file and line numbering of the chunk being read, for errors: a part's own lines, or the file's. */
  let where = { file: o.recordsFile, base: 0 }

  const prepare = (lines: ReadonlyArray<Line>): Batch => {
    const items: Item[] = []
    const texts: string[] = []
    const continued: boolean[] = []
    const noReplies: number[] = []
    for (const line of lines) {
      const local = line.line - where.base
      const record = parseRecord(where.file, where.base === 0 ? line : { line: local, text: line.text })
      let parts: Part[]
      try {
        parts = renderer.render(record)
      } catch (e) {
        if (!(e instanceof TemplateError)) throw e
        throw new StepError({
          message: `${where.file}:${local}: ${e.message}`,
          file: where.file,
          line: local,
        })
      }
      if (!parts.some((x) => x.train)) {
        noReplies.push(line.line)
        continue
      }
      items.push({ line: line.line, parts, first: texts.length })
      parts.forEach((x, i) => {
        texts.push(x.text)
        continued.push(i > 0)
      })
    }
    return { items, texts, continued, noReply: noReplies }
  }

  let sinceCollect = 0
  const reuse = new ReuseCounter()

  // Chunk by chunk (core/Chunks.ts): a chunk's encoded examples are cached under its sub-key, and
  // the rest (overflow policy, packing, writing) replays over every chunk in order, so the output
  // is the same bytes whichever chunks were reused. Within a chunk to encode, batch k is parsed and
  // rendered while batch k - 1 is encoded off the main thread.
  const encodeChunk = async (chunk: RecordChunk): Promise<EncodedChunk> => {
    const out = new ChunkBuilder(exampleOptions)
    const take = (batch: Batch, ids: PartIds) => {
      sinceCollect += ids.tokens
      for (const noReplyLine of batch.noReply) out.noReply(noReplyLine - chunk.firstLine)
      batch.noReply.length = 0
      for (const item of batch.items) out.example(item.line - chunk.firstLine, item.parts, ids, item.first)
    }
    const inflight: Array<{ batch: Batch; ids: Promise<PartIds> }> = []
    for (const lines of linesOf(chunk)) {
      if (o.signal?.aborted) throw new StepError({ message: "tokenize was interrupted" })
      const batch = prepare(lines)
      const ids = tok.encodeParts(batch.texts, batch.continued)
      ids.catch(() => undefined) // awaited below; keeps an early failure from being reported as unhandled
      inflight.push({ batch, ids })
      if (inflight.length >= PIPELINE_DEPTH) {
        const next = inflight.shift()!
        take(next.batch, await next.ids)
      }
      if (tok.type === "huggingface" && sinceCollect >= COLLECT_EVERY_TOKENS) {
        collectGarbage()
        sinceCollect = 0
      }
    }
    for (const next of inflight.splice(0)) take(next.batch, await next.ids)
    return out.arrays()
  }

  /** Packs and writes one chunk's examples (lines relative to the chunk) into `tally` and `writer`. */
  const replay = (enc: StoredChunk) => {
    let at = 0
    for (let i = 0; i < enc.items.length; i += 2) {
      tally.records++
      const line = enc.items[i]!
      const n = enc.items[i + 1]!
      if (n === NO_REPLY) {
        tally.noReply++
        if (tally.noReplyLines.length < LINES_KEPT) tally.noReplyLines.push(line)
        continue
      }
      // views of the kept arrays: the packer and the writer copy what they keep
      accept(line, {
        ids: enc.ids.subarray(at, at + n) as unknown as number[],
        labels: enc.labels.subarray(at, at + n) as unknown as number[],
      })
      at += n
    }
  }

  const totals = new Totals(p.samples)
  const parts: TokensPartEntry[] = []
  /** Links a stored part's arrays into the output as its next part. */
  const linkPart = (cache: ChunkCache, dir: string, t: StoredTally) => {
    if (t.count === 0) return
    const name = TOKENS_PART(parts.length)
    fs.mkdirSync(path.join(o.tokensDir, name))
    for (const f of arraysOf(p.pack)) cache.link(dir, f, path.join(o.tokensDir, name, f))
    parts.push({ dir: name, count: t.count, tokens: t.tokens })
  }

  // Chunk by chunk (core/Chunks.ts), two entries each. A chunk's encoded examples are kept under
  // its digest alone. Its part of the output (the sequences that end in it, packed or not) and its
  // share of the report are kept under its digest and the packer's open sequences carried into it,
  // so a part is reused wherever the same records meet the same open sequences: an append packs
  // and writes only the new chunks, and the output is the same bytes whichever chunks were reused.
  // Within a chunk to encode, batch k is parsed and rendered while batch k - 1 is encoded off the
  // main thread.
  const stream = async (cache: ChunkCache) => {
    const recipe = cache.recipe(["records"])
    // a chunk's encoded examples do not depend on what happens to them next (length limits, packing)
    const encodeRecipe = cache.recipe(["records"], AFTER_ENCODING)
    let carried = EMPTY_STATE // digest of the packer's open sequences
    let carriedFrom: string | undefined // the stored part whose carry.bin holds them
    let live = true // whether `packer` holds them already
    for await (const chunk of recordChunks(o.recordsFile, o.recordDigests, o.signal)) {
      if (o.signal?.aborted) throw new StepError({ message: "tokenize was interrupted" })
      const partKey = chunkKey(recipe, chunk.digest, `part after ${carried}`)
      let dir = cache.get(partKey)
      if (dir !== undefined) {
        reuse.hit()
        live = false
      } else {
        // packed again from the open sequences carried in; encoded again only when its records are new
        const encKey = chunkKey(encodeRecipe, chunk.digest)
        const hit = cache.get(encKey)
        let enc: StoredChunk
        if (hit !== undefined) {
          reuse.hit()
          enc = readEncoded(hit)
        } else {
          reuse.miss()
          where =
            chunk.fileOffset === 0 && chunk.file !== o.recordsFile
              ? { file: chunk.file, base: chunk.firstLine }
              : { file: o.recordsFile, base: 0 }
          enc = await encodeChunk(chunk)
          cache.put(encKey, packEncoded(path.join(cache.scratch(), "chunk"), enc))
        }
        if (packer !== undefined && !live) {
          packer.restore(
            carriedFrom === undefined ? EMPTY_PACKER : fs.readFileSync(path.join(carriedFrom, "carry.bin")),
          )
          live = true
        }
        const fresh = path.join(cache.scratch(), "chunk")
        tally = new Tally()
        writer = new TokensWriter(fresh, p.pack)
        try {
          replay(enc)
        } finally {
          writer.closeArrays()
        }
        const state = packer?.state()
        if (state !== undefined) fs.writeFileSync(path.join(fresh, "carry.bin"), state)
        const stored: StoredTally = {
          ...tally.stored(),
          count: writer.count,
          tokens: writer.tokenCount,
          trainTokens: writer.trainTokens,
          carry: state === undefined ? EMPTY_STATE : createHash("sha256").update(state).digest("hex"),
        }
        writer = undefined
        fs.writeFileSync(path.join(fresh, "summary.json"), JSON.stringify(stored))
        dir = cache.put(partKey, fresh)
      }
      const t = JSON.parse(fs.readFileSync(path.join(dir, "summary.json"), "utf8")) as StoredTally
      totals.add(t, chunk.firstLine)
      linkPart(cache, dir, t)
      carried = t.carry
      carriedFrom = dir
      o.progress?.(
        Math.min(chunk.offset + chunk.size, totalBytes),
        totalBytes,
        `${totals.records} records, ${reuse.computed} of ${reuse.chunks} chunks encoded`,
      )
    }
    // The sequences still open at the end close into a last part of their own.
    if (packer !== undefined) {
      if (!live)
        packer.restore(
          carriedFrom === undefined ? EMPTY_PACKER : fs.readFileSync(path.join(carriedFrom, "carry.bin")),
        )
      const name = TOKENS_PART(parts.length)
      writer = new TokensWriter(path.join(o.tokensDir, name), true)
      try {
        packer.finish()
      } finally {
        writer.closeArrays()
      }
      if (writer.count > 0) {
        parts.push({ dir: name, count: writer.count, tokens: writer.tokenCount })
        totals.sequences += writer.count
        totals.tokens += writer.tokenCount
        totals.trainTokens += writer.trainTokens
      } else fs.rmSync(path.join(o.tokensDir, name), { recursive: true, force: true })
      writer = undefined
    }
  }

  const start = performance.now()
  await withChunkCache(o.chunks, stream)
  for (const note of renderer.notes?.() ?? []) o.log?.(note)

  const meta: TokensMeta = {
    vocabSize: tok.vocabSize,
    bosId: exampleOptions.bosId ?? null,
    eosId: tok.eosId,
    padId: tok.padId,
    maxLength: p.maxLength,
    tokenizer: { type: tok.type, digest: o.tokenizerDigest ?? "" },
    format: p.template,
    trainOnInputs: p.trainOnInputs,
    examples: totals.examples,
    count: totals.sequences,
    tokens: totals.tokens,
    packed: p.pack,
    trainTokens: totals.trainTokens,
    labels: "unshifted",
  }
  fs.writeFileSync(path.join(o.tokensDir, "meta.json"), `${JSON.stringify({ ...meta, parts }, null, 2)}\n`)
  const { lengths, excess, overLines, noReplyLines, samples } = totals
  const { records, examples, truncated, tokensCut, dropped, droppedNoTarget, noReply } = totals

  const seconds = (performance.now() - start) / 1000
  o.log?.(describeReuse("tokenize", "encode", reuse.value))
  o.onReuse?.(reuse.value)
  o.log?.(
    `${records} records -> ${meta.count} sequences, ${meta.tokens} tokens in ${seconds.toFixed(1)} s ` +
      `(${(totalBytes / 1e6 / seconds).toFixed(2)} MB/s, ${Math.round(records / seconds)} records/s)`,
  )

  const report: TokenizeReport = {
    tokenizer: {
      type: tok.type,
      vocabSize: tok.vocabSize,
      bosId: tok.bosId ?? null,
      eosId: tok.eosId,
      padId: tok.padId,
      notes: [...tok.notes, ...(renderer.notes?.() ?? [])],
    },
    template: p.template,
    maxLength: p.maxLength,
    overflowPolicy: p.overflow,
    trainOnInputs: p.trainOnInputs,
    addBos,
    addEos: p.addEos,
    records,
    examples,
    sequences: meta.count,
    tokens: meta.tokens,
    trainTokens: meta.trainTokens,
    lengths: { ...lengths.summary(), histogram: lengths.histogram(lengthEdges(p.maxLength)) },
    overflow: {
      examples: excess.count,
      excess: excess.summary(),
      truncated,
      tokensCut,
      dropped,
      droppedNoTarget,
      lines: overLines,
    },
    skippedNoReply: { count: noReply, lines: noReplyLines },
    packing: p.pack
      ? {
          sequences: meta.count,
          examples,
          fill: meta.count === 0 ? 0 : Math.round((meta.tokens / (meta.count * p.maxLength)) * 1000) / 1000,
        }
      : null,
    samples: await Promise.all(
      samples.map(async (s) => sampleOf(tok, s.line, { ids: s.ids, labels: s.labels })),
    ),
  }
  fs.writeFileSync(o.reportFile, `${JSON.stringify(report, null, 2)}\n`)

  if (p.overflow === "fail" && excess.count > 0) {
    const ex = excess.summary()
    throw new StepError({
      message:
        `${excess.count} of ${lengths.count} examples are longer than maxLength ${p.maxLength} ` +
        `(by ${ex.min} to ${ex.max} tokens, median ${ex.p50}; lines ${overLines.slice(0, 5).join(", ")}` +
        `${excess.count > 5 ? ", ..." : ""}). Longest example: ${lengths.summary().max} tokens. ` +
        `Set overflow to "truncate" or "drop", or raise maxLength.`,
      file: o.recordsFile,
      line: overLines[0]!,
      field: "maxLength",
    })
  }
  return { meta, report }
}

const sampleOf = async (tok: TextTokenizer, line: number, e: Example): Promise<Sample> => ({
  line,
  tokens: e.ids.length,
  text: await tok.decode(Array.from(e.ids), { skipSpecial: false }),
  trained: await tok.decode(
    Array.from(e.ids).filter((_, i) => e.labels[i] !== -100),
    { skipSpecial: false },
  ),
})

export const run = (ctx: Context): Effect.Effect<OutputMeta<typeof tokenizeOutputs>, Failure> =>
  Effect.map(
    fromPromise((signal) =>
      tokenizeRecords({
        recordsFile: ctx.inputs.records.path,
        tokenizer: ctx.inputs.tokenizer.path,
        tokenizerDigest: ctx.inputs.tokenizer.digest,
        tokensDir: ctx.output("tokens"),
        reportFile: ctx.output("report"),
        params: ctx.params,
        signal,
        log: ctx.log,
        progress: ctx.progress,
        ...(ctx.chunks === undefined ? {} : { chunks: ctx.chunks }),
        recordDigests: digestsOf(ctx.inputs.records),
        onReuse: (chunks) => ctx.annotate({ chunks }),
      }),
    ),
    ({ meta }) => ({
      tokens: {
        count: meta.count,
        tokens: meta.tokens,
        vocabSize: meta.vocabSize,
        maxLength: meta.maxLength,
        packed: meta.packed,
      },
    }),
  )

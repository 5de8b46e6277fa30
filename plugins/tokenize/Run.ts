/**
 * The tokenize step's body. Records stream in by batches; each batch is
 * parsed and rendered on the main thread while the previous batch is being
 * tokenized (the `tokenizers` package encodes off the main thread), and
 * finished sequences stream out into the Tokens arrays. Memory stays bounded
 * by a few batches, the packer's open sequences and one count per length.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import {
  bytesOf,
  type Chunk,
  type ChunkCache,
  type ChunkReuse,
  chunkKey,
  chunkSizes,
  chunksOf,
  describeReuse,
  openParts,
  packParts,
  ReuseCounter,
  readPartI32,
  readPartU32,
} from "../../core/Chunks.ts"
import { type Failure, fromPromise, type OutputMeta, type StepContext, StepError } from "../../core/Plugin.ts"
import { type ChunkArrays, ChunkBuilder, NO_REPLY, type PartIds } from "./Encode.ts"
import type { Example } from "./Example.ts"
import type { TokenizeParams, tokenizeInputs, tokenizeOutputs } from "./index.ts"
import { type Bucket, type Distribution, LengthStats, lengthEdges } from "./LengthStats.ts"
import { collectGarbage } from "./NativeMemory.ts"
import { Packer } from "./Packer.ts"
import { type Line, parseRecord } from "./RecordReader.ts"
import { makeRenderer, type Part, TemplateError, tokenizerTemplateOptions } from "./Template.ts"
import { loadTokenizer, type TextTokenizer } from "./Tokenizer.ts"
import { type TokensMeta, TokensWriter } from "./TokensFile.ts"

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

const BATCH_BYTES = 256 * 1024

/** The non-empty lines of a chunk (CR before LF dropped), with their 1-based line numbers in the file, in batches. */
function* linesOf(chunk: Chunk): Generator<Line[]> {
  const buf = chunk.bytes
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
  const totalBytes = fs.statSync(o.recordsFile).size

  const writer = new TokensWriter(o.tokensDir, p.pack)
  const lengths = new LengthStats()
  const excess = new LengthStats()
  const overLines: number[] = []
  const noReplyLines: number[] = []
  let records = 0
  let examples = 0
  let truncated = 0
  let tokensCut = 0
  let dropped = 0
  let droppedNoTarget = 0
  let noReply = 0
  const samples: Array<{ line: number; example: Example }> = []

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
        writer.write({ ids, labels, segments })
      })
    : undefined

  const accept = (line: number, example: Example) => {
    let e = example
    const len = e.ids.length
    lengths.add(len)
    if (len > p.maxLength) {
      excess.add(len - p.maxLength)
      if (overLines.length < LINES_KEPT) overLines.push(line)
      if (p.overflow === "fail") return
      if (p.overflow === "drop") {
        dropped++
        return
      }
      e = { ids: e.ids.slice(0, p.maxLength), labels: e.labels.slice(0, p.maxLength) }
      if (!e.labels.some((l) => l !== -100)) {
        droppedNoTarget++
        return
      }
      truncated++
      tokensCut += len - p.maxLength
    }
    examples++
    if (samples.length < p.samples) samples.push({ line, example: e })
    if (packer) packer.add(e)
    else writer.write(e)
  }

  const prepare = (lines: ReadonlyArray<Line>): Batch => {
    const items: Item[] = []
    const texts: string[] = []
    const continued: boolean[] = []
    const noReplies: number[] = []
    for (const line of lines) {
      const record = parseRecord(o.recordsFile, line)
      let parts: Part[]
      try {
        parts = renderer.render(record)
      } catch (e) {
        if (!(e instanceof TemplateError)) throw e
        throw new StepError({
          message: `${o.recordsFile}:${line.line}: ${e.message}`,
          file: o.recordsFile,
          line: line.line,
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
  const encodeChunk = async (chunk: Chunk): Promise<EncodedChunk> => {
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

  const replay = (chunk: Chunk, enc: StoredChunk) => {
    let at = 0
    for (let i = 0; i < enc.items.length; i += 2) {
      records++
      const line = enc.items[i]! + chunk.firstLine
      const n = enc.items[i + 1]!
      if (n === NO_REPLY) {
        noReply++
        if (noReplyLines.length < LINES_KEPT) noReplyLines.push(line)
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

  const stream = async () => {
    const cache = o.chunks
    const recipe = cache?.recipe(["records"])
    for await (const chunk of chunksOf(o.recordsFile, chunkSizes(), o.signal)) {
      if (o.signal?.aborted) throw new StepError({ message: "tokenize was interrupted" })
      const key = recipe === undefined ? undefined : chunkKey(recipe, chunk.digest)
      const hit = key === undefined ? undefined : cache!.get(key)
      let enc: StoredChunk
      if (hit !== undefined) {
        reuse.hit()
        enc = readEncoded(hit)
      } else {
        reuse.miss()
        const fresh = await encodeChunk(chunk)
        enc = {
          items: Uint32Array.from(fresh.items),
          ids: Uint32Array.from(fresh.ids),
          labels: Int32Array.from(fresh.labels),
        }
        if (cache !== undefined && key !== undefined)
          cache.put(key, packEncoded(path.join(cache.scratch(), "chunk"), enc))
      }
      replay(chunk, enc)
      o.progress?.(
        Math.min(chunk.offset + chunk.bytes.length, totalBytes),
        totalBytes,
        `${records} records, ${reuse.computed} of ${reuse.chunks} chunks encoded`,
      )
    }
  }

  const start = performance.now()
  try {
    await stream()
  } catch (e) {
    writer.abort()
    throw e
  }
  packer?.finish()
  for (const note of renderer.notes?.() ?? []) o.log?.(note)

  const meta = writer.close({
    vocabSize: tok.vocabSize,
    bosId: exampleOptions.bosId ?? null,
    eosId: tok.eosId,
    padId: tok.padId,
    maxLength: p.maxLength,
    tokenizer: { type: tok.type, digest: o.tokenizerDigest ?? "" },
    format: p.template,
    trainOnInputs: p.trainOnInputs,
    examples,
  })

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
    samples: await Promise.all(samples.map(async (s) => sampleOf(tok, s.line, s.example))),
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

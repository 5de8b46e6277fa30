/**
 * The dedupe step, one streaming pass: each record is kept unless its
 * fingerprint was seen (exact) or an earlier kept record is similar enough
 * (near). Kept lines are copied byte for byte. Memory holds per kept record
 * its offset, a fingerprint slot, and, for near duplicates, its LSH entries
 * and a 32-value sketch; never the texts.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import {
  bytesOf,
  type ChunkCache,
  chainState,
  chunkKey,
  describeReuse,
  openParts,
  packParts,
  ReuseCounter,
  readPartText,
  readPartU32,
  withChunkCache,
} from "../../core/Chunks.ts"
import { readAt } from "../../core/Hash.ts"
import { type Failure, StepError } from "../../core/Plugin.ts"
import {
  digestsOf,
  partCount,
  type RecordChunk,
  RecordPartsWriter,
  recordBytes,
  recordChunks,
} from "../ingest/RecordParts.ts"
import { type CanonicalRecord, kindOf, type RecordKind } from "../ingest/Records.ts"
import { RecordWriter } from "../ingest/RecordWriter.ts"
import { Fingerprinter } from "./Fingerprint.ts"
import type { DedupeContext, DedupeParams } from "./index.ts"
import { Lsh } from "./Lsh.ts"
import { jaccard, MinHasher } from "./MinHash.ts"
import { dedupeProblem, SKETCH } from "./Options.ts"
import { Seen } from "./Seen.ts"
import { recordFields } from "./TextFields.ts"

export type DedupeOptions = Omit<DedupeParams, never>

export interface ClusterMember {
  readonly index: number
  readonly kind: "exact" | "near"
  readonly similarity?: number
  readonly text: string
}

export interface Cluster {
  readonly kept: { readonly index: number; readonly text: string }
  duplicates: number
  readonly members: ClusterMember[]
}

export interface DedupeSummary {
  readonly recordKind: RecordKind | undefined
  readonly recordsIn: number
  readonly recordsOut: number
  readonly duplicates: { readonly exact: number; readonly near: number }
  readonly candidatesVerified: number
  readonly clusters: ReadonlyArray<Cluster>
  /** Bytes of the in-memory indexes at the end. */
  readonly indexBytes: number
  /** How the index of the reused chunks was rebuilt: chunks taken from a kept state, chunks replayed. */
  readonly index: { readonly loaded: number; readonly replayed: number }
}

const MAX_CLUSTERS = 10
const MAX_MEMBERS = 5

const preview = (line: string): string => {
  const r = JSON.parse(line) as CanonicalRecord
  const t = recordFields(r, "example")
    .filter(([f]) => f !== 7)
    .map(([, s]) => s)
    .join(" | ")
  return t.length > 200 ? `${t.slice(0, 200)}…` : t
}

class Growable {
  /** Per kept record: the input file it is in (InputFiles), its offset and length there. */
  files = new Int32Array(1 << 12)
  offsets = new Float64Array(1 << 12)
  lengths = new Uint32Array(1 << 12)
  inputs = new Int32Array(1 << 12)
  sketches: Uint32Array | undefined
  constructor(sketch: boolean) {
    if (sketch) this.sketches = new Uint32Array((1 << 12) * SKETCH)
  }
  ensure(n: number): void {
    if (n < this.offsets.length) return
    const cap = this.offsets.length * 2
    const f = new Int32Array(cap)
    f.set(this.files)
    this.files = f
    const o = new Float64Array(cap)
    o.set(this.offsets)
    this.offsets = o
    const l = new Uint32Array(cap)
    l.set(this.lengths)
    this.lengths = l
    const i = new Int32Array(cap)
    i.set(this.inputs)
    this.inputs = i
    if (this.sketches !== undefined) {
      const s = new Uint32Array(cap * SKETCH)
      s.set(this.sketches)
      this.sketches = s
    }
  }
  get bytes(): number {
    return (
      this.files.byteLength +
      this.offsets.byteLength +
      this.lengths.byteLength +
      this.inputs.byteLength +
      (this.sketches?.byteLength ?? 0)
    )
  }
}

export const checkOptions = (o: DedupeOptions): string | undefined => dedupeProblem(o)?.message

/** Per record of a chunk, before its signature words: line, offset and length (relative to the chunk), flags. */
const HEAD = 4
const SHINGLED = 1

/** Signature words per record: head, exact fingerprint, LSH band keys and sketch (when near). */
const strideOf = (o: DedupeOptions): number => HEAD + 4 + (o.near ? o.bands + SKETCH : 0)

/**
 * The per-record work that needs no other record, for one chunk: the exact
 * fingerprint, and for near duplicates the shingles' LSH band keys and
 * sketch. Kept under the chunk's digest alone.
 */
interface Signer {
  readonly fingerprinter: Fingerprinter
  readonly mh: MinHasher | undefined
  readonly lsh: Lsh
  readonly sig: Uint32Array
  readonly keys: Uint32Array
}

const signerFor = (o: DedupeOptions): Signer => ({
  fingerprinter: new Fingerprinter(o.on, o.caseFold),
  mh: o.near
    ? new MinHasher({ permutations: o.permutations, ngram: o.ngram, seed: o.seed, scope: o.on })
    : undefined,
  lsh: new Lsh(o.bands, o.rows),
  sig: new Uint32Array(o.permutations),
  keys: new Uint32Array(o.bands),
})

const signChunk = (
  chunk: RecordChunk,
  o: DedupeOptions,
  signer: Signer,
): { kind: RecordKind | null; rows: Uint32Array } => {
  const { fingerprinter, mh, lsh, sig, keys } = signer
  const stride = strideOf(o)
  const buf = chunk.bytes()
  let rows = new Uint32Array(stride * 1024)
  let n = 0
  let kind: RecordKind | null = null
  let s = 0
  let rel = 0
  while (s < buf.length) {
    let e = buf.indexOf(10, s)
    if (e < 0) e = buf.length
    if (e > s) {
      if (kind === null) kind = kindOf(JSON.parse(buf.toString("utf8", s, e)))
      if ((n + 1) * stride > rows.length) {
        const bigger = new Uint32Array(rows.length * 2)
        bigger.set(rows)
        rows = bigger
      }
      const at = n * stride
      rows[at] = rel
      rows[at + 1] = s
      rows[at + 2] = e - s
      if (o.exact) fingerprinter.line(buf, s, e, rows, at + HEAD)
      if (mh !== undefined && mh.shingleLine(buf, s, e) > 0) {
        rows[at + 3] = SHINGLED
        mh.signature(sig)
        lsh.keysOf(sig, keys)
        rows.set(keys, at + HEAD + 4)
        rows.set(sig.subarray(0, SKETCH), at + HEAD + 4 + o.bands)
      }
      n++
    }
    s = e + 1
    rel++
  }
  return { kind, rows: rows.slice(0, n * stride) }
}

/** Per record, the decision: kept (its ordinal), an exact or a near duplicate of a kept ordinal. */
const KEPT = 0
const EXACT = 1
const NEAR = 2

/**
 * Dedupes a Records file chunk by chunk (core/Chunks.ts), keeping each
 * first occurrence exactly as one streaming pass would.
 *
 * Two entries per chunk: its signatures (exact fingerprints, MinHash band
 * keys and sketches), keyed by the chunk's digest alone; and its decisions
 * (kept, or a duplicate of which earlier record), keyed by the chain of the
 * digests of every chunk up to it, since they depend on all that came
 * before. Where a chunk's decisions are known, the index (fingerprints, LSH
 * buckets, sketches) is rebuilt from its signatures without comparing
 * anything; the first chunk whose chain is new (the appended part, or the
 * first edited chunk and all after it) is checked against that index, near
 * candidates verified by exact Jaccard against the kept records' lines.
 */
export const dedupeFile = async (
  input: string,
  output: string,
  o: DedupeOptions,
  signal: AbortSignal = new AbortController().signal,
  progress: (done: number, total: number) => void = () => {},
  cache?: ChunkCache,
  reuse: ReuseCounter = new ReuseCounter(),
  digests?: ReadonlyMap<string, string>,
): Promise<DedupeSummary> => {
  const total = recordBytes(input)
  const seen = new Seen()
  const mh = o.near
    ? new MinHasher({ permutations: o.permutations, ngram: o.ngram, seed: o.seed, scope: o.on })
    : undefined
  const other = o.near
    ? new MinHasher({ permutations: o.permutations, ngram: o.ngram, seed: o.seed, scope: o.on })
    : undefined
  const lsh = new Lsh(o.bands, o.rows)
  const kept = new Growable(o.near)
  const clusters = new Map<number, Cluster>()
  const stride = strideOf(o)
  const files = new InputFiles()
  let readBuf = Buffer.allocUnsafe(1 << 16)
  let exact = 0
  let near = 0
  let verified = 0
  let count = 0
  let keptCount = 0
  let recordKind: RecordKind | undefined
  /** Chunks whose index came from a kept state, and chunks replayed from their decisions. */
  let loaded = 0
  let replayed = 0
  /** The kept lines of the chunk being decided (replayed chunks' are in their stored parts already). */
  let writer: RecordWriter | undefined

  const keptLine = (j: number): Buffer => {
    const len = kept.lengths[j]!
    if (readBuf.length < len) readBuf = Buffer.allocUnsafe(len * 2)
    files.read(kept.files[j]!, readBuf, len, kept.offsets[j]!)
    return readBuf
  }
  const note = (rep: number, member: Omit<ClusterMember, "text">, line: () => string) => {
    let c = clusters.get(rep)
    if (c === undefined) {
      if (clusters.size >= MAX_CLUSTERS) return
      c = { kept: { index: kept.inputs[rep]!, text: "" }, duplicates: 0, members: [] }
      clusters.set(rep, c)
    }
    c.duplicates++
    if (c.members.length < MAX_MEMBERS) c.members.push({ ...member, text: preview(line()) })
  }
  const keep = (chunk: RecordChunk, file: number, rows: Uint32Array, at: number) => {
    const ordinal = keptCount++
    const s = rows[at + 1]!
    const len = rows[at + 2]!
    kept.ensure(ordinal)
    kept.files[ordinal] = file
    kept.offsets[ordinal] = chunk.fileOffset + s
    kept.lengths[ordinal] = len
    kept.inputs[ordinal] = chunk.firstLine + rows[at]!
    if ((rows[at + 3]! & SHINGLED) !== 0) {
      kept.sketches!.set(
        rows.subarray(at + HEAD + 4 + o.bands, at + HEAD + 4 + o.bands + SKETCH),
        ordinal * SKETCH,
      )
      lsh.add(ordinal, rows.subarray(at + HEAD + 4, at + HEAD + 4 + o.bands))
    }
    writer?.lineBytes(chunk.bytes(), s, s + len)
  }
  const textAt = (chunk: RecordChunk, rows: Uint32Array, at: number) => () =>
    chunk.bytes().toString("utf8", rows[at + 1]!, rows[at + 1]! + rows[at + 2]!)

  /** Decides each record of a chunk against the index, growing it; returns the decisions. */
  const decide = (
    chunk: RecordChunk,
    file: number,
    rows: Uint32Array,
  ): { decisions: Uint32Array; verified: number } => {
    const n = rows.length / stride
    const decisions = new Uint32Array(n * 2)
    const before = verified
    for (let r = 0, at = 0; r < n; r++, at += stride) {
      count++
      const index = chunk.firstLine + rows[at]!
      const ordinal = keptCount
      if (o.exact) {
        const prev = seen.addOrGet(rows, at + HEAD, ordinal)
        if (prev >= 0) {
          exact++
          note(prev, { index, kind: "exact" }, textAt(chunk, rows, at))
          decisions[r * 2] = EXACT
          decisions[r * 2 + 1] = prev
          continue
        }
      }
      if (mh !== undefined && other !== undefined && (rows[at + 3]! & SHINGLED) !== 0) {
        const keys = rows.subarray(at + HEAD + 4, at + HEAD + 4 + o.bands)
        const sketch = rows.subarray(at + HEAD + 4 + o.bands, at + HEAD + 4 + o.bands + SKETCH)
        const sketches = kept.sketches!
        let mine: Uint32Array | undefined
        let dupOf = -1
        let similarity = 0
        const floor = Math.max(0, o.threshold - 0.25) * SKETCH
        lsh.candidates(keys, (j) => {
          // a cheap estimate from the sketch first; the exact Jaccard of shingle sets decides
          let agree = 0
          for (let k = 0, p = j * SKETCH; k < SKETCH; k++) if (sketches[p + k] === sketch[k]) agree++
          if (agree < floor) return false
          verified++
          if (mine === undefined) {
            const s = rows[at + 1]!
            mh.shingleLine(chunk.bytes(), s, s + rows[at + 2]!)
            mine = mh.sortedSet()
          }
          const line = keptLine(j)
          other.shingleLine(line, 0, kept.lengths[j]!)
          const sim = jaccard(mine, other.sortedSet())
          if (sim < o.threshold) return false
          dupOf = j
          similarity = sim
          return true
        })
        if (dupOf >= 0) {
          near++
          // later exact copies of this record belong to the same cluster
          if (o.exact) seen.relabelLast(dupOf)
          const sim = Math.round(similarity * 1000) / 1000
          note(dupOf, { index, kind: "near", similarity: sim }, textAt(chunk, rows, at))
          decisions[r * 2] = NEAR | (Math.round(similarity * 1000) << 2)
          decisions[r * 2 + 1] = dupOf
          continue
        }
      }
      decisions[r * 2] = KEPT
      decisions[r * 2 + 1] = ordinal
      keep(chunk, file, rows, at)
    }
    return { decisions, verified: verified - before }
  }

  /**
   * The whole state after a chunk (indexes, kept records, counts, clusters) as
   * a directory of arrays and state.json: loading it is the same as replaying
   * every chunk up to there.
   */
  const saveState = (dir: string): string => {
    const n = keptCount
    const arrays: Record<string, Uint32Array | Int32Array | Float64Array> = {
      "seen-keys": seen.save().keys,
      "seen-values": seen.save().values,
      "lsh-keys": lsh.save().keys,
      "lsh-records": lsh.save().records,
      "kept-files": kept.files.subarray(0, n),
      "kept-offsets": kept.offsets.subarray(0, n),
      "kept-lengths": kept.lengths.subarray(0, n),
      "kept-inputs": kept.inputs.subarray(0, n),
      ...(kept.sketches === undefined ? {} : { "kept-sketches": kept.sketches.subarray(0, n * SKETCH) }),
    }
    for (const [name, a] of Object.entries(arrays))
      fs.writeFileSync(path.join(dir, `${name}.bin`), new Uint8Array(a.buffer, a.byteOffset, a.byteLength))
    const state = {
      exact,
      near,
      verified,
      count,
      keptCount,
      keptCapacity: kept.offsets.length,
      recordKind: recordKind ?? null,
      seenSize: seen.save().size,
      lshUsed: lsh.save().used,
      lshStamps: lsh.save().stamps,
      clusters: [...clusters.entries()],
    }
    fs.writeFileSync(path.join(dir, "state.json"), JSON.stringify(state))
    return dir
  }
  const loadState = (dir: string) => {
    const read = <A>(name: string, make: (b: ArrayBuffer) => A): A => {
      // straight into an ArrayBuffer of its own (a Buffer's may be pooled and unaligned)
      const fd = fs.openSync(path.join(dir, `${name}.bin`), "r")
      try {
        const b = new ArrayBuffer(fs.fstatSync(fd).size)
        if (readAt(fd, new Uint8Array(b), 0) !== b.byteLength)
          throw new Error(`${dir}/${name}.bin: shorter than its size`)
        return make(b)
      } finally {
        fs.closeSync(fd)
      }
    }
    const st = JSON.parse(fs.readFileSync(path.join(dir, "state.json"), "utf8")) as {
      exact: number
      near: number
      verified: number
      count: number
      keptCount: number
      keptCapacity: number
      recordKind: RecordKind | null
      seenSize: number
      lshUsed: number
      lshStamps: number
      clusters: Array<[number, Cluster]>
    }
    seen.load({
      keys: read("seen-keys", (b) => new Uint32Array(b)),
      values: read("seen-values", (b) => new Int32Array(b)),
      size: st.seenSize,
    })
    lsh.load({
      keys: read("lsh-keys", (b) => new Uint32Array(b)),
      records: read("lsh-records", (b) => new Int32Array(b)),
      used: st.lshUsed,
      stamps: st.lshStamps,
    })
    while (kept.offsets.length < st.keptCapacity) kept.ensure(kept.offsets.length)
    kept.files.set(read("kept-files", (b) => new Int32Array(b)))
    kept.offsets.set(read("kept-offsets", (b) => new Float64Array(b)))
    kept.lengths.set(read("kept-lengths", (b) => new Uint32Array(b)))
    kept.inputs.set(read("kept-inputs", (b) => new Int32Array(b)))
    if (kept.sketches !== undefined) kept.sketches.set(read("kept-sketches", (b) => new Uint32Array(b)))
    exact = st.exact
    near = st.near
    verified = st.verified
    count = st.count
    keptCount = st.keptCount
    if (st.recordKind !== null) recordKind = st.recordKind
    clusters.clear()
    for (const [rep, c] of st.clusters) clusters.set(rep, c)
  }

  /** Replays known decisions: the same index, output and report as deciding again. */
  const replay = (
    chunk: RecordChunk,
    file: number,
    rows: Uint32Array,
    decisions: Uint32Array,
    chunkVerified: number,
  ) => {
    verified += chunkVerified
    for (let r = 0, at = 0; at < rows.length; r++, at += stride) {
      count++
      const index = chunk.firstLine + rows[at]!
      const what = decisions[r * 2]! & 3
      const rep = decisions[r * 2 + 1]!
      if (what === EXACT) {
        exact++
        note(rep, { index, kind: "exact" }, textAt(chunk, rows, at))
      } else if (what === NEAR) {
        near++
        if (o.exact) seen.addOrGet(rows, at + HEAD, rep)
        const similarity = (decisions[r * 2]! >>> 2) / 1000
        note(rep, { index, kind: "near", similarity }, textAt(chunk, rows, at))
      } else {
        if (o.exact) seen.addOrGet(rows, at + HEAD, keptCount)
        keep(chunk, file, rows, at)
      }
    }
  }

  try {
    await withChunkCache(cache, async (chunks) => {
      const out = new RecordPartsWriter(output, chunks)
      const recipe = chunks.recipe(["records"])
      const chunkCount = partCount(input)
      let chain = recipe
      let signer: Signer | undefined
      // Chunks whose decisions are known are replayed only when needed: before a chunk to decide,
      // and at the end. Where the index after one of them was kept (the state before the last
      // chunk of an earlier run), it is loaded in place of replaying every chunk up to there.
      const pending: Array<{ chunk: RecordChunk; file: number; signed: string; dir: string }> = []
      let loadable: { at: number; dir: string } | undefined
      const signaturesOf = (signed: string): Uint32Array => readPartU32(openParts(signed), "signatures")
      const flush = () => {
        let from = 0
        if (loadable !== undefined) {
          loadState(loadable.dir)
          from = loadable.at
          loaded += from
        }
        replayed += pending.length - from
        for (const q of pending.slice(from)) {
          const v = JSON.parse(fs.readFileSync(path.join(q.dir, "summary.json"), "utf8")) as {
            verified: number
          }
          replay(
            q.chunk,
            q.file,
            signaturesOf(q.signed),
            readU32(path.join(q.dir, "decisions.u32")),
            v.verified,
          )
        }
        pending.length = 0
        loadable = undefined
      }
      const stateKey = (after: string) => chunkKey(recipe, after, "index")
      /** How many chunks the newest stored index along the chain covers. */
      let stateAt = 0
      for await (const chunk of recordChunks(input, digests, signal)) {
        const file = files.add(chunk.file)
        if (chunkCount !== undefined && chunkCount > 1 && chunk.index === chunkCount - 1) {
          // The index before the last chunk is where the next append picks up. It is written
          // again only once the chunks since the newest stored one are a 16th of the input's:
          // each append then loads an older index and replays the few chunks after it, instead
          // of writing the whole index every time.
          flush()
          if (chunk.index - stateAt >= Math.max(1, Math.floor(chunkCount / 16)))
            if (chunks.get(stateKey(chain)) === undefined)
              chunks.put(stateKey(chain), saveState(chunks.scratch()))
        }
        const signKey = chunkKey(recipe, chunk.digest, "signatures")
        let signed = chunks.get(signKey)
        let rows: Uint32Array | undefined
        if (signed === undefined) {
          signer ??= signerFor(o)
          const fresh = signChunk(chunk, o, signer)
          rows = fresh.rows
          signed = chunks.put(
            signKey,
            packParts(path.join(chunks.scratch(), "chunk"), [
              ["summary", JSON.stringify({ kind: fresh.kind })],
              ["signatures", bytesOf(rows)],
            ]),
          )
        }
        if (recordKind === undefined) {
          const kind = (JSON.parse(readPartText(openParts(signed), "summary")) as { kind: RecordKind | null })
            .kind
          if (kind !== null) recordKind = kind
        }
        const decideKey = chunkKey(recipe, chunk.digest, `decisions after ${chain}`)
        chain = chainState(chain, chunk.digest)
        let dir = chunks.get(decideKey)
        if (dir !== undefined) {
          reuse.hit()
          pending.push({ chunk, file, signed, dir })
          const state = chunks.get(stateKey(chain))
          if (state !== undefined) {
            loadable = { at: pending.length, dir: state }
            stateAt = chunk.index + 1
          }
        } else {
          reuse.miss()
          flush()
          // the chunk's result: its decisions, and its kept lines as the output's next part
          const fresh = path.join(chunks.scratch(), "chunk")
          fs.mkdirSync(fresh)
          writer = new RecordWriter(path.join(fresh, "records.jsonl"))
          let d: ReturnType<typeof decide>
          try {
            d = decide(chunk, file, rows ?? signaturesOf(signed))
          } finally {
            writer.close()
          }
          fs.writeFileSync(path.join(fresh, "decisions.u32"), bytesOf(d.decisions))
          fs.writeFileSync(
            path.join(fresh, "summary.json"),
            JSON.stringify({ verified: d.verified, kept: writer.count }),
          )
          writer = undefined
          dir = chunks.put(decideKey, fresh)
        }
        const keptHere = JSON.parse(fs.readFileSync(path.join(dir, "summary.json"), "utf8")) as {
          kept: number
        }
        out.link(dir, "records.jsonl", keptHere.kept, fs.statSync(path.join(dir, "records.jsonl")).size)
        progress(chunk.offset + chunk.size, total)
      }
      flush()
      out.close()
    })
    for (const [rep, c] of clusters) {
      const len = kept.lengths[rep]!
      ;(c.kept as { text: string }).text = preview(keptLine(rep).toString("utf8", 0, len))
    }
  } finally {
    files.close()
  }
  progress(total, total)
  return {
    recordKind,
    recordsIn: count,
    recordsOut: keptCount,
    duplicates: { exact, near },
    candidatesVerified: verified,
    clusters: [...clusters.values()],
    indexBytes: seen.bytes + kept.bytes + (o.near ? lsh.bytes : 0),
    index: { loaded, replayed },
  }
}

const readU32 = (file: string): Uint32Array => {
  const b = fs.readFileSync(file)
  const a = new Uint32Array(b.byteLength / 4)
  new Uint8Array(a.buffer).set(b)
  return a
}

/** Input files kept open at once for reading kept lines (a Records directory has one per part). */
const OPEN_FILES = 4096

/** The input's files by number, opened when a kept line is read from them (up to OPEN_FILES at a time). */
class InputFiles {
  private readonly paths: string[] = []
  private readonly open = new Map<number, number>()
  private limit = OPEN_FILES
  add(file: string): number {
    if (this.paths[this.paths.length - 1] !== file) this.paths.push(file)
    return this.paths.length - 1
  }
  private closeOldest(): void {
    const [first, oldest] = this.open.entries().next().value as [number, number]
    fs.closeSync(oldest)
    this.open.delete(first)
  }
  private openFile(file: number): number {
    for (;;) {
      try {
        return fs.openSync(this.paths[file]!, "r")
      } catch (e) {
        // the process's limit on open files is lower: keep fewer open from now on
        const code = (e as { code?: string }).code
        if ((code !== "EMFILE" && code !== "ENFILE") || this.open.size < 2) throw e
        this.limit = Math.max(1, Math.floor(this.open.size / 2))
        while (this.open.size >= this.limit) this.closeOldest()
      }
    }
  }
  read(file: number, buf: Buffer, length: number, position: number): void {
    let fd = this.open.get(file)
    if (fd === undefined) {
      while (this.open.size >= this.limit) this.closeOldest()
      fd = this.openFile(file)
    } else this.open.delete(file)
    this.open.set(file, fd)
    if (readAt(fd, buf.subarray(0, length), position) !== length)
      throw new Error(`${this.paths[file]}: ended before a kept line`)
  }
  close(): void {
    for (const fd of this.open.values()) fs.closeSync(fd)
    this.open.clear()
  }
}

export const run = (
  ctx: DedupeContext,
): Effect.Effect<{ records: { count: number; recordKind: RecordKind } }, Failure> =>
  Effect.tryPromise({
    try: async (signal) => {
      const o = ctx.params
      const problem = checkOptions(o)
      if (problem !== undefined) throw new StepError({ message: `dedupe: ${problem}` })
      const input = ctx.inputs.records
      const both = AbortSignal.any([signal, ctx.signal])
      const reuse = new ReuseCounter()
      const summary = await dedupeFile(
        input.path,
        ctx.output("records"),
        o,
        both,
        (d, t) => ctx.progress(d, t),
        ctx.chunks,
        reuse,
        digestsOf(input),
      )
      ctx.log(describeReuse("dedupe", "check", reuse.value))
      if (summary.index.loaded + summary.index.replayed > 0)
        ctx.log(
          `dedupe: the index of ${summary.index.loaded} chunks loaded as kept, ${summary.index.replayed} replayed`,
        )
      ctx.annotate({ chunks: reuse.value })
      const recordKind =
        summary.recordKind ??
        (input.meta as { recordKind?: RecordKind } | undefined)?.recordKind ??
        "instruction"
      const report = {
        step: "dedupe",
        recordsIn: summary.recordsIn,
        recordsOut: summary.recordsOut,
        duplicates: summary.duplicates,
        exact: o.exact
          ? {
              normalization: "NFKC, whitespace collapsed and trimmed per field",
              caseFold: o.caseFold,
              on: o.on,
              hash: "128-bit",
            }
          : false,
        near: o.near
          ? {
              on: o.on,
              shingles: `word ${o.ngram}-grams (NFKC, lower case, letters and digits)`,
              permutations: o.permutations,
              bands: o.bands,
              rows: o.rows,
              threshold: o.threshold,
              verification: "exact Jaccard similarity of the shingle sets (32-bit shingle hashes)",
              candidateProbabilityAtThreshold:
                Math.round(Lsh.candidateProbability(o.threshold, o.bands, o.rows) * 1e4) / 1e4,
              candidatesVerified: summary.candidatesVerified,
            }
          : false,
        keeps: "the first occurrence",
        clusters: summary.clusters,
      }
      fs.writeFileSync(ctx.output("report"), `${JSON.stringify(report, null, 2)}\n`)
      ctx.log(
        `dedupe: ${summary.recordsIn} records in, ${summary.recordsOut} out (${summary.duplicates.exact} exact, ${summary.duplicates.near} near duplicates)`,
      )
      return { records: { count: summary.recordsOut, recordKind } }
    },
    catch: (e) =>
      e instanceof StepError ? e : new StepError({ message: e instanceof Error ? e.message : String(e) }),
  })

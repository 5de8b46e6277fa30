/**
 * The dedupe step, one streaming pass: each record is kept unless its
 * fingerprint was seen (exact) or an earlier kept record is similar enough
 * (near). Kept lines are copied byte for byte. Memory holds per kept record
 * its offset, a fingerprint slot, and, for near duplicates, its LSH entries
 * and a 32-value sketch; never the texts.
 */
import * as fs from "node:fs"
import { Effect } from "effect"
import { type Failure, StepError } from "../../core/Plugin.ts"
import { type CanonicalRecord, forEachLineBytesAsync, kindOf, type RecordKind } from "../ingest/Records.ts"
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
      this.offsets.byteLength +
      this.lengths.byteLength +
      this.inputs.byteLength +
      (this.sketches?.byteLength ?? 0)
    )
  }
}

export const checkOptions = (o: DedupeOptions): string | undefined => dedupeProblem(o)?.message

export const dedupeFile = async (
  input: string,
  output: string,
  o: DedupeOptions,
  signal: AbortSignal = new AbortController().signal,
  progress: (done: number, total: number) => void = () => {},
): Promise<DedupeSummary> => {
  const total = fs.statSync(input).size
  const writer = new RecordWriter(output)
  const fingerprinter = new Fingerprinter(o.on, o.caseFold)
  const seen = new Seen()
  const fp = new Uint32Array(4)
  const mh = o.near
    ? new MinHasher({ permutations: o.permutations, ngram: o.ngram, seed: o.seed, scope: o.on })
    : undefined
  const other = o.near
    ? new MinHasher({ permutations: o.permutations, ngram: o.ngram, seed: o.seed, scope: o.on })
    : undefined
  const lsh = new Lsh(o.bands, o.rows)
  const sig = new Uint32Array(o.permutations)
  const keys = new Uint32Array(o.bands)
  const kept = new Growable(o.near)
  const clusters = new Map<number, Cluster>()
  const fd = o.near ? fs.openSync(input, "r") : -1
  let readBuf = Buffer.allocUnsafe(1 << 16)
  let exact = 0
  let near = 0
  let verified = 0
  let count = 0
  let recordKind: RecordKind | undefined

  const keptLine = (j: number): Buffer => {
    const len = kept.lengths[j]!
    if (readBuf.length < len) readBuf = Buffer.allocUnsafe(len * 2)
    fs.readSync(fd, readBuf, 0, len, kept.offsets[j]!)
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

  try {
    await forEachLineBytesAsync(
      input,
      (buf, s, e, index, offset) => {
        if (e === s) return
        count++
        if ((index & 4095) === 0) progress(offset, total)
        if (recordKind === undefined) recordKind = kindOf(JSON.parse(buf.toString("utf8", s, e)))
        const ordinal = writer.count
        if (o.exact) {
          fingerprinter.line(buf, s, e, fp, 0)
          const prev = seen.addOrGet(fp, 0, ordinal)
          if (prev >= 0) {
            exact++
            note(prev, { index, kind: "exact" }, () => buf.toString("utf8", s, e))
            return
          }
        }
        let shingled = false
        if (mh !== undefined && other !== undefined && mh.shingleLine(buf, s, e) > 0) {
          shingled = true
          mh.signature(sig)
          lsh.keysOf(sig, keys)
          const sketches = kept.sketches!
          let mine: Uint32Array | undefined
          let dupOf = -1
          let similarity = 0
          const floor = Math.max(0, o.threshold - 0.25) * SKETCH
          lsh.candidates(keys, (j) => {
            // a cheap estimate from the sketch first; the exact Jaccard of shingle sets decides
            let agree = 0
            for (let k = 0, at = j * SKETCH; k < SKETCH; k++) if (sketches[at + k] === sig[k]) agree++
            if (agree < floor) return false
            verified++
            mine ??= mh.sortedSet()
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
            note(dupOf, { index, kind: "near", similarity: Math.round(similarity * 1000) / 1000 }, () =>
              buf.toString("utf8", s, e),
            )
            return
          }
        }
        kept.ensure(ordinal)
        kept.offsets[ordinal] = offset
        kept.lengths[ordinal] = e - s
        kept.inputs[ordinal] = index
        if (shingled) {
          kept.sketches!.set(sig.subarray(0, SKETCH), ordinal * SKETCH)
          lsh.add(ordinal, keys)
        }
        writer.lineBytes(buf, s, e)
      },
      signal,
    )
    for (const [rep, c] of clusters) {
      const len = kept.lengths[rep]!
      const line = o.near ? keptLine(rep).toString("utf8", 0, len) : readAt(input, kept.offsets[rep]!, len)
      ;(c.kept as { text: string }).text = preview(line)
    }
  } finally {
    writer.close()
    if (fd >= 0) fs.closeSync(fd)
  }
  progress(total, total)
  return {
    recordKind,
    recordsIn: count,
    recordsOut: writer.count,
    duplicates: { exact, near },
    candidatesVerified: verified,
    clusters: [...clusters.values()],
    indexBytes: seen.bytes + kept.bytes + (o.near ? lsh.bytes : 0),
  }
}

const readAt = (file: string, offset: number, length: number): string => {
  const fd = fs.openSync(file, "r")
  try {
    const b = Buffer.allocUnsafe(length)
    fs.readSync(fd, b, 0, length, offset)
    return b.toString("utf8")
  } finally {
    fs.closeSync(fd)
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
      const summary = await dedupeFile(input.path, ctx.output("records"), o, both, (d, t) =>
        ctx.progress(d, t),
      )
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

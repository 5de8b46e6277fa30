/**
 * The split step, one streaming pass. Each record's split comes from a
 * seeded hash of its normalised example text (so identical examples always
 * share a split), or of its `groupBy` value (so a group stays together).
 *
 * Stratification and stability: an exact per-stratum quota (rank the
 * records of a stratum by hash, cut at 80%) would move records whenever the
 * stratum grows, so it is not offered. With per-record thresholds every
 * stratum is split in the target ratios in expectation, independently of
 * the others: the share of a split with ratio r in a stratum of n records
 * (or groups) has a standard deviation of sqrt(r(1-r)/n), about 2.3 points
 * for r = 0.1 and n = 167 (a Bitext intent). `stratifyBy` makes the step
 * check the field on every record and report each stratum's realised shares
 * next to the targets, with the largest deviation, so a skew is seen.
 *
 * Leaks: a fingerprint of each record's normalised text (whole example, or
 * prompt only) is kept per split (16 bytes each); one seen in two splits is
 * a leak, which fails the step or is reported, per `onLeak`.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import { canonicalJson } from "../../core/Canonical.ts"
import {
  bytesOf,
  type ChunkCache,
  chunkKey,
  describeReuse,
  ReuseCounter,
  withChunkCache,
} from "../../core/Chunks.ts"
import { type Failure, StepError } from "../../core/Plugin.ts"
import { Fingerprinter } from "../dedupe/Fingerprint.ts"
import { Seen } from "../dedupe/Seen.ts"
import { recordFields } from "../dedupe/TextFields.ts"
import {
  digestsOf,
  type RecordChunk,
  RecordPartsWriter,
  recordBytes,
  recordChunks,
} from "../ingest/RecordParts.ts"
import { type CanonicalRecord, kindOf, type RecordKind } from "../ingest/Records.ts"
import { RecordWriter } from "../ingest/RecordWriter.ts"
import { checkRatios, type Ratios, SPLITS, type SplitName, splitOf, uniform } from "./Assign.ts"
import type { SplitContext, SplitParams } from "./index.ts"

export interface SplitSummary {
  readonly recordKind: RecordKind | undefined
  readonly records: number
  readonly counts: Record<SplitName, number>
  readonly groups?: {
    readonly field: string
    readonly count: number
    readonly perSplit: Record<SplitName, number>
  }
  readonly strata?: {
    readonly field: string
    readonly values: ReadonlyArray<{ value: unknown; count: number } & Record<SplitName, number>>
    readonly maxDeviation: number
  }
  readonly leaks: {
    readonly on: "example" | "prompt"
    readonly trainValidation: number
    readonly trainTest: number
    readonly validationTest: number
    readonly examples: ReadonlyArray<{ index: number; splits: SplitName[]; text: string }>
  }
}

/** A step failure that names the record (0-based index = line - 1) and field. */
export class SplitError extends Error {
  constructor(
    message: string,
    readonly line?: number,
    readonly field?: string,
  ) {
    super(message)
  }
}

const get = (r: unknown, path: ReadonlyArray<string>): unknown => {
  let v = r
  for (const k of path) {
    if (v === null || typeof v !== "object") return undefined
    v = (v as Record<string, unknown>)[k]
  }
  return v
}

const MAX_STRATA = 10_000

const pairOf = (a: SplitName, b: SplitName): "trainValidation" | "trainTest" | "validationTest" => {
  const both = new Set([a, b])
  return both.has("train") ? (both.has("validation") ? "trainValidation" : "trainTest") : "validationTest"
}
const BIT: Record<SplitName, number> = { train: 1, validation: 2, test: 4 }

const keyOf = (text: string, out: Uint32Array): void => {
  const d = createHash("md5").update(text).digest()
  out[0] = d.readUInt32LE(0)
  out[1] = d.readUInt32LE(4)
  out[2] = d.readUInt32LE(8)
  out[3] = d.readUInt32LE(12)
}

const preview = (r: CanonicalRecord): string => {
  const t = recordFields(r, "example")
    .filter(([f]) => f !== 7)
    .map(([, s]) => s)
    .join(" | ")
  return t.length > 200 ? `${t.slice(0, 200)}…` : t
}

/**
 * Per record of a chunk, as its chunk entry keeps it: the line (relative to
 * the chunk), the split, the leak fingerprint and, with groupBy, the group key.
 */
const WORDS = 6
const GROUP_WORDS = 4

interface ChunkResult {
  readonly kind: RecordKind | null
  readonly records: Uint32Array
  /** Stratum (canonical JSON of the value) to its value and counts, in first-seen order. */
  readonly strata: ReadonlyArray<[string, unknown, Record<SplitName, number>]>
  /** Records in each of its parts. */
  readonly counts: Record<SplitName, number>
}

const SPLIT_INDEX: Record<SplitName, number> = { train: 0, validation: 1, test: 2 }

/** Assigns one chunk's records: writes the three parts under `dir` and returns what the merge needs. */
interface Printers {
  readonly content: Fingerprinter
  readonly leakPrint: Fingerprinter
}

const printersFor = (o: SplitParams): Printers => {
  const content = new Fingerprinter("example", false)
  return { content, leakPrint: o.leakOn === "example" ? content : new Fingerprinter("prompt", false) }
}

const splitChunk = (chunk: RecordChunk, dir: string, o: SplitParams, printers: Printers): ChunkResult => {
  const ratios: Ratios = o.ratios
  const writers = {
    train: new RecordWriter(path.join(dir, "train.jsonl")),
    validation: new RecordWriter(path.join(dir, "validation.jsonl")),
    test: new RecordWriter(path.join(dir, "test.jsonl")),
  }
  const { content, leakPrint } = printers
  const key = new Uint32Array(4)
  const leakKey = new Uint32Array(4)
  const groupPath = o.groupBy?.split(".")
  const strataPath = o.stratifyBy?.split(".")
  const strata = new Map<string, [string, unknown, Record<SplitName, number>]>()
  const words = WORDS + (groupPath === undefined ? 0 : GROUP_WORDS)
  const rows: number[] = []
  let kind: RecordKind | null = null
  const buf = chunk.bytes()
  let s = 0
  let rel = 0
  try {
    while (s < buf.length) {
      let e = buf.indexOf(10, s)
      if (e < 0) e = buf.length
      const index = chunk.firstLine + rel
      if (e > s) {
        let record: CanonicalRecord | undefined
        const parse = () => {
          record ??= JSON.parse(buf.toString("utf8", s, e)) as CanonicalRecord
          return record
        }
        if (kind === null) kind = kindOf(parse())
        let u: number
        if (groupPath !== undefined) {
          const g = get(parse(), groupPath)
          if (g === undefined)
            throw new SplitError(
              `split: record ${index + 1} has no field "${o.groupBy}" to group by`,
              index + 1,
              o.groupBy,
            )
          keyOf(`g${canonicalJson(g)}`, key)
          u = uniform(key, 0, o.seed)
        } else {
          content.line(buf, s, e, key, 0)
          u = uniform(key, 0, o.seed)
        }
        const split = splitOf(u, ratios)
        if (strataPath !== undefined) {
          const v = get(parse(), strataPath)
          if (v === undefined)
            throw new SplitError(
              `split: record ${index + 1} has no field "${o.stratifyBy}" to stratify by`,
              index + 1,
              o.stratifyBy,
            )
          const k = canonicalJson(v)
          let st = strata.get(k)
          if (st === undefined) {
            st = [k, v, { train: 0, validation: 0, test: 0 }]
            strata.set(k, st)
          }
          st[2][split]++
        }
        if (leakPrint === content && groupPath === undefined) leakKey.set(key)
        else leakPrint.line(buf, s, e, leakKey, 0)
        rows.push(rel, SPLIT_INDEX[split], leakKey[0]!, leakKey[1]!, leakKey[2]!, leakKey[3]!)
        if (groupPath !== undefined) rows.push(key[0]!, key[1]!, key[2]!, key[3]!)
        writers[split].lineBytes(buf, s, e)
      }
      s = e + 1
      rel++
    }
  } finally {
    for (const w of Object.values(writers)) w.close()
  }
  if (rows.length % words !== 0) throw new Error("split: chunk rows out of step")
  return {
    kind,
    records: Uint32Array.from(rows),
    strata: [...strata.values()],
    counts: { train: writers.train.count, validation: writers.validation.count, test: writers.test.count },
  }
}

/** A chunk's result, a directory: summary.json, records.u32 (the rows) and its three parts. */
const storeChunk = (dir: string, r: ChunkResult): string => {
  fs.writeFileSync(path.join(dir, "records.u32"), bytesOf(r.records))
  fs.writeFileSync(
    path.join(dir, "summary.json"),
    JSON.stringify({ kind: r.kind, strata: r.strata, counts: r.counts }),
  )
  return dir
}

const readChunk = (dir: string): ChunkResult => {
  const b = fs.readFileSync(path.join(dir, "records.u32"))
  const records = new Uint32Array(b.byteLength / 4)
  new Uint8Array(records.buffer).set(b)
  return {
    ...(JSON.parse(fs.readFileSync(path.join(dir, "summary.json"), "utf8")) as Omit<ChunkResult, "records">),
    records,
  }
}

/** The bytes of line `rel` of a chunk (for a leak's preview). */
const lineOf = (chunk: RecordChunk, rel: number): string => {
  const bytes = chunk.bytes()
  let s = 0
  for (let i = 0; i < rel; i++) s = bytes.indexOf(10, s) + 1
  let e = bytes.indexOf(10, s)
  if (e < 0) e = bytes.length
  return bytes.toString("utf8", s, e)
}

/**
 * Splits a Records file chunk by chunk (core/Chunks.ts). A record's split
 * depends on nothing but the record, so each chunk is assigned on its own and
 * its parts, counts and per-record fingerprints are kept under the chunk's
 * digest; an append assigns only the new records. What spans chunks (leaks
 * between splits, group counts, strata) is merged from the kept
 * fingerprints in record order, so the outputs and the report are the same
 * bytes as a full run's.
 */
export const splitFile = async (
  input: string,
  outputs: Record<SplitName, string>,
  o: SplitParams,
  signal: AbortSignal = new AbortController().signal,
  progress: (done: number, total: number) => void = () => {},
  cache?: ChunkCache,
  reuse: ReuseCounter = new ReuseCounter(),
  digests?: ReadonlyMap<string, string>,
): Promise<SplitSummary> => {
  const ratios: Ratios = o.ratios
  const problem = checkRatios(ratios)
  if (problem !== undefined) throw new SplitError(`split: ${problem}`)
  const total = recordBytes(input)
  const seen = new Seen()
  const groups = o.groupBy === undefined ? undefined : new Seen()
  const groupsPerSplit: Record<SplitName, number> = { train: 0, validation: 0, test: 0 }
  const strata = new Map<string, { value: unknown; counts: Record<SplitName, number> }>()
  const leaks = { trainValidation: 0, trainTest: 0, validationTest: 0 }
  const leakExamples: Array<{ index: number; splits: SplitName[]; text: string }> = []
  const counts: Record<SplitName, number> = { train: 0, validation: 0, test: 0 }
  const words = WORDS + (o.groupBy === undefined ? 0 : GROUP_WORDS)
  const leakKey = new Uint32Array(4)
  const key = new Uint32Array(4)
  let records = 0
  let recordKind: RecordKind | undefined
  await withChunkCache(cache, async (chunks) => {
    const writers = {
      train: new RecordPartsWriter(outputs.train, chunks),
      validation: new RecordPartsWriter(outputs.validation, chunks),
      test: new RecordPartsWriter(outputs.test, chunks),
    }
    try {
      const recipe = chunks.recipe(["records"])
      let printers: Printers | undefined
      for await (const chunk of recordChunks(input, digests, signal)) {
        const k = chunkKey(recipe, chunk.digest)
        let dir = chunks.get(k)
        if (dir !== undefined) reuse.hit()
        else {
          reuse.miss()
          const fresh = path.join(chunks.scratch(), "chunk")
          fs.mkdirSync(fresh)
          printers ??= printersFor(o)
          dir = chunks.put(k, storeChunk(fresh, splitChunk(chunk, fresh, o, printers)))
        }
        const r = readChunk(dir)
        for (const x of SPLITS)
          writers[x].link(dir, `${x}.jsonl`, r.counts[x], fs.statSync(path.join(dir, `${x}.jsonl`)).size)
        if (recordKind === undefined && r.kind !== null) recordKind = r.kind
        for (const [k2, value, c] of r.strata) {
          let st = strata.get(k2)
          if (st === undefined && strata.size < MAX_STRATA) {
            st = { value, counts: { train: 0, validation: 0, test: 0 } }
            strata.set(k2, st)
          }
          if (st !== undefined) for (const x of SPLITS) st.counts[x] += c[x]
        }
        const rows = r.records
        for (let at = 0; at < rows.length; at += words) {
          records++
          const split = SPLITS[rows[at + 1]!]!
          counts[split]++
          if (groups !== undefined) {
            key.set(rows.subarray(at + WORDS, at + WORDS + GROUP_WORDS))
            if (groups.addOrGet(key, 0, 1) < 0) groupsPerSplit[split]++
          }
          // leaks: the same normalised text in two splits
          leakKey.set(rows.subarray(at + 2, at + 6))
          const before = seen.addOrGet(leakKey, 0, BIT[split])
          if (before >= 0 && (before & BIT[split]) === 0) {
            const mask = before | BIT[split]
            seen.setFound(mask)
            for (const x of SPLITS) if ((before & BIT[x]) !== 0) leaks[pairOf(x, split)]++
            if (leakExamples.length < 5)
              leakExamples.push({
                index: chunk.firstLine + rows[at]!,
                splits: SPLITS.filter((x) => (mask & BIT[x]) !== 0),
                text: preview(JSON.parse(lineOf(chunk, rows[at]!)) as CanonicalRecord),
              })
          }
        }
        progress(chunk.offset + chunk.size, total)
      }
    } finally {
      for (const w of Object.values(writers)) w.close()
    }
  })
  progress(total, total)
  let strataSummary: SplitSummary["strata"]
  if (o.stratifyBy !== undefined) {
    let maxDeviation = 0
    const values = [...strata.values()]
      .map(({ value, counts: c }) => {
        const n = c.train + c.validation + c.test
        for (const x of SPLITS) maxDeviation = Math.max(maxDeviation, Math.abs(c[x] / n - ratios[x]))
        return { value, count: n, ...c }
      })
      .sort((a, b) => b.count - a.count)
    strataSummary = { field: o.stratifyBy, values, maxDeviation: Math.round(maxDeviation * 1e4) / 1e4 }
  }
  return {
    recordKind,
    records,
    counts,
    ...(groups === undefined
      ? {}
      : { groups: { field: o.groupBy!, count: groups.size, perSplit: groupsPerSplit } }),
    ...(strataSummary === undefined ? {} : { strata: strataSummary }),
    leaks: { on: o.leakOn, ...leaks, examples: leakExamples },
  }
}

export const run = (
  ctx: SplitContext,
): Effect.Effect<Record<SplitName, { count: number; recordKind: RecordKind }>, Failure> =>
  Effect.tryPromise({
    try: async (signal) => {
      const o = ctx.params
      const input = ctx.inputs.records
      const reuse = new ReuseCounter()
      const summary = await splitFile(
        input.path,
        { train: ctx.output("train"), validation: ctx.output("validation"), test: ctx.output("test") },
        o,
        AbortSignal.any([signal, ctx.signal]),
        (d, t) => ctx.progress(d, t),
        ctx.chunks,
        reuse,
        digestsOf(input),
      )
      ctx.log(describeReuse("split", "assign", reuse.value))
      ctx.annotate({ chunks: reuse.value })
      const recordKind =
        summary.recordKind ??
        (input.meta as { recordKind?: RecordKind } | undefined)?.recordKind ??
        "instruction"
      const n = Math.max(summary.records, 1)
      const report = {
        step: "split",
        seed: o.seed,
        ratios: o.ratios,
        assignment:
          o.groupBy === undefined
            ? "seeded hash of the normalised example text: stable when records are added"
            : `seeded hash of the "${o.groupBy}" value: a group stays on one side, stable when records are added`,
        records: summary.records,
        counts: summary.counts,
        shares: Object.fromEntries(SPLITS.map((s) => [s, Math.round((summary.counts[s] / n) * 1e4) / 1e4])),
        ...(summary.groups === undefined ? {} : { groups: summary.groups }),
        ...(summary.strata === undefined
          ? {}
          : {
              strata: {
                ...summary.strata,
                note: "per-record (or per-group) hash thresholds: each stratum is split in the target ratios in expectation; a split of ratio r in a stratum of n has a standard deviation of sqrt(r(1-r)/n)",
              },
            }),
        leaks: summary.leaks,
      }
      fs.writeFileSync(ctx.output("report"), `${JSON.stringify(report, null, 2)}\n`)
      const l = summary.leaks
      const leaked = l.trainValidation + l.trainTest + l.validationTest
      ctx.log(
        `split: ${summary.counts.train} train, ${summary.counts.validation} validation, ${summary.counts.test} test`,
      )
      if (leaked > 0 && o.onLeak === "fail") {
        const ex = l.examples[0]
        throw new SplitError(
          `split: ${leaked} example(s) appear in more than one split (train/validation ${l.trainValidation}, train/test ${l.trainTest}, validation/test ${l.validationTest})` +
            (ex === undefined
              ? ""
              : `, e.g. record ${ex.index + 1} in ${ex.splits.join(" and ")}: ${JSON.stringify(ex.text.slice(0, 80))}`) +
            `. They share their ${o.leakOn === "prompt" ? "prompt" : "text"} but not their ${o.groupBy === undefined ? "content" : `"${o.groupBy}"`}: dedupe first, group by another field, or set onLeak: "report" to accept them`,
          ex === undefined ? undefined : ex.index + 1,
        )
      }
      const meta = { recordKind }
      return {
        train: { count: summary.counts.train, ...meta },
        validation: { count: summary.counts.validation, ...meta },
        test: { count: summary.counts.test, ...meta },
      }
    },
    catch: (e) =>
      e instanceof SplitError
        ? new StepError({
            message: e.message,
            file: ctx.inputs.records.path,
            ...(e.line === undefined ? {} : { line: e.line }),
            ...(e.field === undefined ? {} : { field: e.field }),
          })
        : new StepError({ message: e instanceof Error ? e.message : String(e) }),
  })

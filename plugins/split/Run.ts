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
import { Effect } from "effect"
import { canonicalJson } from "../../core/Canonical.ts"
import { type Failure, StepError } from "../../core/Plugin.ts"
import { Fingerprinter } from "../dedupe/Fingerprint.ts"
import { Seen } from "../dedupe/Seen.ts"
import { recordFields } from "../dedupe/TextFields.ts"
import { type CanonicalRecord, forEachLineBytesAsync, kindOf, type RecordKind } from "../ingest/Records.ts"
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

export const splitFile = async (
  input: string,
  outputs: Record<SplitName, string>,
  o: SplitParams,
  signal: AbortSignal = new AbortController().signal,
  progress: (done: number, total: number) => void = () => {},
): Promise<SplitSummary> => {
  const ratios: Ratios = o.ratios
  const problem = checkRatios(ratios)
  if (problem !== undefined) throw new SplitError(`split: ${problem}`)
  const total = fs.statSync(input).size
  const writers = {
    train: new RecordWriter(outputs.train),
    validation: new RecordWriter(outputs.validation),
    test: new RecordWriter(outputs.test),
  }
  const content = new Fingerprinter("example", false)
  const leakPrint = o.leakOn === "example" ? content : new Fingerprinter("prompt", false)
  const key = new Uint32Array(4)
  const leakKey = new Uint32Array(4)
  const seen = new Seen()
  const groups = o.groupBy === undefined ? undefined : new Seen()
  const groupsPerSplit: Record<SplitName, number> = { train: 0, validation: 0, test: 0 }
  const groupPath = o.groupBy?.split(".")
  const strataPath = o.stratifyBy?.split(".")
  const strata = new Map<string, { value: unknown; counts: Record<SplitName, number> }>()
  const leaks = { trainValidation: 0, trainTest: 0, validationTest: 0 }
  const leakExamples: Array<{ index: number; splits: SplitName[]; text: string }> = []
  let records = 0
  let recordKind: RecordKind | undefined
  try {
    await forEachLineBytesAsync(
      input,
      (buf, s, e, index, offset) => {
        if (e === s) return
        if ((index & 4095) === 0) progress(offset, total)
        records++
        let record: CanonicalRecord | undefined
        const parse = () => {
          record ??= JSON.parse(buf.toString("utf8", s, e)) as CanonicalRecord
          return record
        }
        if (recordKind === undefined) recordKind = kindOf(parse())
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
        if (groups !== undefined && groups.addOrGet(key, 0, 1) < 0) groupsPerSplit[split]++
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
          if (st === undefined && strata.size < MAX_STRATA) {
            st = { value: v, counts: { train: 0, validation: 0, test: 0 } }
            strata.set(k, st)
          }
          if (st !== undefined) st.counts[split]++
        }
        // leaks: the same normalised text in two splits
        if (leakPrint === content && groupPath === undefined) {
          leakKey.set(key)
        } else leakPrint.line(buf, s, e, leakKey, 0)
        const before = seen.addOrGet(leakKey, 0, BIT[split])
        if (before >= 0 && (before & BIT[split]) === 0) {
          const mask = before | BIT[split]
          seen.setFound(mask)
          for (const x of SPLITS) if ((before & BIT[x]) !== 0) leaks[pairOf(x, split)]++
          if (leakExamples.length < 5)
            leakExamples.push({
              index,
              splits: SPLITS.filter((x) => (mask & BIT[x]) !== 0),
              text: preview(parse()),
            })
        }
        writers[split].lineBytes(buf, s, e)
      },
      signal,
    )
  } finally {
    for (const w of Object.values(writers)) w.close()
  }
  progress(total, total)
  const counts = {
    train: writers.train.count,
    validation: writers.validation.count,
    test: writers.test.count,
  }
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
      const summary = await splitFile(
        input.path,
        { train: ctx.output("train"), validation: ctx.output("validation"), test: ctx.output("test") },
        o,
        AbortSignal.any([signal, ctx.signal]),
        (d, t) => ctx.progress(d, t),
      )
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

/**
 * Training data: a Tokens directory (plugins/kinds.ts) read as typed
 * arrays, cut into padded micro-batches. Labels are unshifted (Hugging Face
 * convention): position t predicts labels[t + 1]; -100 is ignored, and so is
 * the step from one packed example into the next.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { type TokenArrays as Arrays, joinParts } from "../tokenize/TokensFile.ts"
import type { TokenBatch } from "./Llama.ts"
import { mixSeed, Rng } from "./Rng.ts"

export interface TokenSet {
  readonly dir: string
  readonly count: number
  readonly tokens: Uint32Array
  readonly labels: Int32Array
  readonly offsets: Uint32Array
  readonly segments?: Uint32Array
  readonly padId: number
}

export class TokenDataError extends Error {
  override readonly name = "TokenDataError"
}

const u32 = (file: string): Uint32Array => {
  const b = fs.readFileSync(file)
  if (b.length % 4 !== 0)
    throw new TokenDataError(`${file}: ${b.length} bytes is not a whole number of 32-bit values`)
  const copy = new Uint8Array(b.length)
  copy.set(b)
  return new Uint32Array(copy.buffer)
}

/**
 * Reads one flat set of arrays (a flat Tokens directory, or one part of a
 * sharded one) and checks them; `at` names the directory in errors and
 * `file` names one of its files.
 */
const readArrays = (
  dir: string,
  packed: boolean,
  vocabSize: number,
  at: string,
  file: (f: string) => string,
  count: { readonly value: number | undefined; readonly says: string },
): Arrays => {
  for (const f of ["tokens.u32", "labels.i32", "offsets.u32"])
    if (!fs.existsSync(path.join(dir, f))) throw new TokenDataError(`${at}: no ${f} (not a Tokens directory)`)
  const tokens = u32(path.join(dir, "tokens.u32"))
  const labels = new Int32Array(u32(path.join(dir, "labels.i32")).buffer)
  const offsets = u32(path.join(dir, "offsets.u32"))
  const n = offsets.length - 1
  if (n < 0 || (count.value !== undefined && count.value !== n))
    throw new TokenDataError(
      `${file("offsets.u32")} holds ${offsets.length} values, ${count.says} ${count.value}`,
    )
  if (labels.length !== tokens.length)
    throw new TokenDataError(`${file("labels.i32")} has ${labels.length} values, tokens.u32 ${tokens.length}`)
  if (offsets[0] !== 0 || offsets[n] !== tokens.length)
    throw new TokenDataError(`${file("offsets.u32")} must start at 0 and end at ${tokens.length}`)
  for (let i = 0; i < n; i++)
    if ((offsets[i + 1] as number) < (offsets[i] as number))
      throw new TokenDataError(`${file("offsets.u32")} decreases at sequence ${i}`)
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] as number
    if (t >= vocabSize)
      throw new TokenDataError(
        `${at}: token id ${t} at position ${i} is outside the model's vocabulary of ${vocabSize}`,
      )
    const l = labels[i] as number
    if (l !== -100 && (l < 0 || l >= vocabSize))
      throw new TokenDataError(
        `${at}: label ${l} at position ${i} is outside the model's vocabulary of ${vocabSize}`,
      )
  }
  let segments: Uint32Array | undefined
  if (packed || fs.existsSync(path.join(dir, "segments.u32"))) {
    if (!fs.existsSync(path.join(dir, "segments.u32")))
      throw new TokenDataError(`${at}: no segments.u32 (the set is packed)`)
    segments = u32(path.join(dir, "segments.u32"))
    if (segments.length !== tokens.length)
      throw new TokenDataError(
        `${file("segments.u32")} has ${segments.length} values, tokens.u32 ${tokens.length}`,
      )
  }
  return { tokens, labels, offsets, segments }
}

interface PartEntry {
  readonly dir: string
  readonly count: number
  readonly tokens: number
}

/** Reads each part of a sharded Tokens directory and joins them: offsets rebased to global positions. */
const readParts = (
  dir: string,
  parts: ReadonlyArray<PartEntry>,
  meta: { count?: number; tokens?: number },
  packed: boolean,
  vocabSize: number,
): Arrays => {
  if (!Array.isArray(parts)) throw new TokenDataError(`${dir}: meta.json "parts" is not a list`)
  // Packed when meta.json says so or any part holds segments: then every part must.
  const segmented = packed || parts.some((p) => fs.existsSync(path.join(dir, String(p.dir), "segments.u32")))
  const read = parts.map((p) => {
    const at = path.join(dir, String(p.dir))
    if (!fs.existsSync(at))
      throw new TokenDataError(`${dir}: meta.json lists part ${p.dir}, which is missing`)
    const a = readArrays(at, segmented, vocabSize, at, (f) => path.join(at, f), {
      value: p.count,
      says: `meta.json says the count of ${p.dir} is`,
    })
    if (a.tokens.length !== p.tokens)
      throw new TokenDataError(
        `${path.join(at, "tokens.u32")} holds ${a.tokens.length} tokens, meta.json says ${p.dir} holds ${p.tokens}`,
      )
    return a
  })
  const count = read.reduce((n, a) => n + a.offsets.length - 1, 0)
  const total = read.reduce((n, a) => n + a.tokens.length, 0)
  if (meta.count !== undefined && meta.count !== count)
    throw new TokenDataError(`${dir}: meta.json says count ${meta.count}, its parts hold ${count}`)
  if (meta.tokens !== undefined && meta.tokens !== total)
    throw new TokenDataError(`${dir}: meta.json says tokens ${meta.tokens}, its parts hold ${total}`)
  if (total > 0xffffffff)
    throw new TokenDataError(`${dir}: ${total} tokens is more than 2^32: offsets cannot address them`)
  return joinParts(read, count, total, segmented)
}

/**
 * Reads and checks a Tokens directory against the model's vocabulary: flat,
 * or sharded into the parts meta.json lists (joined in that order).
 */
export const readTokens = (dir: string, vocabSize: number): TokenSet => {
  const file = (f: string) => path.join(dir, f)
  if (!fs.existsSync(file("meta.json")))
    throw new TokenDataError(`${dir}: no meta.json (not a Tokens directory)`)
  const meta = JSON.parse(fs.readFileSync(file("meta.json"), "utf-8")) as {
    count?: number
    tokens?: number
    padId?: number
    packed?: boolean
    parts?: ReadonlyArray<PartEntry>
  }
  const { tokens, labels, offsets, segments } =
    meta.parts === undefined
      ? readArrays(dir, meta.packed === true, vocabSize, dir, (f) => `${dir}: ${f}`, {
          value: meta.count,
          says: "meta.json says count",
        })
      : readParts(dir, meta.parts, meta, meta.packed === true, vocabSize)
  return {
    dir,
    count: offsets.length - 1,
    tokens,
    labels,
    offsets,
    ...(segments ? { segments } : {}),
    padId: typeof meta.padId === "number" && meta.padId < vocabSize ? meta.padId : 0,
  }
}

export interface MicroBatch {
  readonly batch: TokenBatch
  /** Per position, the id it must predict, or -1. */
  readonly targets: Int32Array
  /** Non-padding tokens in the batch. */
  readonly tokens: number
  /** Positions with a target. */
  readonly targetCount: number
}

/** Pads the sequences `indices` (cut to maxSeqLen) into one batch. */
export const makeBatch = (set: TokenSet, indices: ReadonlyArray<number>, maxSeqLen: number): MicroBatch => {
  let S = 1
  for (const i of indices)
    S = Math.max(S, Math.min(maxSeqLen, (set.offsets[i + 1] as number) - (set.offsets[i] as number)))
  const B = indices.length
  const ids = new Int32Array(B * S).fill(set.padId)
  const targets = new Int32Array(B * S).fill(-1)
  const seg = set.segments
  const segments = seg ? new Int32Array(B * S).fill(-1) : undefined
  const positions = seg ? new Int32Array(B * S) : undefined
  let tokens = 0
  let targetCount = 0
  indices.forEach((idx, b) => {
    const start = set.offsets[idx] as number
    const len = Math.min(S, (set.offsets[idx + 1] as number) - start)
    tokens += len
    let segStart = 0
    for (let t = 0; t < len; t++) {
      const at = b * S + t
      ids[at] = set.tokens[start + t] as number
      if (seg && segments && positions) {
        segments[at] = seg[start + t] as number
        if (t > 0 && seg[start + t] !== seg[start + t - 1]) segStart = t
        positions[at] = t - segStart
      }
      if (t + 1 < len) {
        const label = set.labels[start + t + 1] as number
        const sameExample = !seg || seg[start + t + 1] === seg[start + t]
        if (label !== -100 && sameExample) {
          targets[at] = label
          targetCount++
        }
      }
    }
    // Padding rows of a packed batch get their own segment so nothing real attends to them.
    if (segments && positions) for (let t = len; t < S; t++) positions[b * S + t] = t - len
  })
  const batch: TokenBatch = {
    ids,
    batch: B,
    seq: S,
    ...(segments && positions ? { segments, positions } : {}),
  }
  return { batch, targets, tokens, targetCount }
}

/**
 * The order sequences are visited in: epoch after epoch, each a seeded
 * permutation. Micro-batch k takes positions [k·B, (k+1)·B) of that stream,
 * so any step's data follows from (seed, step) alone and a resumed run sees
 * what an uninterrupted one would.
 */
export class BatchPlan {
  private epoch = -1
  private perm: Uint32Array = new Uint32Array(0)
  constructor(
    private readonly count: number,
    private readonly batchSize: number,
    private readonly seed: number,
  ) {}

  indices(micro: number): number[] {
    const out: number[] = []
    for (let p = micro * this.batchSize; p < (micro + 1) * this.batchSize; p++) {
      const e = Math.floor(p / this.count)
      if (e !== this.epoch) {
        this.epoch = e
        this.perm = new Rng(mixSeed(this.seed, e, 0x5eed)).permutation(this.count)
      }
      out.push(this.perm[p % this.count] as number)
    }
    return out
  }
}

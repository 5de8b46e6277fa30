/**
 * Tokens directories for trainer tests, from real text: GSM8K questions
 * encoded with stories260K's own tok512 tokenizer (the tokenize step's
 * encoder), BOS first, every token trained.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Llama2cTokenizer } from "../../../plugins/tokenize/Tok512.ts"
import { TOKENS_PART, type TokensPartEntry } from "../../../plugins/tokenize/TokensFile.ts"
import { haveShared, sharedDir, storiesBin, tok512Bin } from "../../support/data.ts"

export const dataDir = sharedDir
// stories260K and tok512 ship with the repository; only GSM8K comes from the shared data.
export const stories = storiesBin
const tok512 = tok512Bin
const gsm8k = path.join(dataDir, "datasets/gsm8k/test.jsonl")
export const haveData = haveShared("the trainer suites on GSM8K", gsm8k)

const le = (a: Uint32Array | Int32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

type Seqs = ReadonlyArray<ReadonlyArray<number>>

/** Writes the arrays of one flat set (a flat directory, or one part); returns its token count. */
const writeArrays = (dir: string, seqs: Seqs, labels: Seqs, segments: Seqs | undefined): number => {
  fs.mkdirSync(dir, { recursive: true })
  const offsets = new Uint32Array(seqs.length + 1)
  seqs.forEach((s, i) => {
    offsets[i + 1] = (offsets[i] as number) + s.length
  })
  fs.writeFileSync(path.join(dir, "tokens.u32"), le(Uint32Array.from(seqs.flat())))
  fs.writeFileSync(path.join(dir, "labels.i32"), le(Int32Array.from(labels.flat())))
  fs.writeFileSync(path.join(dir, "offsets.u32"), le(offsets))
  if (segments) fs.writeFileSync(path.join(dir, "segments.u32"), le(Uint32Array.from(segments.flat())))
  return offsets[seqs.length] as number
}

/**
 * Writes the Tokens layout of plugins/kinds.ts: flat, or with `parts` (the
 * number of sequences in each) sharded into part-000000, part-000001, ...
 */
export const writeTokens = (
  dir: string,
  seqs: Seqs,
  options: {
    labels?: Seqs
    segments?: Seqs
    parts?: ReadonlyArray<number>
  } = {},
): string => {
  fs.mkdirSync(dir, { recursive: true })
  const labels = options.labels ?? seqs
  let parts: TokensPartEntry[] | undefined
  if (options.parts) {
    parts = []
    let from = 0
    for (const [i, count] of options.parts.entries()) {
      const slice = <T>(a: ReadonlyArray<T>) => a.slice(from, from + count)
      const part = TOKENS_PART(i)
      const tokens = writeArrays(
        path.join(dir, part),
        slice(seqs),
        slice(labels),
        options.segments && slice(options.segments),
      )
      parts.push({ dir: part, count, tokens })
      from += count
    }
    if (from !== seqs.length) throw new Error(`parts hold ${from} sequences, not ${seqs.length}`)
  } else writeArrays(dir, seqs, labels, options.segments)
  const maxLength = Math.max(0, ...seqs.map((s) => s.length))
  const meta = {
    count: seqs.length,
    tokens: seqs.reduce((n, s) => n + s.length, 0),
    vocabSize: 512,
    bosId: 1,
    eosId: 2,
    padId: 0,
    maxLength,
    packed: !!options.segments,
    ...(parts ? { parts } : {}),
  }
  fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify(meta))
  return dir
}

/** The same sets flat and sharded: sequences, masked and packed, and the split into parts. */
/** Three short sequences in two parts (one, then two): what the sharded-layout error tests break. */
export const writeShardedSample = (dir: string): string =>
  writeTokens(
    dir,
    [
      [1, 2, 3],
      [1, 4],
      [1, 5, 6, 7],
    ],
    { parts: [1, 2] },
  )

export const shardedCases: ReadonlyArray<{
  name: string
  seqs: number[][]
  options: { labels?: number[][]; segments?: number[][] }
  parts: number[]
}> = [
  {
    name: "plain, 3 parts",
    seqs: [
      [1, 2, 3],
      [1, 4],
      [1, 5, 6, 7],
      [1, 8],
      [1, 9, 10],
    ],
    options: {},
    parts: [2, 1, 2],
  },
  {
    name: "masked, 2 parts",
    seqs: [
      [1, 10, 11, 12, 2],
      [1, 20, 2],
      [1, 30, 31, 2],
    ],
    options: {
      labels: [
        [-100, -100, 11, 12, 2],
        [-100, 20, 2],
        [-100, -100, 31, 2],
      ],
    },
    parts: [1, 2],
  },
  {
    name: "packed, 2 parts",
    seqs: [
      [1, 5, 6, 1, 7, 8],
      [1, 9, 1, 10, 11],
      [1, 12],
    ],
    options: {
      segments: [
        [0, 0, 0, 1, 1, 1],
        [0, 0, 1, 1, 1],
        [0, 0],
      ],
    },
    parts: [2, 1],
  },
  { name: "empty", seqs: [], options: {}, parts: [] },
]

/** GSM8K questions [from, from + count) as tok512 sequences of at most maxLen tokens. */
export const gsm8kSequences = (from: number, count: number, maxLen: number): number[][] => {
  const tok = Llama2cTokenizer.fromFile(tok512)
  const lines = fs
    .readFileSync(gsm8k, "utf-8")
    .split("\n")
    .filter(Boolean)
    .slice(from, from + count)
  return lines.map((l) =>
    tok.encode((JSON.parse(l) as { question: string }).question, { bos: true }).slice(0, maxLen),
  )
}

/** Train and validation Tokens directories under `root`. */
export const gsm8kSplits = (root: string, trainCount = 48, valCount = 16, maxLen = 48) => ({
  train: writeTokens(path.join(root, "train"), gsm8kSequences(0, trainCount, maxLen)),
  validation: writeTokens(path.join(root, "validation"), gsm8kSequences(trainCount, valCount, maxLen)),
})

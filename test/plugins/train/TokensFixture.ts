/**
 * Tokens directories for trainer tests, from real text: GSM8K questions
 * encoded with stories260K's own tok512 tokenizer (the tokenize step's
 * encoder), BOS first, every token trained.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Llama2cTokenizer } from "../../../plugins/tokenize/Tok512.ts"
import { haveShared, sharedDir, storiesBin, tok512Bin } from "../../support/data.ts"

export const dataDir = sharedDir
// stories260K and tok512 ship with the repository; only GSM8K comes from the shared data.
export const stories = storiesBin
const tok512 = tok512Bin
const gsm8k = path.join(dataDir, "datasets/gsm8k/test.jsonl")
export const haveData = haveShared("the trainer suites on GSM8K", gsm8k)

const le = (a: Uint32Array | Int32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength)

/** Writes the Tokens layout of plugins/kinds.ts. */
export const writeTokens = (
  dir: string,
  seqs: ReadonlyArray<ReadonlyArray<number>>,
  options: {
    labels?: ReadonlyArray<ReadonlyArray<number>>
    segments?: ReadonlyArray<ReadonlyArray<number>>
  } = {},
): string => {
  fs.mkdirSync(dir, { recursive: true })
  const offsets = new Uint32Array(seqs.length + 1)
  seqs.forEach((s, i) => {
    offsets[i + 1] = (offsets[i] as number) + s.length
  })
  fs.writeFileSync(path.join(dir, "tokens.u32"), le(Uint32Array.from(seqs.flat())))
  fs.writeFileSync(path.join(dir, "labels.i32"), le(Int32Array.from((options.labels ?? seqs).flat())))
  fs.writeFileSync(path.join(dir, "offsets.u32"), le(offsets))
  if (options.segments)
    fs.writeFileSync(path.join(dir, "segments.u32"), le(Uint32Array.from(options.segments.flat())))
  const maxLength = Math.max(...seqs.map((s) => s.length))
  const meta = {
    count: seqs.length,
    vocabSize: 512,
    bosId: 1,
    eosId: 2,
    padId: 0,
    maxLength,
    packed: !!options.segments,
  }
  fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify(meta))
  return dir
}

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

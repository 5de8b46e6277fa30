/**
 * Instruction tuning from a CSV: customer-support questions and answers
 * (Bitext). The intent and category columns are kept as record metadata; the
 * split keeps each intent's share in every split, and the test set never
 * shares an example with training.
 *
 *   npx tunegraph run pipelines/customer-support.ts
 *   SUPPORT_CSV=/path/to/Bitext_Sample_Customer_Support_Training_Dataset.csv npx tunegraph run pipelines/customer-support.ts
 */
import {
  dedupe,
  evaluate,
  exportAdapter,
  ingest,
  Model,
  Pipeline,
  split,
  Tokenizer,
  tokenize,
  trainLora,
} from "tunegraph"

const p = Pipeline.make("customer-support")

const data = p.source("data", process.env.SUPPORT_CSV ?? "data/customer-support/sample.csv")
const tokenizer = p.source("tokenizer", "data/stories260K/tok512.bin", Tokenizer)
const base = p.source("base", "data/stories260K/stories260K.bin", Model)

const { records } = p.node("ingest", ingest, {
  inputs: { files: data },
  params: {
    format: "csv",
    kind: "instruction",
    rename: { response: "output" },
    keep: ["intent", "category"],
  },
})
const { records: unique } = p.node("dedupe", dedupe, { inputs: { records }, params: { near: true } })
const splits = p.node("split", split, {
  inputs: { records: unique },
  params: { ratios: { train: 0.8, validation: 0.1, test: 0.1 }, stratifyBy: "meta.intent" },
})

// Answers are long for a 512-token vocabulary: cut them at 256 tokens, and say so in the report.
const tokenized = (name: string, records: typeof splits.train) =>
  p.node(name, tokenize, {
    inputs: { records, tokenizer },
    params: { template: "alpaca", maxLength: 256, overflow: "truncate" },
  }).tokens

const { adapter } = p.node("train", trainLora, {
  inputs: {
    train: tokenized("tokenize-train", splits.train),
    validation: tokenized("tokenize-validation", splits.validation),
    base,
  },
  params: { r: 8, alpha: 16, lr: 5e-3, steps: 30, batchSize: 4, evalEvery: 10, evalBatches: 4 },
})

p.node("eval", evaluate, {
  inputs: { base, adapter, tokenizer, test: tokenized("tokenize-test", splits.test), prompts: splits.test },
  params: {
    maxExamples: 8,
    maxNewTokens: 32,
    maxLossSequences: 16,
    // Support answers usually open by acknowledging the request.
    scorers: {
      acknowledges: (output: string) =>
        /\b(I understand|I'm here|Thank you|I apologize|I'm sorry)\b/i.test(output),
    },
  },
})

p.node("export", exportAdapter, { inputs: { adapter, base }, params: { to: "out/customer-support/adapter" } })

export default p

/**
 * The quickstart: fine-tune stories260K (a 260K-parameter Llama trained on
 * TinyStories) with LoRA to follow short instructions, then compare it with
 * its base on the held-out test split, and export the adapter (PEFT layout)
 * and a merged Hugging Face model.
 *
 *   npx tunegraph run pipelines/quickstart.ts
 *   npx tunegraph run pipelines/quickstart.ts --set train.r=16     # only train, eval and exports re-run
 */
import {
  dedupe,
  evaluate,
  exportAdapter,
  exportMerged,
  ingest,
  Model,
  Pipeline,
  split,
  Tokenizer,
  tokenize,
  trainLora,
} from "tunegraph"

const p = Pipeline.make("quickstart")

const data = p.source("data", "data/stories/instructions.jsonl")
const tokenizer = p.source("tokenizer", "data/stories260K/tok512.bin", Tokenizer)
const base = p.source("base", "data/stories260K/stories260K.bin", Model)

const { records } = p.node("ingest", ingest, { inputs: { files: data } })
const { records: unique } = p.node("dedupe", dedupe, { inputs: { records }, params: { caseFold: true } })
const splits = p.node("split", split, {
  inputs: { records: unique },
  params: { ratios: { train: 0.8, validation: 0.1, test: 0.1 }, seed: 0 },
})

const tokenized = (name: string, records: typeof splits.train) =>
  p.node(name, tokenize, { inputs: { records, tokenizer }, params: { template: "alpaca", maxLength: 256 } })
    .tokens

const train = tokenized("tokenize-train", splits.train)
const validation = tokenized("tokenize-validation", splits.validation)
const test = tokenized("tokenize-test", splits.test)

const { adapter } = p.node("train", trainLora, {
  inputs: { train, validation, base },
  params: { r: 8, alpha: 16, lr: 5e-3, epochs: 1, batchSize: 8, evalEvery: 20, seed: 0 },
})

p.node("eval", evaluate, {
  inputs: { base, adapter, tokenizer, test, prompts: splits.test },
  params: {
    template: "alpaca",
    maxExamples: 16,
    maxNewTokens: 48,
    // Does the answer use the character the instruction names?
    scorers: {
      uses_name: (output: string, _reference: string, record: { instruction?: string }) => {
        const name = /\b(?:named|about|did) ([A-Z][a-z]+)/.exec(record.instruction ?? "")?.[1]
        return name !== undefined && output.includes(name)
      },
    },
  },
})

p.node("export-adapter", exportAdapter, {
  inputs: { adapter, base },
  params: { to: "out/quickstart/adapter" },
})
p.node("export-merged", exportMerged, {
  inputs: { model: base, adapter, tokenizer },
  params: { to: "out/quickstart/merged" },
})

export default p

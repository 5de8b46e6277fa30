/**
 * A learning-rate × rank sweep of LoRA on the quickstart data. Each trial is
 * its own cached node (`sweep/lr=0.005,r=8`): add a value to the grid and
 * only the new trials run. The best trial by validation loss goes on to eval
 * like any adapter; `tunegraph show last` prints the trials as a table.
 *
 *   npx tunegraph run pipelines/sweep.ts
 */
import {
  dedupe,
  evaluate,
  ingest,
  Model,
  Pipeline,
  split,
  sweep,
  Tokenizer,
  tokenize,
  trainLora,
} from "tunegraph"

const p = Pipeline.make("sweep")

const data = p.source("data", "data/stories/instructions.jsonl")
const tokenizer = p.source("tokenizer", "data/stories260K/tok512.bin", Tokenizer)
const base = p.source("base", "data/stories260K/stories260K.bin", Model)

const { records } = p.node("ingest", ingest, { inputs: { files: data } })
const { records: unique } = p.node("dedupe", dedupe, { inputs: { records } })
const splits = p.node("split", split, { inputs: { records: unique } })
const tokenized = (name: string, records: typeof splits.train) =>
  p.node(name, tokenize, { inputs: { records, tokenizer }, params: { maxLength: 256 } }).tokens
const train = tokenized("tokenize-train", splits.train)
const validation = tokenized("tokenize-validation", splits.validation)

const search = sweep(p, "sweep", trainLora, {
  inputs: { train, validation, base },
  params: { steps: 20, batchSize: 8, evalEvery: 10, evalBatches: 2 },
  grid: { lr: [0.001, 0.005], r: [4, 8] },
  metric: "val_loss",
  mode: "min",
})

p.node("eval", evaluate, {
  inputs: {
    base,
    adapter: search.best,
    tokenizer,
    test: tokenized("tokenize-test", splits.test),
    prompts: splits.test,
  },
  params: { maxExamples: 8, maxNewTokens: 32 },
})

export default p

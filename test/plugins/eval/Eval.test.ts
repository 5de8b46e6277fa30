/**
 * The eval step on stories260K. llama2.c's greedy story from BOS
 * (test/fixtures/stories260K/greedy-200.txt) begins "Once upon a time, there
 * was a little girl named Lily.", which gives known answers: with "." as a
 * stop string the answer to an empty prompt is that sentence.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Schema } from "effect"
import { beforeAll, describe, expect, test } from "vitest"
import { greedy } from "../../../plugins/eval/Greedy.ts"
import { evaluate } from "../../../plugins/eval/index.ts"
import { exportMerged } from "../../../plugins/export/index.ts"
import { TokenizeParams } from "../../../plugins/tokenize/index.ts"
import { tokenizeRecords } from "../../../plugins/tokenize/Run.ts"
import { readTokens } from "../../../plugins/tokenize/TokensFile.ts"
import { initBackend } from "../../../plugins/train/Backend.ts"
import { generate, sequenceLogits } from "../../../plugins/train/Generate.ts"
import { LlamaModel } from "../../../plugins/train/Llama.ts"
import { loadModel } from "../../../plugins/train/ModelIO.ts"
import { writeTestAdapter } from "../export/Adapters.ts"
import { artifact, inDir, runStep, storiesBin, tempDir, tok512 } from "../export/Step.ts"

const base = loadModel(storiesBin)
const records = [
  { prompt: "", completion: "Once upon a time, there was a little girl named Lily" },
  { prompt: "", completion: "Once upon a time, there was a little boy named Tim" },
  { prompt: "Tom had a red ball", completion: "He liked to play with it in the park" },
  { prompt: "The sun was hot", completion: "Lily and her mom went to the beach" },
]

let dir: string
let recordsFile: string
let tokensDir: string
let packedDir: string

const tokenize = async (out: string, pack: boolean) => {
  await tokenizeRecords({
    recordsFile,
    tokenizer: tok512,
    tokensDir: out,
    reportFile: `${out}.report.json`,
    params: Schema.decodeUnknownSync(TokenizeParams)({ template: "none", maxLength: 64, pack }),
  })
}

beforeAll(async () => {
  await initBackend("wasm")
  dir = tempDir("eval")
  recordsFile = path.join(dir, "records.jsonl")
  // Canonical lines: keys sorted.
  fs.writeFileSync(
    recordsFile,
    records.map((r) => `${JSON.stringify({ completion: r.completion, prompt: r.prompt })}\n`).join(""),
  )
  tokensDir = path.join(dir, "tokens")
  packedDir = path.join(dir, "packed")
  await tokenize(tokensDir, false)
  await tokenize(packedDir, true)
})

const scorers = {
  starts_once: (output: string, _reference: string, record: unknown) =>
    (record as { prompt: string }).prompt === "" && output.startsWith("Once"),
  words: (output: string) => output.split(/\s+/).filter(Boolean).length,
}

const runEval = (
  inputs: { adapter?: string; model?: string; test?: string },
  params: Record<string, unknown> = {},
) =>
  runStep(
    evaluate,
    {
      base: artifact(storiesBin, "Model"),
      adapter: inputs.adapter === undefined ? undefined : artifact(inputs.adapter, "Adapter"),
      model: inputs.model === undefined ? undefined : artifact(inputs.model, "Model"),
      tokenizer: artifact(tok512, "Tokenizer"),
      test: artifact(inputs.test ?? tokensDir, "Tokens"),
      prompts: artifact(recordsFile, "Records"),
    },
    {
      stop: ["."],
      regex: "named (\\w+)",
      maxNewTokens: 24,
      scorers,
      backend: "wasm",
      ...params,
    },
  )

const readReport = (out: string) => JSON.parse(fs.readFileSync(path.join(out, "report.json"), "utf8"))

/** Mean NLL of the label tokens, computed from the logits here. */
const referenceLoss = (tokens: string): number => {
  const data = readTokens(tokens)
  const model = new LlamaModel(base.config, base.weights, { mode: "frozen" })
  let nll = 0
  let n = 0
  for (let i = 0; i < data.meta.count; i++) {
    const s = data.sequence(i)
    const logits = sequenceLogits(model, [...s.tokens])
    const V = base.config.vocabSize
    for (let t = 0; t + 1 < s.tokens.length; t++) {
      const label = s.labels[t + 1] as number
      if (label === -100) continue
      const row = logits.subarray(t * V, (t + 1) * V)
      const max = row.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY)
      const lse = max + Math.log(row.reduce((a, b) => a + Math.exp(b - max), 0))
      nll += lse - (row[label] as number)
      n++
    }
  }
  model.dispose()
  return nll / n
}

describe("eval on stories260K", () => {
  test("an adapter with B = 0 scores exactly as the base, and the scores are the known ones", async () => {
    const adapter = tempDir("zero-adapter")
    writeTestAdapter(adapter, base, { zeroB: true })
    const r = await runEval({ adapter })
    expect(r.error).toBeUndefined()
    const out = r.outputs.report as string
    expect(fs.readdirSync(out).sort()).toEqual(["report.json", "report.md", "samples.jsonl"])
    const report = readReport(out)
    expect(report.scores.tuned).toEqual(report.scores.base)
    expect(Object.keys(report.scores.base)).toEqual([
      "loss",
      "perplexity",
      "exact_match",
      "contains",
      "regex",
      "starts_once",
      "words",
    ])
    expect(report.samples).toHaveLength(4)
    for (const s of report.samples) expect(s.tuned).toBe(s.base)
    const [lily, tim] = report.samples
    expect(lily.base).toBe("Once upon a time, there was a little girl named Lily")
    expect(lily.scores.base).toEqual({ exact_match: 1, contains: 1, regex: 1, starts_once: 1, words: 11 })
    expect(tim.prompt).toBe("")
    expect(tim.reference).toBe(records[1]?.completion)
    expect(tim.scores.base).toMatchObject({ exact_match: 0, contains: 0, regex: 0, starts_once: 1 })
    // Means are over the four examples; loss is the mean NLL of the label tokens.
    const mean = (k: string) =>
      report.samples.reduce(
        (a: number, s: { scores: { base: Record<string, number> } }) => a + (s.scores.base[k] as number),
        0,
      ) / 4
    for (const k of ["exact_match", "contains", "regex", "starts_once", "words"])
      expect(report.scores.base[k]).toBe(mean(k))
    expect(report.scores.base.loss).toBeCloseTo(referenceLoss(tokensDir), 4)
    expect(report.scores.base.perplexity).toBeCloseTo(Math.exp(report.scores.base.loss), 10)
    // The template is the test tokens' own ("none") when not given.
    expect(report.settings).toMatchObject({ template: "none", addBos: true })
    expect(report.counts).toMatchObject({ testSequences: 4, records: 4, examples: 4, skippedNoReply: 0 })
    // Metrics for the run's lineage.
    const metric = (name: string) => r.metrics.find((m) => m.name === name)?.value
    expect(metric("test_loss")).toBe(report.scores.tuned.loss)
    expect(metric("test_perplexity")).toBe(report.scores.tuned.perplexity)
    expect(metric("tuned/exact_match")).toBe(0.25)
    expect(metric("base/exact_match")).toBe(0.25)
    expect(metric("base/words")).toBe(report.scores.base.words)
    expect(r.annotations.backend).toBe("wasm")
    // samples.jsonl: one line per example with the record; report.md: the table and the examples.
    const lines = fs.readFileSync(path.join(out, "samples.jsonl"), "utf8").trimEnd().split("\n")
    expect(lines.map((l) => JSON.parse(l).record)).toEqual(
      records.map((x) => ({ completion: x.completion, prompt: x.prompt })),
    )
    const md = fs.readFileSync(path.join(out, "report.md"), "utf8")
    expect(md).toContain("| exact_match | 0.25 | 0.25 | 0 |")
    expect(md).toContain("Once upon a time, there was a little girl named Lily")
  })

  test("a trained adapter changes the scores; its merged export scored as a full model gives the same ones", async () => {
    const adapter = tempDir("adapter")
    writeTestAdapter(adapter, base, { seed: 3 })
    const r = await runEval({ adapter }, { maxExamples: 2 })
    expect(r.error).toBeUndefined()
    const report = readReport(r.outputs.report as string)
    expect(report.scores.tuned.loss).not.toBe(report.scores.base.loss)
    expect(report.samples).toHaveLength(2)
    const cwd = tempDir("cwd")
    const merged = await inDir(cwd, () =>
      runStep(
        exportMerged,
        { model: artifact(storiesBin, "Model"), adapter: artifact(adapter, "Adapter") },
        { to: "merged" },
      ),
    )
    expect(merged.error).toBeUndefined()
    const full = await runEval({ model: path.join(cwd, "merged") }, { maxExamples: 2 })
    expect(full.error).toBeUndefined()
    const fullReport = readReport(full.outputs.report as string)
    expect(fullReport.scores).toEqual(report.scores)
    expect(fullReport.samples).toEqual(report.samples)
  })

  test("greedy answers are generate()'s at temperature 0, and the report's bytes depend only on the inputs", async () => {
    const model = new LlamaModel(base.config, base.weights, { mode: "frozen" })
    const a = await greedy(model, [1], { maxTokens: 40, stopIds: [1, 2] })
    const b = await generate({ model, promptIds: [1], maxTokens: 40, stopIds: [1, 2] })
    model.dispose()
    expect(a).toEqual(b)
    const adapter = tempDir("det")
    writeTestAdapter(adapter, base, { seed: 9 })
    const [x, y] = [
      await runEval({ adapter }, { maxExamples: 2 }),
      await runEval({ adapter }, { maxExamples: 2 }),
    ]
    for (const f of ["report.json", "report.md", "samples.jsonl"])
      expect(
        fs
          .readFileSync(path.join(x.outputs.report as string, f))
          .equals(fs.readFileSync(path.join(y.outputs.report as string, f))),
      ).toBe(true)
  })

  test("a QLoRA adapter is scored on the NF4-dequantised base it trained against", async () => {
    const adapter = tempDir("qlora")
    writeTestAdapter(adapter, base, { zeroB: true, training: { kind: "qlora" } })
    const r = await runEval({ adapter }, { maxExamples: 0 })
    expect(r.error).toBeUndefined()
    const report = readReport(r.outputs.report as string)
    expect(report.settings.adapterBase).toBe("nf4")
    // With B = 0 the tuned model is the quantised base: its loss differs from the float base's, a little.
    const gap = report.scores.tuned.loss - report.scores.base.loss
    expect(gap).not.toBe(0)
    expect(Math.abs(gap)).toBeLessThan(0.5)
  })

  test("packed test tokens give the loss of unpacked ones (attention stays inside each example)", async () => {
    expect(readTokens(packedDir).meta.packed).toBe(true)
    expect(readTokens(packedDir).meta.count).toBeLessThan(4)
    const adapter = tempDir("zero")
    writeTestAdapter(adapter, base, { zeroB: true })
    const packed = await runEval({ adapter, test: packedDir }, { maxExamples: 0, template: "alpaca" })
    expect(packed.logs).toContain(
      'the test tokens were made with template "none", the prompts are rendered with "alpaca"',
    )
    const plain = await runEval({ adapter, test: tokensDir }, { maxExamples: 0 })
    const a = readReport(packed.outputs.report as string)
    const b = readReport(plain.outputs.report as string)
    expect(a.counts.lossTokens).toBe(b.counts.lossTokens)
    expect(a.scores.base.loss).toBeCloseTo(b.scores.base.loss, 6)
    expect(a.samples).toEqual([])
    expect(Object.keys(a.scores.base)).toEqual(["loss", "perplexity"])
  })

  test("names the mistake: no tuned model, both kinds, a bad regex, a failing scorer", async () => {
    const noTuned = await runEval({})
    expect(noTuned.error?.message).toMatch(/wire `adapter`/)
    const adapter = tempDir("a")
    writeTestAdapter(adapter, base, { zeroB: true })
    expect((await runEval({ adapter, model: storiesBin })).error?.message).toMatch(/not both/)
    // A regex that does not compile is refused by the parameter Schema, before the step runs.
    await expect(runEval({ adapter }, { regex: "(" })).rejects.toThrow(/does not compile/)
    const thrower = await runEval(
      { adapter },
      {
        scorers: {
          boom: () => {
            throw new Error("bad input")
          },
        },
        maxExamples: 1,
      },
    )
    expect(thrower.error?.message).toMatch(/record 1: scorer "boom" threw: bad input/)
  })
})

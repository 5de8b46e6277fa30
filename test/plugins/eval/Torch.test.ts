/**
 * The eval step on the torch backend against the same step on WebAssembly,
 * on stories260K: the loss within 1e-4 (relative), the same greedy answers
 * and a report of the same shape; a QLoRA adapter scored on the NF4
 * round-tripped base; packed test tokens and a llama2.c model as the tuned
 * one. Parity is checked on torch-cpu, which computes in float32 as tfjs
 * does (on CUDA the worker computes in bfloat16). Also the worker session
 * itself: Python's errors come back as messages, and an abort ends it.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Schema } from "effect"
import { beforeAll, describe, expect, test } from "vitest"
import { evaluate } from "../../../plugins/eval/index.ts"
import { TokenizeParams } from "../../../plugins/tokenize/index.ts"
import { tokenizeRecords } from "../../../plugins/tokenize/Run.ts"
import { TokensWriter } from "../../../plugins/tokenize/TokensFile.ts"
import { loadModel } from "../../../plugins/train/ModelIO.ts"
import { Rng } from "../../../plugins/train/Rng.ts"
import { hfBaseDir } from "../../../plugins/train/Step.ts"
import { TorchSession, TorchSessionClosed, TorchSessionError } from "../../../plugins/train/torch/Session.ts"
import { hasTorch } from "../../support/python.ts"
import { writeTestAdapter } from "../export/Adapters.ts"
import { artifact, runStep, type StepRun, storiesBin, tempDir, tok512 } from "../export/Step.ts"

const base = loadModel(storiesBin)
const records = [
  { prompt: "", completion: "Once upon a time, there was a little girl named Lily" },
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

const runEval = (
  backend: string,
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
    { stop: ["."], regex: "named (\\w+)", maxNewTokens: 20, backend, ...params },
  )

const readReport = (r: StepRun) => {
  expect(r.error).toBeUndefined()
  return JSON.parse(fs.readFileSync(path.join(r.outputs.report as string, "report.json"), "utf8"))
}

const TOLERANCE = 1e-4
const relative = (a: number, b: number) => Math.abs(a - b) / Math.abs(b)

describe.skipIf(!hasTorch)("eval on torch", () => {
  beforeAll(async () => {
    dir = tempDir("eval-torch")
    recordsFile = path.join(dir, "records.jsonl")
    fs.writeFileSync(
      recordsFile,
      records.map((r) => `${JSON.stringify({ completion: r.completion, prompt: r.prompt })}\n`).join(""),
    )
    tokensDir = path.join(dir, "tokens")
    packedDir = path.join(dir, "packed")
    await tokenize(tokensDir, false)
    await tokenize(packedDir, true)
  })

  test("the backend enters the step key, and auto follows TUNEGRAPH_BACKEND", () => {
    const env = evaluate.environment as (p: { backend: string }) => Record<string, string>
    expect(env({ backend: "torch-cpu" })).toMatchObject({ backend: "torch-cpu", device: "cpu" })
    expect(env({ backend: "torch-cpu" })["python:torch"]).toMatch(/^\d/)
    expect(env({ backend: "wasm" }).backend).toBe("wasm")
    const before = process.env.TUNEGRAPH_BACKEND
    try {
      process.env.TUNEGRAPH_BACKEND = "wasm"
      expect(env({ backend: "auto" }).backend).toBe("wasm")
      process.env.TUNEGRAPH_BACKEND = "torch-cpu"
      expect(env({ backend: "auto" }).backend).toBe("torch-cpu")
    } finally {
      if (before === undefined) delete process.env.TUNEGRAPH_BACKEND
      else process.env.TUNEGRAPH_BACKEND = before
    }
  })

  test("a LoRA adapter: the loss of wasm within 1e-4, the same greedy answers, the same report", async () => {
    const adapter = tempDir("lora")
    writeTestAdapter(adapter, base, { seed: 3 })
    const torch = await runEval("torch-cpu", { adapter })
    const wasm = await runEval("wasm", { adapter })
    const t = readReport(torch)
    const w = readReport(wasm)
    expect(t.settings.backend).toBe("torch-cpu")
    expect(w.settings.backend).toBe("wasm")
    expect(torch.annotations).toMatchObject({ backend: "torch-cpu", device: "cpu" })
    expect({ ...t.settings, backend: "wasm" }).toEqual(w.settings)
    expect(t.counts).toEqual(w.counts)
    expect(Object.keys(t)).toEqual(Object.keys(w))
    for (const which of ["base", "tuned"]) {
      expect(Object.keys(t.scores[which])).toEqual(Object.keys(w.scores[which]))
      for (const k of ["loss", "perplexity"])
        expect(relative(t.scores[which][k], w.scores[which][k])).toBeLessThan(TOLERANCE)
      const { loss: _l, perplexity: _p, ...answerScores } = t.scores[which]
      const { loss: _wl, perplexity: _wp, ...wasmAnswerScores } = w.scores[which]
      expect(answerScores).toEqual(wasmAnswerScores)
    }
    // The adapter matters: the tuned loss is not the base's.
    expect(relative(t.scores.tuned.loss, t.scores.base.loss)).toBeGreaterThan(100 * TOLERANCE)
    expect(t.samples).toEqual(w.samples)
    expect(t.samples[0].base).toBe("Once upon a time, there was a little girl named Lily")
    const metric = (r: StepRun, name: string) => r.metrics.find((m) => m.name === name)?.value as number
    expect(relative(metric(torch, "test_loss"), metric(wasm, "test_loss"))).toBeLessThan(TOLERANCE)
  })

  test("a QLoRA adapter is merged into the NF4 round-tripped base, as on tfjs", async () => {
    const adapter = tempDir("qlora")
    writeTestAdapter(adapter, base, { seed: 5, training: { kind: "qlora" } })
    const params = { maxExamples: 0 }
    const torch = readReport(await runEval("torch-cpu", { adapter }, params))
    const wasm = readReport(await runEval("wasm", { adapter }, params))
    const float = readReport(await runEval("wasm", { adapter }, { ...params, adapterBase: "none" }))
    expect(torch.settings.adapterBase).toBe("nf4")
    expect(torch.settings.tuned).toBe(wasm.settings.tuned)
    expect(relative(torch.scores.tuned.loss, wasm.scores.tuned.loss)).toBeLessThan(TOLERANCE)
    expect(relative(torch.scores.base.loss, wasm.scores.base.loss)).toBeLessThan(TOLERANCE)
    // The float base gives a loss far outside the tolerance: the comparison above tells them apart.
    expect(relative(float.scores.tuned.loss, wasm.scores.tuned.loss)).toBeGreaterThan(10 * TOLERANCE)
  })

  test("packed test tokens, and a llama2.c checkpoint as the tuned model, score as on wasm", async () => {
    const params = { maxExamples: 0 }
    const torch = readReport(await runEval("torch-cpu", { model: storiesBin, test: packedDir }, params))
    const wasm = readReport(await runEval("wasm", { model: storiesBin, test: packedDir }, params))
    expect(torch.counts).toEqual(wasm.counts)
    expect(torch.counts.lossTokens).toBeGreaterThan(0)
    expect(torch.scores.tuned).toEqual(torch.scores.base)
    expect(relative(torch.scores.tuned.loss, wasm.scores.tuned.loss)).toBeLessThan(TOLERANCE)
    // Each packed example is scored on its own: the loss of the unpacked tokens.
    const plain = readReport(await runEval("wasm", { model: storiesBin }, params))
    expect(relative(torch.scores.tuned.loss, plain.scores.tuned.loss)).toBeLessThan(TOLERANCE)
  })

  test("sequences longer than the context are cut to it and counted, as on wasm", async () => {
    // Two sequences past stories260K's 512 positions, one short; some labels masked.
    const long = path.join(dir, "long")
    const w = new TokensWriter(long, false)
    const rng = new Rng(7)
    for (const n of [700, 530, 90]) {
      const ids = Array.from({ length: n }, (_, i) => (i === 0 ? 1 : 3 + Math.floor(rng.next() * 509)))
      w.write({ ids, labels: ids.map((id, i) => (i < 20 || i % 7 === 0 ? -100 : id)) })
    }
    w.close({
      vocabSize: 512,
      bosId: 1,
      eosId: 2,
      padId: 0,
      maxLength: 1024,
      tokenizer: { type: "llama2c", digest: "test" },
      format: "none",
      trainOnInputs: true,
      examples: 3,
    })
    const params = { maxExamples: 0 }
    const torch = readReport(await runEval("torch-cpu", { model: storiesBin, test: long }, params))
    const wasm = readReport(await runEval("wasm", { model: storiesBin, test: long }, params))
    expect(wasm.counts.truncatedSequences).toBe(2)
    expect(torch.counts).toEqual(wasm.counts)
    expect(relative(torch.scores.tuned.loss, wasm.scores.tuned.loss)).toBeLessThan(TOLERANCE)
  })

  test("the worker session answers in order, says what went wrong, and stops on abort", async () => {
    const hf = await hfBaseDir(storiesBin, tempDir("session"))
    const session = new TorchSession()
    try {
      const missing = session.load("x", { path: "/nonexistent/model-dir", device: "cpu" })
      const loaded = session.load("m", { path: hf, device: "cpu", threads: 1 })
      await expect(missing).rejects.toThrow(/nonexistent\/model-dir/)
      expect(await loaded).toEqual({ dtype: "float32", vocabSize: 512, maxSeqLen: 512 })
      await expect(session.next("nope", [1])).rejects.toThrow(/no model loaded as 'nope'/)
      const logits = await session.next("m", [1], true)
      expect(logits).toHaveLength(512)
      // Greedy decoding's first token is the argmax of the first logits.
      const first = logits.indexOf(Math.max(...logits))
      expect((await session.greedy("m", [1], 3, [1]))[0]).toBe(first)
      await expect(session.request("bogus")).rejects.toBeInstanceOf(TorchSessionError)
    } finally {
      await session.close()
    }
    await expect(session.next("m", [1])).rejects.toBeInstanceOf(TorchSessionClosed)

    const stop = new AbortController()
    const aborted = new TorchSession({ signal: stop.signal })
    const pending = aborted.load("m", { path: hf, device: "cpu" })
    stop.abort()
    await expect(pending).rejects.toBeInstanceOf(TorchSessionClosed)
    await aborted.close()
  })
})

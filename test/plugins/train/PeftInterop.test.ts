/**
 * Adapters cross between the backends and Hugging Face PEFT, both ways: one
 * trained by the tfjs backend loads with `PeftModel.from_pretrained` onto the
 * Hugging Face base and gives the logits of tunegraph's merged export; one
 * trained by the torch backend evaluates and generates in tfjs with the
 * logits and greedy ids PEFT gives.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { beforeAll, describe, expect, test } from "vitest"
import { writeHfModel } from "../../../plugins/export/HfModel.ts"
import { mergedModel } from "../../../plugins/export/Merge.ts"
import { initBackend } from "../../../plugins/train/Backend.ts"
import { generate, inferenceModel, sequenceLogits } from "../../../plugins/train/Generate.ts"
import { readAdapter } from "../../../plugins/train/Lora.ts"
import { loadModel, saveHfModel } from "../../../plugins/train/ModelIO.ts"
import { trainLora } from "../../../plugins/train-lora/index.ts"
import { hasTorch, runPython } from "../../support/python.ts"
import { artifact, runPlugin } from "./Context.ts"
import { randomIds, randomWeights, tinyConfig } from "./Tiny.ts"
import { writeTokens } from "./TokensFixture.ts"

const script = path.join(import.meta.dirname, "python/peft_logits.py")

const hf = (req: Record<string, unknown>) =>
  JSON.parse(runPython([script], JSON.stringify(req))) as {
    peft?: number[]
    merged?: number[]
    generated?: number[]
  }

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)))
  return m
}

describe.skipIf(!hasTorch)("PEFT interop", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "peft-interop-"))
  const config = tinyConfig({ dim: 32, hiddenDim: 48, vocabSize: 64, tiedEmbeddings: false })
  const base = path.join(root, "base")
  const ids = Array.from(randomIds(12, config.vocabSize, 99))
  const params = { steps: 4, batchSize: 4, lr: 0.05, evalEvery: 0, shards: 1, dropout: 0 }
  let trainDir = ""
  beforeAll(async () => {
    saveHfModel(base, { config, weights: randomWeights(config, 5) })
    const seqs = Array.from({ length: 12 }, (_, i) =>
      Array.from(randomIds(8 + (i % 5), config.vocabSize, 300 + i)),
    )
    trainDir = writeTokens(path.join(root, "train"), seqs)
    await initBackend("cpu")
  })

  test("a tfjs adapter loads with PeftModel.from_pretrained and gives the logits of the merged export", async () => {
    const rec = await runPlugin(
      trainLora,
      { ...params, backend: "cpu" },
      {
        train: artifact("Tokens", trainDir),
        base: artifact("Model", base),
      },
    )
    const adapterDir = rec.outputs.adapter as string
    const adapter = readAdapter(adapterDir)
    // Trained: B is no longer zero, so the adapter changes the logits.
    expect([...adapter.pairs.values()].some((p) => p.b.data.some((x) => x !== 0))).toBe(true)
    const merged = path.join(root, "merged-tfjs")
    writeHfModel(merged, mergedModel(loadModel(base), adapter, "none"))
    const theirs = hf({ base, adapter: adapterDir, merged, ids })
    const ours = sequenceLogits(inferenceModel(loadModel(merged)), ids)
    const plain = sequenceLogits(inferenceModel(loadModel(base)), ids)
    expect(maxDiff(theirs.peft!, theirs.merged!)).toBeLessThan(1e-4)
    expect(maxDiff(theirs.peft!, ours)).toBeLessThan(1e-4)
    expect(maxDiff(plain, ours)).toBeGreaterThan(1e-2)
  })

  test("a torch adapter evaluates and generates in the tfjs backend as PEFT does", async () => {
    const rec = await runPlugin(
      trainLora,
      { ...params, backend: "torch-cpu" },
      {
        train: artifact("Tokens", trainDir),
        base: artifact("Model", base),
      },
    )
    expect(rec.annotations).toContainEqual(expect.objectContaining({ backend: "torch-cpu" }))
    const adapterDir = rec.outputs.adapter as string
    const adapter = readAdapter(adapterDir)
    expect(adapter.pairs.size).toBe(config.nLayers * 4)
    const theirs = hf({ base, adapter: adapterDir, ids, generate: 8 })
    const model = inferenceModel(loadModel(base), adapter)
    try {
      const ours = sequenceLogits(model, ids)
      expect(maxDiff(theirs.peft!, ours)).toBeLessThan(1e-4)
      expect(maxDiff(sequenceLogits(inferenceModel(loadModel(base)), ids), ours)).toBeGreaterThan(1e-2)
      const generated = await generate({ model, promptIds: ids, maxTokens: 8, stopIds: [] })
      expect(generated).toEqual(theirs.generated)
    } finally {
      model.dispose()
    }
  })
})

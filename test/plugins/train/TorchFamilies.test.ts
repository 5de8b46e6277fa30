/**
 * The torch backend trains every family transformers builds (tiny random
 * Llama 3, Qwen2.5, Qwen3, Mistral and SmolLM2 models from
 * python/make_model.py) in full, and each export loads back in transformers
 * as its own family, with the logits the tfjs decoder computes on it. LoRA
 * on both backends, and the tfjs decoder's own parity, are in
 * Families.test.ts.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { beforeAll, describe, expect, test } from "vitest"
import { initBackend } from "../../../plugins/train/Backend.ts"
import { inferenceModel, sequenceLogits } from "../../../plugins/train/Generate.ts"
import { loadModel, loadModelInfo } from "../../../plugins/train/ModelIO.ts"
import { trainFull } from "../../../plugins/train-full/index.ts"
import { hasTorch, runPython } from "../../support/python.ts"
import { artifact, runPlugin, series } from "./Context.ts"
import { randomIds } from "./Tiny.ts"
import { writeTokens } from "./TokensFixture.ts"

const FAMILIES = {
  llama3: ["llama", "LlamaForCausalLM"],
  qwen2: ["qwen2", "Qwen2ForCausalLM"],
  qwen3: ["qwen3", "Qwen3ForCausalLM"],
  mistral: ["mistral", "MistralForCausalLM"],
  smollm2: ["llama", "LlamaForCausalLM"],
} as const
type Family = keyof typeof FAMILIES

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)))
  return m
}

describe.skipIf(!hasTorch)("the torch backend fine-tunes every model family in full", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "torch-families-"))
  const vocab = 96
  const seqs = Array.from({ length: 16 }, (_, i) => Array.from(randomIds(8 + (i % 6), vocab, 40 + i)))
  const ids = Array.from(randomIds(9, vocab, 7))
  const params = { steps: 3, batchSize: 4, lr: 0.02, evalEvery: 0, backend: "torch-cpu" }
  let train = ""
  const outputs: Array<{ family: Family; dir: string }> = []

  beforeAll(async () => {
    runPython([path.join(import.meta.dirname, "python/make_model.py"), "--all", root])
    train = writeTokens(path.join(root, "train"), seqs)
    await initBackend("cpu")
  }, 120_000)

  for (const family of Object.keys(FAMILIES) as Family[])
    test(`${family}: trains in full on torch-cpu and exports as ${FAMILIES[family][1]}`, async () => {
      const base = path.join(root, family)
      // The tfjs decoder reads the config exactly, so the torch side needs no lenient reading.
      expect(loadModelInfo(base).exact).toBe(true)
      const full = await runPlugin(trainFull, params, {
        train: artifact("Tokens", train),
        base: artifact("Model", base),
      })
      expect(series(full, "train_loss").every(Number.isFinite)).toBe(true)
      const cfg = JSON.parse(fs.readFileSync(path.join(full.outputs.model as string, "config.json"), "utf8"))
      expect([cfg.model_type, cfg.architectures]).toEqual([FAMILIES[family][0], [FAMILIES[family][1]]])
      outputs.push({ family, dir: full.outputs.model as string })
    }, 300_000)

  test("the exports load in transformers, trained, with the logits tfjs computes on them", () => {
    expect(outputs.length).toBe(Object.keys(FAMILIES).length)
    const requests = outputs.flatMap((o) => [
      { model: path.join(root, o.family), ids },
      { model: o.dir, ids },
    ])
    const theirs = JSON.parse(
      runPython([path.join(import.meta.dirname, "python/families_logits.py")], JSON.stringify(requests)),
    ) as Array<{ logits: number[]; class: string }>
    outputs.forEach((o, i) => {
      const before = theirs[2 * i] as (typeof theirs)[number]
      const after = theirs[2 * i + 1] as (typeof theirs)[number]
      expect(after.class, o.family).toBe(FAMILIES[o.family][1])
      expect(maxDiff(before.logits, after.logits), `${o.family} trained`).toBeGreaterThan(1e-3)
      const model = inferenceModel(loadModel(o.dir))
      expect(maxDiff(sequenceLogits(model, ids), after.logits), o.family).toBeLessThan(1e-4)
      model.dispose()
    })
  }, 300_000)
})

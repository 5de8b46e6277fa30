import * as fs from "node:fs"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs-core"
import { describe, expect, test } from "vitest"
import { initBackend } from "../../../plugins/train/Backend.ts"
import { generate, inferenceModel, logLikelihood, sequenceLogits } from "../../../plugins/train/Generate.ts"
import { LlamaModel } from "../../../plugins/train/Llama.ts"
import { loadModel } from "../../../plugins/train/ModelIO.ts"
import { repoStories } from "../../support/data.ts"
import { llama2cText, readScalarModel, ScalarRunner, scalarGreedy } from "./ScalarLlama.ts"

const data = repoStories
const bin = path.join(data, "stories260K.bin")
const tok = path.join(data, "tok512.bin")

// The real pretrained model ships with the repository (pipelines/data): this never skips.
describe("Llama forward pass on stories260K", () => {
  const scalar = fs.existsSync(bin) ? readScalarModel(bin) : undefined

  for (const [backend, attention] of [
    ["wasm", "simd"],
    ["wasm", "js"],
    ["cpu", "simd"],
    ["cpu", "tf"],
  ] as const) {
    test(`logits match the scalar llama2.c reference within 1e-4 (${backend}, ${attention} attention)`, async () => {
      await initBackend(backend)
      const ids = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376, 298, 315, 421, 13, 438, 310]
      const runner = new ScalarRunner(scalar as NonNullable<typeof scalar>)
      const model = new LlamaModel(loadModel(bin).config, loadModel(bin).weights, {
        mode: "frozen",
        attention,
      })
      const logits = sequenceLogits(model, ids)
      model.dispose()
      let worst = 0
      ids.forEach((id, pos) => {
        const ref = runner.forward(id, pos)
        for (let v = 0; v < ref.length; v++)
          worst = Math.max(worst, Math.abs((logits[pos * ref.length + v] as number) - (ref[v] as number)))
      })
      expect(worst).toBeLessThan(1e-4)
      expect(tf.memory().numTensors).toBeLessThan(5)
    })
  }

  test("log-likelihood of labelled tokens matches the scalar reference's log-softmax", async () => {
    await initBackend("wasm")
    const ids = [1, 403, 407, 261, 378, 432, 383, 286, 261, 376]
    const labels = ids.map((id, i) => (i < 4 ? -100 : id)) // the first tokens are a masked prompt
    const runner = new ScalarRunner(scalar as NonNullable<typeof scalar>)
    let want = 0
    for (let pos = 0; pos + 1 < ids.length; pos++) {
      const logits = runner.forward(ids[pos] as number, pos)
      if ((labels[pos + 1] as number) === -100) continue
      const max = Math.max(...logits)
      const lse = max + Math.log(logits.reduce((a, x) => a + Math.exp(x - max), 0))
      want += (logits[ids[pos + 1] as number] as number) - lse
    }
    const model = inferenceModel(loadModel(bin))
    const got = logLikelihood(model, ids, labels)
    model.dispose()
    expect(got.count).toBe(6)
    expect(Math.abs(got.sum - want)).toBeLessThan(1e-3)
  })

  test("greedy generation from BOS reproduces llama2.c's 200-step story", async () => {
    await initBackend("wasm")
    // The scalar reference follows run.c's loop; its text was checked identical to llama2.c's `run -t 0 -n 200`.
    const want = scalarGreedy(scalar as NonNullable<typeof scalar>, 200)
    const got = await generate({ model: loadModel(bin), promptIds: [1], maxTokens: 200, temperature: 0 })
    expect(got).toEqual(want)
    const text = llama2cText(tok, got)
    expect(Buffer.byteLength(text, "latin1")).toBe(464)
    expect(text.startsWith("Once upon a time, there was a little girl named Lily.")).toBe(true)
  })
})

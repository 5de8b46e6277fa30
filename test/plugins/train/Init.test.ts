/**
 * Warm starts: train-lora, train-qlora and train-full continue from an
 * earlier result given as their `init` input (an adapter, or a model for
 * full fine-tuning), and the input is part of the step key.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Schema } from "effect"
import { describe, expect, test } from "vitest"
import { trainFull, trainLora, trainQlora } from "../../../plugins/index.ts"
import { readAdapter } from "../../../plugins/train/Lora.ts"
import { loadModel, saveHfModel } from "../../../plugins/train/ModelIO.ts"
import { FullParams, LoraParams } from "../../../plugins/train/Params.ts"
import { readSafetensors } from "../../../plugins/train/Safetensors.ts"
import { type TrainHooks, type TrainJob, train } from "../../../plugins/train/Trainer.ts"
import { hasTorch } from "../../support/python.ts"
import { artifact, runPlugin } from "./Context.ts"
import { randomIds, randomWeights, tinyConfig } from "./Tiny.ts"
import { writeTokens } from "./TokensFixture.ts"

const tmp = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `${name}-`))

const hooks = (): TrainHooks & { logs: string[] } => {
  const logs: string[] = []
  return { logs, log: (l) => logs.push(l), metric: () => {}, progress: () => {}, annotate: () => {} }
}

const setup = () => {
  const root = tmp("init")
  const config = tinyConfig()
  const base = path.join(root, "base")
  saveHfModel(base, { config, weights: randomWeights(config, 21) })
  const seqs = Array.from({ length: 16 }, (_, i) =>
    Array.from(randomIds(6 + (i % 7), config.vocabSize, 100 + i)),
  )
  return { root, config, base, train: writeTokens(path.join(root, "train"), seqs) }
}

const job = (
  kind: TrainJob["kind"],
  data: { base: string; train: string },
  params: Record<string, unknown>,
  init?: string,
): TrainJob => {
  const root = tmp("job")
  return {
    kind,
    base: data.base,
    baseName: "base",
    train: data.train,
    ...(init === undefined ? {} : { init }),
    output: path.join(root, "out"),
    checkpoints: path.join(root, "ck"),
    params: Schema.decodeUnknownSync(kind === "full" ? FullParams : LoraParams)({
      shards: 1,
      backend: "cpu",
      ...params,
    }),
  }
}

// A learning rate far below float32's resolution of these weights: the output is where training started.
const still = { steps: 1, lr: 1e-30, schedule: "constant", weightDecay: 0 }

const same = (a: Float32Array, b: Float32Array) => a.length === b.length && a.every((x, i) => x === b[i])

describe("warm starts", () => {
  test.each(["lora", "qlora"] as const)("%s starts A and B from the init adapter", async (kind) => {
    const data = setup()
    const first = job(kind, data, { steps: 4, lr: 1e-2 })
    await train(first, hooks())
    const init = readAdapter(first.output)
    expect([...init.pairs.values()].some((p) => p.b.data.some((x) => x !== 0))).toBe(true)

    const h = hooks()
    const warm = job(kind, data, still, first.output)
    await train(warm, h)
    expect(h.logs.some((l) => l.startsWith("starts from the adapter"))).toBe(true)
    const out = readAdapter(warm.output)
    expect([...out.pairs.keys()].sort()).toEqual([...init.pairs.keys()].sort())
    for (const [w, p] of init.pairs) {
      expect(same(out.pairs.get(w)!.a.data, p.a.data), `${w} A`).toBe(true)
      expect(same(out.pairs.get(w)!.b.data, p.b.data), `${w} B`).toBe(true)
    }
    // Without init, B starts at zero.
    const cold = job(kind, data, still)
    await train(cold, hooks())
    const b = [...readAdapter(cold.output).pairs.values()][0]!.b.data
    expect(b.every((x) => Math.abs(x) < 1e-20)).toBe(true)
  })

  test("an init adapter of another rank is refused, naming r", async () => {
    const data = setup()
    const first = job("lora", data, { steps: 1, r: 4 })
    await train(first, hooks())
    await expect(train(job("lora", data, { ...still, r: 8 }, first.output), hooks())).rejects.toThrow(
      /init adapter has r=4; this step trains r=8/,
    )
  })

  test("full fine-tuning starts from the init model's weights instead of the base's", async () => {
    const data = setup()
    const init = path.join(data.root, "init")
    saveHfModel(init, { config: data.config, weights: randomWeights(data.config, 77) })
    const warm = job("full", data, still, init)
    await train(warm, hooks())
    const out = loadModel(warm.output).weights
    const from = loadModel(init).weights
    const base = loadModel(data.base).weights
    for (const [name, t] of from) {
      expect(same(out.get(name)!.data as Float32Array, t.data as Float32Array), name).toBe(true)
      expect(same(out.get(name)!.data as Float32Array, base.get(name)!.data as Float32Array)).toBe(false)
    }
    const other = path.join(data.root, "other")
    saveHfModel(other, {
      config: tinyConfig({ dim: 32 }),
      weights: randomWeights(tinyConfig({ dim: 32 }), 3),
    })
    await expect(train(job("full", data, still, other), hooks())).rejects.toThrow(
      /not a fine-tune of this base/,
    )
  })

  test("the steps take init as an optional input, so its digest enters the key", () => {
    expect(trainLora.inputs.init).toMatchObject({ _tag: "Optional" })
    expect(trainQlora.inputs.init).toMatchObject({ _tag: "Optional" })
    expect(trainFull.inputs.init).toMatchObject({ _tag: "Optional" })
    expect((trainLora.inputs.init as { kind: { name: string } }).kind.name).toBe("Adapter")
    expect((trainFull.inputs.init as { kind: { name: string } }).kind.name).toBe("Model")
  })
})

describe.skipIf(!hasTorch)("warm starts on torch", () => {
  const tensors = (file: string) =>
    Object.fromEntries(
      [...readSafetensors(file).tensors].map(([n, t]) => [n, Array.from(t.data as Float32Array)]),
    )

  test("train-lora and train-qlora continue the init adapter, train-full the init model", async () => {
    const data = setup()
    const inputs = { train: artifact("Tokens", data.train), base: artifact("Model", data.base) }
    const torch = { backend: "torch-cpu", evalEvery: 0, batchSize: 4 }
    const first = await runPlugin(trainLora, { ...torch, steps: 3, lr: 1e-2 }, inputs)
    const init = first.outputs.adapter!
    const warm = await runPlugin(
      trainLora,
      { ...torch, ...still },
      { ...inputs, init: artifact("Adapter", init) },
    )
    expect(warm.logs.some((l) => l.startsWith("starts from the adapter"))).toBe(true)
    const a = tensors(path.join(init, "adapter_model.safetensors"))
    expect(Object.values(a).some((t) => t.some((x) => x !== 0 && Math.abs(x) < 1))).toBe(true)
    expect(tensors(path.join(warm.outputs.adapter!, "adapter_model.safetensors"))).toEqual(a)

    // QLoRA (the worker's own NF4 on the CPU) continues the same adapter.
    const q = await runPlugin(
      trainQlora,
      { ...torch, ...still },
      { ...inputs, init: artifact("Adapter", init) },
    )
    expect(tensors(path.join(q.outputs.adapter!, "adapter_model.safetensors"))).toEqual(a)

    const model = path.join(data.root, "init-model")
    saveHfModel(model, { config: data.config, weights: randomWeights(data.config, 77) })
    const full = await runPlugin(
      trainFull,
      { ...torch, ...still },
      { ...inputs, init: artifact("Model", model) },
    )
    const out = loadModel(full.outputs.model!).weights
    for (const [name, t] of loadModel(model).weights)
      expect(same(out.get(name)!.data as Float32Array, t.data as Float32Array), name).toBe(true)
  }, 300_000)
})

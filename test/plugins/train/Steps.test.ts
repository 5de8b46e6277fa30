import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, test } from "vitest"
import { readAdapter } from "../../../plugins/train/Lora.ts"
import { loadModel } from "../../../plugins/train/ModelIO.ts"
import { trainFull } from "../../../plugins/train-full/index.ts"
import { trainLora } from "../../../plugins/train-lora/index.ts"
import { trainQlora } from "../../../plugins/train-qlora/index.ts"
import { artifact, runPlugin, series } from "./Context.ts"
import { gsm8kSplits, haveData, stories } from "./TokensFixture.ts"

// Training on real data needs stories260K and GSM8K from the shared data folder.
describe.skipIf(!haveData)("train-full, train-lora and train-qlora on GSM8K questions", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "steps-"))
  const splits = haveData ? gsm8kSplits(root, 48, 16, 40) : { train: "", validation: "" }
  const inputs = () => ({
    train: artifact("Tokens", splits.train),
    validation: artifact("Tokens", splits.validation),
    // As the engine hands over a source the pipeline wrote as "models/stories260K.bin".
    base: {
      ...artifact("Model", stories),
      meta: { root: path.dirname(stories), pattern: "models/stories260K.bin", count: 1 },
    },
  })
  // One shard each, except train-lora, which runs on the default two.
  const common = { steps: 10, batchSize: 8, evalEvery: 5, shards: 1, backend: "wasm" }

  const fell = (rec: Awaited<ReturnType<typeof runPlugin>>) => {
    const val = series(rec, "val_loss")
    const trainLoss = series(rec, "train_loss")
    expect(val).toHaveLength(3) // before training, at step 5, at step 10
    expect(val[2] as number).toBeLessThan(val[0] as number)
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
    expect(mean(trainLoss.slice(-3))).toBeLessThan(mean(trainLoss.slice(0, 3)))
    expect(rec.annotations).toContainEqual({ backend: "wasm", device: "cpu" })
    expect(series(rec, "tokens_per_s").every((x) => x > 0)).toBe(true)
    expect(series(rec, "lr")).toHaveLength(10)
  }

  test("train-lora: loss falls, and the output is a PEFT adapter", async () => {
    const rec = await runPlugin(trainLora, { ...common, shards: 2, lr: 1e-2 }, inputs())
    fell(rec)
    const dir = rec.outputs.adapter as string
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, "adapter_config.json"), "utf-8"))
    expect(cfg).toMatchObject({
      peft_type: "LORA",
      r: 8,
      lora_alpha: 16,
      lora_dropout: 0.05,
      target_modules: ["k_proj", "o_proj", "q_proj", "v_proj"],
      use_rslora: false,
      base_model_name_or_path: "models/stories260K.bin",
      bias: "none",
      task_type: "CAUSAL_LM",
    })
    const adapter = readAdapter(dir)
    expect(adapter.pairs.size).toBe(5 * 4)
    expect(adapter.pairs.get("model.layers.0.self_attn.q_proj.weight")?.a.shape).toEqual([8, 64])
    expect(adapter.pairs.get("model.layers.0.self_attn.k_proj.weight")?.b.shape).toEqual([32, 8])
    expect(fs.existsSync(path.join(dir, "training.json"))).toBe(true)
  })

  test("train-qlora: loss falls on an NF4 base, and base-weight memory is reported", async () => {
    const rec = await runPlugin(
      trainQlora,
      { ...common, lr: 1e-2, targets: ["q_proj", "v_proj", "down_proj"] },
      inputs(),
    )
    fell(rec)
    const [resident] = series(rec, "base_weight_bytes")
    const [float32] = series(rec, "base_weight_bytes_float32")
    expect(float32).toBe(260032 * 4)
    // Linear weights are 4.13 bits instead of 32; the embedding and norms stay float32.
    expect((resident as number) / (float32 as number)).toBeLessThan(0.3)
    expect(rec.logs.some((l) => /MiB resident as NF4/.test(l))).toBe(true)
    expect(readAdapter(rec.outputs.adapter as string).spec.targets).toEqual(["down_proj", "q_proj", "v_proj"])
  })

  test("train-full: loss falls, and the output is a Hugging Face model directory", async () => {
    const rec = await runPlugin(trainFull, { ...common, lr: 2e-3 }, inputs())
    fell(rec)
    const dir = rec.outputs.model as string
    const model = loadModel(dir)
    expect(model.config.dim).toBe(64)
    expect(model.source).toBe("hf")
    expect(model.tokenizer?.kind).toBe("llama2c")
    const base = loadModel(stories)
    const w = "model.layers.0.mlp.down_proj.weight"
    expect(model.weights.get(w)?.data).not.toEqual(base.weights.get(w)?.data)
  })
})

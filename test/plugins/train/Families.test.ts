/**
 * The model families people fine-tune, as transformers builds and saves
 * them (python/make_model.py: Llama 3 with llama3 RoPE scaling and an
 * untied head, Qwen2.5 with q/k/v biases and tied embeddings, Qwen3 with
 * q/k norms and head_dim != hidden/heads, Mistral with a sliding window,
 * SmolLM2), run in the tfjs decoder:
 *   - its logits, RoPE frequencies, loss and gradients are transformers';
 *   - leaving out a family's own term (a bias, a q/k norm) breaks that;
 *   - three LoRA steps train on tfjs and torch-cpu, and each adapter loads
 *     with PeftModel.from_pretrained with the logits tfjs computes with it;
 *   - full fine-tuning trains the biases and norms, and the export loads in
 *     transformers as the family it came from, with tfjs's logits;
 *   - configs it cannot run are refused before training, naming the field.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs-core"
import { Schema } from "effect"
import { beforeAll, describe, expect, test } from "vitest"
import { writeHfModel } from "../../../plugins/export/HfModel.ts"
import { mergedModel } from "../../../plugins/export/Merge.ts"
import { initBackend } from "../../../plugins/train/Backend.ts"
import { generate, inferenceModel, sequenceLogits } from "../../../plugins/train/Generate.ts"
import { LlamaModel } from "../../../plugins/train/Llama.ts"
import { configFromHf, configToHf, eosIds, headDim, ropeInvFreq } from "../../../plugins/train/LlamaConfig.ts"
import { readAdapter } from "../../../plugins/train/Lora.ts"
import { loadModel, saveHfModel } from "../../../plugins/train/ModelIO.ts"
import { FullParams } from "../../../plugins/train/Params.ts"
import type { HostTensor } from "../../../plugins/train/Safetensors.ts"
import { train as trainInProcess } from "../../../plugins/train/Trainer.ts"
import { trainFull } from "../../../plugins/train-full/index.ts"
import { trainLora } from "../../../plugins/train-lora/index.ts"
import { trainQlora } from "../../../plugins/train-qlora/index.ts"
import { hasTorch, runPython } from "../../support/python.ts"
import { artifact, runPlugin, series } from "./Context.ts"
import { randomIds } from "./Tiny.ts"
import { writeTokens } from "./TokensFixture.ts"

const FAMILIES = ["llama3", "qwen2", "qwen3", "mistral", "smollm2"] as const
type Family = (typeof FAMILIES)[number]

interface Reference {
  ids: number[]
  logits: number[]
  invFreq: number[]
  loss: number
  grads: Record<string, number[]>
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)))
  return m
}

/** The weights with every tensor whose name matches replaced by `value` (a term left out). */
const without = (weights: Map<string, HostTensor>, match: RegExp, value: number) =>
  new Map(
    [...weights].map(([k, t]) => [
      k,
      match.test(k) ? { shape: t.shape, data: new Float32Array(t.data.length).fill(value) } : t,
    ]),
  )

describe.skipIf(!hasTorch)("model families in the tfjs decoder, against transformers and peft", () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "families-"))
  const dir = (f: Family) => path.join(root, f)
  let ref: Record<Family, Reference>
  const vocab = 96
  // Sequences of 6 to 13 tokens: within Mistral's window of 16.
  const seqs = Array.from({ length: 16 }, (_, i) => Array.from(randomIds(6 + (i % 8), vocab, 40 + i)))
  let train = ""
  const adapters: Array<{ family: Family; backend: string; dir: string }> = []
  const fullModels: Array<{ family: Family; dir: string }> = []

  beforeAll(async () => {
    runPython([path.join(import.meta.dirname, "python/make_model.py"), "--all", root])
    ref = JSON.parse(fs.readFileSync(path.join(root, "reference.json"), "utf8"))
    train = writeTokens(path.join(root, "train"), seqs)
    await initBackend("cpu")
  }, 120_000)

  for (const family of FAMILIES)
    test(`${family}: logits, RoPE frequencies, loss and gradients are transformers'`, () => {
      const host = loadModel(dir(family))
      const c = host.config
      const r = ref[family]
      expect(maxDiff(ropeInvFreq(c), r.invFreq)).toBeLessThan(1e-9)
      const model = inferenceModel(host)
      const ours = sequenceLogits(model, r.ids)
      model.dispose()
      expect(maxDiff(ours, r.logits)).toBeLessThan(1e-4)

      // Each of the family's own terms matters: without it the logits are not transformers'.
      const terms: Array<[string, RegExp, number]> = [
        ["q/k/v biases", /(q|k|v)_proj\.bias$/, 0],
        ["o bias", /o_proj\.bias$/, 0],
        ["q/k norms", /(q|k)_norm\.weight$/, 1],
      ]
      let checked = 0
      for (const [term, match, value] of terms) {
        if (![...host.weights.keys()].some((k) => match.test(k))) continue
        const m = inferenceModel({ ...host, weights: without(host.weights, match, value) })
        expect(maxDiff(sequenceLogits(m, r.ids), r.logits), term).toBeGreaterThan(1e-2)
        m.dispose()
        checked++
      }
      expect(checked).toBe({ llama3: 0, qwen2: 1, qwen3: 3, mistral: 0, smollm2: 0 }[family])
      if (family === "llama3") {
        // Without the llama3 scaling the frequencies and the logits differ.
        const plain = { ...c, ropeScaling: undefined }
        expect(maxDiff(ropeInvFreq(plain), r.invFreq)).toBeGreaterThan(1e-3)
        const m = new LlamaModel(plain, host.weights, { mode: "frozen" })
        expect(maxDiff(sequenceLogits(m, r.ids), r.logits)).toBeGreaterThan(1e-3)
        m.dispose()
      }

      // Full fine-tuning's gradients: the loss and d loss / d (layer-0 biases, norms, q_proj).
      const full = new LlamaModel(c, host.weights, { mode: "full" })
      const n = r.ids.length
      const targets = Int32Array.from({ length: n }, (_, t) => (t + 1 < n ? (r.ids[t + 1] as number) : -1))
      const batch = { ids: Int32Array.from(r.ids), batch: 1, seq: n }
      const names = Object.keys(r.grads)
      expect(names.length).toBeGreaterThan(2)
      const { value, grads } = tf.variableGrads(
        () => tf.div(full.lossSum(batch, targets), n - 1) as tf.Scalar,
        names.map((k) => full.variables.get(k) as tf.Variable),
      )
      expect(Math.abs((value.dataSync()[0] as number) - r.loss)).toBeLessThan(1e-5)
      for (const k of names) {
        // Linear weights are held as W^T [in, out]; transformers' gradient is by W [out, in].
        const held = grads[(full.variables.get(k) as tf.Variable).name] as tf.Tensor
        const g = k.endsWith("proj.weight") ? tf.transpose(held) : held
        const want = r.grads[k] as number[]
        const scale = Math.max(1e-3, ...want.map(Math.abs))
        expect(maxDiff(g.dataSync(), want) / scale, k).toBeLessThan(1e-4)
      }
      tf.dispose([value, ...Object.values(grads)])
      full.dispose()
    })

  for (const family of FAMILIES)
    test(`${family}: three LoRA steps train on tfjs and on torch-cpu`, async () => {
      const inputs = { train: artifact("Tokens", train), base: artifact("Model", dir(family)) }
      for (const backend of ["cpu", "torch-cpu"]) {
        const rec = await runPlugin(
          trainLora,
          { steps: 3, batchSize: 4, lr: 0.05, evalEvery: 0, shards: 1, dropout: 0, backend },
          inputs,
        )
        const losses = series(rec, "train_loss")
        expect(losses.length, backend).toBe(3)
        expect(losses.every(Number.isFinite), backend).toBe(true)
        expect(losses[2], backend).not.toBe(losses[0])
        const adapter = readAdapter(rec.outputs.adapter as string)
        expect([...adapter.pairs.values()].some((p) => p.b.data.some((x) => x !== 0))).toBe(true)
        adapters.push({ family, backend, dir: rec.outputs.adapter as string })
      }
    }, 300_000)

  test("qwen3: QLoRA trains on tfjs, the biases and q/k norms staying float beside the NF4 base", async () => {
    const rec = await runPlugin(
      trainQlora,
      { steps: 3, batchSize: 4, lr: 0.05, evalEvery: 0, shards: 1, dropout: 0, backend: "cpu" },
      { train: artifact("Tokens", train), base: artifact("Model", dir("qwen3")) },
    )
    const losses = series(rec, "train_loss")
    expect(losses.length).toBe(3)
    expect(losses.every(Number.isFinite)).toBe(true)
    expect(losses[2]).not.toBe(losses[0])
  }, 120_000)

  for (const family of ["qwen2", "qwen3"] as const)
    test(`${family}: full fine-tuning on tfjs trains the biases and q/k norms`, async () => {
      const rec = await runPlugin(
        trainFull,
        { steps: 3, batchSize: 4, lr: 0.01, evalEvery: 0, shards: 1, backend: "cpu" },
        { train: artifact("Tokens", train), base: artifact("Model", dir(family)) },
      )
      const out = rec.outputs.model as string
      const before = loadModel(dir(family)).weights
      const after = loadModel(out).weights
      const moved = (name: string) =>
        maxDiff((before.get(name) as HostTensor).data, (after.get(name) as HostTensor).data)
      expect(moved("model.layers.0.self_attn.q_proj.bias")).toBeGreaterThan(1e-4)
      if (family === "qwen3") {
        expect(moved("model.layers.1.self_attn.k_norm.weight")).toBeGreaterThan(1e-4)
        expect(moved("model.layers.1.self_attn.o_proj.bias")).toBeGreaterThan(1e-4)
      }
      // The export is the source's config.json with the same family, fields and EOS list.
      const src = JSON.parse(fs.readFileSync(path.join(dir(family), "config.json"), "utf8"))
      const cfg = JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8"))
      for (const k of Object.keys(src)) if (k !== "transformers_version") expect(cfg[k], k).toEqual(src[k])
      fullModels.push({ family, dir: out })
    }, 120_000)

  test("qwen3: full fine-tuning over two data-parallel shards gives one shard's weights", async () => {
    const quiet = { log: () => {}, metric: () => {}, progress: () => {}, annotate: () => {} }
    const run = async (shards: number) => {
      const out = fs.mkdtempSync(path.join(root, "shards-"))
      await trainInProcess(
        {
          kind: "full",
          base: dir("qwen3"),
          baseName: "qwen3",
          train,
          output: path.join(out, "model"),
          checkpoints: path.join(out, "ck"),
          params: Schema.decodeUnknownSync(FullParams)({
            steps: 2,
            batchSize: 4,
            lr: 0.01,
            evalEvery: 0,
            shards,
            backend: "cpu",
          }),
        },
        quiet,
      )
      return loadModel(path.join(out, "model")).weights
    }
    const one = await run(1)
    const two = await run(2)
    let worst = 0
    for (const [name, t] of one) worst = Math.max(worst, maxDiff(t.data, (two.get(name) as HostTensor).data))
    expect(worst).toBeLessThan(1e-5)
    const base = loadModel(dir("qwen3")).weights
    expect(
      maxDiff(
        (base.get("model.layers.0.self_attn.q_norm.weight") as HostTensor).data,
        (two.get("model.layers.0.self_attn.q_norm.weight") as HostTensor).data,
      ),
    ).toBeGreaterThan(1e-4)
  }, 120_000)

  test("every adapter loads with PeftModel.from_pretrained, every full export in transformers, with tfjs's logits", () => {
    expect(adapters.length).toBe(FAMILIES.length * 2)
    expect(fullModels.length).toBe(2)
    const ids = Array.from(randomIds(12, vocab, 5))
    // Each family's tfjs adapter merged and exported as a Hugging Face model directory.
    const merges = FAMILIES.map((family) => {
      const a = adapters.find((x) => x.family === family && x.backend === "cpu") as (typeof adapters)[number]
      const out = path.join(root, `merged-${family}`)
      writeHfModel(out, mergedModel(loadModel(dir(family)), readAdapter(a.dir), "none"))
      return { family, dir: out, adapter: adapters.indexOf(a) }
    })
    const requests = [
      ...adapters.map((a) => ({ base: dir(a.family), adapter: a.dir, ids })),
      ...fullModels.map((m) => ({ model: m.dir, ids })),
      ...merges.map((m) => ({ model: m.dir, ids })),
      { model: path.join(root, "qwen3-bf16-sharded"), ids },
    ]
    const theirs = JSON.parse(
      runPython([path.join(import.meta.dirname, "python/families_logits.py")], JSON.stringify(requests)),
    ) as Array<{
      logits: number[]
      class: string
      type: string
    }>
    const classes = {
      llama3: "LlamaForCausalLM",
      qwen2: "Qwen2ForCausalLM",
      qwen3: "Qwen3ForCausalLM",
      mistral: "MistralForCausalLM",
      smollm2: "LlamaForCausalLM",
    }
    adapters.forEach((a, i) => {
      const t = theirs[i] as (typeof theirs)[number]
      const what = `${a.family} adapter from ${a.backend}`
      expect(t.class, what).toBe(classes[a.family])
      const host = loadModel(dir(a.family))
      const adapter = readAdapter(a.dir)
      // Merged into the weights (inference), and as the trainer holds it (base + B A beside it).
      const merged = inferenceModel(host, adapter)
      expect(maxDiff(sequenceLogits(merged, ids), t.logits), `${what}, merged`).toBeLessThan(1e-4)
      merged.dispose()
      const lora = new LlamaModel(host.config, host.weights, {
        mode: "lora",
        lora: adapter.spec,
        loraWeights: adapter.pairs,
      })
      expect(maxDiff(sequenceLogits(lora, ids), t.logits), `${what}, unmerged`).toBeLessThan(1e-4)
      lora.dispose()
      const plain = inferenceModel(host)
      expect(maxDiff(sequenceLogits(plain, ids), t.logits), `${what} changes the logits`).toBeGreaterThan(
        1e-3,
      )
      plain.dispose()
    })
    fullModels.forEach((m, i) => {
      const t = theirs[adapters.length + i] as (typeof theirs)[number]
      expect(t.class).toBe(classes[m.family])
      const model = inferenceModel(loadModel(m.dir))
      expect(maxDiff(sequenceLogits(model, ids), t.logits), m.family).toBeLessThan(1e-4)
      model.dispose()
    })
    // A merged export loads as its family and gives the logits PEFT gives with the adapter.
    merges.forEach((m, i) => {
      const t = theirs[adapters.length + fullModels.length + i] as (typeof theirs)[number]
      expect(t.class, `merged ${m.family}`).toBe(classes[m.family])
      const peft = theirs[m.adapter] as (typeof theirs)[number]
      expect(maxDiff(t.logits, peft.logits), `merged ${m.family}`).toBeLessThan(1e-4)
    })
    // bfloat16 shards, as a hub checkpoint ships: the same logits as transformers computes on them in float32.
    const bf16 = theirs[theirs.length - 1] as (typeof theirs)[number]
    const sharded = inferenceModel(loadModel(path.join(root, "qwen3-bf16-sharded")))
    expect(maxDiff(sequenceLogits(sharded, ids), bf16.logits)).toBeLessThan(1e-4)
    sharded.dispose()
  }, 300_000)

  test("EOS lists are kept, end generation on any of their ids, and are written back as lists", async () => {
    const host = loadModel(dir("llama3"))
    expect(eosIds(host.config)).toEqual([2, 3])
    expect(host.config.eosId).toBe(2)
    const model = inferenceModel(host)
    const prompt = [1, 17, 42]
    const free = await generate({ model, promptIds: prompt, maxTokens: 12, stopIds: [] })
    // The model's second EOS id becomes one greedy decoding reaches at step `at` for the first time;
    // its first EOS id and its BOS (also a default stop) become ids it never produces.
    const at = free.findIndex((t, i) => i >= 2 && !free.slice(0, i).includes(t))
    expect(at).toBeGreaterThan(1)
    const unused = [...Array(vocab).keys()].filter((t) => !free.includes(t))
    const stopsAt = {
      ...host.config,
      bosId: unused[1] as number,
      eosId: unused[0] as number,
      eosIds: [unused[0] as number, free[at] as number],
    }
    const m2 = new LlamaModel(stopsAt, host.weights, { mode: "frozen" })
    const stopped = await generate({ model: m2, promptIds: prompt, maxTokens: 12 })
    expect(stopped).toEqual(free.slice(0, at))
    model.dispose()
    m2.dispose()
    const out = path.join(root, "llama3-export")
    writeHfModel(out, host)
    const read = (f: string) => JSON.parse(fs.readFileSync(path.join(out, f), "utf8"))
    expect(read("config.json").eos_token_id).toEqual([2, 3])
    expect(read("generation_config.json").eos_token_id).toEqual([2, 3])
  })

  test("a Hugging Face config round-trips with the family's own fields", () => {
    expect(eosIds(loadModel(dir("qwen2")).config)).toEqual([2])
    const qwen3 = loadModel(dir("qwen3")).config
    expect([headDim(qwen3), qwen3.dim / qwen3.nHeads]).toEqual([16, 8])
    for (const family of FAMILIES) {
      const src = JSON.parse(fs.readFileSync(path.join(dir(family), "config.json"), "utf8"))
      const back = configToHf(configFromHf(src))
      for (const k of Object.keys(src)) expect(back[k], `${family} ${k}`).toEqual(src[k])
      const { source: _a, ...read } = configFromHf(src)
      const { source: _b, ...reread } = configFromHf(back)
      expect(reread).toEqual(read)
      const saved = path.join(root, `resaved-${family}`)
      const host = loadModel(dir(family))
      saveHfModel(saved, host)
      expect(loadModel(saved).config).toEqual({ ...host.config, source: expect.anything() })
    }
  })

  describe("refusals", () => {
    const variant = (family: Family, name: string, fields: Record<string, unknown>) => {
      const out = path.join(root, `${family}-${name}`)
      fs.cpSync(dir(family), out, { recursive: true })
      const cfg = JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8"))
      for (const [key, value] of Object.entries(fields)) {
        const [outer, inner] = key.split(".") as [string, string | undefined]
        if (inner === undefined) cfg[outer] = value
        else cfg[outer][inner] = value
      }
      fs.writeFileSync(path.join(out, "config.json"), JSON.stringify(cfg))
      return out
    }
    // A family, a name, the config.json fields set (a dotted key sets inside an object), the error.
    const cases: Array<[Family, string, Record<string, unknown>, RegExp]> = [
      ["qwen2", "gemma", { model_type: "gemma" }, /model_type "gemma"/],
      ["llama3", "gelu", { hidden_act: "gelu" }, /hidden_act "gelu"/],
      ["llama3", "yarn", { "rope_parameters.rope_type": "yarn" }, /rope_parameters\.rope_type "yarn"/],
      ["smollm2", "mlp-bias", { mlp_bias: true }, /mlp_bias true/],
      ["qwen2", "sliding", { use_sliding_window: true }, /use_sliding_window true/],
      [
        "qwen3",
        "layers",
        { layer_types: ["full_attention", "sliding_attention"] },
        /layer_types "sliding_attention"/,
      ],
    ]
    test.each(cases)(
      "%s with %s: refused before training, naming config.json, the field and the torch backend",
      async (family, name, fields, message) => {
        const base = variant(family, name, fields)
        const file = path.join(base, "config.json")
        const full = new RegExp(
          `${file.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&")}: ${message.source}.*backend: "torch"`,
        )
        expect(() => loadModel(base)).toThrow(full)
        await expect(
          runPlugin(
            trainLora,
            { steps: 1, batchSize: 2, evalEvery: 0, shards: 1, backend: "cpu" },
            {
              train: artifact("Tokens", train),
              base: artifact("Model", base),
            },
          ),
        ).rejects.toThrow(full)
      },
    )

    test("a malformed llama3 rope or eos list names the field", () => {
      const src = JSON.parse(fs.readFileSync(path.join(dir("llama3"), "config.json"), "utf8"))
      const rope = src.rope_parameters as Record<string, unknown>
      expect(() =>
        configFromHf({ ...src, rope_parameters: { ...rope, factor: undefined } }, "m/config.json"),
      ).toThrow(/m\/config\.json: rope_parameters\.factor must be a positive number/)
      expect(() => configFromHf({ ...src, eos_token_id: [] }, "m/config.json")).toThrow(
        /m\/config\.json: eos_token_id must be/,
      )
      expect(() => configFromHf({ ...src, eos_token_id: ["</s>"] }, "m/config.json")).toThrow(/eos_token_id/)
      // The older rope_scaling form reads the same.
      const legacy = {
        ...src,
        rope_parameters: undefined,
        rope_theta: 500000,
        rope_scaling: { ...rope, rope_theta: undefined },
      }
      expect(configFromHf(legacy).ropeScaling).toEqual(configFromHf(src).ropeScaling)
    })

    test("mistral: a context longer than sliding_window is refused on tfjs, and trains on torch", async () => {
      const long = writeTokens(path.join(root, "long"), [
        Array.from(randomIds(24, vocab, 3)),
        Array.from(randomIds(10, vocab, 4)),
      ])
      const inputs = { train: artifact("Tokens", long), base: artifact("Model", dir("mistral")) }
      const params = { steps: 1, batchSize: 2, evalEvery: 0, shards: 1 }
      await expect(runPlugin(trainLora, { ...params, backend: "cpu" }, inputs)).rejects.toThrow(
        /config\.json: a context of 24 tokens exceeds config\.json's sliding_window 16.*maxSeqLen.*backend: "torch"/,
      )
      // Cut to the window, it trains on tfjs.
      const cut = await runPlugin(trainLora, { ...params, maxSeqLen: 16, backend: "cpu" }, inputs)
      expect(series(cut, "train_loss").every(Number.isFinite)).toBe(true)
      const torch = await runPlugin(trainLora, { ...params, backend: "torch-cpu" }, inputs)
      expect(series(torch, "train_loss").every(Number.isFinite)).toBe(true)
      // Inference past the window is refused too.
      const model = inferenceModel(loadModel(dir("mistral")))
      expect(() => sequenceLogits(model, Array.from(randomIds(17, vocab, 1)))).toThrow(
        /17 tokens exceeds config\.json's sliding_window 16/,
      )
      model.dispose()
    }, 300_000)
  })
})

/**
 * The decoder against Hugging Face transformers (and peft for LoRA): a small
 * random Llama saved with saveHfModel, loaded by LlamaForCausalLM, run on
 * the same batches (padded sequences, and a packed batch with a 4D
 * block-diagonal causal mask and restarting position ids). Logits, the mean
 * token loss and its gradient for every trainable tensor must agree: full
 * fine-tuning (every weight) and LoRA (lora_A, lora_B), untied and tied
 * embeddings, eager and sdpa attention on the Python side, and each
 * attention implementation on the TypeScript side.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs-core"
import { afterAll, beforeAll, describe, expect, test } from "vitest"
import { initBackend } from "../../../plugins/train/Backend.ts"
import { LlamaModel } from "../../../plugins/train/Llama.ts"
import { EMBED, type LlamaConfig } from "../../../plugins/train/LlamaConfig.ts"
import { type LoraModule, type LoraPair, type LoraSpec, moduleWeight } from "../../../plugins/train/Lora.ts"
import { saveHfModel } from "../../../plugins/train/ModelIO.ts"
import { Rng } from "../../../plugins/train/Rng.ts"
import { type HostTensor, readSafetensors, writeSafetensors } from "../../../plugins/train/Safetensors.ts"
import { type MicroBatch, makeBatch, type TokenSet } from "../../../plugins/train/TokenData.ts"
import { hasTorch, runPython } from "../../support/python.ts"
import { randomIds, randomWeights, tinyConfig } from "./Tiny.ts"

const script = path.join(import.meta.dirname, "python", "llama.py")

const shape = { dim: 32, hiddenDim: 48, nLayers: 2, nHeads: 4, nKvHeads: 2, vocabSize: 64 }
const models = {
  // A RoPE base far from the default, so a model that ignored it would show.
  untied: { config: tinyConfig({ ...shape, tiedEmbeddings: false, ropeTheta: 500 }), seed: 1 },
  // An RMSNorm epsilon large enough to matter at these tolerances.
  tied: { config: tinyConfig({ ...shape, tiedEmbeddings: true, normEps: 0.05 }), seed: 2 },
}
type ModelName = keyof typeof models

/** A Tokens set in memory: sequences with a masked prompt (-100), optionally packed examples. */
const tokenSet = (lengths: number[], segments?: number[][]): TokenSet => {
  const total = lengths.reduce((a, b) => a + b, 0)
  const tokens = Uint32Array.from(randomIds(total, shape.vocabSize, 21))
  const labels = Int32Array.from(tokens, (t, i) => (i % 7 < 2 ? -100 : t))
  const offsets = Uint32Array.from([
    0,
    ...lengths.map((_, i) => lengths.slice(0, i + 1).reduce((a, b) => a + b)),
  ])
  return {
    dir: "memory",
    count: lengths.length,
    tokens,
    labels,
    offsets,
    padId: 0,
    ...(segments ? { segments: Uint32Array.from(segments.flat()) } : {}),
  }
}

const batches: Record<string, MicroBatch> = {
  // Two sequences of different lengths: the shorter one is padded, its padding has no targets.
  padded: makeBatch(tokenSet([9, 6]), [0, 1], 64),
  // Packed rows: row 0 holds examples of 4 and 5 tokens, row 1 two of 3 tokens and 3 of padding.
  packed: makeBatch(
    tokenSet(
      [9, 6],
      [
        [0, 0, 0, 0, 1, 1, 1, 1, 1],
        [2, 2, 2, 3, 3, 3],
      ],
    ),
    [0, 1],
    64,
  ),
}
type BatchName = keyof typeof batches

const QKVO: LoraModule[] = ["q_proj", "k_proj", "v_proj", "o_proj"]
const ALL: LoraModule[] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
const loras: Record<string, LoraSpec | undefined> = {
  full: undefined,
  lora: { r: 4, alpha: 8, dropout: 0, targets: QKVO, rslora: false },
  rslora: { r: 4, alpha: 6, dropout: 0, targets: QKVO, rslora: true },
  "lora-mlp": { r: 2, alpha: 3, dropout: 0, targets: ALL, rslora: false },
}
type Mode = keyof typeof loras

const peftName = (weight: string, ab: "A" | "B") =>
  `base_model.model.${weight.replace(/\.weight$/, "")}.lora_${ab}.default.weight`

/** Nonzero A and B for every targeted weight, in PEFT orientation (A [r, in], B [out, r]). */
const loraPairs = (config: LlamaConfig, spec: LoraSpec, seed: number): Map<string, LoraPair> => {
  const rng = new Rng(seed)
  const uniform = (n: number, scale: number) =>
    Float32Array.from({ length: n }, () => Math.fround((rng.next() * 2 - 1) * scale))
  const shapes = new Map([...randomWeights(config)].map(([k, v]) => [k, v.shape]))
  const out = new Map<string, LoraPair>()
  for (let i = 0; i < config.nLayers; i++)
    for (const m of spec.targets) {
      const w = moduleWeight(i, m)
      const [o, n] = shapes.get(w) as [number, number]
      out.set(w, {
        a: { shape: [spec.r, n], data: uniform(spec.r * n, 0.3) },
        b: { shape: [o, spec.r], data: uniform(o * spec.r, 0.3) },
      })
    }
  return out
}

const ATTNS = ["eager", "sdpa"] as const
let dir = ""
const key = (m: string, b: string, mode: string, attn: string) => `${m}-${b}-${mode}-${attn}`
const reference = new Map<string, Map<string, HostTensor>>()
const pairsOf = new Map<string, Map<string, LoraPair>>()

/** max|a − b| / max|b| over one tensor, and max|b|. */
const relative = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let diff = 0
  let scale = 0
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs((a[i] as number) - (b[i] as number)))
    scale = Math.max(scale, Math.abs(b[i] as number))
  }
  return { diff, scale, rel: diff / scale }
}

const transpose2 = (t: tf.Tensor): Float32Array => tf.tidy(() => tf.transpose(t)).dataSync() as Float32Array

describe.skipIf(!hasTorch)("Llama against transformers and peft", () => {
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), "tunegraph-parity-"))
    const requests: unknown[] = []
    for (const [m, { config, seed }] of Object.entries(models)) {
      const modelDir = path.join(dir, m)
      saveHfModel(modelDir, { config, weights: randomWeights(config, seed) })
      for (const [mode, spec] of Object.entries(loras)) {
        let lora: Record<string, unknown> | undefined
        if (spec !== undefined) {
          const pairs = loraPairs(config, spec, seed * 100 + mode.length)
          pairsOf.set(`${m}-${mode}`, pairs)
          const file = path.join(dir, `${m}-${mode}.safetensors`)
          const tensors = new Map<string, HostTensor>()
          for (const [w, p] of pairs) {
            tensors.set(peftName(w, "A"), p.a)
            tensors.set(peftName(w, "B"), p.b)
          }
          fs.writeFileSync(file, writeSafetensors(tensors))
          lora = { r: spec.r, alpha: spec.alpha, rslora: spec.rslora, targets: spec.targets, file }
        }
        for (const [b, mb] of Object.entries(batches))
          for (const attn of ATTNS)
            requests.push({
              model: modelDir,
              attn,
              batch: mb.batch.batch,
              seq: mb.batch.seq,
              ids: [...mb.batch.ids],
              targets: [...mb.targets],
              ...(mb.batch.segments
                ? { segments: [...mb.batch.segments], positions: [...(mb.batch.positions ?? [])] }
                : {}),
              ...(lora ? { lora } : {}),
              out: path.join(dir, `${key(m, b, mode, attn)}.safetensors`),
            })
      }
    }
    runPython([script], JSON.stringify(requests))
    for (const r of requests as { out: string }[])
      reference.set(path.basename(r.out, ".safetensors"), readSafetensors(r.out).tensors)
  }, 300_000)

  afterAll(() => {
    if (dir !== "") fs.rmSync(dir, { recursive: true, force: true })
  })

  test("the packed batch restarts positions and keeps padding in a segment of its own", () => {
    const { segments, positions } = batches.packed?.batch ?? {}
    expect([...(segments ?? [])]).toEqual([0, 0, 0, 0, 1, 1, 1, 1, 1, 2, 2, 2, 3, 3, 3, -1, -1, -1])
    expect([...(positions ?? [])]).toEqual([0, 1, 2, 3, 0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 0, 1, 2])
  })

  const cases: [ModelName, BatchName, Mode][] = []
  for (const m of Object.keys(models) as ModelName[])
    for (const b of Object.keys(batches) as BatchName[])
      for (const mode of Object.keys(loras) as Mode[]) cases.push([m, b, mode])

  for (const [backend, attention] of [
    ["cpu", "tf"],
    ["cpu", "js"],
    ["wasm", "simd"],
  ] as const)
    test.each(cases)(
      `%s model, %s batch, %s: logits, loss and gradients (${backend}, ${attention})`,
      async (m, b, mode) => {
        await initBackend(backend)
        const { config, seed } = models[m]
        const mb = batches[b] as MicroBatch
        const spec = loras[mode]
        const model = new LlamaModel(config, randomWeights(config, seed), {
          mode: spec === undefined ? "full" : "lora",
          attention,
          ...(spec ? { lora: spec, loraWeights: pairsOf.get(`${m}-${mode}`) } : {}),
        })
        const logits = tf.tidy(() => model.logits(mb.batch)).dataSync() as Float32Array
        const vars = [...model.variables.entries()]
        const { value, grads } = tf.variableGrads(
          () => tf.div(model.lossSum(mb.batch, mb.targets), mb.targetCount) as tf.Scalar,
          vars.map(([, v]) => v),
        )
        const loss = value.dataSync()[0] as number
        const ours = new Map<string, Float32Array>()
        for (const [name, v] of vars) {
          const g = grads[v.name] as tf.Tensor
          if (spec !== undefined) {
            // A^T [in, r] and B^T [r, out] on our side.
            const ab = name.endsWith(".lora_A") ? "A" : "B"
            ours.set(peftName(name.replace(/\.lora_[AB]$/, ".weight"), ab), transpose2(g))
          } else
            ours.set(name, g.rank === 2 && name !== EMBED ? transpose2(g) : (g.dataSync() as Float32Array))
        }
        tf.dispose([value, ...Object.values(grads)])
        model.dispose()

        for (const attn of ATTNS) {
          const ref = reference.get(key(m, b, mode, attn)) as Map<string, HostTensor>
          const where = `${attn} attention`
          const l = relative(logits, (ref.get("logits") as HostTensor).data)
          expect(l.diff, `logits, ${where}`).toBeLessThan(1e-4)
          expect(l.scale, "logits of order 1").toBeGreaterThan(0.5)
          const refLoss = (ref.get("loss") as HostTensor).data[0] as number
          expect(Math.abs(loss - refLoss) / refLoss, `loss ${loss} vs ${refLoss}, ${where}`).toBeLessThan(
            1e-5,
          )
          const refGrads = [...ref.keys()].filter((k) => k.startsWith("grad.")).map((k) => k.slice(5))
          expect([...ours.keys()].sort()).toEqual(refGrads.sort())
          for (const name of refGrads) {
            const want = (ref.get(`grad.${name}`) as HostTensor).data
            const got = ours.get(name) as Float32Array
            expect(got.length, name).toBe(want.length)
            const g = relative(got, want)
            expect(g.scale, `${name} has a gradient`).toBeGreaterThan(1e-6)
            expect(g.rel, `gradient of ${name}, ${where}: max diff ${g.diff}, max ${g.scale}`).toBeLessThan(
              1e-4,
            )
          }
        }
      },
    )
})

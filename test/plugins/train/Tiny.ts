/** A small random Llama for tests that need gradients or many forward passes. */
import { expectedShapes, type LlamaConfig } from "../../../plugins/train/LlamaConfig.ts"
import { Rng } from "../../../plugins/train/Rng.ts"
import type { HostTensor } from "../../../plugins/train/Safetensors.ts"

export const tinyConfig = (over: Partial<LlamaConfig> = {}): LlamaConfig => ({
  dim: 16,
  hiddenDim: 24,
  nLayers: 2,
  nHeads: 4,
  nKvHeads: 2,
  vocabSize: 32,
  maxSeqLen: 64,
  normEps: 1e-5,
  ropeTheta: 10000,
  tiedEmbeddings: true,
  bosId: 1,
  eosId: 2,
  ...over,
})

export const randomWeights = (config: LlamaConfig, seed = 1): Map<string, HostTensor> => {
  const rng = new Rng(seed)
  const out = new Map<string, HostTensor>()
  for (const [name, shape] of expectedShapes(config)) {
    const n = shape.reduce((a, b) => a * b, 1)
    const data = new Float32Array(n)
    const isNorm = shape.length === 1
    for (let i = 0; i < n; i++) data[i] = isNorm ? 1 + (rng.next() - 0.5) * 0.2 : (rng.next() * 2 - 1) * 0.3
    out.set(name, { shape, data })
  }
  return out
}

export const randomIds = (n: number, vocab: number, seed = 7): Int32Array => {
  const rng = new Rng(seed)
  return Int32Array.from({ length: n }, () => Math.floor(rng.next() * vocab))
}

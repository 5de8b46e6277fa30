/**
 * Imports a llama2.c checkpoint ("version 0" layout: 7 int32 then float32
 * arrays) as Hugging Face-named weights.
 *
 * llama2.c rotates interleaved pairs (2i, 2i+1) with RoPE; Hugging Face Llama
 * rotates the two halves of each head (i, i + head/2). Permuting the rows of
 * wq and wk within each head turns one convention into the other, as
 * transformers' convert_llama_weights_to_hf.py does.
 */
import * as fs from "node:fs"
import { EMBED, FINAL_NORM, type LlamaConfig, LM_HEAD, layerNames } from "./LlamaConfig.ts"
import type { HostTensor } from "./Safetensors.ts"

export class Llama2cError extends Error {
  override readonly name = "Llama2cError"
}

/** Row order of HF q/k from llama2.c's: within each head, even rows first, then odd rows. */
export const permuteRope = (w: Float32Array, heads: number, cols: number): Float32Array => {
  const rows = w.length / cols
  const hd = rows / heads
  const out = new Float32Array(w.length)
  for (let h = 0; h < heads; h++)
    for (let half = 0; half < 2; half++)
      for (let i = 0; i < hd / 2; i++) {
        const src = (h * hd + 2 * i + half) * cols
        const dst = (h * hd + half * (hd / 2) + i) * cols
        out.set(w.subarray(src, src + cols), dst)
      }
  return out
}

export const readLlama2c = (file: string): { config: LlamaConfig; weights: Map<string, HostTensor> } => {
  const bytes = fs.readFileSync(file)
  if (bytes.length < 28)
    throw new Llama2cError(`${file}: ${bytes.length} bytes, too short for a llama2.c header`)
  const h = new Int32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + 28))
  const [dim, hiddenDim, nLayers, nHeads, nKvHeads, vocab, seqLen] = [...h] as number[] as [
    number,
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  const positive = [dim, hiddenDim, nLayers, nHeads, nKvHeads, Math.abs(vocab), seqLen]
  if (positive.some((v) => v <= 0 || v > 1 << 20) || dim % nHeads !== 0 || nHeads % nKvHeads !== 0)
    throw new Llama2cError(`${file}: not a llama2.c checkpoint (header ${[...h].join(", ")})`)
  const config: LlamaConfig = {
    dim,
    hiddenDim,
    nLayers,
    nHeads,
    nKvHeads,
    vocabSize: Math.abs(vocab),
    maxSeqLen: seqLen,
    normEps: 1e-5,
    ropeTheta: 10000,
    tiedEmbeddings: vocab > 0,
    bosId: 1,
    eosId: 2,
  }
  const hd = dim / nHeads
  const kvDim = nKvHeads * hd
  const V = config.vocabSize
  const L = nLayers
  const count =
    V * dim +
    L * dim * 2 +
    L * dim * dim * 2 +
    L * kvDim * dim * 2 +
    L * hiddenDim * dim * 3 +
    dim +
    seqLen * hd +
    (config.tiedEmbeddings ? 0 : V * dim)
  if (bytes.length < 28 + count * 4)
    throw new Llama2cError(`${file}: ${bytes.length} bytes, the header promises ${28 + count * 4}`)
  const all = new Float32Array(bytes.buffer.slice(bytes.byteOffset + 28, bytes.byteOffset + 28 + count * 4))
  let at = 0
  const take = (n: number): Float32Array => {
    const out = all.slice(at, at + n)
    at += n
    return out
  }
  const perLayer = (n: number): Float32Array[] => Array.from({ length: L }, () => take(n))
  const weights = new Map<string, HostTensor>()
  weights.set(EMBED, { shape: [V, dim], data: take(V * dim) })
  const rmsAtt = perLayer(dim)
  const wq = perLayer(dim * dim)
  const wk = perLayer(kvDim * dim)
  const wv = perLayer(kvDim * dim)
  const wo = perLayer(dim * dim)
  const rmsFfn = perLayer(dim)
  const w1 = perLayer(hiddenDim * dim)
  const w2 = perLayer(dim * hiddenDim)
  const w3 = perLayer(hiddenDim * dim)
  for (let i = 0; i < L; i++) {
    const n = layerNames(i)
    weights.set(n.attnNorm, { shape: [dim], data: rmsAtt[i] as Float32Array })
    weights.set(n.q, { shape: [dim, dim], data: permuteRope(wq[i] as Float32Array, nHeads, dim) })
    weights.set(n.k, { shape: [kvDim, dim], data: permuteRope(wk[i] as Float32Array, nKvHeads, dim) })
    weights.set(n.v, { shape: [kvDim, dim], data: wv[i] as Float32Array })
    weights.set(n.o, { shape: [dim, dim], data: wo[i] as Float32Array })
    weights.set(n.ffnNorm, { shape: [dim], data: rmsFfn[i] as Float32Array })
    weights.set(n.gate, { shape: [hiddenDim, dim], data: w1[i] as Float32Array })
    weights.set(n.down, { shape: [dim, hiddenDim], data: w2[i] as Float32Array })
    weights.set(n.up, { shape: [hiddenDim, dim], data: w3[i] as Float32Array })
  }
  weights.set(FINAL_NORM, { shape: [dim], data: take(dim) })
  take(seqLen * hd) // the two RoPE tables, recomputed at run time
  if (!config.tiedEmbeddings) weights.set(LM_HEAD, { shape: [V, dim], data: take(V * dim) })
  return { config, weights }
}

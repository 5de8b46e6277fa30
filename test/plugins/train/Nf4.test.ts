import * as tf from "@tensorflow/tfjs-core"
import { describe, expect, test } from "vitest"
import { initBackend } from "../../../plugins/train/Backend.ts"
import { LlamaModel } from "../../../plugins/train/Llama.ts"
import {
  blockAbsmax,
  dequantizeNf4,
  NF4_BLOCK,
  NF4_CODEBOOK,
  nf4Bytes,
  quantizeNf4,
} from "../../../plugins/train/Nf4.ts"
import { Rng } from "../../../plugins/train/Rng.ts"
import { randomIds, randomWeights, tinyConfig } from "./Tiny.ts"

/** erf by its Taylor series (float64, ample for |x| < 3). */
const erf = (x: number): number => {
  let sum = 0
  let term = x
  for (let n = 0; n < 200; n++) {
    sum += term / (2 * n + 1)
    term *= (-x * x) / (n + 1)
  }
  return (2 / Math.sqrt(Math.PI)) * sum
}
/** The standard normal quantile, by bisection on its CDF. */
const ppf = (p: number): number => {
  let lo = -6
  let hi = 6
  for (let i = 0; i < 200; i++) {
    const mid = (lo + hi) / 2
    if (0.5 * (1 + erf(mid / Math.SQRT2)) < p) lo = mid
    else hi = mid
  }
  return (lo + hi) / 2
}
const linspace = (a: number, b: number, n: number) =>
  Array.from({ length: n }, (_, i) => a + ((b - a) * i) / (n - 1))

describe("NF4", () => {
  test("the codebook is the QLoRA construction: normal quantiles, an exact zero, scaled to [-1, 1]", () => {
    // bitsandbytes' create_normal_map(offset=0.9677083, use_extra_value=True).
    const offset = 0.9677083
    const pos = linspace(offset, 0.5, 9).slice(0, -1).map(ppf)
    const neg = linspace(offset, 0.5, 8)
      .slice(0, -1)
      .map((p) => -ppf(p))
    const values = [...pos, 0, ...neg].sort((a, b) => a - b)
    const max = Math.max(...values)
    const derived = values.map((v) => v / max)
    expect(NF4_CODEBOOK).toHaveLength(16)
    for (const [i, c] of NF4_CODEBOOK.entries())
      expect(Math.abs(c - (derived[i] as number))).toBeLessThan(1e-6)
    expect(NF4_CODEBOOK[0]).toBe(-1)
    expect(NF4_CODEBOOK[7]).toBe(0)
    expect(NF4_CODEBOOK[15]).toBe(1)
    // Each level is a float32 value, so storing it as float32 loses nothing.
    for (const c of NF4_CODEBOOK) expect(Math.fround(c)).toBe(c)
  })

  test("round-trip error stays within half a level gap times the absmax plus the absmax's own error", () => {
    const rng = new Rng(2)
    const rows = 96
    const cols = 70 // not a multiple of 64: blocks straddle rows and the last one is partial
    const data = new Float32Array(rows * cols)
    for (let i = 0; i < data.length; i++) {
      const u = rng.next() || 1e-9
      const g = Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next())
      data[i] = g * 0.02 * (i % 997 === 0 ? 20 : 1)
    }
    const q = quantizeNf4(data, [rows, cols])
    const back = dequantizeNf4(q)
    const absmaxHat = blockAbsmax(q)
    let maxGap = 0
    for (let i = 0; i < 15; i++)
      maxGap = Math.max(maxGap, (NF4_CODEBOOK[i + 1] as number) - (NF4_CODEBOOK[i] as number))
    let worstRatio = 0
    for (let b = 0; b * NF4_BLOCK < data.length; b++) {
      const block = data.subarray(b * NF4_BLOCK, Math.min(data.length, (b + 1) * NF4_BLOCK))
      const absmax = Math.max(...Array.from(block, Math.abs))
      const bound = (absmax * maxGap) / 2 + Math.abs(absmax - (absmaxHat[b] as number)) + 1e-7
      for (let i = 0; i < block.length; i++) {
        const err = Math.abs((block[i] as number) - (back[b * NF4_BLOCK + i] as number))
        expect(err).toBeLessThanOrEqual(bound)
        worstRatio = Math.max(worstRatio, err / bound)
      }
    }
    expect(worstRatio).toBeGreaterThan(0.3) // the bound is tight, not vacuous
    const t = dequantizeNf4(q, true)
    for (let r = 0; r < rows; r++)
      for (let c = 0; c < cols; c++) expect(t[c * rows + r]).toBe(back[r * cols + c])
    // 4 bits per value plus one byte per block of 64, plus a scale per 256 blocks.
    expect(nf4Bytes(q)).toBe(Math.ceil((rows * cols) / 2) + Math.ceil((rows * cols) / 64) + 4 + 4)
  })

  test("a QLoRA model computes from NF4 base weights and holds them in about 1/8 of float32", async () => {
    await initBackend("cpu")
    const config = tinyConfig({ dim: 64, hiddenDim: 128, nHeads: 4, nKvHeads: 2 })
    const weights = randomWeights(config, 3)
    const spec = { r: 4, alpha: 8, dropout: 0, targets: ["q_proj", "v_proj"] as const, rslora: false }
    // The reference: a float model whose linear weights went through quantise → dequantise.
    const roundTripped = new Map(weights)
    for (const [name, w] of weights)
      if (/_proj\.weight$/.test(name))
        roundTripped.set(name, {
          shape: w.shape,
          data: dequantizeNf4(quantizeNf4(w.data, w.shape as [number, number])),
        })
    const base = new LlamaModel(config, roundTripped, { mode: "frozen" })
    const exact = new LlamaModel(config, weights, { mode: "frozen" })
    const qlora = new LlamaModel(config, weights, {
      mode: "qlora",
      lora: { ...spec, targets: [...spec.targets] },
    })
    const batch = { ids: randomIds(8, config.vocabSize), batch: 1, seq: 8 }
    const a = tf.tidy(() => base.logits(batch)).dataSync()
    const b = tf.tidy(() => qlora.logits(batch)).dataSync()
    const c = tf.tidy(() => exact.logits(batch)).dataSync()
    let worst = 0
    let moved = 0
    for (let i = 0; i < a.length; i++) {
      worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)))
      moved = Math.max(moved, Math.abs((c[i] as number) - (b[i] as number)))
    }
    expect(worst).toBeLessThan(1e-5)
    expect(moved).toBeGreaterThan(1e-3) // really quantised
    exact.dispose()
    const { float32, resident } = qlora.baseBytes()
    // q, o [64, 64]; k, v [32, 64] (2 of 4 heads); gate, up, down 64 × 128; two layers.
    const linears = 2 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128)
    const saved = float32 - resident
    expect(saved / (linears * 4)).toBeGreaterThan(0.86)
    expect(saved / (linears * 4)).toBeLessThan(0.875)
    const { grads } = tf.variableGrads(
      () => qlora.lossSum(batch, Int32Array.from(batch.ids)) as tf.Scalar,
      [...qlora.variables.values()],
    )
    expect(Object.keys(grads)).toHaveLength(2 * 2 * 2)
    tf.dispose(Object.values(grads))
    base.dispose()
    qlora.dispose()
  })
})

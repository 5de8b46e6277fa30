/**
 * The optimizer against torch.optim.AdamW: the same parameters, the same
 * per-step gradients and learning rates, the same parameters after every
 * step (float32 on both sides). Weight decay applies to matrices only, so
 * the torch side decays its matrix group and not its vector group.
 */
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs-core"
import { beforeAll, describe, expect, test } from "vitest"
import { AdamW, type AdamWOptions } from "../../../plugins/train/AdamW.ts"
import { initBackend } from "../../../plugins/train/Backend.ts"
import { Rng } from "../../../plugins/train/Rng.ts"
import { hasTorch, runPython } from "../../support/python.ts"

const script = path.join(import.meta.dirname, "python", "adamw.py")

const rng = new Rng(11)
const uniform = (n: number, scale: number) =>
  Float32Array.from({ length: n }, () => Math.fround((rng.next() * 2 - 1) * scale))

// A matrix and a vector (a norm weight).
const shapes: number[][] = [[4, 6], [6]]
const initial = shapes.map((s) =>
  uniform(
    s.reduce((a, b) => a * b, 1),
    0.5,
  ),
)
// Gradients of varying size per step, so the moments and their bias corrections all matter.
const steps = 5
const grads = Array.from({ length: steps }, (_, k) => initial.map((p) => uniform(p.length, 0.2 * (k + 1))))
const lrs = [1e-2, 5e-2, 3e-2, 2e-2, 1e-3]
// eps and the betas are far from their defaults, so a misplaced eps or a swapped beta shows.
const options: AdamWOptions = { beta1: 0.8, beta2: 0.95, eps: 1e-3, weightDecay: 0.3 }

describe.skipIf(!hasTorch)("AdamW against torch.optim.AdamW", () => {
  let want: number[][][] = []
  beforeAll(() => {
    const request = {
      params: shapes.map((shape, i) => ({ shape, data: [...(initial[i] as Float32Array)] })),
      grads: grads.map((g) => g.map((t) => [...t])),
      lrs,
      ...options,
    }
    want = JSON.parse(runPython([script], JSON.stringify(request))) as number[][][]
  })

  test.each(["cpu", "wasm"])(
    "parameters agree after each of 5 steps within 1e-6 relative (%s)",
    async (backend) => {
      await initBackend(backend)
      const params = shapes.map((s, i) => tf.variable(tf.tensor(initial[i] as Float32Array, s)))
      const opt = new AdamW(params, options)
      for (let k = 0; k < steps; k++) {
        const g = shapes.map((s, i) => tf.tensor((grads[k] as Float32Array[])[i] as Float32Array, s))
        opt.step(g, lrs[k] as number)
        tf.dispose(g)
        params.forEach((p, i) => {
          const got = p.dataSync()
          const ref = (want[k] as number[][])[i] as number[]
          let diff = 0
          let scale = 0
          for (let j = 0; j < ref.length; j++) {
            diff = Math.max(diff, Math.abs((got[j] as number) - (ref[j] as number)))
            scale = Math.max(scale, Math.abs(ref[j] as number))
          }
          expect(diff / scale, `step ${k + 1}, parameter ${i} [${shapes[i]}]`).toBeLessThan(1e-6)
          // The step moved the parameter well beyond the tolerance.
          let moved = 0
          for (let j = 0; j < ref.length; j++)
            moved = Math.max(
              moved,
              Math.abs((ref[j] as number) - ((initial[i] as Float32Array)[j] as number)),
            )
          expect(moved / scale).toBeGreaterThan(1e-3)
        })
      }
      opt.dispose()
      tf.dispose(params)
    },
  )
})

/**
 * AdamW (Loshchilov & Hutter) with decoupled weight decay, written as
 * PyTorch's torch.optim.AdamW computes it:
 *   p ← p (1 − lr·wd)
 *   m ← β1 m + (1 − β1) g,  v ← β2 v + (1 − β2) g²
 *   p ← p − (lr / (1 − β1^t)) · m / (√v / √(1 − β2^t) + ε)
 * Weight decay applies to matrices only, not to norm weights.
 */
import * as tf from "@tensorflow/tfjs-core"

export interface AdamWOptions {
  readonly beta1: number
  readonly beta2: number
  readonly eps: number
  readonly weightDecay: number
}

export class AdamW {
  readonly m: tf.Variable[]
  readonly v: tf.Variable[]
  /** Steps taken so far (t in the bias corrections). */
  t = 0

  constructor(
    readonly params: ReadonlyArray<tf.Variable>,
    readonly options: AdamWOptions,
  ) {
    this.m = params.map((p) => tf.variable(tf.zerosLike(p), false))
    this.v = params.map((p) => tf.variable(tf.zerosLike(p), false))
  }

  step(grads: ReadonlyArray<tf.Tensor>, lr: number): void {
    const { beta1, beta2, eps, weightDecay } = this.options
    this.t++
    const bc1 = 1 - beta1 ** this.t
    const bc2 = Math.sqrt(1 - beta2 ** this.t)
    tf.tidy(() => {
      this.params.forEach((p, i) => {
        const g = grads[i] as tf.Tensor
        const m = this.m[i] as tf.Variable
        const v = this.v[i] as tf.Variable
        m.assign(tf.add(tf.mul(m, beta1), tf.mul(g, 1 - beta1)))
        v.assign(tf.add(tf.mul(v, beta2), tf.mul(tf.square(g), 1 - beta2)))
        const decayed = weightDecay > 0 && p.rank >= 2 ? tf.mul(p, 1 - lr * weightDecay) : p
        const denom = tf.add(tf.div(tf.sqrt(v), bc2), eps)
        p.assign(tf.sub(decayed, tf.mul(tf.div(m, denom), lr / bc1)))
      })
    })
  }

  dispose(): void {
    for (const t of [...this.m, ...this.v]) t.dispose()
  }
}

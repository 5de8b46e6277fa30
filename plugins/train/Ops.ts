/**
 * The differentiable pieces of the decoder, each with a hand-written
 * gradient. On the WebAssembly backend a matrix product is fast only as a
 * plain product (no transpose flag, see MEASURED.md), so every gradient
 * transposes explicitly and multiplies plainly; fused gradients also keep
 * the tape short.
 */
import * as tf from "@tensorflow/tfjs-core"
import { registerGradients } from "./Gradients.ts"

registerGradients()

type T = tf.Tensor
type Save = (tensors: T[]) => void
type Grad = { value: T; gradFunc: (dy: T, saved: T[]) => T | T[] }

// tf.customGrad's typing takes a variadic function; these helpers keep our call sites typed.
const custom1 = (f: (a: T, save: Save) => Grad) => tf.customGrad(f as never) as unknown as (a: T) => T
const custom2 = (f: (a: T, b: T, save: Save) => Grad) =>
  tf.customGrad(f as never) as unknown as (a: T, b: T) => T

/** Swaps the last two axes. */
export const transposeLast = (x: T): T => {
  const r = x.rank
  if (r === 2) return tf.transpose(x)
  const perm = [...Array(r).keys()]
  perm[r - 2] = r - 1
  perm[r - 1] = r - 2
  return tf.transpose(x, perm)
}

/**
 * dL/db for y = a @ b: a^T @ dy. When a is the large operand (activations
 * [N, in] against a LoRA gradient [N, r]) it is cheaper to transpose the two
 * small ones: (dy^T @ a)^T.
 */
const gradRight = (a: T, dy: T): T =>
  a.rank === 2 && a.size > dy.size + (a.shape[1] as number) * (dy.shape[1] as number)
    ? tf.transpose(tf.matMul(tf.transpose(dy), a))
    : tf.matMul(transposeLast(a), dy)

/** a [..., m, k] @ b [..., k, n], both trainable. */
export const matmul = custom2((a, b, save) => {
  save([a, b])
  return {
    value: tf.matMul(a, b),
    gradFunc: (dy, [sa, sb]) => [tf.matMul(dy, transposeLast(sb as T)), gradRight(sa as T, dy)],
  }
})

/** x [N, in] @ w [in, out] with w a constant: only x gets a gradient. */
export const matmulConst = (x: T, w: T): T =>
  custom1((x, save) => {
    save([w])
    return { value: tf.matMul(x, w), gradFunc: (dy, [sw]) => tf.matMul(dy, tf.transpose(sw as T)) }
  })(x)

/**
 * x [N, in] @ W^T for a frozen W kept elsewhere (NF4): `wT()` builds W^T
 * [in, out] for the forward product, `w()` builds W [out, in] for the
 * backward one, so neither is kept between the two passes.
 */
export const matmulLazy = (x: T, wT: () => T, w: () => T): T =>
  custom1(() => ({
    value: tf.tidy(() => tf.matMul(x, wT())),
    gradFunc: (dy) => tf.matMul(dy, w()),
  }))(x)

/** RMSNorm over the last axis: x / sqrt(mean(x²) + eps) * w. */
export const rmsnorm = (x: T, w: T, eps: number): T =>
  custom2((x, w, save) => {
    const r = tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))
    save([x, w, r])
    return {
      value: tf.mul(tf.mul(x, r), w),
      gradFunc: (dy, [sx, sw, sr]) => {
        const x = sx as T
        const r = sr as T
        const gw = tf.mul(dy, sw as T)
        const dot = tf.mean(tf.mul(gw, x), -1, true)
        const dx = tf.sub(tf.mul(gw, r), tf.mul(x, tf.mul(tf.pow(r, 3), dot)))
        const dw = tf.sum(tf.reshape(tf.mul(dy, tf.mul(x, r)), [-1, x.shape[x.rank - 1] as number]), 0)
        return [dx, dw]
      },
    }
  })(x, w)

/**
 * The permutation matrix [hd, hd] that swaps the two halves of a row:
 * x @ P is Hugging Face's rotate_half(x) without its sign. As a product it
 * costs one plain matrix multiply instead of a split and a concat.
 */
export const halfSwap = (hd: number): T => {
  const p = new Float32Array(hd * hd)
  for (let i = 0; i < hd; i++) p[((i + hd / 2) % hd) * hd + i] = 1
  return tf.tensor(p, [hd, hd])
}

/**
 * Rotary embedding, half-split convention, on x [..., hd]:
 * y = x cos + (x P) sinSigned, where sinSigned = [-sin, sin] over the two
 * halves and P = halfSwap(hd). P is symmetric and its own inverse, so the
 * gradient is g cos + (g sinSigned) P.
 */
export const rope = (x: T, cos: T, sinSigned: T, swap: T): T =>
  custom1((x, save) => {
    save([cos, sinSigned, swap])
    const hd = x.shape[x.rank - 1] as number
    const swapped = (t: T, p: T) => tf.reshape(tf.matMul(tf.reshape(t, [-1, hd]), p), t.shape)
    return {
      value: tf.add(tf.mul(x, cos), tf.mul(swapped(x, swap), sinSigned)),
      gradFunc: (dy, [c, s, p]) => tf.add(tf.mul(dy, c as T), swapped(tf.mul(dy, s as T), p as T)),
    }
  })(x)

/** SwiGLU's gate: silu(g) * u. */
export const swiglu = custom2((g, u, save) => {
  const s = tf.sigmoid(g)
  save([g, u, s])
  return {
    value: tf.mul(tf.mul(g, s), u),
    gradFunc: (dy, [sg, su, ss]) => {
      const g = sg as T
      const s = ss as T
      const silu = tf.mul(g, s)
      const dsilu = tf.mul(s, tf.add(1, tf.mul(g, tf.sub(1, s))))
      return [tf.mul(tf.mul(dy, su as T), dsilu), tf.mul(dy, silu)]
    },
  }
})

/**
 * Summed cross-entropy of logits [N, V] against `targets` (one-hot [N, V])
 * weighted per row by `weights` [N, 1] (0 drops a position).
 */
export const crossEntropySum = (logits: T, oneHot: T, weights: T): T =>
  custom1((z, save) => {
    const lse = tf.logSumExp(z, -1, true)
    save([z, lse, oneHot, weights])
    const picked = tf.sum(tf.mul(z, oneHot), -1, true)
    return {
      value: tf.sum(tf.mul(tf.sub(lse, picked), weights)),
      gradFunc: (dy, [sz, slse, oh, w]) =>
        tf.mul(tf.sub(tf.exp(tf.sub(sz as T, slse as T)), oh as T), tf.mul(w as T, dy)),
    }
  })(logits)

/** Rows of a trainable embedding [V, D]; its gradient is a segment sum over the ids. */
export const embedding = (table: T, ids: T): T =>
  custom1((e, save) => {
    save([ids])
    return {
      value: tf.gather(e, ids),
      gradFunc: (dy, [i]) => tf.unsortedSegmentSum(dy, i as tf.Tensor1D, e.shape[0] as number),
    }
  })(table)

/** Inverted dropout with a mask given by the caller (0 or 1/(1-p)), so it is seeded and replayable. */
export const applyMask = (x: T, mask: T | undefined): T => (mask === undefined ? x : tf.mul(x, mask))

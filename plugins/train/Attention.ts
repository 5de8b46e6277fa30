/**
 * Causal self-attention with grouped-query heads, two implementations with
 * one signature:
 *
 *   q [B, S, H, hd], k and v [B, K, KV, hd] (K = past + S) → out [B, S, H, hd]
 *
 * Query head h reads key/value head h / (H / KV). Query i sits at position
 * past + i and sees keys 0..past+i, within its own packed example when
 * segments are given.
 *
 * On the CPU backends (WebAssembly, plain JS) the scores are computed in
 * JavaScript over the raw arrays: tfjs runs every batched matrix product
 * there on a slow path (about 1 GFLOP/s, MEASURED.md), and a fused loop also
 * skips the masked half and the transposes. On native backends the same
 * computation is expressed in tensor ops.
 */
import * as tf from "@tensorflow/tfjs-core"
import { matmul, transposeLast } from "./Ops.ts"
import { type SimdKernels, simdKernels } from "./Simd.ts"

type T = tf.Tensor

export interface AttentionMask {
  /** Cached positions before the first query. */
  readonly past: number
  /** Packed sequences: per query token [B·S], the example it belongs to. */
  readonly segments?: Int32Array
}

interface Dims {
  B: number
  S: number
  K: number
  H: number
  KV: number
  hd: number
}

const dims = (q: T, k: T): Dims => {
  const [B, S, H, hd] = q.shape as [number, number, number, number]
  const [, K, KV] = k.shape as [number, number, number, number]
  return { B, S, K, H, KV, hd }
}

/** First visible key of query i in batch row b (keys before it belong to other examples). */
const firstKey = (mask: AttentionMask, b: number, i: number, S: number): number => {
  const seg = mask.segments
  if (seg === undefined) return 0
  const own = seg[b * S + i]
  let j = i
  while (j > 0 && seg[b * S + j - 1] === own) j--
  return mask.past + j
}

/** Copies head `head` of rows [0, n) from x [B, n, heads, hd] (batch row b) into a contiguous [n, hd] array. */
const gatherHead = (
  x: Float32Array,
  b: number,
  n: number,
  heads: number,
  head: number,
  hd: number,
  out: Float64Array,
) => {
  for (let r = 0; r < n; r++) {
    const src = ((b * n + r) * heads + head) * hd
    const dst = r * hd
    for (let c = 0; c < hd; c++) out[dst + c] = x[src + c] as number
  }
}

/** Adds a contiguous [n, hd] array into head `head` of x [B, n, heads, hd]. */
const scatterHead = (
  acc: Float64Array,
  b: number,
  n: number,
  heads: number,
  head: number,
  hd: number,
  x: Float32Array,
) => {
  for (let r = 0; r < n; r++) {
    const dst = ((b * n + r) * heads + head) * hd
    const src = r * hd
    for (let c = 0; c < hd; c++) x[dst + c] = (x[dst + c] as number) + (acc[src + c] as number)
  }
}

const dot = (a: Float64Array, ao: number, b: Float64Array, bo: number, n: number): number => {
  let s0 = 0
  let s1 = 0
  let x = 0
  for (; x + 1 < n; x += 2) {
    s0 += (a[ao + x] as number) * (b[bo + x] as number)
    s1 += (a[ao + x + 1] as number) * (b[bo + x + 1] as number)
  }
  if (x < n) s0 += (a[ao + x] as number) * (b[bo + x] as number)
  return s0 + s1
}

/** acc[ao..] += w · b[bo..] over n values. */
const axpy = (acc: Float64Array, ao: number, w: number, b: Float64Array, bo: number, n: number) => {
  for (let x = 0; x < n; x++) acc[ao + x] = (acc[ao + x] as number) + w * (b[bo + x] as number)
}

interface Saved {
  probs: Float32Array
  starts: Int32Array
  out: Float32Array
}

const forwardJs = (
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  d: Dims,
  mask: AttentionMask,
): Saved => {
  const { B, S, K, H, KV, hd } = d
  const G = H / KV
  const scale = 1 / Math.sqrt(hd)
  const past = mask.past
  const out = new Float32Array(B * S * H * hd)
  const probs = new Float32Array(B * H * S * K)
  const starts = new Int32Array(B * S)
  for (let b = 0; b < B; b++) for (let i = 0; i < S; i++) starts[b * S + i] = firstKey(mask, b, i, S)
  const qh = new Float64Array(S * hd)
  const kh = new Float64Array(K * hd)
  const vh = new Float64Array(K * hd)
  const row = new Float64Array(K)
  const acc = new Float64Array(hd)
  for (let b = 0; b < B; b++)
    for (let kv = 0; kv < KV; kv++) {
      gatherHead(k, b, K, KV, kv, hd, kh)
      gatherHead(v, b, K, KV, kv, hd, vh)
      for (let h = kv * G; h < (kv + 1) * G; h++) {
        gatherHead(q, b, S, H, h, hd, qh)
        for (let i = 0; i < S; i++) {
          const lo = starts[b * S + i] as number
          const hi = past + i
          let max = Number.NEGATIVE_INFINITY
          for (let j = lo; j <= hi; j++) {
            const s = dot(qh, i * hd, kh, j * hd, hd) * scale
            row[j] = s
            if (s > max) max = s
          }
          let sum = 0
          for (let j = lo; j <= hi; j++) {
            const e = Math.exp((row[j] as number) - max)
            row[j] = e
            sum += e
          }
          const inv = 1 / sum
          acc.fill(0)
          const po = ((b * H + h) * S + i) * K
          for (let j = lo; j <= hi; j++) {
            const p = (row[j] as number) * inv
            probs[po + j] = p
            axpy(acc, 0, p, vh, j * hd, hd)
          }
          const oo = ((b * S + i) * H + h) * hd
          for (let x = 0; x < hd; x++) out[oo + x] = acc[x] as number
        }
      }
    }
  return { out, probs, starts }
}

const backwardJs = (
  dOut: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  saved: Saved,
  d: Dims,
  past: number,
) => {
  const { B, S, K, H, KV, hd } = d
  const G = H / KV
  const scale = 1 / Math.sqrt(hd)
  const dq = new Float32Array(q.length)
  const dk = new Float32Array(k.length)
  const dv = new Float32Array(v.length)
  const { probs, starts, out } = saved
  const qh = new Float64Array(S * hd)
  const gh = new Float64Array(S * hd)
  const oh = new Float64Array(S * hd)
  const kh = new Float64Array(K * hd)
  const vh = new Float64Array(K * hd)
  const dkh = new Float64Array(K * hd)
  const dvh = new Float64Array(K * hd)
  const dqh = new Float64Array(S * hd)
  for (let b = 0; b < B; b++)
    for (let kv = 0; kv < KV; kv++) {
      gatherHead(k, b, K, KV, kv, hd, kh)
      gatherHead(v, b, K, KV, kv, hd, vh)
      dkh.fill(0)
      dvh.fill(0)
      for (let h = kv * G; h < (kv + 1) * G; h++) {
        gatherHead(q, b, S, H, h, hd, qh)
        gatherHead(dOut, b, S, H, h, hd, gh)
        gatherHead(out, b, S, H, h, hd, oh)
        dqh.fill(0)
        for (let i = 0; i < S; i++) {
          const lo = starts[b * S + i] as number
          const hi = past + i
          const po = ((b * H + h) * S + i) * K
          // Σ_j p_j dP_j = dO · O, so the softmax gradient needs one dot per row.
          const rowDot = dot(gh, i * hd, oh, i * hd, hd)
          const io = i * hd
          for (let j = lo; j <= hi; j++) {
            const p = probs[po + j] as number
            const jo = j * hd
            // One pass for dP (a dot with v) and dV (an update by dO), one for dQ and dK.
            let dp = 0
            for (let x = 0; x < hd; x++) {
              const g = gh[io + x] as number
              dp += g * (vh[jo + x] as number)
              dvh[jo + x] = (dvh[jo + x] as number) + p * g
            }
            const ds = p * (dp - rowDot) * scale
            if (ds === 0) continue
            for (let x = 0; x < hd; x++) {
              dqh[io + x] = (dqh[io + x] as number) + ds * (kh[jo + x] as number)
              dkh[jo + x] = (dkh[jo + x] as number) + ds * (qh[io + x] as number)
            }
          }
        }
        scatterHead(dqh, b, S, H, h, hd, dq)
      }
      scatterHead(dkh, b, K, KV, kv, hd, dk)
      scatterHead(dvh, b, K, KV, kv, hd, dv)
    }
  return { dq, dk, dv }
}

/** Copies head `head` of x [B, n, heads, hd] (batch row b) into heap[at..] as [n, hd]. */
const gatherTo = (
  x: Float32Array,
  b: number,
  n: number,
  heads: number,
  head: number,
  hd: number,
  heap: Float32Array,
  at: number,
) => {
  for (let r = 0; r < n; r++)
    heap.set(
      x.subarray(((b * n + r) * heads + head) * hd, ((b * n + r) * heads + head + 1) * hd),
      at + r * hd,
    )
}

/** Copies heap[at..] as [n, hd] into head `head` of x [B, n, heads, hd]. */
const scatterFrom = (
  heap: Float32Array,
  at: number,
  b: number,
  n: number,
  heads: number,
  head: number,
  hd: number,
  x: Float32Array,
) => {
  for (let r = 0; r < n; r++)
    x.set(heap.subarray(at + r * hd, at + (r + 1) * hd), ((b * n + r) * heads + head) * hd)
}

/** forwardJs with the O(n·hd) loops in WebAssembly SIMD (rowDots, weightedSum). */
const forwardSimd = (
  simd: SimdKernels,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  d: Dims,
  mask: AttentionMask,
): Saved => {
  const { B, S, K, H, KV, hd } = d
  const G = H / KV
  const scale = 1 / Math.sqrt(hd)
  const past = mask.past
  const out = new Float32Array(B * S * H * hd)
  const probs = new Float32Array(B * H * S * K)
  const starts = new Int32Array(B * S)
  for (let b = 0; b < B; b++) for (let i = 0; i < S; i++) starts[b * S + i] = firstKey(mask, b, i, S)
  const kAt = 0
  const vAt = kAt + K * hd
  const qAt = vAt + K * hd
  const oAt = qAt + S * hd
  const sAt = oAt + S * hd
  const heap = simd.heap(sAt + K)
  for (let b = 0; b < B; b++)
    for (let kv = 0; kv < KV; kv++) {
      gatherTo(k, b, K, KV, kv, hd, heap, kAt)
      gatherTo(v, b, K, KV, kv, hd, heap, vAt)
      for (let h = kv * G; h < (kv + 1) * G; h++) {
        gatherTo(q, b, S, H, h, hd, heap, qAt)
        for (let i = 0; i < S; i++) {
          const lo = starts[b * S + i] as number
          const n = past + i - lo + 1
          simd.rowDots((qAt + i * hd) * 4, (kAt + lo * hd) * 4, sAt * 4, n, hd)
          let max = Number.NEGATIVE_INFINITY
          for (let t = sAt; t < sAt + n; t++) {
            const x = heap[t] as number
            if (x > max) max = x
          }
          max *= scale
          let sum = 0
          for (let t = sAt; t < sAt + n; t++) {
            const e = Math.exp((heap[t] as number) * scale - max)
            heap[t] = e
            sum += e
          }
          const inv = 1 / sum
          const po = ((b * H + h) * S + i) * K + lo - sAt
          for (let t = sAt; t < sAt + n; t++) {
            const p = (heap[t] as number) * inv
            heap[t] = p
            probs[po + t] = p
          }
          simd.weightedSum(sAt * 4, (vAt + lo * hd) * 4, (oAt + i * hd) * 4, n, hd)
        }
        scatterFrom(heap, oAt, b, S, H, h, hd, out)
      }
    }
  return { out, probs, starts }
}

/** backwardJs with the O(n·hd) loops in WebAssembly SIMD. */
const backwardSimd = (
  simd: SimdKernels,
  dOut: Float32Array,
  q: Float32Array,
  k: Float32Array,
  v: Float32Array,
  saved: Saved,
  d: Dims,
  past: number,
) => {
  const { B, S, K, H, KV, hd } = d
  const G = H / KV
  const scale = 1 / Math.sqrt(hd)
  const dq = new Float32Array(q.length)
  const dk = new Float32Array(k.length)
  const dv = new Float32Array(v.length)
  const { probs, starts, out } = saved
  const kAt = 0
  const vAt = kAt + K * hd
  const dkAt = vAt + K * hd
  const dvAt = dkAt + K * hd
  const qAt = dvAt + K * hd
  const gAt = qAt + S * hd
  const oAt = gAt + S * hd
  const dqAt = oAt + S * hd
  const dpAt = dqAt + S * hd
  const pAt = dpAt + K
  const dsAt = pAt + K
  const heap = simd.heap(dsAt + K)
  for (let b = 0; b < B; b++)
    for (let kv = 0; kv < KV; kv++) {
      gatherTo(k, b, K, KV, kv, hd, heap, kAt)
      gatherTo(v, b, K, KV, kv, hd, heap, vAt)
      heap.fill(0, dkAt, dvAt + K * hd)
      for (let h = kv * G; h < (kv + 1) * G; h++) {
        gatherTo(q, b, S, H, h, hd, heap, qAt)
        gatherTo(dOut, b, S, H, h, hd, heap, gAt)
        gatherTo(out, b, S, H, h, hd, heap, oAt)
        for (let i = 0; i < S; i++) {
          const lo = starts[b * S + i] as number
          const n = past + i - lo + 1
          const io = i * hd
          // Σ_j p_j dP_j = dO · O, so the softmax gradient needs one dot per row.
          simd.rowDots((gAt + io) * 4, (oAt + io) * 4, dpAt * 4, 1, hd)
          const rowDot = heap[dpAt] as number
          simd.rowDots((gAt + io) * 4, (vAt + lo * hd) * 4, dpAt * 4, n, hd)
          const po = ((b * H + h) * S + i) * K + lo
          for (let t = 0; t < n; t++) {
            const p = probs[po + t] as number
            heap[pAt + t] = p
            heap[dsAt + t] = p * ((heap[dpAt + t] as number) - rowDot) * scale
          }
          simd.rank1((dvAt + lo * hd) * 4, pAt * 4, (gAt + io) * 4, n, hd)
          simd.weightedSum(dsAt * 4, (kAt + lo * hd) * 4, (dqAt + io) * 4, n, hd)
          simd.rank1((dkAt + lo * hd) * 4, dsAt * 4, (qAt + io) * 4, n, hd)
        }
        scatterFrom(heap, dqAt, b, S, H, h, hd, dq)
      }
      scatterFrom(heap, dkAt, b, K, KV, kv, hd, dk)
      scatterFrom(heap, dvAt, b, K, KV, kv, hd, dv)
    }
  return { dq, dk, dv }
}

/**
 * Attention computed on the host arrays (CPU backends): with WebAssembly
 * SIMD kernels when `simd` is given and the head size is a multiple of 4,
 * in plain JavaScript otherwise.
 */
export const attentionJs = (q: T, k: T, v: T, mask: AttentionMask, simd: SimdKernels | null = null): T => {
  const d = dims(q, k)
  const kernels = simd !== null && d.hd % 4 === 0 ? simd : null
  const f = tf.customGrad(((qq: T, kk: T, vv: T, save: (t: T[]) => void) => {
    const qa = qq.dataSync() as Float32Array
    const ka = kk.dataSync() as Float32Array
    const va = vv.dataSync() as Float32Array
    const fwd = kernels ? forwardSimd(kernels, qa, ka, va, d, mask) : forwardJs(qa, ka, va, d, mask)
    save([])
    return {
      value: tf.tensor(fwd.out, qq.shape),
      gradFunc: (dy: T) => {
        const g = dy.dataSync() as Float32Array
        const r = kernels
          ? backwardSimd(kernels, g, qa, ka, va, fwd, d, mask.past)
          : backwardJs(g, qa, ka, va, fwd, d, mask.past)
        return [tf.tensor(r.dq, q.shape), tf.tensor(r.dk, k.shape), tf.tensor(r.dv, v.shape)]
      },
    }
  }) as never) as unknown as (a: T, b: T, c: T) => T
  return f(q, k, v)
}

/** Attention with the WebAssembly SIMD kernels (falls back to plain JavaScript without them). */
export const attentionSimd = (q: T, k: T, v: T, mask: AttentionMask): T =>
  attentionJs(q, k, v, mask, simdKernels())

/** The additive mask [B|1, 1, G·S, K]: 0 where visible, -1e9 elsewhere, repeated for each of G query heads. */
const additiveMask = (d: Dims, mask: AttentionMask): T => {
  const { B, S, K, H, KV } = d
  const G = H / KV
  const rows = mask.segments === undefined ? 1 : B
  const m = new Float32Array(rows * G * S * K).fill(-1e9)
  for (let b = 0; b < rows; b++)
    for (let i = 0; i < S; i++) {
      const lo = firstKey(mask, b, i, S)
      for (let g = 0; g < G; g++)
        m.fill(0, ((b * G + g) * S + i) * K + lo, ((b * G + g) * S + i) * K + mask.past + i + 1)
    }
  return tf.tensor(m, [rows, 1, G * S, K])
}

/**
 * Attention in tensor ops (native backends). The G query heads that share a
 * key/value head are stacked along the rows, [B, KV, G·S, hd], so keys and
 * values are never repeated.
 */
export const attentionTf = (q: T, k: T, v: T, mask: AttentionMask): T => {
  const d = dims(q, k)
  const { B, S, H, KV, hd } = d
  const G = H / KV
  const qg = tf.reshape(tf.transpose(q, [0, 2, 1, 3]), [B, KV, G * S, hd])
  const kh = tf.transpose(k, [0, 2, 1, 3]) // [B, KV, K, hd]
  const vh = tf.transpose(v, [0, 2, 1, 3])
  const scores = tf.add(tf.mul(matmul(qg, transposeLast(kh)), 1 / Math.sqrt(hd)), additiveMask(d, mask))
  const o = matmul(tf.softmax(scores), vh) // [B, KV, G·S, hd]
  return tf.transpose(tf.reshape(o, [B, H, S, hd]), [0, 2, 1, 3])
}

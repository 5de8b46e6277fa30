/**
 * NF4 4-bit NormalFloat quantisation (QLoRA, Dettmers et al. 2023).
 *
 * A weight matrix is flattened row-major and cut into blocks of 64 values;
 * each block stores its absmax and one 4-bit index per value into the 16
 * NF4 levels (quantiles of N(0, 1) scaled to [-1, 1], with an exact zero).
 * The absmax values are double-quantised: their mean is subtracted and the
 * rest stored as signed 8-bit codes in blocks of 256, each block with a
 * float32 scale. About 4.13 bits per weight instead of 32.
 */

/** The 16 NF4 levels, as bitsandbytes and the QLoRA paper give them. */
export const NF4_CODEBOOK: ReadonlyArray<number> = [
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
  -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
  0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]

export const NF4_BLOCK = 64
export const ABSMAX_BLOCK = 256

const CODE = Float32Array.from(NF4_CODEBOOK)
/** Midpoints between adjacent levels: a value quantises to the level whose interval holds it. */
const MIDPOINTS = Float64Array.from(
  { length: 15 },
  (_, i) => ((CODE[i] as number) + (CODE[i + 1] as number)) / 2,
)

export interface Nf4Matrix {
  readonly shape: readonly [number, number]
  /** Two 4-bit codes per byte, the first value in the high nibble. */
  readonly codes: Uint8Array
  /** Per block of 64: (absmax - mean) as int8 codes. */
  readonly absmaxCodes: Int8Array
  /** Per block of 256 absmax values: the scale of its int8 codes. */
  readonly absmaxScales: Float32Array
  readonly absmaxMean: number
}

const nearest = (x: number): number => {
  let lo = 0
  let hi = 15
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    if (x > (MIDPOINTS[mid] as number)) lo = mid + 1
    else hi = mid
  }
  return lo
}

export const quantizeNf4 = (data: Float32Array, shape: readonly [number, number]): Nf4Matrix => {
  const n = data.length
  const blocks = Math.ceil(n / NF4_BLOCK)
  const codes = new Uint8Array(Math.ceil(n / 2))
  const absmax = new Float32Array(blocks)
  for (let b = 0; b < blocks; b++) {
    const end = Math.min(n, (b + 1) * NF4_BLOCK)
    let m = 0
    for (let i = b * NF4_BLOCK; i < end; i++) m = Math.max(m, Math.abs(data[i] as number))
    absmax[b] = m
    const inv = m === 0 ? 0 : 1 / m
    for (let i = b * NF4_BLOCK; i < end; i++) {
      const c = nearest((data[i] as number) * inv)
      codes[i >> 1] = (codes[i >> 1] as number) | (i & 1 ? c : c << 4)
    }
  }
  let mean = 0
  for (const a of absmax) mean += a
  mean = Math.fround(mean / Math.max(1, blocks))
  const groups = Math.ceil(blocks / ABSMAX_BLOCK)
  const absmaxCodes = new Int8Array(blocks)
  const absmaxScales = new Float32Array(groups)
  for (let g = 0; g < groups; g++) {
    const end = Math.min(blocks, (g + 1) * ABSMAX_BLOCK)
    let m = 0
    for (let i = g * ABSMAX_BLOCK; i < end; i++) m = Math.max(m, Math.abs((absmax[i] as number) - mean))
    const scale = Math.fround(m / 127)
    absmaxScales[g] = scale
    for (let i = g * ABSMAX_BLOCK; i < end; i++)
      absmaxCodes[i] =
        scale === 0 ? 0 : Math.max(-127, Math.min(127, Math.round(((absmax[i] as number) - mean) / scale)))
  }
  return { shape, codes, absmaxCodes, absmaxScales, absmaxMean: mean }
}

/** The absmax of every block, as dequantisation sees it. */
export const blockAbsmax = (q: Nf4Matrix): Float32Array => {
  const out = new Float32Array(q.absmaxCodes.length)
  for (let b = 0; b < out.length; b++)
    out[b] =
      (q.absmaxCodes[b] as number) * (q.absmaxScales[Math.floor(b / ABSMAX_BLOCK)] as number) + q.absmaxMean
  return out
}

/**
 * Dequantises to float32, row-major [rows, cols], or transposed [cols, rows]
 * (the layout the forward product wants, so no transpose op is needed).
 */
export const dequantizeNf4 = (q: Nf4Matrix, transposed = false, out?: Float32Array): Float32Array => {
  const [rows, cols] = q.shape
  const n = rows * cols
  const res = out ?? new Float32Array(n)
  const absmax = blockAbsmax(q)
  const codes = q.codes
  if (!transposed) {
    for (let i = 0; i < n; i++) {
      const byte = codes[i >> 1] as number
      res[i] = (CODE[i & 1 ? byte & 15 : byte >> 4] as number) * (absmax[(i / NF4_BLOCK) | 0] as number)
    }
    return res
  }
  for (let r = 0, i = 0; r < rows; r++)
    for (let c = 0; c < cols; c++, i++) {
      const byte = codes[i >> 1] as number
      res[c * rows + r] =
        (CODE[i & 1 ? byte & 15 : byte >> 4] as number) * (absmax[(i / NF4_BLOCK) | 0] as number)
    }
  return res
}

/** Bytes an NF4 matrix keeps resident (codes, absmax codes and scales, the mean). */
export const nf4Bytes = (q: Nf4Matrix): number =>
  q.codes.byteLength + q.absmaxCodes.byteLength + q.absmaxScales.byteLength + 4

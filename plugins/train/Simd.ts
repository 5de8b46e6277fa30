/**
 * Three WebAssembly SIMD kernels for attention on the CPU backends, where a
 * JavaScript loop manages about 0.5 GFLOP/s and tfjs's batched products
 * about 1. The module is assembled here byte by byte (it is tiny, and the
 * repository has no WebAssembly toolchain); all pointers are byte offsets
 * into its memory, rows are contiguous and their length a multiple of 4:
 *
 *   rowDots(x, m, out, n, len)     out[j] = x · m[j]                 j < n
 *   weightedSum(w, m, out, n, len) out = Σ_j w[j] m[j]
 *   rank1(m, w, x, n, len)         m[j] += w[j] x                    j < n
 */

// Opcodes (WebAssembly core spec and the SIMD proposal, now standard).
const I32 = 0x7f
const V128 = 0x7b
const get = (i: number) => [0x20, i]
const set = (i: number) => [0x21, i]
const i32 = (v: number) => [0x41, ...sleb(v)]
const ADD = 0x6a
const SHL = 0x74
const GE_S = 0x4e
const F32_LOAD = [0x2a, 2, 0]
const F32_STORE = [0x38, 2, 0]
const F32_ADD = 0x92
const V_LOAD = [0xfd, 0x00, 0, 0]
const V_STORE = [0xfd, 0x0b, 0, 0]
const V_ZERO = [0xfd, 0x0c, ...new Array<number>(16).fill(0)]
const SPLAT = [0xfd, 0x13]
const LANE = (l: number) => [0xfd, 0x1f, l]
const V_ADD = [0xfd, 0xe4, 0x01]
const V_MUL = [0xfd, 0xe6, 0x01]

function sleb(v: number): number[] {
  const out: number[] = []
  for (;;) {
    const b = v & 0x7f
    v >>= 7
    if ((v === 0 && (b & 0x40) === 0) || (v === -1 && (b & 0x40) !== 0)) return [...out, b]
    out.push(b | 0x80)
  }
}
const uleb = (v: number): number[] => {
  const out: number[] = []
  do {
    let b = v & 0x7f
    v >>>= 7
    if (v !== 0) b |= 0x80
    out.push(b)
  } while (v !== 0)
  return out
}
const vec = (items: number[][]): number[] => [...uleb(items.length), ...items.flat()]
const section = (id: number, body: number[]): number[] => [id, ...uleb(body.length), ...body]
const name = (s: string) => [...uleb(s.length), ...Buffer.from(s, "utf8")]

/** for (local = 0; local < limit; local += step) body — limit and step are instruction sequences. */
const loop = (local: number, limit: number[], step: number[], body: number[]): number[] => [
  ...i32(0),
  ...set(local),
  0x02,
  0x40,
  0x03,
  0x40,
  ...get(local),
  ...limit,
  GE_S,
  0x0d,
  1,
  ...body,
  ...get(local),
  ...step,
  ADD,
  ...set(local),
  0x0c,
  0,
  0x0b,
  0x0b,
]

// Parameters 0..4; locals: 5 j, 6 x (bytes), 7 rowBytes, 8 acc/scale (v128).
const [P0, P1, P2, N, LEN, J, X, ROW, VEC] = [0, 1, 2, 3, 4, 5, 6, 7, 8]
const rowBytes = [...get(LEN), ...i32(2), SHL, ...set(ROW)]

const rowDots = [
  ...rowBytes,
  ...loop(J, get(N), i32(1), [
    ...V_ZERO,
    ...set(VEC),
    ...loop(X, get(ROW), i32(16), [
      ...get(VEC),
      ...get(P0),
      ...get(X),
      ADD,
      ...V_LOAD,
      ...get(P1),
      ...get(X),
      ADD,
      ...V_LOAD,
      ...V_MUL,
      ...V_ADD,
      ...set(VEC),
    ]),
    ...get(P2),
    ...get(J),
    ...i32(2),
    SHL,
    ADD,
    ...get(VEC),
    ...LANE(0),
    ...get(VEC),
    ...LANE(1),
    F32_ADD,
    ...get(VEC),
    ...LANE(2),
    ...get(VEC),
    ...LANE(3),
    F32_ADD,
    F32_ADD,
    ...F32_STORE,
    ...get(P1),
    ...get(ROW),
    ADD,
    ...set(P1),
  ]),
]

/** dst[x] += scale · src[x] over one row; dst and src are (local) byte pointers. */
const axpyRow = (dst: number, src: number) =>
  loop(X, get(ROW), i32(16), [
    ...get(dst),
    ...get(X),
    ADD,
    ...get(dst),
    ...get(X),
    ADD,
    ...V_LOAD,
    ...get(VEC),
    ...get(src),
    ...get(X),
    ADD,
    ...V_LOAD,
    ...V_MUL,
    ...V_ADD,
    ...V_STORE,
  ])

/** VEC = splat(w[j]) with w in parameter `w`. */
const splatWeight = (w: number) => [
  ...get(w),
  ...get(J),
  ...i32(2),
  SHL,
  ADD,
  ...F32_LOAD,
  ...SPLAT,
  ...set(VEC),
]

const weightedSum = [
  ...rowBytes,
  ...loop(X, get(ROW), i32(16), [...get(P2), ...get(X), ADD, ...V_ZERO, ...V_STORE]),
  ...loop(J, get(N), i32(1), [
    ...splatWeight(P0),
    ...axpyRow(P2, P1),
    ...get(P1),
    ...get(ROW),
    ADD,
    ...set(P1),
  ]),
]

const rank1 = [
  ...rowBytes,
  ...loop(J, get(N), i32(1), [
    ...splatWeight(P1),
    ...axpyRow(P0, P2),
    ...get(P0),
    ...get(ROW),
    ADD,
    ...set(P0),
  ]),
]

const body = (code: number[]) => {
  const b = [
    ...vec([
      [3, I32],
      [1, V128],
    ]),
    ...code,
    0x0b,
  ]
  return [...uleb(b.length), ...b]
}

const moduleBytes = (): Uint8Array =>
  Uint8Array.from([
    0x00,
    0x61,
    0x73,
    0x6d,
    0x01,
    0x00,
    0x00,
    0x00,
    ...section(1, vec([[0x60, ...vec([[I32], [I32], [I32], [I32], [I32]]), 0]])),
    ...section(3, vec([[0], [0], [0]])),
    ...section(5, vec([[0x00, 1]])),
    ...section(
      7,
      vec([
        [...name("memory"), 2, 0],
        [...name("rowDots"), 0, 0],
        [...name("weightedSum"), 0, 1],
        [...name("rank1"), 0, 2],
      ]),
    ),
    ...section(10, vec([body(rowDots), body(weightedSum), body(rank1)])),
  ])

export interface SimdKernels {
  /** A float32 view of the memory, at least `floats` long (views go stale when memory grows). */
  heap(floats: number): Float32Array
  rowDots(x: number, m: number, out: number, n: number, len: number): void
  weightedSum(w: number, m: number, out: number, n: number, len: number): void
  rank1(m: number, w: number, x: number, n: number, len: number): void
}

let kernels: SimdKernels | null | undefined

/** The kernels, or null where WebAssembly SIMD is unavailable. */
export const simdKernels = (): SimdKernels | null => {
  if (kernels !== undefined) return kernels
  try {
    // The WebAssembly global, typed here: the project's lib settings leave it out.
    const wasm = (
      globalThis as unknown as {
        WebAssembly: {
          Module: new (b: Uint8Array) => object
          Instance: new (m: object) => { exports: unknown }
        }
      }
    ).WebAssembly
    const instance = new wasm.Instance(new wasm.Module(moduleBytes()))
    const e = instance.exports as {
      memory: { buffer: ArrayBuffer; grow(pages: number): number }
      rowDots: SimdKernels["rowDots"]
      weightedSum: SimdKernels["weightedSum"]
      rank1: SimdKernels["rank1"]
    }
    kernels = {
      heap: (floats) => {
        const bytes = floats * 4
        if (e.memory.buffer.byteLength < bytes)
          e.memory.grow(Math.ceil((bytes - e.memory.buffer.byteLength) / 65536))
        return new Float32Array(e.memory.buffer)
      },
      rowDots: e.rowDots,
      weightedSum: e.weightedSum,
      rank1: e.rank1,
    }
  } catch {
    kernels = null
  }
  return kernels
}

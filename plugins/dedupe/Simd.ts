/**
 * The MinHash inner loop in WebAssembly SIMD: for each group of four
 * permutations, min over shingles x of (a * x + b) mod 2^32, four lanes at
 * a time. It is the step's hot loop (permutations × shingles per record);
 * JavaScript does one lane at a time. The module is a few hundred bytes
 * written out here (no toolchain needed); where SIMD is unavailable the
 * caller keeps its JavaScript loop.
 *
 *   (func (export "sig") (param $a $b $sig $sh $permBytes $countBytes i32)
 *     (local $i $s i32) (local $va $vb $m v128)
 *     (loop over $i in [0, permBytes) step 16
 *       va = v128.load(a + i); vb = v128.load(b + i); m = splat(0xffffffff)
 *       (loop over $s in [0, countBytes) step 4
 *         m = i32x4.min_u(m, i32x4.add(i32x4.mul(va, splat(i32.load(sh + s))), vb)))
 *       v128.store(sig + i, m)))
 */

const leb = (n: number): number[] => {
  const out: number[] = []
  do {
    let b = n & 0x7f
    n >>>= 7
    if (n !== 0) b |= 0x80
    out.push(b)
  } while (n !== 0)
  return out
}
const section = (id: number, body: number[]): number[] => [id, ...leb(body.length), ...body]
const name = (s: string): number[] => [s.length, ...Buffer.from(s)]

const GET = 0x20
const SET = 0x21
const I32_CONST = 0x41
const I32_ADD = 0x6a
const I32_GE_U = 0x4f
const I32_LOAD = [0x28, 0x02, 0x00]
const V128_LOAD = [0xfd, 0x00, 0x00, 0x00]
const V128_STORE = [0xfd, 0x0b, 0x00, 0x00]
const SPLAT = [0xfd, 0x11]
const ADD = [0xfd, 0xae, 0x01]
const MUL = [0xfd, 0xb5, 0x01]
const MIN_U = [0xfd, 0xb7, 0x01]
const BLOCK = [0x02, 0x40]
const LOOP = [0x03, 0x40]
const BR = 0x0c
const BR_IF = 0x0d
const END = 0x0b

// params 0..5: a, b, sig, sh, permBytes, countBytes; locals 6, 7: i, s; 8, 9, 10: va, vb, m
// biome-ignore format: one instruction per line would hide the program
const body: number[] = [
  2, // two local declarations
  2,
  0x7f,
  3,
  0x7b,
  ...BLOCK,
  ...LOOP,
  GET, 6, GET, 4, I32_GE_U, BR_IF, 1,
  GET, 0, GET, 6, I32_ADD, ...V128_LOAD, SET, 8,
  GET, 1, GET, 6, I32_ADD, ...V128_LOAD, SET, 9,
  I32_CONST, 0x7f, ...SPLAT, SET, 10,
  I32_CONST, 0, SET, 7,
  ...BLOCK,
  ...LOOP,
  GET, 7, GET, 5, I32_GE_U, BR_IF, 1,
  GET, 10,
  GET, 8,
  GET, 3, GET, 7, I32_ADD, ...I32_LOAD, ...SPLAT,
  ...MUL,
  GET, 9,
  ...ADD,
  ...MIN_U,
  SET, 10,
  GET, 7, I32_CONST, 4, I32_ADD, SET, 7,
  BR, 0,
  END,
  END,
  GET, 2, GET, 6, I32_ADD, GET, 10, ...V128_STORE,
  GET, 6, I32_CONST, 16, I32_ADD, SET, 6,
  BR, 0,
  END,
  END,
  END,
]

// biome-ignore format: header and sections
const MODULE = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00,
  ...section(1, [1, 0x60, 6, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0x7f, 0]),
  ...section(3, [1, 0]),
  ...section(5, [1, 0x00, 1]),
  ...section(7, [2, ...name("sig"), 0x00, 0, ...name("mem"), 0x02, 0]),
  ...section(10, [1, ...leb(body.length), ...body]),
])

// the WebAssembly API as far as it is used here (the project's TypeScript libs do not declare it)
interface Memory {
  readonly buffer: ArrayBuffer
  grow(pages: number): number
}
interface Wasm {
  validate(bytes: Uint8Array): boolean
  Module: new (bytes: Uint8Array) => object
  Instance: new (module: object) => { readonly exports: Record<string, unknown> }
}
const wasm = (globalThis as { WebAssembly?: Wasm }).WebAssembly

export interface SimdMinHash {
  /** sig[i] = min over shingles[0, count) of (a[i] * x + b[i]) >>> 0. */
  signature(shingles: Uint32Array, count: number, sig: Uint32Array): void
}

/** The SIMD kernel for these coefficients, or undefined (no WebAssembly SIMD, or permutations not a multiple of 4). */
export const simdMinHash = (a: Uint32Array, b: Uint32Array): SimdMinHash | undefined => {
  if (a.length % 4 !== 0 || wasm === undefined || !wasm.validate(MODULE)) return undefined
  const instance = new wasm.Instance(new wasm.Module(MODULE))
  const mem = instance.exports.mem as Memory
  const sig = instance.exports.sig as (
    a: number,
    b: number,
    sig: number,
    sh: number,
    permBytes: number,
    countBytes: number,
  ) => void
  const permBytes = a.length * 4
  const aOff = 0
  const bOff = permBytes
  const sigOff = 2 * permBytes
  const shOff = 3 * permBytes
  let words = new Uint32Array(mem.buffer)
  words.set(a, aOff / 4)
  words.set(b, bOff / 4)
  return {
    signature(shingles, count, out) {
      const need = shOff + count * 4
      if (need > mem.buffer.byteLength) {
        mem.grow(Math.ceil((need - mem.buffer.byteLength) / 65536))
        words = new Uint32Array(mem.buffer)
      }
      words.set(shingles.subarray(0, count), shOff / 4)
      sig(aOff, bOff, sigOff, shOff, permBytes, count * 4)
      out.set(words.subarray(sigOff / 4, sigOff / 4 + a.length))
    },
  }
}

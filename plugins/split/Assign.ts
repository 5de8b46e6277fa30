/**
 * Which split a record goes to: a seeded hash of its content (or of its
 * group) mapped to a number u in [0, 1), compared with the cumulative ratios
 * (train first, then validation, then test). u depends on nothing but the
 * record and the seed, so adding records never moves an existing one, and
 * identical records always land together.
 */
import { murmur128 } from "../dedupe/Fingerprint.ts"
import type { Ratios } from "./Ratios.ts"

export { checkRatios, type Ratios } from "./Ratios.ts"

export type SplitName = "train" | "validation" | "test"
export const SPLITS: ReadonlyArray<SplitName> = ["train", "validation", "test"]

const bytes = new Uint8Array(new ArrayBuffer(32))
const words = new Uint32Array(bytes.buffer)
const out = new Uint32Array(4)

/** u in [0, 1) from a 128-bit key and a seed (53 bits of a MurmurHash3 of both). */
export const uniform = (key: Uint32Array, at: number, seed: number): number => {
  words[0] = key[at]!
  words[1] = key[at + 1]!
  words[2] = key[at + 2]!
  words[3] = key[at + 3]!
  words[4] = seed >>> 0
  words[5] = Math.floor(seed / 2 ** 32) >>> 0
  murmur128(bytes, words, 24, 0x5eed5eed, out, 0)
  return ((out[0]! >>> 11) * 2 ** 32 + out[1]!) / 2 ** 53
}

/** The split for u under the ratios. */
export const splitOf = (u: number, r: Ratios): SplitName =>
  u < r.train
    ? "train"
    : u < r.train + r.validation
      ? "validation"
      : r.test > 0
        ? "test"
        : r.validation > 0
          ? "validation"
          : "train"

/** A seeded uniform [0, 1) generator (splitmix32) for the benchmarks' generated corpora: the same seed, the same corpus. */
export const rng = (seed: number) => {
  let s = seed >>> 0
  return (): number => {
    s = (s + 0x9e3779b9) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    return ((z ^ (z >>> 16)) >>> 0) / 2 ** 32
  }
}

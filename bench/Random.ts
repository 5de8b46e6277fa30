import { splitmix } from "../plugins/dedupe/MinHash.ts"

/** A seeded uniform [0, 1) generator (splitmix32, as MinHash draws its coefficients) for the benches' generated corpora: the same seed, the same corpus. */
export const rng = (seed: number) => {
  const next = splitmix(seed)
  return (): number => next() / 2 ** 32
}

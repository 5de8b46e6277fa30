import { describe, expect, it } from "vitest"
import { Lsh } from "../../../plugins/dedupe/Lsh.ts"
import { MinHasher } from "../../../plugins/dedupe/MinHash.ts"

const words = (n: number, salt: string) => Array.from({ length: n }, (_, i) => `${salt}${i}`)

describe("Lsh", () => {
  it("finds earlier records sharing a band, each once, in a table that grows", () => {
    const lsh = new Lsh(4, 2)
    const keys = (i: number) => new Uint32Array([i % 50, 1000 + (i % 7), 2000 + i, 3000 + i])
    for (let i = 0; i < 5000; i++) lsh.add(i, keys(i))
    const seen: number[] = []
    lsh.candidates(new Uint32Array([3, 1003, 9999, 9999]), (r) => {
      seen.push(r)
      return false
    })
    const expected = Array.from({ length: 5000 }, (_, i) => i).filter((i) => i % 50 === 3 || i % 7 === 3)
    expect(seen.sort((a, b) => a - b)).toEqual(expected)
    let visits = 0
    expect(lsh.candidates(new Uint32Array([3, 0, 0, 0]), () => ++visits === 2)).toBe(true)
    expect(visits).toBe(2)
  })

  it("makes similar texts candidates and dissimilar ones rarely, as the S-curve says", () => {
    const mh = new MinHasher({ permutations: 128, ngram: 3, seed: 5, scope: "example" })
    const lsh = new Lsh(16, 8)
    const sig = new Uint32Array(128)
    const keys = new Uint32Array(16)
    const keyed = (text: string[]) => {
      mh.shingleRecord({ prompt: text.join(" "), completion: "" })
      mh.signature(sig)
      lsh.keysOf(sig, keys)
      return keys.slice()
    }
    const base = words(400, "a")
    lsh.add(0, keyed(base))
    const near = [...base]
    for (let i = 0; i < 400; i += 50) near[i] = "x" // about 0.89 Jaccard on 3-gram sets
    expect(lsh.candidates(keyed(near), () => true)).toBe(true)
    expect(lsh.candidates(keyed(words(400, "b")), () => true)).toBe(false)
    expect(Lsh.candidateProbability(0.9, 16, 8)).toBeGreaterThan(0.99)
    expect(Lsh.candidateProbability(0.3, 16, 8)).toBeLessThan(0.002)
  })
})

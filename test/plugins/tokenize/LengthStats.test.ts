import { describe, expect, it } from "vitest"
import { LengthStats, lengthEdges } from "../../../plugins/tokenize/LengthStats.ts"

describe("LengthStats", () => {
  it("gives exact percentiles and a histogram that counts every length once", () => {
    const s = new LengthStats()
    const lengths = Array.from({ length: 1000 }, (_, i) => (i * 7919) % 5000)
    for (const l of lengths) s.add(l)
    const sorted = [...lengths].sort((a, b) => a - b)
    const q = (p: number) => sorted[Math.ceil(p * sorted.length) - 1]
    expect(s.summary()).toMatchObject({
      count: 1000,
      min: sorted[0],
      max: sorted[999],
      p50: q(0.5),
      p90: q(0.9),
      p99: q(0.99),
    })
    const h = s.histogram(lengthEdges(1024))
    expect(h.reduce((a, b) => a + b.count, 0)).toBe(1000)
    expect(h[0]).toEqual({ from: 0, to: 128, count: lengths.filter((l) => l <= 128).length })
    expect(h[h.length - 1]).toEqual({ from: 4096, to: null, count: lengths.filter((l) => l > 4096).length })
  })
})

import { describe, expect, it } from "vitest"
import { Fingerprinter, nfkcStable, normalizeText } from "../../../plugins/dedupe/Fingerprint.ts"
import { jaccard, MinHasher } from "../../../plugins/dedupe/MinHash.ts"
import { type CanonicalRecord, recordLine } from "../../../plugins/ingest/Records.ts"

let seed = 9
const rnd = () => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
  return seed / 2 ** 32
}
const pick = <T>(xs: ReadonlyArray<T>): T => xs[Math.floor(rnd() * xs.length)]!
const PIECES = [
  "word",
  "Word",
  " ",
  "  ",
  "\n",
  "\t",
  "\r\n",
  "é",
  "e\u0301",
  "ﬁ",
  "Ａ",
  "\u00a0",
  "\u2028",
  "\u3000",
  '"',
  "\\",
  "\u0001",
  "日本",
  "😀",
  "\ud800",
  "x.y",
  "don’t",
]
const text = () => {
  let s = ""
  const n = Math.floor(rnd() * 12)
  for (let i = 0; i < n; i++) s += pick(PIECES)
  return s
}
const meta = () => (rnd() < 0.5 ? {} : { meta: { intent: text(), n: 3, nested: { a: [text()] } } })
const randomRecord = (): CanonicalRecord => {
  const k = rnd()
  if (k < 0.4)
    return { instruction: text(), ...(rnd() < 0.5 ? { input: text() } : {}), output: text(), ...meta() }
  if (k < 0.7) return { prompt: text(), completion: text(), ...meta() }
  const messages = Array.from({ length: 1 + Math.floor(rnd() * 4) }, () => ({
    role: pick(["system", "user", "assistant"] as const),
    content: text(),
  }))
  return { messages, ...meta() }
}

describe("Fingerprinter", () => {
  it("gives a canonical line the fingerprint of its record (fast path = general path)", () => {
    for (const scope of ["example", "prompt"] as const)
      for (const caseFold of [false, true]) {
        const f = new Fingerprinter(scope, caseFold)
        const a = new Uint32Array(4)
        const b = new Uint32Array(4)
        for (let i = 0; i < 1500; i++) {
          const r = randomRecord()
          const line = Buffer.from(recordLine(r))
          f.line(line, 0, line.length, a, 0)
          f.of(r, b, 0)
          expect([...a], recordLine(r)).toEqual([...b])
        }
      }
  })

  it("matches texts equal after NFKC, whitespace collapsing and optional case folding; nothing else", () => {
    const f = new Fingerprinter("example", false)
    const fold = new Fingerprinter("example", true)
    const fp = (r: CanonicalRecord, g = f) => {
      const out = new Uint32Array(4)
      g.of(r, out, 0)
      return [...out].join(",")
    }
    const base = { instruction: "Find the ﬁle", output: "Café  au\u00a0lait\n" }
    expect(fp(base)).toBe(fp({ instruction: " Find the file ", output: "Cafe\u0301 au lait" }))
    expect(fp(base)).not.toBe(fp({ instruction: "find the file", output: "Café au lait" }))
    expect(fp(base, fold)).toBe(fp({ instruction: "FIND THE FILE", output: "café au lait" }, fold))
    // fields are not interchangeable, nor are kinds
    expect(fp({ instruction: "a b", output: "c" })).not.toBe(fp({ instruction: "a", output: "b c" }))
    expect(fp({ instruction: "a", output: "b" })).not.toBe(fp({ prompt: "a", completion: "b" }))
    expect(fp({ instruction: "a", output: "b", meta: { x: 1 } })).toBe(fp({ instruction: "a", output: "b" }))
    expect(normalizeText("  Ａ\u3000b\n\nc ", false)).toBe("A b c")
    const stable = Buffer.from("Crème brûlée — “日本” 😀 Жук Ωμέγα 한국")
    expect(nfkcStable(stable, 0, stable.length)).toBe(true)
    for (const s of ["ﬁ", "ĳ", "\u00a0", "e\u0301", "…", "Ａ", "\u2011", "ϐ", "\u0387"])
      expect(nfkcStable(Buffer.from(s), 0, Buffer.byteLength(s)), s).toBe(false)
  })

  it("in prompt scope, ignores the answer", () => {
    const f = new Fingerprinter("prompt", false)
    const fp = (r: CanonicalRecord) => {
      const out = new Uint32Array(4)
      const line = Buffer.from(recordLine(r))
      f.line(line, 0, line.length, out, 0)
      return [...out].join(",")
    }
    expect(fp({ instruction: "q", output: "a1" })).toBe(fp({ instruction: "q", output: "a2" }))
    expect(
      fp({
        messages: [
          { role: "user", content: "q" },
          { role: "assistant", content: "a1" },
        ],
      }),
    ).toBe(
      fp({
        messages: [
          { role: "user", content: "q" },
          { role: "assistant", content: "a2" },
        ],
      }),
    )
  })
})

describe("MinHasher", () => {
  const words = (n: number, salt: string) =>
    Array.from({ length: n }, (_, i) => `${salt}${(i * 7919) % 1000}`).join(" ")

  it("shingles a canonical line as the general path does", () => {
    const m = new MinHasher({ permutations: 64, ngram: 5, seed: 1, scope: "example" })
    for (let i = 0; i < 1000; i++) {
      const r = randomRecord()
      const line = Buffer.from(recordLine(r))
      m.shingleLine(line, 0, line.length)
      const fast = m.sortedSet()
      m.shingleRecord(r)
      expect([...fast], recordLine(r)).toEqual([...m.sortedSet()])
    }
  })

  it("splits words on punctuation and case, and makes one shingle of a short text", () => {
    const m = new MinHasher({ permutations: 16, ngram: 3, seed: 1, scope: "example" })
    m.shingleRecord({ prompt: "Hello, WORLD!", completion: "" })
    const a = m.sortedSet()
    m.shingleRecord({ prompt: "hello world", completion: "" })
    expect(a.length).toBe(1)
    expect([...m.sortedSet()]).toEqual([...a])
  })

  it("estimates Jaccard similarity from signatures", () => {
    const m = new MinHasher({ permutations: 256, ngram: 1, seed: 3, scope: "example" })
    const common = words(600, "c")
    const sig = (text: string) => {
      m.shingleRecord({ prompt: text, completion: "" })
      const s = new Uint32Array(256)
      m.signature(s)
      return { s, set: m.sortedSet() }
    }
    const x = sig(`${common} ${words(200, "x")}`)
    const y = sig(`${common} ${words(200, "y")}`)
    const exact = jaccard(x.set, y.set)
    let agree = 0
    for (let i = 0; i < 256; i++) if (x.s[i] === y.s[i]) agree++
    expect(exact).toBeCloseTo(600 / 1000, 1)
    // standard error sqrt(J(1-J)/256) is about 0.03
    expect(Math.abs(agree / 256 - exact)).toBeLessThan(0.12)
  })
})

describe("MinHash SIMD kernel", () => {
  it("gives the JavaScript loop's signatures", () => {
    const simd = new MinHasher({ permutations: 128, ngram: 5, seed: 11, scope: "example" })
    const js = new MinHasher({ permutations: 128, ngram: 5, seed: 11, scope: "example", simd: false })
    const a = new Uint32Array(128)
    const b = new Uint32Array(128)
    for (let i = 0; i < 300; i++) {
      const r = randomRecord()
      simd.shingleRecord(r)
      js.shingleRecord(r)
      simd.signature(a)
      js.signature(b)
      expect([...a]).toEqual([...b])
    }
    // a long text, so that the kernel's memory grows
    const long = { prompt: Array.from({ length: 40000 }, (_, i) => `w${i}`).join(" "), completion: "" }
    simd.shingleRecord(long)
    js.shingleRecord(long)
    simd.signature(a)
    js.signature(b)
    expect([...a]).toEqual([...b])
  })
})

import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { Llama2cTokenizer } from "../../../plugins/tokenize/Tok512.ts"
import { hasData, realStrings, tok512File as tokFile } from "./fixtures.ts"

/**
 * llama2.c's `encode` (run.c), transcribed naively: pieces as byte strings
 * (latin1, one char per byte, so `<` is strcmp order), a sorted vocabulary
 * searched by bisection, and a full rescan of all adjacent pairs after every merge.
 */
const loadReference = (file: string) => {
  const buf = fs.readFileSync(file)
  const vocab: string[] = []
  const scores: number[] = []
  let o = 4
  while (o < buf.length) {
    scores.push(buf.readFloatLE(o))
    const len = buf.readInt32LE(o + 4)
    vocab.push(buf.subarray(o + 8, o + 8 + len).toString("latin1"))
    o += 8 + len
  }
  const sorted = vocab
    .map((str, id) => ({ str, id }))
    .sort((a, b) => (a.str < b.str ? -1 : a.str > b.str ? 1 : 0))
  const strLookup = (s: string): number => {
    let lo = 0
    let hi = sorted.length - 1
    while (lo <= hi) {
      const mid = (lo + hi) >> 1
      const m = sorted[mid]!.str
      if (m === s) return sorted[mid]!.id
      if (m < s) lo = mid + 1
      else hi = mid - 1
    }
    return -1
  }
  return (text: string, bos: boolean, eos: boolean): number[] => {
    const bytes = Buffer.from(text, "utf8")
    const tokens: number[] = []
    if (bos) tokens.push(1)
    if (bytes.length > 0) tokens.push(strLookup(" "))
    let strBuffer: number[] = []
    for (let c = 0; c < bytes.length; c++) {
      if ((bytes[c]! & 0xc0) !== 0x80) strBuffer = []
      strBuffer.push(bytes[c]!)
      const nextByte = c + 1 < bytes.length ? bytes[c + 1]! : 0
      if ((nextByte & 0xc0) === 0x80 && strBuffer.length < 4) continue
      const id = strLookup(Buffer.from(strBuffer).toString("latin1"))
      if (id !== -1) tokens.push(id)
      else for (const b of strBuffer) tokens.push(b + 3)
      strBuffer = []
    }
    for (;;) {
      let bestScore = -1e10
      let bestId = -1
      let bestIdx = -1
      for (let i = 0; i < tokens.length - 1; i++) {
        const id = strLookup(vocab[tokens[i]!]! + vocab[tokens[i + 1]!]!)
        if (id !== -1 && scores[id]! > bestScore) {
          bestScore = scores[id]!
          bestId = id
          bestIdx = i
        }
      }
      if (bestIdx === -1) break
      tokens[bestIdx] = bestId
      tokens.splice(bestIdx + 1, 1)
    }
    if (eos) tokens.push(2)
    return tokens
  }
}

describe.skipIf(!hasData)("Llama2cTokenizer (tok512.bin)", () => {
  const tok = Llama2cTokenizer.fromFile(tokFile)
  const strings = realStrings(300)
  const referenceEncode = loadReference(tokFile)

  it("reads the vocabulary", () => {
    expect(tok.vocabSize).toBe(512)
    expect(tok.pieceText(1)).toBe("\n<s>\n")
    expect(tok.pieceText(3)).toBe("<0x00>")
  })

  it("encodes a few hundred real strings exactly as llama2.c", () => {
    expect(strings.length).toBeGreaterThanOrEqual(300)
    for (const [i, s] of strings.entries()) {
      const bos = i % 2 === 0
      const eos = i % 3 === 0
      expect(tok.encode(s, { bos, eos }), JSON.stringify(s.slice(0, 80))).toEqual(
        referenceEncode(s, bos, eos),
      )
    }
  })

  it("matches on edge cases: empty text, byte fallback, ties, long repeats", () => {
    const cases = [
      "",
      " ",
      "  ",
      "a",
      "\u00e9\u00e9",
      "caf\u00e9 \u{1F600}!",
      "\u4e2d\u6587",
      "aaaaaaaaaaaaaaaaaaaaaa",
      "\t\r\n x",
    ]
    for (const s of cases) {
      expect(tok.encode(s, { bos: true, eos: true })).toEqual(referenceEncode(s, true, true))
      expect(tok.encode(s)).toEqual(referenceEncode(s, false, false))
    }
  })

  it("breaks score ties leftmost, like run.c, on a vocabulary built with ties", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tok512-"))
    const file = path.join(dir, "ties.bin")
    const pieces: Array<[number, string]> = [
      [0, "<unk>"],
      [0, "\n<s>\n"],
      [0, "\n</s>\n"],
      ...Array.from({ length: 256 }, (_, b): [number, string] => [
        0,
        `<0x${b.toString(16).toUpperCase().padStart(2, "0")}>`,
      ]),
      ...[" ", "a", "b", "c", "ab", "bc", "ca", "aa", "abc", "bca", " a", "aab", "cab", "abab"].map(
        (p, i): [number, string] => [i < 4 ? -100 : -Math.floor(i / 3), p],
      ),
    ]
    const parts: Buffer[] = [Buffer.from(Int32Array.of(8).buffer)]
    for (const [score, piece] of pieces) {
      const head = Buffer.alloc(8)
      head.writeFloatLE(score, 0)
      head.writeInt32LE(Buffer.byteLength(piece), 4)
      parts.push(head, Buffer.from(piece))
    }
    fs.writeFileSync(file, Buffer.concat(parts))
    const ties = Llama2cTokenizer.fromFile(file)
    const reference = loadReference(file)
    let seed = 7
    const rand = () => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff
      return seed
    }
    for (let n = 0; n < 400; n++) {
      const s = Array.from({ length: 1 + (rand() % 40) }, () => "abc d"[rand() % 5]).join("")
      expect(ties.encode(s, { bos: true }), s).toEqual(reference(s, true, false))
    }
  })

  it("decodes back to the text, stripping the dummy space after BOS and turning <0xNN> into bytes", () => {
    for (const s of strings.slice(0, 100)) expect(tok.decode(tok.encode(s, { bos: true, eos: true }))).toBe(s)
    expect(tok.decode(tok.encode("\u{1F600} emoji"))).toBe("\u{1F600} emoji")
    const space = tok.lookup(" the")
    expect(Buffer.from(tok.piece(space, 1)).toString()).toBe("the")
    expect(Buffer.from(tok.piece(space, 5)).toString()).toBe(" the")
    expect([...tok.piece(3 + 0xf0, 0)]).toEqual([0xf0])
  })

  it("rejects a file that is not a tokenizer, naming the file and the entry", () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tok512-"))
    const bad = path.join(dir, "bad.bin")
    fs.writeFileSync(bad, fs.readFileSync(tokFile).subarray(0, 1000))
    expect(() => Llama2cTokenizer.fromFile(bad)).toThrow(/bad\.bin.*token \d+ at byte \d+/)
    fs.writeFileSync(bad, '{"not": "a tokenizer"}')
    expect(() => Llama2cTokenizer.fromFile(bad)).toThrow(/bad\.bin is not a llama2.c tokenizer/)
    expect(() => Llama2cTokenizer.fromFile(path.join(dir, "missing.bin"))).toThrow(
      /cannot read tokenizer .*missing\.bin/,
    )
  })
})

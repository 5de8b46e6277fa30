import * as fs from "node:fs"
import * as path from "node:path"
import { Tokenizer as HfNative } from "tokenizers"
import { describe, expect, it } from "vitest"
import { loadTokenizer, topLevelValues } from "../../../plugins/tokenize/Tokenizer.ts"
import { gpt2Dir, hasData, realStrings, tmpDir, tok512File } from "./fixtures.ts"

// The shared data directory holds the real tokenizers; without it there is nothing real to compare with.
describe.skipIf(!hasData)("Hugging Face tokenizer.json", () => {
  const strings = realStrings(300)

  it("encodes a few hundred real strings exactly as tokenizers' own encoding", async () => {
    const tok = await loadTokenizer(path.join(gpt2Dir, "tokenizer.json"))
    const reference = HfNative.fromFile(path.join(gpt2Dir, "tokenizer.json"))
    // GPT-2's tokenizer.json truncates at 50 tokens; the step never truncates silently, so compare without it.
    reference.disableTruncation()
    const batch = await tok.encodeBatch(strings)
    for (const [i, s] of strings.entries()) {
      const want = (await reference.encode(s, null, { addSpecialTokens: false })).getIds()
      expect(batch[i]).toEqual(want)
      if (i % 25 === 0) expect(await tok.encode(s)).toEqual(want)
    }
    expect(batch.filter((ids) => ids.length > 50).length).toBeGreaterThan(100)
    expect(tok.notes.join()).toMatch(/truncates at 50 tokens; that setting is ignored/)
  })

  it("takes special tokens from tokenizer_config.json in a directory", async () => {
    const tok = await loadTokenizer(gpt2Dir)
    expect(tok.type).toBe("huggingface")
    expect(tok.vocabSize).toBe(50257)
    expect(tok.eosId).toBe(50256)
    expect(tok.eosToken).toBe("<|endoftext|>")
    expect(tok.addsBos).toBe(false)
    expect(tok.chatTemplate).toBeUndefined()
    expect(await tok.encode("a<|endoftext|>b")).toEqual([64, 50256, 65])
    expect(await tok.decode(await tok.encode(strings[0]!))).toBe(strings[0])
  })

  it("finds EOS by convention when tokenizer.json comes alone", async () => {
    const tok = await loadTokenizer(path.join(gpt2Dir, "tokenizer.json"))
    expect(tok.eosId).toBe(50256)
    expect(tok.padId).toBe(50256)
  })

  it("rejects a tokenizer.json that is not valid, naming the file and where", async () => {
    const dir = tmpDir("tok-bad")
    const broken = path.join(dir, "tokenizer.json")
    fs.writeFileSync(broken, '{\n  "version": "1.0",\n  "model": {\n    "type": "BPE",,\n  }\n}\n')
    await expect(loadTokenizer(broken)).rejects.toThrow(/tokenizer\.json:4:\d+: invalid JSON/)
    fs.writeFileSync(broken, '{"version": "1.0"}')
    await expect(loadTokenizer(broken)).rejects.toThrow(
      /tokenizer\.json is not a Hugging Face tokenizer\.json: it has no "model"/,
    )
    fs.writeFileSync(broken, '{"version": "1.0", "model": {"type": "Nonsense"}}')
    await expect(loadTokenizer(broken)).rejects.toThrow(/tokenizer\.json is not a valid tokenizer\.json: /)
    await expect(loadTokenizer(dir + "/missing.json")).rejects.toThrow(/missing\.json does not exist/)
    const empty = tmpDir("tok-empty")
    await expect(loadTokenizer(empty)).rejects.toThrow(
      /holds no tokenizer: expected tokenizer\.json or one tok\*\.bin/,
    )
  })

  it("encodes the texts of one sequence as one text, each token going to the text that holds its last character", async () => {
    const tok = await loadTokenizer(path.join(gpt2Dir, "tokenizer.json"))
    const reference = HfNative.fromFile(path.join(gpt2Dir, "tokenizer.json"))
    reference.disableTruncation()
    const texts: string[] = []
    const continued: boolean[] = []
    const wholes: string[] = []
    // Real strings and a few with accents, emoji (split across byte-level tokens) and cuts inside words.
    const samples = [...strings.slice(0, 60), "Café 😀😀 déjà vu", "a😀b", "  two  spaces  ", "x"]
    samples.forEach((s, i) => {
      const chars = [...s]
      const a = Math.floor((chars.length * ((i * 7) % 10)) / 10)
      const b = Math.max(a, Math.floor((chars.length * ((i * 3) % 10)) / 10))
      const parts = [chars.slice(0, a), chars.slice(a, b), chars.slice(b)].map((c) => c.join(""))
      parts.forEach((p, k) => {
        texts.push(p)
        continued.push(k > 0)
      })
      wholes.push(s)
    })
    const got = await tok.encodeBatch(texts, continued)
    for (const [i, whole] of wholes.entries()) {
      const e = await reference.encode(whole, null, { addSpecialTokens: false })
      const parts = got.slice(3 * i, 3 * i + 3)
      expect(parts.flat(), whole).toEqual(e.getIds())
      // The rule by every token's offsets (in code points).
      const ends = [0, 1, 2].map((k) => [...texts.slice(3 * i, 3 * i + k + 1).join("")].length)
      const want: number[][] = [[], [], []]
      e.getOffsets().forEach(([start, end], t) => {
        const last = end! > start! ? end! - 1 : start!
        want[last < ends[0]! ? 0 : last < ends[1]! ? 1 : 2]!.push(e.getIds()[t]!)
      })
      expect(parts, whole).toEqual(want)
    }
  })

  it("reports a special token of tokenizer_config.json that is not in the vocabulary", async () => {
    const dir = tmpDir("tok-cfg")
    fs.copyFileSync(path.join(gpt2Dir, "tokenizer.json"), path.join(dir, "tokenizer.json"))
    fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify({ eos_token: "<|nope|>" }))
    await expect(loadTokenizer(dir)).rejects.toThrow(
      /tokenizer_config\.json: eos_token "<\|nope\|>" is not in the vocabulary/,
    )
    fs.writeFileSync(path.join(dir, "tokenizer_config.json"), JSON.stringify({ eos_token: 7 }))
    await expect(loadTokenizer(dir)).rejects.toMatchObject({ field: "eos_token" })
  })
})

describe.skipIf(!hasData)("llama2.c tok512.bin through the common interface", () => {
  it("loads from the file or from a directory holding it", async () => {
    const dir = tmpDir("tok512-dir")
    fs.copyFileSync(tok512File, path.join(dir, "tok512.bin"))
    for (const source of [tok512File, dir]) {
      const tok = await loadTokenizer(source)
      expect(tok.type).toBe("llama2c")
      expect(tok.vocabSize).toBe(512)
      expect([tok.bosId, tok.eosId, tok.addsBos]).toEqual([1, 2, true])
    }
  })

  it("gives only the first text of a sequence the dummy-prefix space", async () => {
    const tok = await loadTokenizer(tok512File)
    const [a, b] = await tok.encodeBatch(["Once upon", "a time"], [false, true])
    expect(await tok.decode([...a!, ...b!])).toBe("Once upona time")
    const [c] = await tok.encodeBatch(["a time"])
    expect(c).toEqual(await tok.encode("a time"))
    expect(c!.length).toBeGreaterThan(0)
    expect(await tok.decode(c!)).toBe("a time")
  })
})

describe("topLevelValues", () => {
  const parsed = (text: string) =>
    Object.fromEntries([...topLevelValues(text)].map(([k, v]) => [k, JSON.parse(v)]))

  it("gives the text of each top-level value, as JSON.parse reads it", () => {
    for (const text of [
      '{"a":1,"b":"x\\"}y","c":{"d":[1,{"e":"]"}]},"t":null,"u":true , "v" : -1.5e3,"w":[],"a":2}',
      ' { "k" : "\\\\" , "m": {"s":"\\\\\\"}", "n": [[]]}, "\\u0041": false } ',
      "{}",
      '{\n  "x": {\n    "y": 1\n  }\n}\n',
    ])
      expect(parsed(text), text).toEqual(JSON.parse(text))
  })

  it.skipIf(!hasData)("reads a real tokenizer.json's settings", () => {
    const text = fs.readFileSync(path.join(gpt2Dir, "tokenizer.json"), "utf8")
    expect(parsed(text)).toEqual(JSON.parse(text))
  })
})

/**
 * readTokens (the eval step's reader) over both layouts: a sharded directory
 * reads as the same arrays as the flat one, and its errors name the part.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, test } from "vitest"
import { readTokens, TOKENS_PART } from "../../../plugins/tokenize/TokensFile.ts"
import { shardedCases, writeShardedSample, writeTokens } from "../train/TokensFixture.ts"

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "tokfile-"))

const arrays = (dir: string) => {
  const d = readTokens(dir)
  const sequences = Array.from({ length: d.meta.count }, (_, i) => d.sequence(i))
  return { tokens: d.tokens, labels: d.labels, offsets: d.offsets, segments: d.segments, sequences }
}

describe("Tokens files", () => {
  test("part directories are named part-000000, part-000001, ...", () => {
    expect(TOKENS_PART(0)).toBe("part-000000")
    expect(TOKENS_PART(123)).toBe("part-000123")
  })

  test("a sharded directory reads as the same set as the flat one", () => {
    for (const c of shardedCases) {
      const flat = arrays(writeTokens(tmp(), c.seqs, c.options))
      const dir = writeTokens(tmp(), c.seqs, { ...c.options, parts: c.parts })
      expect(arrays(dir), c.name).toEqual(flat)
      expect(
        readTokens(dir).meta.parts?.map((p) => p.dir),
        c.name,
      ).toEqual(c.parts.map((_, i) => TOKENS_PART(i)))
    }
  })

  test("a sharded directory's errors name the part", () => {
    const sharded = () => writeShardedSample(tmp())
    let dir = sharded()
    fs.rmSync(path.join(dir, "part-000001"), { recursive: true })
    expect(() => readTokens(dir)).toThrow(`${dir}: meta.json lists part part-000001, which is missing`)
    dir = sharded()
    fs.writeFileSync(
      path.join(dir, "part-000001/offsets.u32"),
      new Uint8Array(new Uint32Array([3, 5, 9]).buffer),
    )
    expect(() => readTokens(dir)).toThrow(`${dir}/part-000001/offsets.u32 must start at 0 and end at 6`)
    dir = sharded()
    const meta = JSON.parse(fs.readFileSync(path.join(dir, "meta.json"), "utf-8"))
    fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify({ ...meta, count: 4 }))
    expect(() => readTokens(dir)).toThrow(`${dir}: meta.json says count 4, its parts hold 3`)
    fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify({ ...meta, tokens: 10 }))
    expect(() => readTokens(dir)).toThrow(`${dir}: meta.json says tokens 10, its parts hold 9`)
    const parts = [meta.parts[0], { ...meta.parts[1], count: 3 }]
    fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify({ ...meta, parts }))
    expect(() => readTokens(dir)).toThrow(
      `${dir}/part-000001/offsets.u32 has 3 entries, meta.json says part-000001 holds 3 sequences`,
    )
    parts[1] = { ...meta.parts[1], tokens: 7 }
    fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify({ ...meta, parts }))
    expect(() => readTokens(dir)).toThrow(
      `${dir}/part-000001/tokens.u32 has 6 tokens, meta.json says part-000001 holds 7`,
    )
  })
})

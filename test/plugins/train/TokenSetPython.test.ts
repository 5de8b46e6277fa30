/**
 * The torch worker's TokenSet (tunegraph_torch/data.py) against readTokens:
 * flat and sharded Tokens directories read as the same arrays, and a sharded
 * directory's errors name the part as the tfjs trainer's do.
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, test } from "vitest"
import { readTokens } from "../../../plugins/train/TokenData.ts"
import { hasTorch, runPython } from "../../support/python.ts"
import { shardedCases, writeShardedSample, writeTokens } from "./TokensFixture.ts"

const script = path.join(import.meta.dirname, "python", "token_set.py")
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "tokpy-"))

type Read =
  | { error: string }
  | {
      tokens: number[]
      labels: number[]
      offsets: number[]
      segments: number[] | null
      count: number
      padId: number
    }

const pythonReads = (dirs: ReadonlyArray<string>, vocab = 512): Read[] =>
  JSON.parse(runPython([script], JSON.stringify({ dirs, vocab }))) as Read[]

const tsRead = (dir: string, vocab = 512): Read => {
  try {
    const s = readTokens(dir, vocab)
    return {
      tokens: [...s.tokens],
      labels: [...s.labels],
      offsets: [...s.offsets],
      segments: s.segments ? [...s.segments] : null,
      count: s.count,
      padId: s.padId,
    }
  } catch (e) {
    return { error: (e as Error).message }
  }
}

describe.skipIf(!hasTorch)("TokenSet in the torch worker", () => {
  test("flat and sharded directories read as readTokens reads them", () => {
    const dirs = shardedCases.flatMap((c) => [
      writeTokens(tmp(), c.seqs, c.options),
      writeTokens(tmp(), c.seqs, { ...c.options, parts: c.parts }),
    ])
    const got = pythonReads(dirs)
    dirs.forEach((d, i) => {
      expect(got[i], d).toEqual(tsRead(d))
      expect("error" in (got[i] as Read), d).toBe(false)
      if (i % 2 === 1) expect(got[i], d).toEqual(got[i - 1]) // sharded as flat
    })
  })

  test("a sharded directory's errors name the part, as readTokens's do", () => {
    const sharded = () => writeShardedSample(tmp())
    const missing = sharded()
    fs.rmSync(path.join(missing, "part-000001"), { recursive: true })
    const offsets = sharded()
    fs.writeFileSync(
      path.join(offsets, "part-000001/offsets.u32"),
      new Uint8Array(new Uint32Array([3, 5, 9]).buffer),
    )
    const withMeta = (
      edit: (meta: { count: number; tokens: number; parts: { count: number; tokens: number }[] }) => void,
    ) => {
      const dir = sharded()
      const meta = JSON.parse(fs.readFileSync(path.join(dir, "meta.json"), "utf-8"))
      edit(meta)
      fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify(meta))
      return dir
    }
    const cases: [string, string][] = [
      [missing, `${missing}: meta.json lists part part-000001, which is missing`],
      [offsets, `${offsets}/part-000001/offsets.u32 must start at 0 and end at 6`],
    ]
    const count = withMeta((m) => {
      m.count = 4
    })
    cases.push([count, `${count}: meta.json says count 4, its parts hold 3`])
    const tokens = withMeta((m) => {
      m.tokens = 10
    })
    cases.push([tokens, `${tokens}: meta.json says tokens 10, its parts hold 9`])
    const partCount = withMeta((m) => {
      ;(m.parts[1] as { count: number }).count = 3
    })
    cases.push([
      partCount,
      `${partCount}/part-000001/offsets.u32 holds 3 values, meta.json says the count of part-000001 is 3`,
    ])
    const partTokens = withMeta((m) => {
      ;(m.parts[1] as { tokens: number }).tokens = 7
    })
    cases.push([
      partTokens,
      `${partTokens}/part-000001/tokens.u32 holds 6 tokens, meta.json says part-000001 holds 7`,
    ])
    const got = pythonReads(cases.map(([d]) => d))
    cases.forEach(([d, message], i) => {
      expect(got[i], d).toEqual({ error: message })
      expect(tsRead(d), d).toEqual({ error: message })
    })
  })
})

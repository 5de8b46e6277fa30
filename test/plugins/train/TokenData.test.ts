import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, test } from "vitest"
import { learningRate } from "../../../plugins/train/Schedule.ts"
import { BatchPlan, makeBatch, readTokens } from "../../../plugins/train/TokenData.ts"
import { shardedCases, writeShardedSample, writeTokens } from "./TokensFixture.ts"

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), "tok-"))

describe("training data", () => {
  test("targets are the next labels; -100, padding and packed example boundaries are ignored", () => {
    const dir = writeTokens(
      tmp(),
      [
        [1, 10, 11, 12, 2],
        [1, 20, 2],
      ],
      {
        labels: [
          [-100, -100, 11, 12, 2],
          [-100, 20, 2],
        ],
      },
    )
    const set = readTokens(dir, 32)
    const mb = makeBatch(set, [0, 1], 16)
    expect(mb.batch.seq).toBe(5)
    expect([...mb.batch.ids]).toEqual([1, 10, 11, 12, 2, 1, 20, 2, 0, 0])
    expect([...mb.targets]).toEqual([-1, 11, 12, 2, -1, 20, 2, -1, -1, -1])
    expect(mb.targetCount).toBe(5)
    expect(mb.tokens).toBe(8)
    expect(makeBatch(set, [0], 3).batch.seq).toBe(3) // cut to maxSeqLen

    const packed = readTokens(
      writeTokens(tmp(), [[1, 5, 6, 1, 7, 8]], { segments: [[0, 0, 0, 1, 1, 1]] }),
      32,
    )
    const p = makeBatch(packed, [0], 16)
    expect([...p.targets]).toEqual([5, 6, -1, 7, 8, -1])
    expect([...(p.batch.positions ?? [])]).toEqual([0, 1, 2, 0, 1, 2])
    expect([...(p.batch.segments ?? [])]).toEqual([0, 0, 0, 1, 1, 1])
  })

  test("rejects ids outside the model's vocabulary and inconsistent files", () => {
    expect(() => readTokens(writeTokens(tmp(), [[1, 600]]), 512)).toThrow(
      /token id 600 at position 1 is outside/,
    )
    const dir = writeTokens(tmp(), [[1, 2, 3]])
    fs.writeFileSync(path.join(dir, "labels.i32"), Buffer.alloc(8))
    expect(() => readTokens(dir, 512)).toThrow(/labels.i32 has 2 values, tokens.u32 3/)
    expect(() => readTokens(tmp(), 512)).toThrow(/no meta.json/)
  })

  test("a sharded directory reads as the same set as the flat one", () => {
    for (const c of shardedCases) {
      const flat = readTokens(writeTokens(tmp(), c.seqs, c.options), 512)
      const sharded = readTokens(writeTokens(tmp(), c.seqs, { ...c.options, parts: c.parts }), 512)
      expect({ ...sharded, dir: "" }, c.name).toEqual({ ...flat, dir: "" })
      expect(sharded.count, c.name).toBe(c.seqs.length)
    }
  })

  test("a sharded directory's errors name the part", () => {
    const sharded = () => writeShardedSample(tmp())
    let dir = sharded()
    fs.rmSync(path.join(dir, "part-000001"), { recursive: true })
    expect(() => readTokens(dir, 512)).toThrow(`${dir}: meta.json lists part part-000001, which is missing`)
    dir = sharded()
    // global offsets where local ones belong
    fs.writeFileSync(
      path.join(dir, "part-000001/offsets.u32"),
      new Uint8Array(new Uint32Array([3, 5, 9]).buffer),
    )
    expect(() => readTokens(dir, 512)).toThrow(`${dir}/part-000001/offsets.u32 must start at 0 and end at 6`)
    dir = sharded()
    const meta = JSON.parse(fs.readFileSync(path.join(dir, "meta.json"), "utf-8"))
    fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify({ ...meta, count: 4 }))
    expect(() => readTokens(dir, 512)).toThrow(`${dir}: meta.json says count 4, its parts hold 3`)
    fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify({ ...meta, tokens: 10 }))
    expect(() => readTokens(dir, 512)).toThrow(`${dir}: meta.json says tokens 10, its parts hold 9`)
    const parts = [meta.parts[0], { ...meta.parts[1], count: 3 }]
    fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify({ ...meta, parts }))
    expect(() => readTokens(dir, 512)).toThrow(
      `${dir}/part-000001/offsets.u32 holds 3 values, meta.json says the count of part-000001 is 3`,
    )
    parts[1] = { ...meta.parts[1], tokens: 7 }
    fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify({ ...meta, parts }))
    expect(() => readTokens(dir, 512)).toThrow(
      `${dir}/part-000001/tokens.u32 holds 6 tokens, meta.json says part-000001 holds 7`,
    )
    dir = writeTokens(
      tmp(),
      [
        [1, 2],
        [1, 600],
      ],
      { parts: [1, 1] },
    )
    expect(() => readTokens(dir, 512)).toThrow(
      `${dir}/part-000001: token id 600 at position 1 is outside the model's vocabulary of 512`,
    )
  })

  test("the batch plan is a seeded permutation per epoch, the same from any starting step", () => {
    const a = new BatchPlan(10, 4, 7)
    const first = [0, 1, 2, 3, 4].map((k) => a.indices(k))
    expect(new Set(first.flat().slice(0, 10)).size).toBe(10) // epoch 0 visits every sequence once
    expect(new BatchPlan(10, 4, 7).indices(3)).toEqual(first[3])
    expect(new BatchPlan(10, 4, 8).indices(0)).not.toEqual(first[0])
  })

  test("learning rate: linear warmup, then cosine or linear decay to minLr", () => {
    const o = { lr: 1, minLr: 0.1, warmupSteps: 4, totalSteps: 14, schedule: "cosine" as const }
    expect(learningRate(o, 0)).toBe(0) // transformers' warmup starts at 0
    expect(learningRate(o, 3)).toBeCloseTo(0.75)
    expect(learningRate(o, 4)).toBeCloseTo(1)
    expect(learningRate(o, 9)).toBeCloseTo(0.55)
    expect(learningRate(o, 14)).toBeCloseTo(0.1)
    expect(learningRate({ ...o, schedule: "linear" }, 9)).toBeCloseTo(0.55)
    expect(learningRate({ ...o, schedule: "linear" }, 6)).toBeCloseTo(0.82)
    expect(learningRate({ ...o, schedule: "constant" }, 13)).toBe(1)
  })
})

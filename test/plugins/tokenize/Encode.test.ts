import { describe, expect, it } from "vitest"
import { ChunkBuilder, NO_REPLY, partIdsOf } from "../../../plugins/tokenize/Encode.ts"
import { buildExample, type ExampleOptions } from "../../../plugins/tokenize/Example.ts"
import type { Part } from "../../../plugins/tokenize/Template.ts"

const BOS = 1
const EOS = 2
const END = 7

// Records as parts with their ids: prompts and replies, empty parts, replies that already end with EOS or END,
// a text that starts with BOS, replies in the middle.
const records: Array<Array<[Part, number[]]>> = [
  [
    [{ text: "p", train: false }, [10, 11]],
    [{ text: "r", train: true }, [12, 13]],
  ],
  [
    [{ text: "p", train: false }, [BOS, 10]],
    [{ text: "r", train: true }, [12, EOS]],
  ],
  [
    [{ text: "p", train: false }, []],
    [{ text: "r", train: true }, [12, END, 30]],
  ],
  [
    [{ text: "s", train: false }, [20]],
    [{ text: "r1", train: true }, [21, END]],
    [{ text: "u", train: false }, [22]],
    [{ text: "r2", train: true }, [23]],
    [{ text: "t", train: false }, [24, 25]],
  ],
  [[{ text: "r", train: true }, []]],
  [
    [{ text: "p", train: false }, [5]],
    [{ text: "r", train: true }, [EOS]],
  ],
]

const options: ExampleOptions[] = []
for (const bosId of [undefined, BOS])
  for (const eosId of [undefined, EOS])
    for (const endIds of [undefined, [], [EOS, END]])
      for (const trainOnInputs of [false, true]) options.push({ bosId, eosId, endIds, trainOnInputs })

describe("ChunkBuilder", () => {
  it("writes the ids and labels buildExample gives, for every option, back to back", () => {
    for (const o of options) {
      const b = new ChunkBuilder(o)
      const texts = records.flatMap((r) => r.map(([, ids]) => ids))
      const p = partIdsOf(texts)
      const want: { items: number[]; ids: number[]; labels: number[] } = { items: [], ids: [], labels: [] }
      let first = 0
      records.forEach((r, k) => {
        if (k === 2) {
          b.noReply(100)
          want.items.push(100, NO_REPLY)
        }
        const parts = r.map(([part]) => part)
        b.example(k, parts, p, first)
        const e = buildExample(
          parts,
          r.map(([, ids]) => ids),
          o,
        )
        want.items.push(k, e.ids.length)
        want.ids.push(...e.ids)
        want.labels.push(...e.labels)
        first += r.length
      })
      const got = b.arrays()
      expect(
        { items: [...got.items], ids: [...got.ids], labels: [...got.labels] },
        JSON.stringify(o),
      ).toEqual(want)
    }
  })

  it("grows its arrays past their first size", () => {
    const b = new ChunkBuilder({ bosId: undefined, eosId: EOS, trainOnInputs: false })
    const long = Array.from({ length: 100_000 }, (_, i) => 10 + (i % 50_000))
    const p = partIdsOf([[3], long])
    for (let k = 0; k < 3; k++)
      b.example(
        k,
        [
          { text: "p", train: false },
          { text: "r", train: true },
        ],
        p,
        0,
      )
    const got = b.arrays()
    expect([...got.items]).toEqual([0, 100_002, 1, 100_002, 2, 100_002])
    expect(got.ids.length).toBe(300_006)
    expect(got.ids[100_002 + 1 + 99_999]).toBe(long[99_999])
    expect(got.labels[100_002]).toBe(-100)
    expect(got.labels[100_002 + 2]).toBe(long[1])
    expect(got.ids[300_005]).toBe(EOS)
  })
})

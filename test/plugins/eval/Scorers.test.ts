import { describe, expect, test } from "vitest"
import {
  contains,
  exactMatch,
  extract,
  makeScorers,
  meanScores,
  regexMatch,
  scoreOne,
  toRegex,
} from "../../../plugins/eval/Scorers.ts"

const gsm8k = toRegex("#### (-?[\\d,.]+)")

describe("scorers", () => {
  test("exact match ignores surrounding whitespace only", () => {
    expect(exactMatch(" 42\n", "42")).toBe(1)
    expect(exactMatch("42.", "42")).toBe(0)
    expect(exactMatch("Paris", "paris")).toBe(0)
    expect(exactMatch("", "")).toBe(1)
  })

  test("contains needs a non-empty reference", () => {
    expect(contains("The answer is Paris, France.", " Paris ")).toBe(1)
    expect(contains("The answer is Lyon.", "Paris")).toBe(0)
    expect(contains("anything", "  ")).toBe(0)
  })

  test("regex extracts GSM8K's final answer from both sides", () => {
    const reference = "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs.\n#### 18"
    expect(extract(gsm8k, reference)).toBe("18")
    expect(regexMatch(gsm8k)("She makes 9 * 2 = 18 dollars.\n#### 18", reference)).toBe(1)
    expect(regexMatch(gsm8k)("#### 19", reference)).toBe(0)
    expect(regexMatch(gsm8k)("18", reference)).toBe(0)
    // Without a group the whole match is compared; a reference without a match scores 0.
    expect(regexMatch(toRegex(/\d+/))("x 7 y", "7")).toBe(1)
    expect(regexMatch(gsm8k)("#### 3", "no answer here")).toBe(0)
    // A global RegExp from a pipeline file does not carry state from one call to the next.
    const g = toRegex(/#### (\d+)/g)
    expect([regexMatch(g)("#### 5", "#### 5"), regexMatch(g)("#### 5", "#### 5")]).toEqual([1, 1])
    expect(() => toRegex("(")).toThrow(/does not compile/)
  })

  test("custom scorers: booleans count 1 or 0, numbers as they are, anything else fails naming the scorer", () => {
    const scorers = makeScorers("#### (\\d+)", {
      words: (output) => output.split(/\s+/).filter(Boolean).length,
      polite: (output, _reference, record) => output.includes((record as { word: string }).word),
    })
    expect(scorers.map((s) => s.name)).toEqual(["exact_match", "contains", "regex", "polite", "words"])
    const rows = [
      scoreOne(scorers, "please #### 4", "#### 4", { word: "please" }),
      scoreOne(scorers, "no", "#### 4", { word: "please" }),
    ]
    expect(rows[0]).toEqual({ exact_match: 0, contains: 1, regex: 1, polite: 1, words: 3 })
    expect(rows[1]).toEqual({ exact_match: 0, contains: 0, regex: 0, polite: 0, words: 1 })
    expect(meanScores(scorers, rows)).toEqual({
      exact_match: 0,
      contains: 0.5,
      regex: 0.5,
      polite: 0.5,
      words: 2,
    })
    expect(meanScores(scorers, [])).toEqual({})
    const bad = makeScorers(undefined, {
      nan: () => Number.NaN,
      boom: () => {
        throw new Error("no")
      },
    })
    expect(() =>
      scoreOne(
        bad.filter((s) => s.name === "nan"),
        "a",
        "b",
        {},
      ),
    ).toThrow(/scorer "nan" returned NaN/)
    expect(() =>
      scoreOne(
        bad.filter((s) => s.name === "boom"),
        "a",
        "b",
        {},
      ),
    ).toThrow(/scorer "boom" threw: no/)
    expect(() => makeScorers(undefined, { loss: () => 1 })).toThrow(/taken by a built-in/)
  })
})

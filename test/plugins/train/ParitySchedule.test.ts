/**
 * The learning-rate schedule against transformers' own schedulers: for every
 * optimizer step of a run, the rate the trainer uses equals the rate a
 * LambdaLR from transformers holds before that step.
 */
import * as path from "node:path"
import { beforeAll, describe, expect, test } from "vitest"
import { learningRate, type ScheduleOptions } from "../../../plugins/train/Schedule.ts"
import { hasTorch, runPython } from "../../support/python.ts"

const script = path.join(import.meta.dirname, "python", "schedule.py")

const hfRates = (cases: ReadonlyArray<ScheduleOptions>): number[][] =>
  JSON.parse(runPython([script], JSON.stringify(cases))) as number[][]

const o = (
  schedule: ScheduleOptions["schedule"],
  lr: number,
  minLr: number,
  warmupSteps: number,
  totalSteps: number,
): ScheduleOptions => ({ schedule, lr, minLr, warmupSteps, totalSteps })

/** Relative difference, exact where the reference is 0. */
const close = (got: number, want: number) => Math.abs(got - want) <= 1e-12 * Math.abs(want)

const compare = (
  c: ScheduleOptions,
  want: ReadonlyArray<number>,
  expected = (s: number) => want[s] as number,
) => {
  expect(want.length).toBe(c.totalSteps)
  for (let s = 0; s < c.totalSteps; s++) {
    const got = learningRate(c, s)
    expect(close(got, expected(s)), `${JSON.stringify(c)} step ${s}: ${got} vs ${expected(s)}`).toBe(true)
  }
}

describe.skipIf(!hasTorch)("learning-rate schedule against transformers", () => {
  const cases: ScheduleOptions[] = [
    o("cosine", 3e-4, 0, 0, 10),
    o("cosine", 1e-3, 0, 4, 20),
    o("cosine", 2e-3, 1e-4, 5, 17),
    o("cosine", 1, 0.1, 4, 14),
    o("cosine", 5e-4, 5e-5, 12, 12), // warmup as long as the run
    o("cosine", 5e-4, 0, 20, 7), // warmup longer than the run
    o("cosine", 1e-3, 1e-4, 0, 1),
    o("linear", 3e-4, 0, 0, 10),
    o("linear", 1e-3, 0, 4, 20),
    o("linear", 5e-4, 0, 7, 7),
    o("linear", 5e-4, 0, 9, 5),
    o("linear", 1e-2, 0, 1, 2),
    o("constant", 1e-3, 0, 0, 5),
    o("constant", 1e-3, 1e-4, 3, 9),
    o("constant", 1e-3, 0, 6, 4),
  ]
  // tunegraph's own linear decay to minLr > 0, checked against transformers' linear decay to 0.
  const extended: ScheduleOptions[] = [o("linear", 1e-3, 1e-4, 4, 20), o("linear", 1, 0.1, 0, 9)]
  let want: number[][] = []
  beforeAll(() => {
    want = hfRates([...cases, ...extended.map((c) => ({ ...c, minLr: 0 }))])
  })

  test("cosine (with and without min_lr), linear and constant equal transformers at every step", () => {
    for (const [i, c] of cases.entries()) compare(c, want[i] as number[])
    // The warmup starts at 0, as transformers' does.
    expect(learningRate(cases[1] as ScheduleOptions, 0)).toBe(0)
  })

  test("linear decay to minLr > 0 is transformers' linear decay rescaled to [minLr, lr]", () => {
    for (const [i, c] of extended.entries()) {
      const hf = want[cases.length + i] as number[]
      compare(c, hf, (s) =>
        s < c.warmupSteps ? (hf[s] as number) : c.minLr + (c.lr - c.minLr) * ((hf[s] as number) / c.lr),
      )
    }
  })
})

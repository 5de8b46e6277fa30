/**
 * The rule split's ratios obey, checked by its parameter Schema (so `plan`
 * and `run` refuse bad ratios before anything runs) and again by `splitFile`.
 */

export interface Ratios {
  readonly train: number
  readonly validation: number
  readonly test: number
}

const NAMES = ["train", "validation", "test"] as const

/** The first rule the ratios break, with the ratio to blame, or undefined. */
export const ratiosProblem = (r: Ratios): { field?: string; message: string } | undefined => {
  for (const s of NAMES)
    if (!(r[s] >= 0 && r[s] <= 1))
      return { field: s, message: `ratio ${s} must be between 0 and 1, got ${r[s]}` }
  const sum = r.train + r.validation + r.test
  if (Math.abs(sum - 1) > 1e-9)
    return { message: `ratios must add up to 1, got ${r.train} + ${r.validation} + ${r.test} = ${sum}` }
  return undefined
}

/** Why the ratios cannot be used, or undefined. */
export const checkRatios = (r: Ratios): string | undefined => ratiosProblem(r)?.message

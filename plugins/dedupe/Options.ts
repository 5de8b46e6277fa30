/**
 * The rules dedupe's parameters obey together, checked by its parameter
 * Schema (so `plan` and `run` refuse a bad value before anything runs) and
 * again by `dedupeFile` for direct callers.
 */

/** Permutations kept per record for the exact Jaccard check of a candidate pair. */
export const SKETCH = 32

export interface DedupeRuleFields {
  readonly exact: boolean
  readonly near: boolean
  readonly ngram: number
  readonly permutations: number
  readonly bands: number
  readonly rows: number
  readonly threshold: number
}

/** The first rule the parameters break, with the field to blame, or undefined. */
export const dedupeProblem = (o: DedupeRuleFields): { field: string; message: string } | undefined => {
  if (!o.exact && !o.near)
    return { field: "near", message: "nothing to do: set exact or near (or both) to true" }
  if (o.near) {
    for (const f of ["bands", "rows"] as const)
      if (!Number.isInteger(o[f]) || o[f] < 1)
        return { field: f, message: `bands and rows must be positive integers, got ${o.bands} × ${o.rows}` }
    if (o.bands * o.rows > o.permutations)
      return {
        field: "bands",
        message: `bands × rows (${o.bands} × ${o.rows} = ${o.bands * o.rows}) exceeds permutations (${o.permutations})`,
      }
    if (!Number.isInteger(o.permutations) || o.permutations < SKETCH)
      return { field: "permutations", message: `permutations must be an integer of at least ${SKETCH}` }
    if (!(o.threshold > 0 && o.threshold <= 1))
      return { field: "threshold", message: `threshold must be in (0, 1], got ${o.threshold}` }
    if (!Number.isInteger(o.ngram) || o.ngram < 1)
      return { field: "ngram", message: `ngram must be a positive integer, got ${o.ngram}` }
  }
  return undefined
}

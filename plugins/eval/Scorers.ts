/**
 * Scores of one generated answer against the record's reference, each a
 * number (1 or 0 for the built-in ones) averaged over the examples:
 *
 *   exact_match  the output is the reference (both trimmed)
 *   contains     the output contains the reference (trimmed, non-empty)
 *   regex        the regex extracts the same answer from both (group 1 when
 *                it has one, else the whole match), e.g. GSM8K's `#### (.+)`
 *   <name>       a function from the pipeline file:
 *                (output, reference, record) => number | boolean
 */

/**
 * A custom scorer. Declared through a method so that its parameters are
 * checked bivariantly: a pipeline file may type `record` as the shape it
 * expects (`{ instruction?: string }`) rather than `unknown`.
 */
export type ScorerFunction = {
  score(output: string, reference: string, record: unknown): number | boolean
}["score"]

export interface Scorer {
  readonly name: string
  readonly score: (output: string, reference: string, record: unknown) => number
}

export class ScorerError extends Error {
  override readonly name = "ScorerError"
  constructor(
    message: string,
    /** The parameter at fault. */
    readonly field: "regex" | "scorers" = "scorers",
  ) {
    super(message)
  }
}

export const BUILT_IN = ["exact_match", "contains", "regex"] as const
/** Names the report uses for the loss; a custom scorer may not take them. */
export const RESERVED = ["loss", "perplexity", ...BUILT_IN] as const

const norm = (s: string) => s.trim()

export const exactMatch = (output: string, reference: string): number =>
  norm(output) === norm(reference) ? 1 : 0

export const contains = (output: string, reference: string): number => {
  const r = norm(reference)
  return r !== "" && output.includes(r) ? 1 : 0
}

/** A regex from a pattern or a RegExp, without the `g` and `y` flags (exec must not carry state). */
export const toRegex = (pattern: string | RegExp): RegExp => {
  try {
    return typeof pattern === "string"
      ? new RegExp(pattern)
      : new RegExp(pattern.source, pattern.flags.replace(/[gy]/g, ""))
  } catch (e) {
    throw new ScorerError(`regex ${String(pattern)} does not compile: ${(e as Error).message}`, "regex")
  }
}

/** What the regex extracts from a text: its first group when it has one, else the match; undefined without a match. */
export const extract = (re: RegExp, text: string): string | undefined => {
  const m = re.exec(text)
  if (m === null) return undefined
  return (m.length > 1 ? (m[1] ?? "") : m[0]).trim()
}

export const regexMatch =
  (re: RegExp) =>
  (output: string, reference: string): number => {
    const want = extract(re, reference)
    return want !== undefined && extract(re, output) === want ? 1 : 0
  }

/** A custom scorer's value as a number: true is 1, false is 0; anything else is an error naming it. */
const custom = (name: string, f: ScorerFunction): Scorer => ({
  name,
  score: (output, reference, record) => {
    let v: unknown
    try {
      v = f(output, reference, record)
    } catch (e) {
      throw new ScorerError(`scorer "${name}" threw: ${e instanceof Error ? e.message : String(e)}`)
    }
    if (typeof v === "boolean") return v ? 1 : 0
    if (typeof v === "number" && Number.isFinite(v)) return v
    throw new ScorerError(
      `scorer "${name}" returned ${typeof v === "number" ? v : (JSON.stringify(v) ?? typeof v)}; it must return a finite number or a boolean`,
    )
  },
})

/** Why a custom scorer's name cannot be used, or undefined (checked by eval's parameter Schema too). */
export const scorerNameProblem = (name: string): string | undefined =>
  (RESERVED as ReadonlyArray<string>).includes(name)
    ? `scorer name "${name}" is taken by a built-in score; choose another`
    : !/^[A-Za-z0-9_.-]+$/.test(name)
      ? `scorer name "${name}" may hold only letters, digits and _ . -`
      : undefined

/** Why a regex pattern does not compile, or undefined. */
export const regexProblem = (pattern: string | RegExp): string | undefined => {
  try {
    toRegex(pattern)
    return undefined
  } catch (e) {
    return (e as Error).message
  }
}

/** The scorers of an eval: the built-in ones, regex when a pattern is given, then the custom ones by name. */
export const makeScorers = (
  regex: string | RegExp | undefined,
  customs: Readonly<Record<string, ScorerFunction>>,
): Scorer[] => {
  const out: Scorer[] = [
    { name: "exact_match", score: exactMatch },
    { name: "contains", score: contains },
  ]
  if (regex !== undefined) out.push({ name: "regex", score: regexMatch(toRegex(regex)) })
  for (const [name, f] of Object.entries(customs).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const problem = scorerNameProblem(name)
    if (problem !== undefined) throw new ScorerError(problem)
    out.push(custom(name, f))
  }
  return out
}

/** Scores one output with every scorer. */
export const scoreOne = (
  scorers: ReadonlyArray<Scorer>,
  output: string,
  reference: string,
  record: unknown,
): Record<string, number> =>
  Object.fromEntries(scorers.map((s) => [s.name, s.score(output, reference, record)]))

/** The mean of each score over the examples (in scorer order); nothing without examples. */
export const meanScores = (
  scorers: ReadonlyArray<Scorer>,
  rows: ReadonlyArray<Record<string, number>>,
): Record<string, number> =>
  rows.length === 0
    ? {}
    : Object.fromEntries(
        scorers.map((s) => [s.name, rows.reduce((a, r) => a + (r[s.name] as number), 0) / rows.length]),
      )

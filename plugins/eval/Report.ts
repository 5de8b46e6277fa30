/**
 * The eval report, a directory:
 *   report.json   for machines: scores of the tuned and the base model side by
 *                 side, counts, settings, and every example with both outputs
 *   report.md     the same for people: a score table and the examples
 *   samples.jsonl one example per line (record number, record, prompt,
 *                 reference, both outputs, their scores), for review
 * Nothing in it depends on time or machine load, so the same inputs give the
 * same bytes.
 */
import * as fs from "node:fs"
import * as path from "node:path"

export type Scores = Record<string, number | null>

export interface Sample {
  readonly index: number
  readonly record: unknown
  readonly prompt: string
  readonly reference: string
  readonly tuned: string
  readonly base: string
  readonly scores: { readonly tuned: Record<string, number>; readonly base: Record<string, number> }
}

export interface EvalReport {
  readonly scores: { readonly tuned: Scores; readonly base: Scores }
  readonly counts: {
    readonly testSequences: number
    readonly lossTokens: number
    readonly truncatedSequences: number
    readonly records: number
    readonly examples: number
    readonly skippedNoReply: number
    readonly skippedPromptTooLong: number
  }
  readonly settings: Record<string, unknown>
  readonly inputs: Record<string, string>
  readonly samples: ReadonlyArray<Sample>
}

const json = (report: EvalReport) =>
  `${JSON.stringify(
    {
      scores: report.scores,
      counts: report.counts,
      settings: report.settings,
      inputs: report.inputs,
      samples: report.samples.map((s) => ({
        index: s.index,
        prompt: s.prompt,
        reference: s.reference,
        tuned: s.tuned,
        base: s.base,
        scores: s.scores,
      })),
    },
    null,
    2,
  )}\n`

const fmt = (v: number | null | undefined): string => {
  if (v === null || v === undefined) return "n/a"
  if (Number.isInteger(v)) return String(v)
  return Math.abs(v) >= 1000 ? v.toFixed(1) : String(Number(v.toPrecision(4)))
}

const delta = (tuned: number | null | undefined, base: number | null | undefined): string => {
  if (tuned == null || base == null) return ""
  const d = tuned - base
  return d === 0 ? "0" : `${d > 0 ? "+" : ""}${fmt(d)}`
}

/** A fenced block that no backtick run inside the text can close. */
const fence = (text: string): string => {
  const longest = Math.max(2, ...[...text.matchAll(/`+/g)].map((m) => m[0].length))
  const f = "`".repeat(longest + 1)
  return `${f}text\n${text}\n${f}`
}

const scoreLine = (s: Record<string, number>) =>
  Object.entries(s)
    .map(([k, v]) => `${k} ${fmt(v)}`)
    .join(", ")

export const markdown = (report: EvalReport): string => {
  const { tuned, base } = report.scores
  const names = [...new Set([...Object.keys(base), ...Object.keys(tuned)])]
  const c = report.counts
  const lines = [
    "# Evaluation: tuned model against its base",
    "",
    `Tuned: ${String(report.settings.tuned)}. Loss and perplexity over ${c.lossTokens} label tokens in ${c.testSequences} test sequences` +
      `${c.truncatedSequences > 0 ? ` (${c.truncatedSequences} cut to the context length)` : ""}; ` +
      (c.examples === 0
        ? "no test prompts answered."
        : `greedy answers to ${c.examples} test prompts (up to ${String(report.settings.maxNewTokens)} new tokens, template ${String(report.settings.template)}).`),
    "",
    "| score | base | tuned | change |",
    "|---|---:|---:|---:|",
    ...names.map((n) => `| ${n} | ${fmt(base[n])} | ${fmt(tuned[n])} | ${delta(tuned[n], base[n])} |`),
    "",
  ]
  if (c.skippedNoReply > 0 || c.skippedPromptTooLong > 0)
    lines.push(
      `Left out: ${c.skippedNoReply} records without a reply, ${c.skippedPromptTooLong} prompts longer than the context.`,
      "",
    )
  if (report.samples.length > 0) lines.push("## Examples", "")
  for (const s of report.samples) {
    lines.push(
      `### Record ${s.index}`,
      "",
      "Prompt:",
      "",
      fence(s.prompt),
      "",
      "Reference:",
      "",
      fence(s.reference),
      "",
      `Base (${scoreLine(s.scores.base)}):`,
      "",
      fence(s.base),
      "",
      `Tuned (${scoreLine(s.scores.tuned)}):`,
      "",
      fence(s.tuned),
      "",
    )
  }
  return `${lines.join("\n").trimEnd()}\n`
}

/** Writes report.json, report.md and samples.jsonl into `dir`. */
export const writeReport = (dir: string, report: EvalReport): void => {
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, "report.json"), json(report))
  fs.writeFileSync(path.join(dir, "report.md"), markdown(report))
  fs.writeFileSync(
    path.join(dir, "samples.jsonl"),
    report.samples
      .map((s) =>
        JSON.stringify({
          index: s.index,
          record: s.record,
          prompt: s.prompt,
          reference: s.reference,
          tuned: s.tuned,
          base: s.base,
          scores: s.scores,
        }),
      )
      .map((l) => `${l}\n`)
      .join(""),
  )
}

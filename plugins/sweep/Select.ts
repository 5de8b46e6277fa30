/** The select step's body: read each trial's metric, copy the best trial's artifact. */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect } from "effect"
import type { Artifact } from "../../core/Artifact.ts"
import { type StepContext, StepError } from "../../core/Plugin.ts"

interface Params {
  readonly metric: string
  readonly mode: "min" | "max"
  readonly labels: ReadonlyArray<string>
  readonly values: ReadonlyArray<Readonly<Record<string, string | number | boolean>>>
}

/** Metric names as the trainers log them, and as training.json records them. */
const ALIASES: Record<string, string> = { val_loss: "bestValLoss", train_loss: "finalTrainLoss" }

/** A trial's metric: `training.json` in a directory artifact, at the top level or under `metrics`/`final`. */
export const readMetric = (trial: Artifact, metric: string, label: string): number => {
  const file = trial.isDir ? path.join(trial.path, "training.json") : undefined
  if (file === undefined || !fs.existsSync(file))
    throw new StepError({
      message: `trial ${label}: its output has no training.json to read "${metric}" from`,
    })
  const json = JSON.parse(fs.readFileSync(file, "utf8")) as Record<string, unknown>
  const nested = (k: string) => (json[k] as Record<string, unknown> | undefined)?.[metric]
  const alias = ALIASES[metric]
  const v =
    json[metric] ?? (alias === undefined ? undefined : json[alias]) ?? nested("metrics") ?? nested("final")
  if (typeof v !== "number" || !Number.isFinite(v))
    throw new StepError({
      message: `trial ${label}: training.json has no finite "${metric}" (keys: ${Object.keys(json).join(", ")})`,
      file,
      field: metric,
    })
  return v
}

export const select = (ctx: StepContext<Params, { trials: never }, { best: never; table: never }>) =>
  Effect.try({
    try: () => {
      const { metric, mode, labels, values } = ctx.params
      const trials = ctx.inputs.trials as unknown as ReadonlyArray<Artifact>
      const rows = trials.map((t, i) => ({
        label: labels[i]!,
        params: values[i] ?? {},
        value: readMetric(t, metric, labels[i]!),
        digest: t.digest,
      }))
      let best = 0
      rows.forEach((r, i) => {
        const better = mode === "min" ? r.value < rows[best]!.value : r.value > rows[best]!.value
        if (better) best = i
      })
      const winner = trials[best]!
      if (winner.isDir) fs.cpSync(winner.path, ctx.output("best"), { recursive: true })
      else fs.copyFileSync(winner.path, ctx.output("best"))
      for (const r of rows)
        ctx.log(`${r.label}: ${metric} = ${r.value}${r.label === rows[best]!.label ? "  (best)" : ""}`)
      ctx.metric(metric, rows[best]!.value)
      fs.writeFileSync(
        ctx.output("table"),
        `${JSON.stringify({ metric, mode, best: rows[best]!.label, trials: rows }, null, 2)}\n`,
      )
      return undefined
    },
    catch: (e) =>
      e instanceof StepError ? e : new StepError({ message: String((e as Error).message ?? e) }),
  })

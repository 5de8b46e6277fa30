/** `tunegraph watch`: re-run a pipeline whenever what it reads changes, until Ctrl-C. */
import * as fs from "node:fs"
import * as path from "node:path"
import type { StepOutcome } from "../Run.ts"
import { type Cycle, watchPipeline } from "../Watch.ts"
import { bool, int, list, parseArgs, str, UsageError } from "./Args.ts"
import { mlflowLogging } from "./Main.ts"
import { bold, dim, makeReporter, red, summaryLine, yellow } from "./Output.ts"
import { defaultCpus, defaultGpus } from "./Slots.ts"
import { openStoreFor } from "./StoreArg.ts"

const stepJson = (s: StepOutcome) => ({
  node: s.node,
  plugin: s.plugin,
  status: s.status,
  key: s.key,
  outputs: Object.fromEntries(Object.entries(s.outputs).map(([k, d]) => [k, `sha256:${d}`])),
  ms: s.ms,
  ...(s.error === undefined ? {} : { error: s.error }),
})

export const cmdWatch = async (argv: ReadonlyArray<string>): Promise<number> => {
  const args = parseArgs(
    argv,
    {
      target: "list",
      set: "list",
      "fail-fast": "boolean",
      json: "boolean",
      verbose: "boolean",
      quiet: "boolean",
      store: "string",
      cpus: "string",
      gpus: "string",
      debounce: "string",
      mlflow: "string",
    },
    { t: "target" },
  )
  const file = args.positionals[0]
  if (file === undefined)
    throw new UsageError("usage: tunegraph watch <pipeline.ts> [--set NODE.PARAM=VALUE]... [--json]")
  const abs = path.resolve(file)
  if (!fs.existsSync(abs)) throw new UsageError(`pipeline file ${file} does not exist`)
  const store = openStoreFor(args, abs)
  const json = bool(args, "json")
  const reporter = makeReporter({ verbose: bool(args, "verbose"), quiet: json || bool(args, "quiet") })
  const rel = (p: string) => path.relative(process.cwd(), p) || p
  const time = () => new Date().toTimeString().slice(0, 8)

  // Each finished cycle is logged to MLflow in turn, beside the next cycle (core/mlflow).
  const mlflow = await mlflowLogging(str(args, "mlflow"), abs)
  let logging: Promise<unknown> = Promise.resolve()
  const onCycle = (c: Cycle) => {
    reporter.done()
    if (mlflow !== undefined && c.run !== undefined && (c.status === "succeeded" || c.status === "failed")) {
      const run = c.run
      logging = logging.then(() => mlflow(store, run))
    }
    if (json) {
      process.stdout.write(
        `${JSON.stringify({
          cycle: c.cycle,
          changed: c.changed.map(rel),
          status: c.status,
          ...(c.run === undefined ? {} : { run: c.run }),
          steps: c.steps.map(stepJson),
          ms: c.ms,
          ...(c.error === undefined ? {} : { error: c.error }),
        })}\n`,
      )
      return
    }
    if (c.status === "error") process.stdout.write(`${red("error:")} ${c.error}\n`)
    else if (c.status === "interrupted")
      process.stdout.write(`${yellow("interrupted")} by a change: ${summaryLine(c.steps, c.ms)}\n`)
    else process.stdout.write(`${bold(summaryLine(c.steps, c.ms))}\n`)
    process.stdout.write(
      dim(
        c.status === "error"
          ? "waiting for the next change (Ctrl-C to stop)\n"
          : `watching ${watcher.watching} path${watcher.watching === 1 ? "" : "s"} for changes (Ctrl-C to stop)\n`,
      ),
    )
  }

  const watcher = watchPipeline({
    file: abs,
    store,
    overrides: list(args, "set"),
    targets: list(args, "target"),
    failFast: bool(args, "fail-fast"),
    cpus: int(args, "cpus") ?? defaultCpus(),
    gpus: int(args, "gpus") ?? defaultGpus(),
    debounceMs: int(args, "debounce") ?? 150,
    argv: ["watch", ...argv],
    onEvent: reporter.onEvent,
    onCycleStart: (n, changed) => {
      if (json) return
      const what =
        changed.length === 0
          ? "first run"
          : `changed ${changed.slice(0, 5).map(rel).join(", ")}${changed.length > 5 ? ` and ${changed.length - 5} more` : ""}`
      process.stdout.write(`${n > 1 ? "\n" : ""}${dim(`[${time()}]`)} ${bold(`cycle ${n}`)}: ${what}\n`)
    },
    onCycle,
  })
  let stopping = false
  const onSignal = () => {
    if (stopping) process.exit(130)
    stopping = true
    if (!json) process.stderr.write(`\n${dim("stopping: interrupting the current run")}\n`)
    void watcher.stop()
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  await watcher.done
  await logging
  process.off("SIGINT", onSignal)
  process.off("SIGTERM", onSignal)
  reporter.done()
  return 0
}

/**
 * The `tunegraph` command line. Exit codes: 0 success, 1 a step failed,
 * 2 bad usage or an invalid pipeline, 130 interrupted.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Effect, Exit, Fiber } from "effect"
import type { Store } from "../../cache/Store.ts"
import { LoadError, loadPipeline } from "../Loader.ts"
import { ParamError, parseOverride } from "../Params.ts"
import { PipelineError } from "../Pipeline.ts"
import { plan } from "../Plan.ts"
import { RunError, type RunResult, run } from "../Run.ts"
import { SourceError } from "../Sources.ts"
import { bool, int, list, type Parsed, parseArgs, str, UsageError } from "./Args.ts"
import { bold, dim, makeReporter, red, seconds, summaryLine } from "./Output.ts"
import { defaultCpus, defaultGpus } from "./Slots.ts"
import { openStoreFor } from "./StoreArg.ts"

const BASE_HELP = `tunegraph: typed, incremental pipelines for LLM fine-tuning

Usage:
  tunegraph run <pipeline.ts> [--target NODE]... [--force NODE]... [--set NODE.PARAM=VALUE]...
                              [--fail-fast] [--cpus N] [--gpus N] [--json] [--verbose] [--mlflow URI]
                              [--executor ray --ray-address http://HEAD:8265 [--ray-retries N] [--ray-env NAME[=VALUE]]...]
  tunegraph plan <pipeline.ts> [--target NODE]... [--set NODE.PARAM=VALUE]... [--json]
  tunegraph watch <pipeline.ts> [--set NODE.PARAM=VALUE]... [--target NODE]... [--debounce MS] [--json] [--mlflow URI]
  tunegraph runs [--json] [--limit N]
  tunegraph show <run|last> [--json]
  tunegraph verify [--json]
  tunegraph lineage <digest | node | exported path> [--run RUN] [--json | --dot]
  tunegraph diff <runA> <runB> [--json]
  tunegraph query "<SQL>" [--json | --csv]      (--views lists the views)
  tunegraph reproduce <digest | node | exported path> [--keep] [--json]
  tunegraph report [<run>|last] [-o report.html]
  tunegraph gc [--keep-last N] [--dry-run] [--json]
  tunegraph pin <digest | node | exported path> [--note TEXT]    tunegraph unpin <...>
  tunegraph mlflow sync [<run|last>...] [--mlflow URI] [--experiment NAME] [--json]
  tunegraph store init [--store postgres://... --objects s3://bucket/prefix|DIR] [--json]
`

const OPTIONS = `
Options common to all: --store DIR (or TUNEGRAPH_STORE; default .tunegraph/ at the project root)
  A shared store: --store postgres://USER@HOST/DB --objects s3://BUCKET/PREFIX or a shared DIR
  (or TUNEGRAPH_STORE and TUNEGRAPH_OBJECTS); this machine's cache is TUNEGRAPH_LOCAL (default .tunegraph/)
`

/** Commands contributed by plugins (`generate`, `backends`), loaded only when asked for. */
export type Commands = Readonly<
  Record<string, () => Promise<(argv: ReadonlyArray<string>) => Promise<number>>>
>

/**
 * `commands` are the plugins' commands; `usage` their lines for the help
 * (each "tunegraph NAME ...", continuation lines indented).
 */
export const main = async (
  argv: ReadonlyArray<string>,
  commands: Commands = {},
  usage = "",
): Promise<number> => {
  const contributedHelp = usage.trimEnd() === "" ? "" : `${usage.trimEnd().replace(/^/gm, "  ")}\n`
  const HELP = `${BASE_HELP}${contributedHelp}${OPTIONS}`
  const [command, ...rest] = argv
  try {
    const contributed = command === undefined ? undefined : commands[command]
    if (contributed !== undefined) return await (await contributed())(rest)
    switch (command) {
      case "run":
        return await cmdRun(rest)
      case "plan":
        return await cmdPlan(rest)
      case "runs":
        return (await import("./Inspect.ts")).cmdRuns(rest)
      case "show":
        return (await import("./Inspect.ts")).cmdShow(rest)
      case "verify":
        return (await import("./Inspect.ts")).cmdVerify(rest)
      case "watch":
        return await (await import("./WatchCmd.ts")).cmdWatch(rest)
      case "lineage":
        return (await import("./LineageCmd.ts")).cmdLineage(rest)
      case "diff":
        return (await import("./LineageCmd.ts")).cmdDiff(rest)
      case "query":
        return (await import("./LineageCmd.ts")).cmdQuery(rest)
      case "reproduce":
        return await (await import("./ReproduceCmd.ts")).cmdReproduce(rest)
      case "report":
        return (await import("./ReportCmd.ts")).cmdReport(rest)
      case "gc":
        return (await import("./GcCmd.ts")).cmdGc(rest)
      case "pin":
        return (await import("./GcCmd.ts")).cmdPin(rest)
      case "unpin":
        return (await import("./GcCmd.ts")).cmdUnpin(rest)
      case "mlflow":
        return await (await import("../mlflow/Command.ts")).cmdMlflow(rest)
      case "exec-step":
        return await (await import("./ExecCmd.ts")).cmdExecStep(rest)
      case "store":
        return (await import("./StoreCmd.ts")).cmdStore(rest)
      case undefined:
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(HELP)
        return command === undefined ? 2 : 0
      case "--version":
        process.stdout.write("tunegraph 0.1.0\n")
        return 0
      default:
        process.stderr.write(`tunegraph: unknown command "${command}"\n\n${HELP}`)
        return 2
    }
  } catch (e) {
    return reportError(e)
  }
}

export const reportError = (e: unknown): number => {
  if (
    e instanceof UsageError ||
    e instanceof ParamError ||
    e instanceof LoadError ||
    e instanceof PipelineError ||
    e instanceof RunError ||
    e instanceof SourceError
  ) {
    process.stderr.write(`${red("error:")} ${e.message}\n`)
    return 2
  }
  process.stderr.write(`${red("error:")} ${(e as Error)?.stack ?? String(e)}\n`)
  return 2
}

const RUN_FLAGS = {
  target: "list",
  force: "list",
  set: "list",
  "fail-fast": "boolean",
  json: "boolean",
  verbose: "boolean",
  quiet: "boolean",
  store: "string",
  cpus: "string",
  gpus: "string",
  mlflow: "string",
  executor: "string",
  "ray-address": "string",
  "ray-retries": "string",
  "ray-env": "list",
} as const

export interface Prepared {
  readonly store: Store
  readonly file: string
  readonly pipeline: Awaited<ReturnType<typeof loadPipeline>>
  readonly args: Parsed
}

export const preparePipeline = async (args: Parsed, command: string): Promise<Prepared> => {
  const file = args.positionals[0]
  if (file === undefined) throw new UsageError(`usage: tunegraph ${command} <pipeline.ts>`)
  const abs = path.resolve(file)
  if (!fs.existsSync(abs)) throw new UsageError(`pipeline file ${file} does not exist`)
  const store = openStoreFor(args, abs)
  const pipeline = await loadPipeline(abs, path.join(store.dir, "compiled"))
  return { store, file: abs, pipeline, args }
}

const cmdRun = async (argv: ReadonlyArray<string>): Promise<number> => {
  const args = parseArgs(argv, RUN_FLAGS, { t: "target" })
  const { store, file, pipeline } = await preparePipeline(args, "run")
  const json = bool(args, "json")
  const reporter = makeReporter({ verbose: bool(args, "verbose"), quiet: json || bool(args, "quiet") })
  const overrides = list(args, "set").map((s) => parseOverride(s, pipeline.pipeline))
  const mlflow = await mlflowLogging(str(args, "mlflow"), file)
  const executor = (await import("./ExecCmd.ts")).executorFrom(args, store, file)
  const program = run({
    store,
    ...(executor === undefined ? {} : { executor }),
    pipeline: pipeline.pipeline,
    pipelinePath: file,
    baseDir: path.dirname(file),
    targets: list(args, "target"),
    force: list(args, "force"),
    overrides,
    failFast: bool(args, "fail-fast"),
    cpus: int(args, "cpus") ?? defaultCpus(),
    gpus: int(args, "gpus") ?? defaultGpus(),
    argv: ["run", ...argv],
    onEvent: reporter.onEvent,
  })
  const fiber = Effect.runFork(program)
  let interrupted = false
  const onSignal = () => {
    if (interrupted) process.exit(130)
    interrupted = true
    process.stderr.write(`\n${dim("interrupting: removing partial outputs (Ctrl-C again to quit now)")}\n`)
    Effect.runFork(Fiber.interrupt(fiber))
  }
  process.on("SIGINT", onSignal)
  process.on("SIGTERM", onSignal)
  const exit = await Effect.runPromise(Fiber.await(fiber))
  process.off("SIGINT", onSignal)
  process.off("SIGTERM", onSignal)
  reporter.done()
  // No close(): closing checkpoints the WAL with an fsync; the next writer does it, and the WAL is durable.
  if (Exit.isFailure(exit)) {
    if (Cause.hasInterruptsOnly(exit.cause)) {
      process.stderr.write("interrupted: nothing partial was kept\n")
      return 130
    }
    return reportError(Cause.squash(exit.cause))
  }
  const result = exit.value
  if (json) process.stdout.write(`${JSON.stringify(runJson(result))}\n`)
  else process.stdout.write(`${bold(summaryLine(result.steps, result.ms))}\n`)
  await mlflow?.(store, result.run)
  return result.status === "succeeded" ? 0 : 1
}

/** With a tracking server named (--mlflow, MLFLOW_TRACKING_URI), what logs each finished run to it. */
export const mlflowLogging = async (flag: string | undefined, pipelineFile: string) =>
  (flag ?? process.env.MLFLOW_TRACKING_URI ?? "").trim() === ""
    ? undefined
    : (await import("../mlflow/Command.ts")).runLogger(flag, pipelineFile)

export const runJson = (r: RunResult) => ({
  run: r.run,
  status: r.status,
  steps: r.steps.map((s) => ({
    node: s.node,
    plugin: s.plugin,
    status: s.status,
    key: s.key,
    outputs: Object.fromEntries(Object.entries(s.outputs).map(([k, d]) => [k, `sha256:${d}`])),
    ms: s.ms,
    ...(s.error === undefined ? {} : { error: s.error }),
    ...(s.chunks === undefined ? {} : { chunks: s.chunks }),
    ...(s.executor === undefined ? {} : { executor: s.executor }),
  })),
})

const cmdPlan = async (argv: ReadonlyArray<string>): Promise<number> => {
  const args = parseArgs(argv, {
    target: "list",
    force: "list",
    set: "list",
    json: "boolean",
    store: "string",
  })
  const { store, file, pipeline } = await preparePipeline(args, "plan")
  const steps = plan({
    store,
    pipeline: pipeline.pipeline,
    baseDir: path.dirname(file),
    targets: list(args, "target"),
    force: list(args, "force"),
    overrides: list(args, "set").map((s) => parseOverride(s, pipeline.pipeline)),
  })
  store.close()
  if (bool(args, "json")) {
    process.stdout.write(
      `${JSON.stringify({
        steps: steps.map((s) => ({
          node: s.node,
          status: s.status,
          reasons: s.reasons,
          ...(s.chunks === undefined ? {} : { chunks: s.chunks }),
        })),
      })}\n`,
    )
    return 0
  }
  for (const s of steps) {
    const word = s.status === "cached" ? dim("cached") : bold("run   ")
    process.stdout.write(`  ${word} ${s.node}${s.plugin === "source" ? "" : dim(` (${s.plugin})`)}\n`)
    for (const r of s.reasons) process.stdout.write(`           ${dim("-")} ${r}\n`)
  }
  const toRun = steps.filter((s) => s.status === "run").length
  process.stdout.write(`${steps.length} steps: ${steps.length - toRun} cached, ${toRun} to run\n`)
  return 0
}

export { seconds }

/**
 * Running steps on a cluster: `--executor ray` for `tunegraph run`, and
 * `tunegraph exec-step`, the entrypoint of each job, which executes one step
 * of a pipeline against the shared store after recomputing its key.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Cause, Effect, Exit } from "effect"
import type { Store } from "../../cache/Store.ts"
import { type Executor, rayExecutor } from "../Executor.ts"
import { parseOverride } from "../Params.ts"
import { run } from "../Run.ts"
import { int, list, type Parsed, parseArgs, str, UsageError } from "./Args.ts"
import { preparePipeline } from "./Main.ts"
import { defaultCpus, defaultGpus } from "./Slots.ts"

/** POSIX shell quoting of one word. */
export const shellWord = (s: string) => (/^[\w@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`)

/** Where the object store is, for a worker: the AWS variables that hold no secret. */
const NOT_SECRET = [
  "AWS_REGION",
  "AWS_DEFAULT_REGION",
  "AWS_ENDPOINT_URL",
  "AWS_ENDPOINT_URL_S3",
  "AWS_PROFILE",
]

/** The environment a worker needs to reach the shared store: its address, and where the bucket is. */
const workerEnv = (args: Parsed): Record<string, string> => {
  const env: Record<string, string> = {}
  const store = str(args, "store") ?? process.env.TUNEGRAPH_STORE
  const objects = str(args, "objects") ?? process.env.TUNEGRAPH_OBJECTS
  // A job's environment is kept with the job on the cluster (its values redacted in the Jobs API):
  // secrets are not passed on unless asked for (--ray-env). Workers take them from their own environment (KubeRay
  // secrets, an instance role); the database URL goes without its password.
  if (store !== undefined) env.TUNEGRAPH_STORE = store.replace(/\/\/([^:/@]+):[^@/]*@/, "//$1@")
  if (objects !== undefined) env.TUNEGRAPH_OBJECTS = objects
  for (const k of NOT_SECRET) if (process.env[k] !== undefined) env[k] = process.env[k]!
  // --ray-env NAME passes this process's value on, --ray-env NAME=VALUE sets one
  for (const e of list(args, "ray-env")) {
    const eq = e.indexOf("=")
    if (eq > 0) env[e.slice(0, eq)] = e.slice(eq + 1)
    else if (process.env[e] !== undefined) env[e] = process.env[e]!
    else
      throw new UsageError(
        `--ray-env ${e}: there is no ${e} in this environment to pass on (or give ${e}=VALUE)`,
      )
  }
  return env
}

/** The command line that starts tunegraph on a worker: TUNEGRAPH_RAY_COMMAND, else node and this installation's bin. */
const workerCommand = (): string => {
  const fromEnv = process.env.TUNEGRAPH_RAY_COMMAND
  if (fromEnv !== undefined && fromEnv !== "") return fromEnv
  const here = path.dirname(fileURLToPath(import.meta.url))
  // dist/cli.js or dist/chunks/*.js in a build, core/cli/ in the sources: bin/ is beside them
  const root = [path.join(here, ".."), path.join(here, "..", ".."), path.join(here, "..", "..", "..")].find(
    (r) => fs.existsSync(path.join(r, "bin", "tunegraph.js")),
  )
  return `node ${shellWord(path.join(root ?? process.cwd(), "bin", "tunegraph.js"))}`
}

/** The executor `tunegraph run` was asked for: undefined for local. */
export const executorFrom = (args: Parsed, store: Store, pipelineFile: string): Executor | undefined => {
  const name = str(args, "executor") ?? process.env.TUNEGRAPH_EXECUTOR ?? "local"
  if (name === "local") return undefined
  if (name !== "ray") throw new UsageError(`--executor ${name}: the executors are local and ray`)
  const address = str(args, "ray-address") ?? process.env.RAY_ADDRESS
  if (address === undefined || !/^https?:\/\//.test(address))
    throw new UsageError(
      "--executor ray needs the cluster's dashboard address: --ray-address http://HEAD:8265 (or RAY_ADDRESS)",
    )
  if (!store.shared)
    throw new UsageError(
      "--executor ray runs steps on other machines, which need a shared store: --store postgres://... --objects s3://bucket/prefix",
    )
  const sets = list(args, "set")
  const command = workerCommand()
  return rayExecutor({
    address,
    retries: int(args, "ray-retries") ?? 2,
    env: workerEnv(args),
    entrypoint: (job) =>
      [
        command,
        "exec-step",
        shellWord(pipelineFile),
        "--node",
        shellWord(job.node),
        "--key",
        job.key,
        "--run",
        shellWord(job.runId),
        ...sets.flatMap((s) => ["--set", shellWord(s)]),
      ].join(" "),
  })
}

/**
 * `tunegraph exec-step <pipeline.ts> --node N --key K --run R [--set ...]`:
 * executes node N on this machine into run R of the shared store, after
 * recomputing its key from this machine's code, versions and data; any
 * difference from the driver's K is refused (exit 3). Exit 0 when it ran,
 * 1 when the step failed (recorded, for the driver to report).
 */
export const cmdExecStep = async (argv: ReadonlyArray<string>): Promise<number> => {
  const args = parseArgs(argv, {
    node: "string",
    key: "string",
    run: "string",
    set: "list",
    store: "string",
    cpus: "string",
    gpus: "string",
  })
  const node = str(args, "node")
  const key = str(args, "key")
  const runId = str(args, "run")
  if (node === undefined || key === undefined || runId === undefined)
    throw new UsageError(
      "usage: tunegraph exec-step <pipeline.ts> --node NODE --key KEY --run RUN [--set ...]",
    )
  const { store, file, pipeline } = await preparePipeline(args, "exec-step")
  if (!store.shared) throw new UsageError("exec-step runs against a shared store: --store postgres://...")
  const overrides = list(args, "set").map((s) => parseOverride(s, pipeline.pipeline))
  const program = run({
    store,
    pipeline: pipeline.pipeline,
    pipelinePath: file,
    baseDir: path.dirname(file),
    overrides,
    runId,
    only: { node, key },
    cpus: int(args, "cpus") ?? defaultCpus(),
    gpus: int(args, "gpus") ?? defaultGpus(),
    onEvent: (e) => {
      if (e.type === "log") process.stdout.write(`${e.line}\n`)
      if (e.type === "end")
        process.stdout.write(
          `${e.outcome.node}: ${e.outcome.status}${e.outcome.error === undefined ? "" : `: ${e.outcome.error}`}\n`,
        )
    },
  })
  const exit = await Effect.runPromiseExit(program)
  store.close()
  if (Exit.isFailure(exit)) {
    process.stderr.write(`exec-step: ${String(Cause.squash(exit.cause))}\n`)
    return 2
  }
  const outcome = exit.value.steps.find((s) => s.node === node)
  if (outcome?.status === "ran" || outcome?.status === "cached") return 0
  if (outcome?.error?.startsWith("refusing to run")) {
    process.stderr.write(`${outcome.error}\n`)
    return 3
  }
  return 1
}

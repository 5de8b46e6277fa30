/**
 * Executors: where a step that must run does run. The scheduler (core/Run.ts)
 * decides what runs, takes the key's lease and records the outcome; an
 * executor only carries one step out.
 *
 *   - local (the default): in this process, within its CPU and GPU slots;
 *   - ray: each step as a Ray job (the Jobs REST API of a cluster's head),
 *     whose entrypoint (`tunegraph exec-step`) executes exactly that step
 *     against the shared store, after recomputing its key.
 *
 * A remote executor gets a `StepJob` and reports when the job is over; the
 * worker has recorded the execution (ran or failed) in the store by then,
 * and the scheduler reads it back. A job that ended without a record (its
 * node died, the cluster lost it) is submitted again, up to `retries`
 * times. Kubernetes Jobs or Slurm fit the same interface: submit, poll,
 * logs, stop.
 */
import * as http from "node:http"
import * as https from "node:https"
import { Effect } from "effect"

export interface StepJob {
  readonly runId: string
  readonly node: string
  readonly plugin: string
  readonly key: string
  readonly cpus: number
  readonly gpus: number
}

export interface ExecutorHooks {
  /** A line of the job's output, as it comes. */
  readonly log: (line: string) => void
  /** What the worker recorded for this step since `since` (ms): ran, failed, or nothing yet. */
  readonly recorded: (since: number) => { status: "ran" | "failed"; error?: string } | undefined
}

export interface JobReport {
  /** The worker recorded an execution (ran or failed); false: the job ended without one, every time. */
  readonly recorded: boolean
  readonly attempts: number
  /** The executor's words on the last attempt (a job's status message). */
  readonly message: string
  /** Where it ran, for lineage: { job, node } of each attempt. */
  readonly placements: ReadonlyArray<{
    readonly job: string
    readonly node: string | null
    readonly status: string
  }>
}

export interface Executor {
  readonly name: string
  readonly runStep: (job: StepJob, hooks: ExecutorHooks) => Effect.Effect<JobReport>
}

export class ExecutorError extends Error {
  override readonly name = "ExecutorError"
}

// ---------------------------------------------------------------- Ray

export interface RayOptions {
  /** The head's dashboard address: http://HEAD:8265 */
  readonly address: string
  /** The shell command that executes one step on a worker (tunegraph exec-step ...). */
  readonly entrypoint: (job: StepJob) => string
  /** Environment for the entrypoint (the shared store's address, credentials). */
  readonly env?: Readonly<Record<string, string>>
  /** Submissions again of a job that ended without a record (default 2). */
  readonly retries?: number
  /** How often a job's status and logs are read (default 500 ms). */
  readonly pollMs?: number
}

interface RayJob {
  readonly status: "PENDING" | "RUNNING" | "STOPPED" | "SUCCEEDED" | "FAILED"
  readonly message?: string | null
  readonly driver_node_id?: string | null
}

const TERMINAL = new Set(["STOPPED", "SUCCEEDED", "FAILED"])

export const rayExecutor = (options: RayOptions): Executor => {
  const base = options.address.replace(/\/+$/, "")
  const retries = options.retries ?? 2
  const pollMs = options.pollMs ?? 500

  // node:http rather than fetch: Ray's dashboard refuses writes from anything that looks like a
  // browser, and fetch sends the Sec-Fetch-* headers browsers do.
  const call = <A>(method: "GET" | "POST", endpoint: string, body?: unknown) =>
    Effect.tryPromise({
      try: () => request<A>(`${base}${endpoint}`, method, body),
      catch: (e) =>
        e instanceof ExecutorError
          ? e
          : new ExecutorError(`the Ray cluster at ${base} did not answer: ${(e as Error).message}`),
    })

  const submit = (job: StepJob, attempt: number) =>
    call<{ submission_id: string }>("POST", "/api/jobs/", {
      entrypoint: options.entrypoint(job),
      submission_id: `tunegraph-${job.runId}-${job.node.replace(/[^\w.-]/g, "_")}-${job.key.slice(0, 12)}-${attempt}-${Math.random().toString(36).slice(2, 6)}`,
      entrypoint_num_cpus: job.cpus,
      entrypoint_num_gpus: job.gpus,
      runtime_env: { env_vars: { ...(options.env ?? {}) } },
      metadata: { tunegraph_run: job.runId, tunegraph_node: job.node, tunegraph_key: job.key },
    }).pipe(Effect.map((r) => r.submission_id))

  const stop = (id: string) => call("POST", `/api/jobs/${id}/stop`).pipe(Effect.ignore)

  /** Waits for one submission to end, passing its new log lines on as they come. */
  const follow = (id: string, hooks: ExecutorHooks) =>
    Effect.gen(function* () {
      let printed = 0
      let partial = ""
      const drain = Effect.gen(function* () {
        const logs = yield* call<{ logs?: string }>("GET", `/api/jobs/${id}/logs`).pipe(
          Effect.orElseSucceed(() => ({ logs: undefined })),
        )
        const text = logs.logs ?? ""
        if (text.length <= printed) return
        const chunk = partial + text.slice(printed)
        printed = text.length
        const lines = chunk.split("\n")
        partial = lines.pop() ?? ""
        for (const l of lines) if (l.length > 0) hooks.log(l)
      })
      for (;;) {
        const info = yield* call<RayJob>("GET", `/api/jobs/${id}`)
        yield* drain
        if (TERMINAL.has(info.status)) {
          if (partial.length > 0) hooks.log(partial)
          return info
        }
        yield* Effect.sleep(pollMs)
      }
    }).pipe(Effect.onInterrupt(() => stop(id)))

  return {
    name: "ray",
    runStep: (job, hooks) =>
      Effect.gen(function* () {
        const placements: Array<{ job: string; node: string | null; status: string }> = []
        for (let attempt = 1; ; attempt++) {
          const since = Date.now()
          const id = yield* submit(job, attempt)
          hooks.log(`ray: submitted ${id} (${job.cpus} CPU, ${job.gpus} GPU), attempt ${attempt}`)
          const info = yield* follow(id, hooks)
          placements.push({ job: id, node: info.driver_node_id ?? null, status: info.status })
          const message = info.message ?? info.status
          if (hooks.recorded(since) !== undefined)
            return { recorded: true, attempts: attempt, message, placements }
          if (info.status === "STOPPED" || attempt > retries)
            return { recorded: false, attempts: attempt, message, placements }
          hooks.log(`ray: ${id} ended ${info.status} without a result (${message}); submitting it again`)
        }
      }).pipe(
        Effect.catch((e: ExecutorError) =>
          Effect.succeed<JobReport>({ recorded: false, attempts: 1, message: e.message, placements: [] }),
        ),
      ),
  }
}

const request = <A>(url: string, method: "GET" | "POST", body?: unknown): Promise<A> =>
  new Promise<A>((resolve, reject) => {
    const data = body === undefined ? undefined : Buffer.from(JSON.stringify(body))
    const u = new URL(url)
    const req = (u.protocol === "https:" ? https : http).request(
      u,
      {
        method,
        timeout: 30_000,
        headers:
          data === undefined ? {} : { "content-type": "application/json", "content-length": data.length },
      },
      (res) => {
        const chunks: Buffer[] = []
        res.on("data", (c: Buffer) => chunks.push(c))
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8")
          const status = res.statusCode ?? 0
          if (status < 200 || status >= 300) {
            reject(new ExecutorError(`${method} ${u.pathname}: ${status} ${text.slice(0, 500)}`))
            return
          }
          try {
            resolve((text === "" ? {} : JSON.parse(text)) as A)
          } catch {
            reject(new ExecutorError(`${method} ${u.pathname}: not JSON: ${text.slice(0, 200)}`))
          }
        })
      },
    )
    req.on("timeout", () => req.destroy(new Error("no answer within 30 s")))
    req.on("error", reject)
    if (data !== undefined) req.write(data)
    req.end()
  })

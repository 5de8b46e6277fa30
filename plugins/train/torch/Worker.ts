/**
 * Starts the torch worker (worker.py) and relays what it says. A training
 * job is one JSON line on its stdin; it answers with JSON lines (log,
 * metric, progress, annotate, then done, error or interrupted), the
 * messages the tfjs worker thread posts. Interrupted, the worker gets
 * SIGTERM, saves a checkpoint and exits; one that does not exit within the
 * grace period is killed, and the next run resumes from its last periodic
 * checkpoint.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createInterface } from "node:readline"
import type { TrainHooks } from "../Trainer.ts"
import { pythonCommand, workerPath } from "./Python.ts"

export class TorchWorkerError extends Error {
  override readonly name: string
  constructor(message: string, name = "TorchWorkerError") {
    super(message)
    this.name = name
  }
}

export class TorchInterrupted extends Error {
  override readonly name = "TorchInterrupted"
}

/** The environment the worker runs in: quiet libraries, no hub, and passive OpenMP threads (spinning ones slow two cores). */
export const workerEnv = (): NodeJS.ProcessEnv => ({
  ...process.env,
  PYTHONUNBUFFERED: "1",
  PYTHONHASHSEED: "0",
  HF_HUB_OFFLINE: "1",
  TRANSFORMERS_VERBOSITY: process.env.TRANSFORMERS_VERBOSITY ?? "error",
  TOKENIZERS_PARALLELISM: "false",
  OMP_WAIT_POLICY: process.env.OMP_WAIT_POLICY ?? "PASSIVE",
})

const GRACE_MS = 60_000

/** Runs one `train` job in a worker process; resolves with its result, rejects with its error. */
export const runTorchJob = (
  job: Record<string, unknown>,
  hooks: TrainHooks,
  signal?: AbortSignal,
): Promise<Record<string, unknown>> => {
  if (signal?.aborted) return Promise.reject(new TorchInterrupted("training interrupted before it started"))
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(pythonCommand(), [workerPath(), "train"], {
      env: workerEnv(),
      stdio: ["pipe", "pipe", "pipe"],
    })
    let settled = false
    let step = 0
    let result: Record<string, unknown> | undefined
    let failure: Error | undefined
    const stderr: string[] = []
    let killTimer: NodeJS.Timeout | undefined
    const finish = (f: () => void) => {
      if (settled) return
      settled = true
      signal?.removeEventListener("abort", onAbort)
      if (killTimer !== undefined) clearTimeout(killTimer)
      f()
    }
    const onAbort = () => {
      child.kill("SIGTERM")
      killTimer = setTimeout(() => child.kill("SIGKILL"), GRACE_MS)
    }
    signal?.addEventListener("abort", onAbort, { once: true })
    child.on("error", (e) =>
      finish(() => reject(new TorchWorkerError(`${pythonCommand()} cannot be started: ${e.message}`))),
    )
    createInterface({ input: child.stderr! }).on("line", (line) => {
      stderr.push(line)
      if (stderr.length > 40) stderr.shift()
    })
    createInterface({ input: child.stdout! }).on("line", (line) => {
      let m: { type: string; [k: string]: unknown }
      try {
        m = JSON.parse(line)
      } catch {
        return hooks.log(line)
      }
      switch (m.type) {
        case "log":
          return hooks.log(m.line as string)
        case "metric":
          return hooks.metric(m.name as string, m.value as number, m.step as number | undefined)
        case "progress":
          step = m.done as number
          return hooks.progress(
            m.done as number,
            m.total as number | undefined,
            m.detail as string | undefined,
          )
        case "annotate":
          return hooks.annotate(m.fields as Record<string, unknown>)
        case "done":
          result = m.result as Record<string, unknown>
          return
        case "interrupted":
          step = m.step as number
          return
        case "error":
          failure = new TorchWorkerError(m.message as string, m.name as string)
          return
      }
    })
    child.on("close", (code, sig) =>
      finish(() => {
        if (signal?.aborted)
          return reject(
            new TorchInterrupted(
              `training interrupted after step ${step}; the next run resumes from ${sig === "SIGKILL" ? "the last periodic checkpoint" : "the checkpoint it saved"}`,
            ),
          )
        if (result !== undefined && code === 0) return resolve(result)
        if (failure !== undefined) return reject(failure)
        reject(
          new TorchWorkerError(
            `the torch worker exited with ${sig ?? `code ${code}`} before finishing${stderr.length > 0 ? `:\n${stderr.slice(-12).join("\n")}` : ""}`,
          ),
        )
      }),
    )
    child.stdin!.end(`${JSON.stringify(job)}\n`)
  })
}

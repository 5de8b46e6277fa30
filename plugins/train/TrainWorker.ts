/**
 * The trainer's thread entry. As a worker (worker_threads) it takes the job
 * from workerData and posts its log, metrics and progress to the parent; run
 * as a script (`node train-worker.mjs job.json`) it prints them as JSON lines,
 * which lets a test kill the process outright and resume.
 */
import * as fs from "node:fs"
import { pathToFileURL } from "node:url"
import { isMainThread, parentPort, workerData } from "node:worker_threads"
import { type TrainHooks, type TrainJob, train } from "./Trainer.ts"

export type WorkerMessage =
  | { readonly type: "log"; readonly line: string }
  | { readonly type: "metric"; readonly name: string; readonly value: number; readonly step?: number }
  | { readonly type: "progress"; readonly done: number; readonly total?: number; readonly detail?: string }
  | { readonly type: "annotate"; readonly fields: Record<string, unknown> }
  | { readonly type: "done"; readonly result: unknown }
  | { readonly type: "error"; readonly message: string; readonly name: string }

const hooksFor = (send: (m: WorkerMessage) => void): TrainHooks => ({
  log: (line) => send({ type: "log", line }),
  metric: (name, value, step) =>
    send({ type: "metric", name, value, ...(step === undefined ? {} : { step }) }),
  progress: (done, total, detail) =>
    send({
      type: "progress",
      done,
      ...(total === undefined ? {} : { total }),
      ...(detail === undefined ? {} : { detail }),
    }),
  annotate: (fields) => send({ type: "annotate", fields }),
})

const runJob = async (job: TrainJob, send: (m: WorkerMessage) => void): Promise<boolean> => {
  try {
    const result = await train(job, hooksFor(send))
    send({ type: "done", result })
    return true
  } catch (e) {
    send({
      type: "error",
      name: e instanceof Error ? e.name : "Error",
      message: e instanceof Error ? e.message : String(e),
    })
    return false
  }
}

if (!isMainThread && parentPort !== null && (workerData as { tunegraphTrain?: TrainJob })?.tunegraphTrain) {
  const port = parentPort
  void runJob((workerData as { tunegraphTrain: TrainJob }).tunegraphTrain, (m) => port.postMessage(m))
} else if (
  isMainThread &&
  process.argv[1] !== undefined &&
  import.meta.url === pathToFileURL(process.argv[1]).href
) {
  const file = process.argv[2]
  if (file === undefined) {
    process.stderr.write("usage: node train-worker.mjs job.json\n")
    process.exit(2)
  }
  const job = JSON.parse(fs.readFileSync(file, "utf-8")) as TrainJob
  void runJob(job, (m) => process.stdout.write(`${JSON.stringify(m)}\n`)).then((ok) =>
    process.exit(ok ? 0 : 1),
  )
}

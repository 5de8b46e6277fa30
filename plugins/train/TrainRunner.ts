/**
 * Runs a training job off the main thread, so the engine stays responsive
 * and can stop it: an aborted signal terminates the worker at once, and the
 * next run resumes from the last checkpoint.
 *
 * The worker needs plain JavaScript. The build ships `TrainWorker.js` beside
 * this module's chunk; otherwise the TypeScript entry is bundled with esbuild
 * (dependencies left external) into node_modules/.cache/tunegraph, named by
 * the bundle's hash, so it is built once per code version.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Worker } from "node:worker_threads"
import type { TrainHooks, TrainJob, TrainResult } from "./Trainer.ts"
import type { WorkerMessage } from "./TrainWorker.ts"

export class TrainInterrupted extends Error {
  override readonly name = "TrainInterrupted"
}

const here = path.dirname(fileURLToPath(import.meta.url))

/** The TypeScript entry: beside this module, or in the package's source tree when this module was bundled. */
const sourceEntry = (name: string): string | undefined => {
  for (let dir = here; ; dir = path.dirname(dir)) {
    for (const candidate of [path.join(dir, `${name}.ts`), path.join(dir, "plugins", "train", `${name}.ts`)])
      if (fs.existsSync(candidate)) return candidate
    if (path.dirname(dir) === dir) break
  }
  // A script bundled elsewhere (a benchmark in /tmp) run from the repository root.
  const fromCwd = path.join(process.cwd(), "plugins", "train", `${name}.ts`)
  return fs.existsSync(fromCwd) ? fromCwd : undefined
}

const cacheDir = (from: string): string => {
  for (let dir = path.dirname(from); ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, "node_modules", "@tensorflow", "tfjs-core")))
      return path.join(dir, "node_modules", ".cache", "tunegraph")
    if (path.dirname(dir) === dir) throw new Error(`no node_modules with @tensorflow/tfjs-core above ${from}`)
  }
}

const scripts = new Map<string, Promise<string>>()

/** Path of a worker entry's JavaScript (TrainWorker, ShardWorker), building it when needed. */
export const workerScript = (name = "TrainWorker"): Promise<string> => {
  const known = scripts.get(name)
  if (known !== undefined) return known
  const script = (async () => {
    // scripts/build.mjs emits worker entries as dist/chunks/<name>.js.
    for (const built of [`${name}.js`, `chunks/${name}.js`, `${name}.mjs`]) {
      const file = path.join(here, built)
      if (fs.existsSync(file)) return file
    }
    const entry = sourceEntry(name)
    if (entry === undefined)
      throw new Error(`the trainer's worker entry (plugins/train/${name}.ts) is missing`)
    const esbuild = await import("esbuild")
    const out = await esbuild.build({
      entryPoints: [entry],
      bundle: true,
      platform: "node",
      format: "esm",
      target: "node20",
      packages: "external",
      write: false,
      logLevel: "silent",
    })
    const text = (out.outputFiles[0] as { text: string }).text
    const dir = cacheDir(entry)
    const file = path.join(dir, `${name}-${createHash("sha256").update(text).digest("hex").slice(0, 16)}.mjs`)
    if (!fs.existsSync(file)) {
      fs.mkdirSync(dir, { recursive: true })
      const tmp = `${file}.${process.pid}.tmp`
      fs.writeFileSync(tmp, text)
      fs.renameSync(tmp, file)
    }
    return file
  })()
  scripts.set(name, script)
  script.catch(() => scripts.delete(name))
  return script
}

/** Runs `job` in a worker thread, relaying its messages to `hooks`. */
export const runInWorker = async (
  job: TrainJob,
  hooks: TrainHooks,
  signal?: AbortSignal,
): Promise<TrainResult> => {
  if (signal?.aborted) throw new TrainInterrupted("training interrupted before it started")
  const file = await workerScript()
  return new Promise<TrainResult>((resolve, reject) => {
    const worker = new Worker(file, { workerData: { tunegraphTrain: job } })
    let settled = false
    let step = 0
    const finish = (f: () => void) => {
      if (settled) return
      settled = true
      signal?.removeEventListener("abort", onAbort)
      f()
    }
    const onAbort = () => {
      void worker.terminate()
      finish(() =>
        reject(
          new TrainInterrupted(
            `training interrupted after step ${step}; the next run resumes from the last checkpoint`,
          ),
        ),
      )
    }
    signal?.addEventListener("abort", onAbort, { once: true })
    worker.on("message", (m: WorkerMessage) => {
      switch (m.type) {
        case "log":
          return hooks.log(m.line)
        case "metric":
          return hooks.metric(m.name, m.value, m.step)
        case "progress":
          step = m.done
          return hooks.progress(m.done, m.total, m.detail)
        case "annotate":
          return hooks.annotate(m.fields)
        case "done":
          void worker.terminate()
          return finish(() => resolve(m.result as TrainResult))
        case "error": {
          void worker.terminate()
          const e = new Error(m.message)
          e.name = m.name
          return finish(() => reject(e))
        }
      }
    })
    worker.on("error", (e) => finish(() => reject(e)))
    worker.on("exit", (code) =>
      finish(() => reject(new Error(`the training worker exited with code ${code} before finishing`))),
    )
  })
}

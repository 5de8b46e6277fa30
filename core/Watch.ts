/**
 * `watch`: run the pipeline, then run it again whenever what it reads
 * changes. Every source the pipeline reads, the pipeline file and its local
 * imports are watched (chokidar); the store and export directories (those
 * holding a tunegraph-export.json) are not. Changes are debounced into one
 * batch. A batch arriving during a run interrupts it: the engine removes the
 * partial outputs and releases its leases, a training step keeps its
 * checkpoint, and the next run is incremental, so only what changed (and
 * what was cut short) runs again. A pipeline that does not load reports its
 * error and waits for the next change.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Cause, Effect, Exit, Fiber } from "effect"
import type { Store } from "../cache/Store.ts"
import { globToRegExp, hasMagic, staticPrefix } from "./Glob.ts"
import { EXPORT_MANIFEST } from "./Lineage.ts"
import { loadPipeline } from "./Loader.ts"
import { parseOverride } from "./Params.ts"
import type { Pipeline } from "./Pipeline.ts"
import { newRunId, type RunEvent, type RunResult, run, type StepOutcome } from "./Run.ts"

export interface Cycle {
  readonly cycle: number
  /** Absolute paths whose change started this cycle (none for the first). */
  readonly changed: ReadonlyArray<string>
  readonly status: RunResult["status"] | "error"
  readonly run?: string
  readonly steps: ReadonlyArray<StepOutcome>
  readonly ms: number
  readonly error?: string
}

export interface WatchOptions {
  readonly file: string
  readonly store: Store
  readonly overrides?: ReadonlyArray<string>
  readonly targets?: ReadonlyArray<string>
  readonly failFast?: boolean
  readonly cpus?: number
  readonly gpus?: number
  readonly argv?: ReadonlyArray<string>
  /** Quiet time after the last change before a batch is taken (ms). */
  readonly debounceMs?: number
  readonly onCycleStart?: (cycle: number, changed: ReadonlyArray<string>) => void
  readonly onCycle: (cycle: Cycle) => void
  readonly onEvent?: (e: RunEvent) => void
}

/** What to watch for one pipeline: directories or files to give chokidar, and which paths count. */
export interface WatchSet {
  readonly roots: ReadonlyArray<string>
  readonly matches: (abs: string) => boolean
}

const posix = (p: string) => p.split(path.sep).join("/")
const under = (p: string, dir: string) =>
  p === dir || p.startsWith(dir.endsWith(path.sep) ? dir : `${dir}${path.sep}`)
const SKIPPED = /(^|\/)(\.tunegraph|node_modules|\.git)(\/|$)/

/** The files a pipeline's sources read, as chokidar roots and a matcher (excludes honoured). */
export const watchSet = (pipeline: Pipeline, baseDir: string, extra: ReadonlyArray<string>): WatchSet => {
  const roots = new Set<string>(extra)
  const tests: Array<(p: string) => boolean> = []
  const files = new Set(extra.map((f) => path.resolve(f)))
  for (const node of pipeline.nodes.values()) {
    if (node._tag !== "Source") continue
    const patterns = typeof node.spec.path === "string" ? [node.spec.path] : [...node.spec.path]
    const excludes = (node.spec.exclude ?? []).map((e) => globToRegExp(posix(path.resolve(baseDir, e))))
    const excluded = (p: string) => excludes.some((re) => re.test(posix(p)))
    for (const pat of patterns) {
      const abs = path.resolve(baseDir, pat)
      if (hasMagic(pat)) {
        const root = path.resolve(staticPrefix(posix(abs)))
        const re = globToRegExp(posix(abs))
        roots.add(root)
        tests.push((p) => re.test(posix(p)) && !SKIPPED.test(posix(path.relative(root, p))) && !excluded(p))
      } else {
        roots.add(abs)
        tests.push((p) => under(p, abs) && !excluded(p))
      }
    }
  }
  return { roots: [...roots], matches: (p) => files.has(p) || tests.some((t) => t(p)) }
}

/** True when `p` lies in a directory the export step wrote (up to `stop`). */
const inExportDir = (p: string, stop: string): boolean => {
  let dir = path.dirname(p)
  for (let i = 0; i < 64; i++) {
    if (fs.existsSync(path.join(dir, EXPORT_MANIFEST))) return true
    if (dir === stop || path.dirname(dir) === dir) return false
    dir = path.dirname(dir)
  }
  return false
}

export class PipelineWatcher {
  private fsw: import("chokidar").FSWatcher | undefined
  private watched = new Set<string>()
  private set: WatchSet
  private readonly pending = new Set<string>()
  private timer: NodeJS.Timeout | undefined
  private ready = false
  private wake: (() => void) | undefined
  private current: Fiber.Fiber<RunResult> | undefined
  private stopped = false
  private readonly baseDir: string
  /** Resolves when the watcher has stopped. */
  readonly done: Promise<void>

  constructor(private readonly options: WatchOptions) {
    this.baseDir = path.dirname(options.file)
    this.set = { roots: [options.file], matches: (p) => p === options.file }
    this.done = this.loop()
  }

  /** Paths given to the file watcher (for the "watching N paths" line). */
  get watching(): number {
    return this.watched.size
  }

  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    this.wake?.()
    if (this.current !== undefined) await Effect.runPromise(Fiber.interrupt(this.current))
    await this.done
  }

  private async loop() {
    try {
      let changed: string[] = []
      for (let n = 1; !this.stopped; n++) {
        await this.cycle(n, changed)
        if (this.stopped) break
        changed = await this.nextBatch()
      }
    } finally {
      clearTimeout(this.timer)
      await this.fsw?.close()
    }
  }

  private async nextBatch(): Promise<string[]> {
    if (!this.ready) await new Promise<void>((r) => (this.wake = r))
    this.wake = undefined
    this.ready = false
    const batch = [...this.pending].sort()
    this.pending.clear()
    return batch
  }

  private onChange(p: string) {
    const abs = path.resolve(p)
    if (under(abs, path.resolve(this.options.store.dir))) return
    if (!this.set.matches(abs) || inExportDir(abs, this.baseDir)) return
    this.pending.add(abs)
    clearTimeout(this.timer)
    this.timer = setTimeout(() => {
      this.ready = true
      if (this.current !== undefined) Effect.runFork(Fiber.interrupt(this.current))
      this.wake?.()
    }, this.options.debounceMs ?? 150)
  }

  /** Points chokidar at the current roots; the first time waits for its initial scan. */
  private async follow(roots: ReadonlyArray<string>) {
    const next = new Set(roots)
    if (this.fsw === undefined) {
      const { watch } = await import("chokidar")
      const storeDir = path.resolve(this.options.store.dir)
      this.fsw = watch([...next], {
        ignoreInitial: true,
        ignored: (p: string) => under(path.resolve(p), storeDir) || /(^|[/\\])(node_modules|\.git)$/.test(p),
      })
      this.fsw.on("all", (_event, p) => this.onChange(p))
      await new Promise<void>((r) => this.fsw!.once("ready", () => r()))
    } else {
      const added = [...next].filter((r) => !this.watched.has(r))
      const gone = [...this.watched].filter((r) => !next.has(r))
      if (added.length > 0) this.fsw.add(added)
      if (gone.length > 0) this.fsw.unwatch(gone)
    }
    this.watched = next
  }

  private async cycle(n: number, changed: string[]) {
    const o = this.options
    const t0 = Date.now()
    o.onCycleStart?.(n, changed)
    const fail = async (error: string) => {
      await this.follow(this.set.roots)
      o.onCycle({ cycle: n, changed, status: "error", steps: [], ms: Date.now() - t0, error })
    }
    let pipeline: Pipeline
    try {
      const loaded = await loadPipeline(o.file, path.join(o.store.dir, "compiled"))
      pipeline = loaded.pipeline
      // A pipeline that fails later keeps these: its next edit is what we wait for.
      const inputs = [...new Set([o.file, ...loaded.inputs])]
      this.set = watchSet(pipeline, this.baseDir, inputs)
    } catch (e) {
      return fail((e as Error).message)
    }
    await this.follow(this.set.roots)
    let overrides: ReturnType<typeof parseOverride>[]
    try {
      overrides = (o.overrides ?? []).map((s) => parseOverride(s, pipeline))
    } catch (e) {
      return fail((e as Error).message)
    }
    const runId = newRunId()
    const finished = new Map<string, StepOutcome>()
    const fiber = Effect.runFork(
      run({
        store: o.store,
        pipeline,
        pipelinePath: o.file,
        baseDir: this.baseDir,
        ...(o.targets === undefined ? {} : { targets: o.targets }),
        overrides,
        ...(o.failFast === undefined ? {} : { failFast: o.failFast }),
        ...(o.cpus === undefined ? {} : { cpus: o.cpus }),
        ...(o.gpus === undefined ? {} : { gpus: o.gpus }),
        argv: o.argv ?? ["watch", o.file],
        runId,
        onEvent: (e) => {
          if (e.type === "end") finished.set(e.outcome.node, e.outcome)
          o.onEvent?.(e)
        },
      }),
    )
    this.current = fiber
    if (this.ready || this.stopped) Effect.runFork(Fiber.interrupt(fiber))
    const exit = await Effect.runPromise(Fiber.await(fiber))
    this.current = undefined
    if (Exit.isSuccess(exit)) {
      const r = exit.value
      o.onCycle({ cycle: n, changed, status: r.status, run: r.run, steps: r.steps, ms: r.ms })
    } else if (Cause.hasInterruptsOnly(exit.cause)) {
      o.onCycle({
        cycle: n,
        changed,
        status: "interrupted",
        run: runId,
        steps: [...finished.values()],
        ms: Date.now() - t0,
      })
    } else {
      const e = Cause.squash(exit.cause)
      await fail(e instanceof Error ? e.message : String(e))
    }
  }
}

export const watchPipeline = (options: WatchOptions): PipelineWatcher => new PipelineWatcher(options)

/**
 * What the torch backend would run on: the worker's `probe` (interpreter,
 * torch, transformers and peft versions, CUDA and its devices). Starting
 * Python and importing torch costs seconds, so the answer is cached on disk
 * by the stat of everything it depends on: the interpreter (as PATH finds
 * it, and its real file), the site-packages directories holding the
 * packages (installing or removing one changes them), and the NVIDIA
 * devices the driver lists. A no-op re-run therefore starts no Python.
 */
import { spawnSync } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { pythonCommand, workerPath } from "./Python.ts"

export interface TorchDevice {
  readonly name: string
  readonly memory: number
  readonly capability: string
}

export interface TorchProbe {
  readonly available: boolean
  readonly reason?: string
  readonly python?: string
  readonly pythonVersion?: string
  readonly packages?: Readonly<Record<string, string | null>>
  readonly cuda?: string | null
  readonly cudaAvailable?: boolean
  readonly cudaReason?: string | null
  readonly devices?: ReadonlyArray<TorchDevice>
  readonly bf16?: boolean
  readonly sitePackages?: ReadonlyArray<string>
}

/** Where the probe cache lives: TUNEGRAPH_CACHE_DIR, else the user's cache directory. */
export const cacheRoot = (): string =>
  process.env.TUNEGRAPH_CACHE_DIR ||
  path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), ".cache"), "tunegraph")

/** The file a command name runs: itself when it has a slash, else the first match on PATH. */
export const resolveCommand = (command: string): string | undefined => {
  if (command.includes("/")) return fs.existsSync(command) ? path.resolve(command) : undefined
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir === "") continue
    const file = path.join(dir, command)
    try {
      fs.accessSync(file, fs.constants.X_OK)
      if (fs.statSync(file).isFile()) return file
    } catch {}
  }
  return undefined
}

const statLine = (p: string): string => {
  try {
    const s = fs.statSync(p, { bigint: true })
    return `${p} ${s.dev} ${s.ino} ${s.size} ${s.mtimeNs} ${s.ctimeNs}`
  } catch {
    return `${p} absent`
  }
}

const nvidiaDevices = (): string => {
  try {
    return fs.readdirSync("/proc/driver/nvidia/gpus").sort().join(",")
  } catch {
    return ""
  }
}

interface CacheEntry {
  readonly command: string
  readonly stats: ReadonlyArray<string>
  readonly gpus: string
  readonly worker: string
  readonly probe: TorchProbe
}

const fingerprint = (paths: ReadonlyArray<string>) => paths.map(statLine)

const cacheFile = (command: string) =>
  path.join(
    cacheRoot(),
    `torch-probe-${createHash("sha256").update(command).digest("hex").slice(0, 16)}.json`,
  )

const memo = new Map<string, TorchProbe>()

/** Runs the probe now (seconds: Python imports torch). */
export const probeNow = (command = pythonCommand()): TorchProbe => {
  const r = spawnSync(command, [workerPath(), "probe"], { encoding: "utf8", timeout: 120_000 })
  if (r.error !== undefined)
    return { available: false, reason: `${command} cannot be started (${r.error.message})` }
  const line = r.stdout.trim().split("\n").pop() ?? ""
  try {
    return JSON.parse(line) as TorchProbe
  } catch {
    const err = (r.stderr ?? "").trim().split("\n").slice(-3).join(" ")
    return {
      available: false,
      reason: `${command} ${path.basename(workerPath())} probe failed (exit ${r.status}): ${err}`,
    }
  }
}

/** The torch backend's probe, from the on-disk cache while nothing it depends on has changed. */
export const probeTorch = (command = pythonCommand()): TorchProbe => {
  const known = memo.get(command)
  if (known !== undefined) return known
  const resolved = resolveCommand(command)
  if (resolved === undefined) {
    const none: TorchProbe = {
      available: false,
      reason: `${command.includes("/") ? `${command} does not exist` : `no ${command} on PATH`} (set TUNEGRAPH_PYTHON to the interpreter that has torch)`,
    }
    memo.set(command, none)
    return none
  }
  const file = cacheFile(command)
  const worker = statLine(workerPath())
  const gpus = nvidiaDevices()
  try {
    const entry = JSON.parse(fs.readFileSync(file, "utf8")) as CacheEntry
    const paths = entry.stats.map((s) => s.split(" ")[0] as string)
    if (
      entry.command === command &&
      entry.gpus === gpus &&
      entry.worker === worker &&
      paths[0] === resolved &&
      fingerprint(paths).every((s, i) => s === entry.stats[i])
    ) {
      memo.set(command, entry.probe)
      return entry.probe
    }
  } catch {}
  const probe = probeNow(command)
  const paths = [resolved, ...(probe.python ? [probe.python] : []), ...(probe.sitePackages ?? [])]
  const entry: CacheEntry = { command, stats: fingerprint(paths), gpus, worker, probe }
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true })
    const tmp = `${file}.${process.pid}.tmp`
    fs.writeFileSync(tmp, JSON.stringify(entry))
    fs.renameSync(tmp, file)
  } catch {}
  memo.set(command, probe)
  return probe
}

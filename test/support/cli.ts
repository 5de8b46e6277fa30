/** Runs the built CLI as a user does: a child process in a project directory. */
import { type ChildProcess, execFileSync, spawn, spawnSync } from "node:child_process"
import { once } from "node:events"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"

export const repoRoot = path.resolve(import.meta.dirname, "../..")
export const bin = path.join(repoRoot, "bin/tunegraph.js")
export const sharedData = path.resolve(repoRoot, "../shared/data")
export const hasSharedData = fs.existsSync(sharedData)

export const tempDir = (prefix: string) => fs.mkdtempSync(path.join(os.tmpdir(), `tg-${prefix}-`))

export interface CliResult {
  readonly code: number
  readonly stdout: string
  readonly stderr: string
}

export const cli = (
  cwd: string,
  args: ReadonlyArray<string>,
  env: Record<string, string> = {},
): CliResult => {
  const r = spawnSync(process.execPath, [bin, ...args], {
    cwd,
    env: { ...process.env, NO_COLOR: "1", ...env },
    encoding: "utf8",
    timeout: 900_000,
  })
  return { code: r.status ?? -1, stdout: r.stdout, stderr: r.stderr }
}

export interface RunJson {
  run: string
  status: "succeeded" | "failed"
  steps: Array<{
    node: string
    plugin: string
    status: "cached" | "ran" | "failed" | "skipped"
    key: string | null
    outputs: Record<string, string>
    ms: number
    error?: string
  }>
}

/** `tunegraph run --json`, parsed; throws with the output when it is not JSON. */
export const runJson = (cwd: string, args: ReadonlyArray<string>, env: Record<string, string> = {}) => {
  const r = cli(cwd, ["run", ...args, "--json"], env)
  try {
    return { ...r, json: JSON.parse(r.stdout) as RunJson }
  } catch {
    throw new Error(`not JSON (exit ${r.code}):\n${r.stdout}\n${r.stderr}`)
  }
}

export const statuses = (json: RunJson) => Object.fromEntries(json.steps.map((s) => [s.node, s.status]))
export const ran = (json: RunJson) =>
  json.steps
    .filter((s) => s.status === "ran")
    .map((s) => s.node)
    .sort()

export const spawnCli = (
  cwd: string,
  args: ReadonlyArray<string>,
  env: Record<string, string> = {},
): ChildProcess =>
  spawn(process.execPath, [bin, ...args], { cwd, env: { ...process.env, NO_COLOR: "1", ...env } })

/**
 * `tunegraph run <args> --json` in a child process, without blocking, so
 * several can run at once. Fails with the exit code, stdout and stderr when
 * the process prints no JSON.
 */
export const runJsonAsync = async (
  cwd: string,
  args: ReadonlyArray<string>,
  env: Record<string, string> = {},
): Promise<{ code: number | null; json: RunJson; stderr: string }> => {
  const child = spawnCli(cwd, ["run", ...args, "--json"], env)
  let out = ""
  let err = ""
  child.stdout!.on("data", (d) => {
    out += d
  })
  child.stderr!.on("data", (d) => {
    err += d
  })
  const [code] = (await once(child, "exit")) as [number | null]
  try {
    return { code, json: JSON.parse(out) as RunJson, stderr: err }
  } catch {
    throw new Error(`a process exited ${code} without its JSON:\nstdout: ${out}\nstderr: ${err}`)
  }
}

export const sha256sum = (file: string) =>
  execFileSync("sha256sum", [file], { encoding: "utf8" }).split(" ")[0]!

/** Child processes a test started and did not stop: killChildren (in afterEach) kills them. */
const started: ChildProcess[] = []

export const killChildren = async () => {
  for (const c of started.splice(0))
    if (c.exitCode === null) {
      c.kill("SIGKILL")
      await once(c, "exit")
    }
}

/** What `watch --json` prints for one cycle (the fields every test reads). */
export interface WatchCycle {
  readonly cycle: number
  readonly status: string
  readonly run?: string
  readonly steps: ReadonlyArray<{ readonly node: string; readonly status: string }>
}

/**
 * Starts `tunegraph watch pipeline.ts --json` and hands out its cycles one at
 * a time; `stderr()` is what it has printed there so far.
 */
export const startWatch = <C extends WatchCycle = WatchCycle>(
  dir: string,
  env: Record<string, string> = {},
  timeoutMs = 60_000,
) => {
  const child = spawnCli(dir, ["watch", "pipeline.ts", "--json", "--debounce", "100"], env)
  started.push(child)
  const cycles: C[] = []
  let buffer = ""
  let err = ""
  child.stdout!.on("data", (d) => {
    buffer += d
    for (let i = buffer.indexOf("\n"); i >= 0; i = buffer.indexOf("\n")) {
      cycles.push(JSON.parse(buffer.slice(0, i)))
      buffer = buffer.slice(i + 1)
    }
  })
  child.stderr!.on("data", (d) => {
    err += d
  })
  let taken = 0
  const next = async (): Promise<C> => {
    for (let waited = 0; waited < timeoutMs && cycles.length <= taken; waited += 50) {
      if (child.exitCode !== null) throw new Error(`watch exited (${child.exitCode}): ${err}`)
      await new Promise((r) => setTimeout(r, 50))
    }
    if (cycles.length <= taken) throw new Error(`no cycle ${taken + 1} after ${timeoutMs / 1000} s: ${err}`)
    return cycles[taken++]!
  }
  const stop = async () => {
    child.kill("SIGINT")
    const [code] = await once(child, "exit")
    return code as number
  }
  return { next, stop, stderr: () => err }
}

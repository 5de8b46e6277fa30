/**
 * `tunegraph backends` and the backend as a step-key ingredient, through the
 * built CLI: what each backend runs on here, what `plan` says when a step's
 * backend changes, and that a no-op re-run of a torch pipeline starts no
 * Python (the probe is cached by the stat of what it depends on).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { writeTokens } from "../plugins/train/TokensFixture.ts"
import { cli, ran, repoRoot, runJson, statuses, tempDir } from "../support/cli.ts"
import { hasTorch, runPython } from "../support/python.ts"

interface Row {
  backend: string
  family: string
  available: boolean
  device: string | null
  gpus: Array<{ name: string; memory: number }>
  versions: Record<string, string>
  reason: string | null
  auto: boolean
  firstAvailable: boolean
}

const ORDER = ["torch-cuda", "torch-cpu", "tfjs-node-gpu", "tfjs-node", "wasm", "cpu"]

/** A fresh probe cache, so each test sees its own interpreter's answer. */
const fresh = (env: Record<string, string> = {}) => ({
  TUNEGRAPH_CACHE_DIR: tempDir("probe-cache"),
  TUNEGRAPH_BACKEND: "",
  ...env,
})

const backends = (env: Record<string, string>) => {
  const r = cli(repoRoot, ["backends", "--json"], env)
  expect(r.code, r.stderr).toBe(0)
  const rows = JSON.parse(r.stdout) as Row[]
  return Object.fromEntries(rows.map((x) => [x.backend, x])) as Record<string, Row>
}

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe("tunegraph backends", () => {
  it.skipIf(!hasTorch)("lists torch-cpu with the interpreter's torch, transformers and peft", () => {
    const truth = JSON.parse(
      runPython([
        "-c",
        "import json, torch, transformers, peft; print(json.dumps({'torch': torch.__version__, 'transformers': transformers.__version__, 'peft': peft.__version__, 'cuda': torch.cuda.is_available(), 'cudaVersion': torch.version.cuda}))",
      ]).trim(),
    ) as { torch: string; transformers: string; peft: string; cuda: boolean; cudaVersion: string | null }
    const r = cli(repoRoot, ["backends", "--json"], fresh())
    const rows = JSON.parse(r.stdout) as Row[]
    expect(rows.map((x) => x.backend)).toEqual(ORDER)
    const by = Object.fromEntries(rows.map((x) => [x.backend, x])) as Record<string, Row>
    const cpu = by["torch-cpu"]!
    expect(cpu.available).toBe(true)
    expect(cpu.device).toBe("cpu")
    expect(cpu.versions).toMatchObject({
      torch: truth.torch,
      transformers: truth.transformers,
      peft: truth.peft,
    })
    const cuda = by["torch-cuda"]!
    if (truth.cuda) {
      expect(cuda.available).toBe(true)
      expect(cuda.gpus.length).toBeGreaterThan(0)
      expect(cuda.gpus[0]!.memory).toBeGreaterThan(0)
      expect(cuda.versions.cuda).toBe(truth.cudaVersion)
      expect(cuda.auto).toBe(true)
    } else {
      expect(cuda.available).toBe(false)
      expect(cuda.device).toBeNull()
      expect(cuda.reason).toMatch(
        truth.cudaVersion === null ? /this torch is a CPU build/ : /no usable CUDA device|CUDA failed/,
      )
      expect(cuda.versions.torch).toBe(truth.torch)
      expect(cpu.auto).toBe(true)
      expect(cpu.firstAvailable).toBe(true)
    }
    for (const b of ["wasm", "cpu"]) {
      expect(by[b]!.available, b).toBe(true)
      expect(by[b]!.versions["@tensorflow/tfjs-core"], b).toMatch(/^\d+\.\d+\.\d+/)
    }
    expect(by.wasm!.versions["@tensorflow/tfjs-backend-wasm"]).toMatch(/^\d+\.\d+\.\d+/)
    // An absent native tfjs package says so.
    for (const b of ["tfjs-node-gpu", "tfjs-node"] as const)
      if (!by[b]!.available) expect(by[b]!.reason).toBe(`@tensorflow/${b} is not installed`)
  })

  it("without an interpreter the torch backends say which, and auto picks the first tfjs backend", () => {
    const env = fresh({ TUNEGRAPH_PYTHON: "/nonexistent/python" })
    const by = backends(env)
    for (const b of ["torch-cuda", "torch-cpu"]) {
      expect(by[b]!.available, b).toBe(false)
      expect(by[b]!.reason, b).toContain("/nonexistent/python")
      expect(by[b]!.auto, b).toBe(false)
    }
    const nativeTfjs = by["tfjs-node-gpu"]!.available || by["tfjs-node"]!.available
    if (!nativeTfjs) {
      expect(by.wasm!.auto).toBe(true)
      expect(by.wasm!.firstAvailable).toBe(true)
    }
    expect(Object.values(by).filter((r) => r.auto)).toHaveLength(1)

    // TUNEGRAPH_BACKEND moves auto's pick; the first available stays the default.
    const pinned = backends({ ...env, TUNEGRAPH_BACKEND: "cpu" })
    expect(pinned.cpu!.auto).toBe(true)
    expect(pinned.wasm!.auto).toBe(false)
    if (!nativeTfjs) expect(pinned.wasm!.firstAvailable).toBe(true)

    // The table: plain text under NO_COLOR, aligned columns, the pick marked and explained.
    const human = cli(repoRoot, ["backends"], env)
    expect(human.code, human.stderr).toBe(0)
    expect(human.stdout).not.toContain("\x1b[")
    const lines = human.stdout.split("\n")
    const rows = ORDER.map((b) => lines.find((l) => l.slice(2).startsWith(`${b} `)) as string)
    expect(rows.every((l) => l !== undefined)).toBe(true)
    const statusAt = rows.map((l) => l.search(/ (available|unavailable)/))
    expect(new Set(statusAt).size).toBe(1)
    expect(lines[0]!.indexOf("status")).toBe((statusAt[0] as number) + 1)
    const deviceAt = rows.map((l) => {
      const m = /(?:available|unavailable) +/.exec(l) as RegExpExecArray
      return m.index + m[0].length
    })
    expect(new Set(deviceAt)).toEqual(new Set([lines[0]!.indexOf("device")]))
    const reason = lines[lines.indexOf(rows[1] as string) + 1] as string
    expect(reason.trim()).toContain("/nonexistent/python does not exist")
    expect(reason.search(/\S/)).toBe((statusAt[0] as number) + 1)
    if (!nativeTfjs) {
      expect(rows[4]!.startsWith("* wasm")).toBe(true)
      expect(human.stdout).toContain("* auto picks wasm: the first available")
    }
    const pinnedHuman = cli(repoRoot, ["backends"], { ...env, TUNEGRAPH_BACKEND: "cpu" })
    expect(pinnedHuman.stdout).toContain("* auto picks cpu: TUNEGRAPH_BACKEND=cpu")
    expect(cli(repoRoot, ["backends", "--help"]).stdout).toContain("usage: tunegraph backends [--json]")
    expect(cli(repoRoot, ["help"]).stdout).toContain("tunegraph backends [--json]")
  })
})

/** A project whose one step trains LoRA on stories260K for a few steps on `backend`. */
const project = (prefix: string, backend: string) => {
  const dir = tempDir(prefix)
  fs.copyFileSync(
    path.join(repoRoot, "pipelines/data/stories260K/stories260K.bin"),
    path.join(dir, "stories260K.bin"),
  )
  const seqs = Array.from({ length: 16 }, (_, i) => [
    1,
    ...Array.from({ length: 24 }, (_, j) => 3 + ((i * 31 + j * 7) % 500)),
  ])
  writeTokens(path.join(dir, "tokens"), seqs)
  fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
  fs.writeFileSync(
    path.join(dir, "pipeline.ts"),
    `import { Model, Pipeline, Tokens, trainLora } from "tunegraph"

const p = Pipeline.make("backend-key")
const train = p.source("tokens", "tokens", Tokens)
const base = p.source("base", "stories260K.bin", Model)
p.node("train", trainLora, {
  inputs: { train, base },
  params: { steps: 2, batchSize: 4, evalEvery: 0, checkpointEvery: 0, shards: 1, backend: "${backend}" },
})
export default p
`,
  )
  return dir
}

describe.skipIf(!hasTorch)("the backend in the step key", () => {
  it("plan names the backend a step would move to", () => {
    const dir = project("backend-plan", "wasm")
    const env = fresh()
    const first = runJson(dir, ["pipeline.ts"], env)
    expect(first.json.status, first.stderr).toBe("succeeded")
    expect(ran(first.json)).toEqual(["base", "tokens", "train"])

    const same = cli(dir, ["plan", "pipeline.ts"], env)
    expect(same.stdout).toContain("3 steps: 3 cached, 0 to run")

    const human = cli(dir, ["plan", "pipeline.ts", "--set", "train.backend=torch-cpu"], env)
    expect(human.code, human.stderr).toBe(0)
    expect(human.stdout).toMatch(/run {4}train \(train-lora\)/)
    expect(human.stdout).toContain("- backend wasm -> torch-cpu")
    expect(human.stdout).toMatch(/- dependency torch \(none\) -> \d/)

    const json = cli(dir, ["plan", "pipeline.ts", "--set", "train.backend=torch-cpu", "--json"], env)
    const steps = (
      JSON.parse(json.stdout) as { steps: Array<{ node: string; status: string; reasons: string[] }> }
    ).steps
    const train = steps.find((s) => s.node === "train")!
    expect(train.status).toBe("run")
    expect(train.reasons).toContain("backend wasm -> torch-cpu")
    expect(steps.filter((s) => s.node !== "train").every((s) => s.status === "cached")).toBe(true)
  })

  it("a no-op re-run starts no Python; touching the interpreter probes again, and the step stays cached", () => {
    const dir = project("backend-noop", "torch-cpu")
    const bin = tempDir("python-wrapper")
    const log = path.join(bin, "invocations.log")
    const wrapper = path.join(bin, "python")
    const script = `#!/bin/sh\necho "$*" >> '${log}'\nexec python3 "$@"\n`
    fs.writeFileSync(wrapper, script, { mode: 0o755 })
    const env = fresh({ TUNEGRAPH_PYTHON: wrapper })
    const invocations = () =>
      fs.existsSync(log) ? fs.readFileSync(log, "utf8").split("\n").filter(Boolean) : []

    const first = runJson(dir, ["pipeline.ts"], env)
    expect(first.json.status, first.stderr).toBe("succeeded")
    expect(ran(first.json)).toEqual(["base", "tokens", "train"])
    const afterFirst = invocations()
    expect(afterFirst.some((l) => l.endsWith("worker.py probe"))).toBe(true)
    expect(afterFirst.some((l) => l.endsWith("worker.py train"))).toBe(true)

    const second = runJson(dir, ["pipeline.ts"], env)
    expect(second.json.status).toBe("succeeded")
    expect(Object.values(statuses(second.json))).toEqual(["cached", "cached", "cached"])
    expect(invocations()).toEqual(afterFirst)

    // The same bytes, a new mtime: the probe's cache no longer trusts its answer.
    fs.writeFileSync(wrapper, script)
    const plan = cli(dir, ["plan", "pipeline.ts"], env)
    expect(plan.stdout).toContain("3 steps: 3 cached, 0 to run")
    const afterTouch = invocations()
    expect(afterTouch.length).toBe(afterFirst.length + 1)
    expect(afterTouch.at(-1)).toMatch(/worker\.py probe$/)

    const third = runJson(dir, ["pipeline.ts"], env)
    expect(ran(third.json)).toEqual([])
    expect(invocations()).toEqual(afterTouch)
  }, 300_000)
})

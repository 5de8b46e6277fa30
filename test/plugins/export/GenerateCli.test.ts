/**
 * Exported directories loaded by `tunegraph generate` as a user runs it
 * (the built CLI, `npm run build` first): an exported adapter with B = 0
 * and a merged model (whose tokenizer.json was converted from tok512.bin)
 * both print llama2.c's greedy story for stories260K byte for byte (its
 * first 80 tokens, then the final newline run.c prints).
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, test } from "vitest"
import { exportAdapter, exportMerged } from "../../../plugins/export/index.ts"
import { loadModel } from "../../../plugins/train/ModelIO.ts"
import { writeTestAdapter } from "./Adapters.ts"
import { artifact, inDir, repoRoot, runStep, storiesBin, tempDir, tok512 } from "./Step.ts"

const bin = path.join(repoRoot, "bin/tunegraph.js")
const story = fs.readFileSync(path.join(repoRoot, "test/fixtures/stories260K/greedy-200.txt"), "utf8")

const generate = (args: string[]) => {
  const r = spawnSync(
    process.execPath,
    [bin, "generate", "--temperature", "0", "--max-tokens", "80", ...args],
    {
      cwd: repoRoot,
      env: { ...process.env, NO_COLOR: "1", TUNEGRAPH_BACKEND: "wasm" },
      encoding: "utf8",
      timeout: 120_000,
    },
  )
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** The first 80 tokens of the story are a few hundred bytes of it, then run.c's newline. */
const printsStory = (stdout: string) =>
  stdout.length > 150 && stdout.endsWith("\n") && story.startsWith(stdout.slice(0, -1))

const base = loadModel(storiesBin)
let cwd: string

beforeAll(() => {
  cwd = tempDir("cli")
})

const exported = async (seed: number, zeroB: boolean) => {
  const src = tempDir("adapter")
  writeTestAdapter(src, base, { seed, zeroB })
  const r = await inDir(cwd, () =>
    runStep(exportAdapter, { adapter: artifact(src, "Adapter") }, { to: `adapter-${seed}` }),
  )
  expect(r.error).toBeUndefined()
  return { src, out: path.join(cwd, `adapter-${seed}`) }
}

describe("tunegraph generate with exported directories", () => {
  test("--adapter <exported dir>: B = 0 prints llama2.c's story; a trained one prints what its source adapter prints", async () => {
    const zero = await exported(1, true)
    const z = generate(["--model", storiesBin, "--adapter", zero.out])
    expect(z.stderr).toBe("")
    expect(z.code).toBe(0)
    expect(printsStory(z.stdout)).toBe(true)
    const trained = await exported(4, false)
    const fromExport = generate(["--model", storiesBin, "--adapter", trained.out, "--max-tokens", "40"])
    const fromSource = generate(["--model", storiesBin, "--adapter", trained.src, "--max-tokens", "40"])
    expect(fromExport.code).toBe(0)
    expect(fromExport.stdout).toBe(fromSource.stdout)
    expect(fromExport.stdout).not.toBe(story.slice(0, fromExport.stdout.length))
  })

  test("--model <merged dir> with its converted tokenizer.json prints llama2.c's story", async () => {
    const src = tempDir("adapter")
    writeTestAdapter(src, base, { zeroB: true })
    const r = await inDir(cwd, () =>
      runStep(
        exportMerged,
        {
          model: artifact(storiesBin, "Model"),
          adapter: artifact(src, "Adapter"),
          tokenizer: artifact(tok512, "Tokenizer"),
        },
        { to: "merged" },
      ),
    )
    expect(r.error).toBeUndefined()
    const g = generate(["--model", path.join(cwd, "merged")])
    expect(g.stderr).toBe("")
    expect(g.code).toBe(0)
    expect(printsStory(g.stdout)).toBe(true)
  })
})

/**
 * `tunegraph generate --backend torch` as a user runs it (the built CLI,
 * `npm run build` first): the model runs in the torch worker, tokenizing and
 * sampling stay in TypeScript. On stories260K at temperature 0 it prints
 * llama2.c's reference story byte for byte
 * (test/fixtures/stories260K/greedy-200.txt), and with an adapter or a seed
 * what the tfjs backend prints. Parity needs float32: where torch finds
 * CUDA (bfloat16 there) these runs name torch-cpu.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { probeTorch } from "../../plugins/train/torch/Probe.ts"
import { writeTestAdapter } from "../plugins/export/Adapters.ts"
import { storiesBin } from "../plugins/export/Step.ts"
import { cli, repoRoot, tempDir } from "../support/cli.ts"
import { hasTorch } from "../support/python.ts"

const story = path.join(repoRoot, "test/fixtures/stories260K/greedy-200.txt")
const torch = hasTorch && probeTorch().cudaAvailable === true ? "torch-cpu" : "torch"

const generate = (backend: string, args: ReadonlyArray<string>) =>
  cli(repoRoot, ["generate", "--model", storiesBin, "--backend", backend, ...args])

describe.skipIf(!hasTorch)("tunegraph generate --backend torch", () => {
  it("prints exactly llama2.c's greedy story for stories260K", () => {
    const r = generate(torch, ["--temperature", "0", "--max-tokens", "200"])
    expect(r.stderr).toBe("")
    expect(r.code).toBe(0)
    const expected = fs.readFileSync(story, "utf8")
    expect(Buffer.byteLength(expected)).toBe(465)
    expect(r.stdout).toBe(expected)
  })

  it("with --adapter and with a seed, prints what the tfjs backend prints", async () => {
    const { loadModel } = await import("../../plugins/train/ModelIO.ts")
    const adapter = tempDir("gen-adapter")
    writeTestAdapter(adapter, loadModel(storiesBin), { seed: 2 })
    const greedyArgs = ["--adapter", adapter, "--temperature", "0", "--max-tokens", "120"]
    const onTorch = generate(torch, greedyArgs)
    const onTfjs = generate("cpu", greedyArgs)
    expect(onTorch.stderr).toBe("")
    expect(onTorch.code).toBe(0)
    expect(onTfjs.code).toBe(0)
    expect(onTorch.stdout).toBe(onTfjs.stdout)
    // The adapter changes the story.
    expect(fs.readFileSync(story, "utf8").startsWith(onTorch.stdout.slice(0, 100))).toBe(false)

    const sampled = ["--prompt", "Tom had", "--temperature", "0.8", "--seed", "7", "--max-tokens", "60"]
    const a = generate(torch, sampled)
    const b = generate("cpu", sampled)
    expect(a.code).toBe(0)
    expect(a.stdout.startsWith("Tom had")).toBe(true)
    expect(a.stdout).toBe(b.stdout)
  })

  it("names a bad adapter, and lists the torch backends in its usage", () => {
    const bad = generate(torch, ["--adapter", "/nonexistent/adapter"])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toContain("/nonexistent/adapter")
    const help = cli(repoRoot, ["generate", "--help"])
    expect(help.stdout).toContain("--backend auto|torch|torch-cpu|torch-cuda|")
  })
})

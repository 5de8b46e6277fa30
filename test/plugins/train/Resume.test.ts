import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Schema } from "effect"
import { describe, expect, test } from "vitest"
import { hashDirSync } from "../../../core/Hash.ts"
import { CHECKPOINT } from "../../../plugins/train/Checkpoint.ts"
import { readAdapter } from "../../../plugins/train/Lora.ts"
import { saveHfModel } from "../../../plugins/train/ModelIO.ts"
import { FullParams, LoraParams } from "../../../plugins/train/Params.ts"
import { readSafetensors } from "../../../plugins/train/Safetensors.ts"
import { type TrainHooks, type TrainJob, train } from "../../../plugins/train/Trainer.ts"
import { runInWorker, TrainInterrupted, workerScript } from "../../../plugins/train/TrainRunner.ts"
import { randomIds, randomWeights, tinyConfig } from "./Tiny.ts"
import { gsm8kSplits, haveData, stories, writeTokens } from "./TokensFixture.ts"

const tmp = (name: string) => fs.mkdtempSync(path.join(os.tmpdir(), `${name}-`))

const quiet = (): TrainHooks & { logs: string[]; metrics: Array<[string, number, number | undefined]> } => {
  const logs: string[] = []
  const metrics: Array<[string, number, number | undefined]> = []
  return {
    logs,
    metrics,
    log: (l) => logs.push(l),
    metric: (n, v, s) => metrics.push([n, v, s]),
    progress: () => {},
    annotate: () => {},
  }
}

const digest = (dir: string) => hashDirSync(dir).digest

/** A tiny random model saved as a Hugging Face directory, and random token splits for it. */
const tinySetup = () => {
  const root = tmp("tiny")
  const config = tinyConfig()
  const base = path.join(root, "base")
  saveHfModel(base, { config, weights: randomWeights(config, 21) })
  const seqs = (n: number, seed: number) =>
    Array.from({ length: n }, (_, i) => Array.from(randomIds(6 + ((i * 5) % 11), config.vocabSize, seed + i)))
  return {
    root,
    base,
    train: writeTokens(path.join(root, "train"), seqs(24, 100)),
    validation: writeTokens(path.join(root, "val"), seqs(8, 500)),
  }
}

const job = (
  kind: TrainJob["kind"],
  data: { base: string; train: string; validation?: string },
  params: Record<string, unknown>,
  root = tmp("job"),
): TrainJob => ({
  kind,
  base: data.base,
  baseName: "base",
  train: data.train,
  ...(data.validation ? { validation: data.validation } : {}),
  output: path.join(root, "out"),
  checkpoints: path.join(root, "ck"),
  params: Schema.decodeUnknownSync(kind === "full" ? FullParams : LoraParams)(params),
})

describe("trainer", () => {
  test("gradient accumulation over two half batches equals one full batch", async () => {
    const data = tinySetup()
    const one = quiet()
    const two = quiet()
    await train(job("full", data, { steps: 1, batchSize: 8, shards: 1, backend: "cpu" }), one)
    await train(job("full", data, { steps: 1, batchSize: 4, gradAccum: 2, shards: 1, backend: "cpu" }), two)
    for (const name of ["train_loss", "grad_norm"]) {
      const a = one.metrics.find((m) => m[0] === name)?.[1] as number
      const b = two.metrics.find((m) => m[0] === name)?.[1] as number
      expect(Math.abs(a - b)).toBeLessThan(1e-5 * Math.abs(a))
    }
  })

  test("two data-parallel shards compute the loss and gradient of one, dropout included", async () => {
    const data = tinySetup()
    const runs = [quiet(), quiet()]
    for (const [i, shards] of [1, 2].entries())
      await train(
        job("lora", data, { steps: 1, batchSize: 8, dropout: 0.3, shards, backend: "wasm" }),
        runs[i] as TrainHooks,
      )
    expect(runs[1]?.logs).toContain("2 data-parallel shards (worker threads)")
    for (const name of ["train_loss", "grad_norm"]) {
      const [a, b] = runs.map((r) => r.metrics.find((m) => m[0] === name)?.[1] as number) as [number, number]
      expect(Math.abs(a - b)).toBeLessThan(1e-5 * Math.abs(a))
    }
  })

  test("a NaN or infinite loss stops the step with an error naming the step and the learning rate", async () => {
    const data = tinySetup()
    const run = train(
      job("full", data, {
        steps: 20,
        lr: 1e12,
        clipNorm: 0,
        schedule: "constant",
        shards: 1,
        backend: "cpu",
      }),
      quiet(),
    )
    await expect(run).rejects.toThrow(
      /(loss|norm) is (NaN|-?Infinity) at step \d+ \(learning rate 1\.000e\+12\)/,
    )
  })

  test("early stopping with patience keeps the best checkpoint", async () => {
    const data = tinySetup()
    const j = job("lora", data, {
      steps: 20,
      evalEvery: 1,
      patience: 2,
      minDelta: 1e9,
      shards: 1,
      backend: "cpu",
    })
    const hooks = quiet()
    const result = await train(j, hooks)
    expect(result.stoppedEarly).toBe(true)
    expect(result.steps).toBe(2)
    expect(result.bestStep).toBe(0)
    expect(hooks.logs.some((l) => /early stop at step 2/.test(l))).toBe(true)
    // The best weights are those before training: LoRA's B is still zero.
    for (const p of readAdapter(j.output).pairs.values()) expect(p.b.data.every((x) => x === 0)).toBe(true)
    const record = JSON.parse(fs.readFileSync(path.join(j.output, "training.json"), "utf-8"))
    expect(record).toMatchObject({ stoppedEarly: true, bestStep: 0, steps: 2 })
  })

  test("early stopping fires on a real plateau: validation loss that stops improving as training overfits", async () => {
    const data = tinySetup()
    const j = job("full", data, {
      steps: 400,
      evalEvery: 5,
      patience: 3,
      lr: 0.05,
      schedule: "constant",
      batchSize: 8,
      shards: 1,
      backend: "cpu",
    })
    const hooks = quiet()
    const result = await train(j, hooks)
    const val = hooks.metrics.filter((m) => m[0] === "val_loss").map((m) => [m[2] as number, m[1]] as const)
    // It improved first (a real plateau, not a step-0 stop), then three evaluations in a row did not beat the best.
    expect(result.stoppedEarly).toBe(true)
    expect(result.steps).toBeLessThan(400)
    expect(result.bestStep).toBeGreaterThan(0)
    const best = Math.min(...val.map(([, v]) => v))
    expect(val.find(([, v]) => v === best)?.[0]).toBe(result.bestStep)
    const after = val.filter(([step]) => step > (result.bestStep as number))
    expect(after.length).toBe(3)
    expect(after.every(([, v]) => v >= best)).toBe(true)
    expect(val.at(-1)?.[0]).toBe(result.steps)
  })

  test("an interrupted worker resumes from its checkpoint to the weights of an uninterrupted run (cpu)", async () => {
    const data = tinySetup()
    const params = { steps: 8, batchSize: 4, checkpointEvery: 1, evalEvery: 3, shards: 1, backend: "cpu" }
    const whole = job("full", data, params)
    await train(whole, quiet())

    const cut = job("full", data, params)
    const controller = new AbortController()
    const hooks = quiet()
    const interrupted = runInWorker(
      cut,
      { ...hooks, progress: (done) => (done >= 4 ? controller.abort() : undefined) },
      controller.signal,
    )
    await expect(interrupted).rejects.toBeInstanceOf(TrainInterrupted)
    const saved = readSafetensors(path.join(cut.checkpoints, CHECKPOINT))
    const step = JSON.parse(saved.metadata.state as string).step as number
    expect(step).toBeGreaterThanOrEqual(3)
    expect(step).toBeLessThan(8)
    const again = quiet()
    const result = await runInWorker(cut, again)
    expect(result.resumedFrom).toBe(step)
    expect(again.logs).toContain(`resumed from the checkpoint at step ${step}`)
    expect(digest(cut.output)).toBe(digest(whole.output))
  })
})

// Needs the real stories260K model and GSM8K questions from the shared data folder.
describe.skipIf(!haveData)("trainer on stories260K (wasm)", () => {
  const splits = haveData ? gsm8kSplits(tmp("gsm"), 32, 8, 32) : { train: "", validation: "" }
  const data = { base: stories, ...splits }
  const params = {
    steps: 6,
    batchSize: 4,
    dropout: 0.1,
    checkpointEvery: 2,
    evalEvery: 3,
    lr: 5e-3,
    backend: "wasm",
  }

  test("same inputs, seed and backend give a bit-identical adapter; another seed does not", async () => {
    const a = job("lora", data, params)
    const b = job("lora", data, params)
    const c = job("lora", data, { ...params, seed: 1 })
    for (const j of [a, b, c]) await train(j, quiet())
    expect(digest(a.output)).toBe(digest(b.output))
    expect(digest(c.output)).not.toBe(digest(a.output))
  })

  test("a process killed with SIGKILL resumes from its last checkpoint to the same adapter", async () => {
    const whole = job("lora", data, params)
    await train(whole, quiet())

    const cut = job("lora", data, params)
    const jobFile = path.join(path.dirname(cut.output), "job.json")
    fs.writeFileSync(jobFile, JSON.stringify(cut))
    const child = spawn(process.execPath, [await workerScript(), jobFile], {
      stdio: ["ignore", "pipe", "inherit"],
    })
    let buffered = ""
    const killedAt = await new Promise<number>((resolve, reject) => {
      child.stdout.on("data", (chunk: Buffer) => {
        buffered += chunk.toString()
        const lines = buffered.split("\n")
        buffered = lines.pop() ?? ""
        for (const line of lines) {
          const m = JSON.parse(line) as { type: string; done?: number }
          if (m.type === "progress" && (m.done as number) >= 3) {
            child.kill("SIGKILL")
            resolve(m.done as number)
          }
        }
      })
      child.on("exit", (code, signal) =>
        signal === "SIGKILL" ? undefined : reject(new Error(`exited ${code}`)),
      )
    })
    expect(killedAt).toBeGreaterThanOrEqual(3)
    expect(fs.existsSync(cut.output)).toBe(false)
    const hooks = quiet()
    const result = await train(cut, hooks)
    // Checkpoints every 2 steps: the kill came after step 3, so the last one is at 2 (or 4 if the pipe lagged).
    expect([2, 4]).toContain(result.resumedFrom)
    expect(hooks.logs).toContain(`resumed from the checkpoint at step ${result.resumedFrom}`)
    expect(digest(cut.output)).toBe(digest(whole.output))
  })
})

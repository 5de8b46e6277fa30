/**
 * The torch backend end to end through the CLI, as a user runs it with
 * TUNEGRAPH_BACKEND=torch: the quickstart's data through all three trainers
 * and eval on torch-cpu; kill -9 in the middle of training, then a re-run,
 * equals an uninterrupted run bit for bit; and a watch cycle interrupted
 * mid-training leaves a checkpoint the next cycle resumes.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { once } from "node:events"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { digestOf, objectFile, readStore } from "../fixtures/ops/project.ts"
import { torchProject } from "../fixtures/torch/project.ts"
import { bin, cli, ran, runJson, spawnCli } from "../support/cli.ts"
import { hasTorch } from "../support/python.ts"

const TORCH = { TUNEGRAPH_BACKEND: "torch" }

const children: ChildProcess[] = []
afterEach(async () => {
  for (const c of children.splice(0))
    if (c.exitCode === null && c.signalCode === null) {
      try {
        process.kill(-(c.pid as number), "SIGKILL")
      } catch {}
      await once(c, "exit")
    }
})

const report = (dir: string, json: Parameters<typeof digestOf>[0], node: string) =>
  JSON.parse(
    fs.readFileSync(path.join(objectFile(dir, digestOf(json, node, "report")), "report.json"), "utf8"),
  )

const wait = async (what: string, ok: () => boolean, ms = 240_000) => {
  for (const t0 = Date.now(); Date.now() - t0 < ms; ) {
    if (ok()) return
    await new Promise((r) => setTimeout(r, 50))
  }
  throw new Error(`timed out waiting for ${what}`)
}

/** Checkpoint files of the store, by step key. */
const checkpoints = (dir: string) => {
  const root = path.join(dir, ".tunegraph/checkpoints")
  if (!fs.existsSync(root)) return []
  return fs.readdirSync(root).filter((k) => fs.existsSync(path.join(root, k, "torch-checkpoint.pt")))
}

describe.skipIf(!hasTorch)("the torch backend, end to end", () => {
  it("trains LoRA, QLoRA and full fine-tuning on torch-cpu, and each tuned model beats its base", () => {
    const dir = torchProject("torch-e2e")
    const first = runJson(dir, ["pipeline.ts"], TORCH)
    const failures = first.json.steps.filter((s) => s.status === "failed").map((s) => `${s.node}: ${s.error}`)
    expect(first.json.status, `${failures.join("\n")}\n${first.stderr}`).toBe("succeeded")
    for (const trainer of ["lora", "qlora", "full"]) {
      const r = report(dir, first.json, `eval-${trainer}`)
      expect(r.scores.tuned.loss, trainer).toBeLessThan(r.scores.base.loss * 0.5)
      expect(r.scores.tuned.uses_name, trainer).toBeGreaterThan(r.scores.base.uses_name)
      expect(r.settings.backend).toBe("torch-cpu")
    }
    const recorded = readStore(dir, (db) =>
      db
        .prepare(
          "SELECT node, backend FROM executions WHERE run_id = ? AND node IN ('lora','qlora','full') ORDER BY node",
        )
        .all(first.json.run),
    )
    expect(recorded).toEqual([
      { node: "full", backend: "torch-cpu" },
      { node: "lora", backend: "torch-cpu" },
      { node: "qlora", backend: "torch-cpu" },
    ])
    // The outputs are the tfjs path's artifacts: a PEFT adapter, a Hugging Face model directory.
    const adapter = objectFile(dir, digestOf(first.json, "lora", "adapter"))
    const cfg = JSON.parse(fs.readFileSync(path.join(adapter, "adapter_config.json"), "utf8"))
    expect(cfg).toMatchObject({
      peft_type: "LORA",
      r: 8,
      lora_alpha: 16,
      // The base's path as the pipeline wrote it.
      base_model_name_or_path: "data/stories260K/stories260K.bin",
    })
    expect(cfg.target_modules).toEqual(["k_proj", "o_proj", "q_proj", "v_proj"])
    const model = objectFile(dir, digestOf(first.json, "full", "model"))
    for (const f of ["config.json", "model.safetensors", "training.json", "tok512.bin"])
      expect(fs.existsSync(path.join(model, f)), f).toBe(true)
    const training = JSON.parse(fs.readFileSync(path.join(model, "training.json"), "utf8"))
    expect(training).toMatchObject({ backend: "torch-cpu", kind: "full", steps: 42 })

    // Nothing changed: nothing runs.
    expect(ran(runJson(dir, ["pipeline.ts"], TORCH).json)).toEqual([])
  }, 900_000)

  it("kill -9 in the middle of training, then a re-run, gives the bytes of an uninterrupted run", async () => {
    const dir = torchProject("torch-kill")
    const child = spawn(process.execPath, [bin, "run", "pipeline.ts", "--target", "lora", "--json"], {
      cwd: dir,
      env: { ...process.env, NO_COLOR: "1", ...TORCH },
      detached: true,
      stdio: "ignore",
    })
    children.push(child)
    await wait("a checkpoint", () => checkpoints(dir).length > 0)
    // The whole process group: the CLI and its Python worker.
    process.kill(-(child.pid as number), "SIGKILL")
    await once(child, "exit")
    const again = runJson(dir, ["pipeline.ts", "--target", "lora"], TORCH)
    expect(again.json.status, again.stderr).toBe("succeeded")
    const resumed = readStore(dir, (db) =>
      db
        .prepare(
          "SELECT m.value FROM metrics m JOIN executions e ON e.id = m.execution_id WHERE e.run_id = ? AND e.node = 'lora' AND m.name = 'resumed_from'",
        )
        .pluck()
        .get(again.json.run),
    ) as number
    expect(resumed).toBeGreaterThanOrEqual(5)

    const fresh = torchProject("torch-kill-ref")
    const reference = runJson(fresh, ["pipeline.ts", "--target", "lora"], TORCH)
    expect(digestOf(again.json, "lora", "adapter")).toBe(digestOf(reference.json, "lora", "adapter"))
    const verify = cli(dir, ["verify"])
    expect(verify.code, verify.stdout + verify.stderr).toBe(0)
  }, 900_000)

  it("a watch cycle interrupted mid-training leaves a checkpoint that the next cycle resumes", async () => {
    const dir = torchProject("torch-watch")
    const child = spawnCli(
      dir,
      ["watch", "pipeline.ts", "--json", "--debounce", "100", "--target", "lora", "--target", "side"],
      TORCH,
    )
    children.push(child)
    const cycles: Array<{
      cycle: number
      status: string
      run: string
      steps: Array<{ node: string; status: string; outputs: Record<string, string> }>
    }> = []
    let buffer = ""
    child.stdout!.on("data", (d) => {
      buffer += d
      for (let i = buffer.indexOf("\n"); i >= 0; i = buffer.indexOf("\n")) {
        cycles.push(JSON.parse(buffer.slice(0, i)))
        buffer = buffer.slice(i + 1)
      }
    })
    await wait("training to start", () => checkpoints(dir).length > 0)
    // other.txt feeds only "side": the trainer's key stays, so its checkpoint is the one to resume.
    fs.appendFileSync(path.join(dir, "other.txt"), "more\n")
    await wait("two cycles", () => cycles.length >= 2)
    child.kill("SIGINT")
    await once(child, "exit")
    expect(cycles[0]!.status).toBe("interrupted")
    expect(cycles[1]!.status).toBe("succeeded")
    const stats = readStore(dir, (db) => ({
      first: db
        .prepare("SELECT status FROM executions WHERE run_id = ? AND node = 'lora'")
        .pluck()
        .get(cycles[0]!.run),
      from: db
        .prepare(
          "SELECT m.value FROM metrics m JOIN executions e ON e.id = m.execution_id WHERE e.run_id = ? AND e.node = 'lora' AND m.name = 'resumed_from'",
        )
        .pluck()
        .get(cycles[1]!.run) as number,
      firstStep: db
        .prepare(
          "SELECT min(m.step) FROM metrics m JOIN executions e ON e.id = m.execution_id WHERE e.run_id = ? AND e.node = 'lora' AND m.name = 'train_loss'",
        )
        .pluck()
        .get(cycles[1]!.run) as number,
      reached: db
        .prepare(
          "SELECT max(m.step) FROM metrics m JOIN executions e ON e.id = m.execution_id WHERE e.run_id = ? AND e.node = 'lora' AND m.name = 'train_loss'",
        )
        .pluck()
        .get(cycles[0]!.run) as number,
    }))
    expect(stats.first).toBe("interrupted")
    // Interrupted, the worker saved its step: the next cycle loses nothing.
    expect(stats.from).toBe(stats.reached)
    expect(stats.firstStep).toBe(stats.from + 1)
    const reference = runJson(torchProject("torch-watch-ref"), ["pipeline.ts", "--target", "lora"], TORCH)
    expect(digestOf(cycles[1] as never, "lora", "adapter")).toBe(digestOf(reference.json, "lora", "adapter"))
  }, 900_000)
})

/**
 * The README's quickstart, end to end through the CLI in a copy of
 * pipelines/: every step runs, the tuned model beats its base on the test
 * split, the exports load, and a second run executes nothing. It runs on
 * the embedded default, tfjs on WebAssembly, as on a machine without Python
 * (`auto` would pick torch where it is installed: test/pipelines/torch.test.ts).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { cli, ran, repoRoot, runJson, tempDir } from "../support/cli.ts"

const TFJS = { TUNEGRAPH_BACKEND: "wasm" }

describe("quickstart", () => {
  it("runs end to end, beats the base, exports, and re-runs only what a change affects", () => {
    const dir = tempDir("quickstart")
    fs.cpSync(path.join(repoRoot, "pipelines"), dir, { recursive: true })
    fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
    const first = runJson(dir, ["quickstart.ts"], TFJS)
    const failures = first.json.steps.filter((s) => s.status === "failed").map((s) => `${s.node}: ${s.error}`)
    expect(first.json.status, `${failures.join("\n")}\n${first.stderr}`).toBe("succeeded")
    expect(first.code).toBe(0)
    expect(ran(first.json)).toHaveLength(first.json.steps.length)

    const evalStep = first.json.steps.find((s) => s.node === "eval")!
    const report = evalStep.outputs.report!.replace("sha256:", "")
    const json = JSON.parse(
      fs.readFileSync(
        path.join(dir, ".tunegraph/objects", report.slice(0, 2), report.slice(2), "report.json"),
        "utf8",
      ),
    )
    expect(json.scores.tuned.loss).toBeLessThan(json.scores.base.loss)
    expect(json.scores.tuned.uses_name).toBeGreaterThan(json.scores.base.uses_name)

    const adapterDir = path.join(dir, "out/quickstart/adapter")
    expect(fs.existsSync(path.join(adapterDir, "adapter_config.json"))).toBe(true)
    expect(fs.existsSync(path.join(adapterDir, "adapter_model.safetensors"))).toBe(true)
    expect(fs.existsSync(path.join(dir, "out/quickstart/merged/model.safetensors"))).toBe(true)

    const generated = cli(
      dir,
      [
        "generate",
        "--model",
        "data/stories260K/stories260K.bin",
        "--adapter",
        adapterDir,
        "--prompt",
        "Once upon a time",
        "--max-tokens",
        "20",
      ],
      TFJS,
    )
    expect(generated.code, generated.stderr).toBe(0)
    expect(generated.stdout.length).toBeGreaterThan(10)

    expect(ran(runJson(dir, ["quickstart.ts"], TFJS).json)).toEqual([])
    const changed = runJson(dir, ["quickstart.ts", "--set", "eval.maxExamples=4"], TFJS)
    expect(ran(changed.json)).toEqual(["eval"])
  }, 900_000)
})

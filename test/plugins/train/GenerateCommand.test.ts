import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { describe, expect, test } from "vitest"
import { generateCommand } from "../../../plugins/train/GenerateCommand.ts"
import {
  type LoraPair,
  mergeAdapter,
  moduleWeight,
  readAdapter,
  writeAdapter,
} from "../../../plugins/train/Lora.ts"
import { loadModel, saveHfModel } from "../../../plugins/train/ModelIO.ts"
import { Rng } from "../../../plugins/train/Rng.ts"
import type { HostTensor } from "../../../plugins/train/Safetensors.ts"
import { repoStories } from "../../support/data.ts"
import { llama2cText, readScalarModel, scalarGreedy } from "./ScalarLlama.ts"

const data = repoStories
const bin = path.join(data, "stories260K.bin")

/** Runs the command with stdout and stderr captured as bytes, on the tfjs chain (test/cli/generate-torch.test.ts has torch). */
const run = async (argv: string[]) => {
  process.env.TUNEGRAPH_BACKEND = "wasm"
  const out: Buffer[] = []
  const err: Buffer[] = []
  const write = process.stdout.write
  const writeErr = process.stderr.write
  process.stdout.write = ((chunk: string | Uint8Array) => out.push(Buffer.from(chunk)) > 0) as typeof write
  process.stderr.write = ((chunk: string | Uint8Array) => err.push(Buffer.from(chunk)) > 0) as typeof writeErr
  try {
    const code = await generateCommand(argv)
    return { code, stdout: Buffer.concat(out), stderr: Buffer.concat(err).toString("utf8") }
  } finally {
    process.stdout.write = write
    process.stderr.write = writeErr
  }
}

// The real stories260K model ships with the repository (pipelines/data): this never skips.
describe("tunegraph generate", () => {
  test("prints run.c's greedy 200-step story for stories260K, from the llama2.c file and from its HF export", async () => {
    const ids = scalarGreedy(readScalarModel(bin), 200)
    const want = Buffer.from(`${llama2cText(path.join(data, "tok512.bin"), ids)}\n`, "latin1")
    const a = await run(["--model", bin, "--temperature", "0", "--backend", "wasm"])
    expect(a.code).toBe(0)
    expect(a.stdout.equals(want)).toBe(true)
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "hf-"))
    saveHfModel(dir, loadModel(bin))
    expect(fs.existsSync(path.join(dir, "tok512.bin"))).toBe(true)
    const b = await run(["--model", dir, "--max-tokens", "200"])
    expect(b.stdout.equals(want)).toBe(true)
    // The saved directory reloads to the same tensors, and saving again gives the same bytes.
    const again = fs.mkdtempSync(path.join(os.tmpdir(), "hf-"))
    saveHfModel(again, loadModel(dir))
    expect(fs.readFileSync(path.join(again, "model.safetensors"))).toEqual(
      fs.readFileSync(path.join(dir, "model.safetensors")),
    )
  })

  test("echoes the prompt and samples reproducibly with a seed", async () => {
    const args = [
      "--model",
      bin,
      "--prompt",
      "Tom had a dog",
      "--temperature",
      "0.8",
      "--seed",
      "42",
      "--max-tokens",
      "20",
    ]
    const a = await run(args)
    const b = await run(args)
    expect(a.code).toBe(0)
    expect(a.stdout.toString()).toMatch(/^Tom had a dog/)
    expect(a.stdout.equals(b.stdout)).toBe(true)
    const c = await run([...args.slice(0, -3), "43", "--max-tokens", "20"])
    expect(c.stdout.equals(a.stdout)).toBe(false)
  })

  test("--adapter applies a PEFT adapter: the same text as the merged model saved as a Hugging Face directory", async () => {
    const base = loadModel(bin)
    const rng = new Rng(5)
    const pairs = new Map<string, LoraPair>()
    for (let l = 0; l < base.config.nLayers; l++)
      for (const m of ["q_proj", "v_proj"] as const) {
        const w = moduleWeight(l, m)
        const [out, inn] = (base.weights.get(w) as HostTensor).shape as [number, number]
        const rand = (n: number) => Float32Array.from({ length: n }, () => (rng.next() - 0.5) * 0.5)
        pairs.set(w, {
          a: { shape: [4, inn], data: rand(4 * inn) },
          b: { shape: [out, 4], data: rand(out * 4) },
        })
      }
    const adapter = {
      spec: { r: 4, alpha: 8, dropout: 0, targets: ["q_proj", "v_proj"] as const, rslora: false },
      pairs,
      baseModel: "stories260K.bin",
    }
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "adapter-"))
    writeAdapter(dir, { ...adapter, spec: { ...adapter.spec, targets: [...adapter.spec.targets] } })
    const merged = fs.mkdtempSync(path.join(os.tmpdir(), "merged-"))
    saveHfModel(merged, mergeAdapter(base, readAdapter(dir)))
    const args = ["--max-tokens", "40", "--prompt", "Lily"]
    const plain = await run(["--model", bin, ...args])
    const withAdapter = await run(["--model", bin, "--adapter", dir, ...args])
    const fromMerged = await run(["--model", merged, ...args])
    expect(withAdapter.code).toBe(0)
    expect(withAdapter.stdout.equals(fromMerged.stdout)).toBe(true)
    expect(withAdapter.stdout.equals(plain.stdout)).toBe(false)
    const wrong = await run(["--model", bin, "--adapter", merged])
    expect(wrong.code).toBe(1)
    expect(wrong.stderr).toMatch(/no adapter_config.json/)
  })

  test("fails clearly on bad input", async () => {
    const missing = await run(["--prompt", "x"])
    expect(missing.code).toBe(2)
    expect(missing.stderr).toMatch(/--model is required/)
    const nofile = await run(["--model", "/nonexistent/model"])
    expect(nofile.code).toBe(1)
    expect(nofile.stderr).toMatch(/no such file or directory/)
    const bad = await run(["--model", bin, "--temperature", "hot"])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toMatch(/--temperature: invalid value "hot"/)
    const unknown = await run(["--model", bin, "--frobnicate"])
    expect(unknown.code).toBe(2)
    const backend = await run(["--model", bin, "--backend", "tpu"])
    expect(backend.code).toBe(1)
    expect(backend.stderr).toMatch(/unknown backend "tpu"/)
  })
})

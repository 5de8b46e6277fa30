/**
 * Checkpoints as Hugging Face ships them: a tiny Llama made and saved by
 * transformers itself (save_pretrained, float32 / float16 / bfloat16, one
 * file or shards with model.safetensors.index.json) loads into the tfjs
 * decoder with transformers' logits; a broken index, a missing shard or a
 * wrong shape fails naming the file and the tensor; exports keep the
 * checkpoint's dtype unless told otherwise, and transformers loads them back.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, test } from "vitest"
import { exportAdapter, exportMerged } from "../../../plugins/export/index.ts"
import { initBackend } from "../../../plugins/train/Backend.ts"
import { inferenceModel, sequenceLogits } from "../../../plugins/train/Generate.ts"
import { loadModel, ModelError } from "../../../plugins/train/ModelIO.ts"
import {
  readSafetensors,
  readSafetensorsHeader,
  SafetensorsReader,
} from "../../../plugins/train/Safetensors.ts"
import { hasTorch, runPython } from "../../support/python.ts"
import { writeTestAdapter } from "../export/Adapters.ts"
import { artifact, inDir, runStep, tempDir } from "../export/Step.ts"

/** The dtype a config.json declares: transformers 5 writes `dtype`, older versions `torch_dtype`; where both are there they agree. */
const declaredDtype = (file: string): unknown => {
  const c = JSON.parse(fs.readFileSync(file, "utf8")) as { dtype?: unknown; torch_dtype?: unknown }
  if (c.dtype !== undefined && c.torch_dtype !== undefined && c.dtype !== c.torch_dtype)
    throw new Error(`${file}: dtype ${String(c.dtype)} and torch_dtype ${String(c.torch_dtype)} disagree`)
  return c.dtype ?? c.torch_dtype
}

const script = path.join(import.meta.dirname, "python/checkpoint.py")
const ids = [1, 7, 42, 99, 3, 127, 64, 5]

interface Saved {
  readonly logits: number[]
}
interface Loaded {
  readonly dtype: string
  readonly disk: Record<string, string>
  readonly logits: number[]
}
const py = (req: { save?: Record<string, unknown>[]; load?: string[] }): { save: Saved[]; load: Loaded[] } =>
  JSON.parse(runPython([script], JSON.stringify({ ids, ...req })))

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length)
  let m = 0
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs((a[i] as number) - (b[i] as number)))
  return m
}

const tfjsLogits = (dir: string) => {
  const model = inferenceModel(loadModel(dir))
  try {
    return sequenceLogits(model, ids)
  } finally {
    model.dispose()
  }
}

/** A copy of a checkpoint to break. */
const copyOf = (dir: string) => {
  const to = path.join(tempDir("ckpt-broken"), "model")
  fs.cpSync(dir, to, { recursive: true })
  return to
}

const root = tempDir("ckpt")
const variants = {
  "bfloat16, sharded": { dtype: "bfloat16", shard: "40KB" },
  "float16, one file": { dtype: "float16" },
  "float32, sharded": { dtype: "float32", shard: "100KB" },
} as const
const saved: Record<string, Saved> = {}
const dirOf = (name: string) => path.join(root, name.replace(/[^a-z0-9]+/g, "-"))

describe.skipIf(!hasTorch)("checkpoints saved by transformers", () => {
  beforeAll(async () => {
    await initBackend("cpu")
    const names = Object.keys(variants) as Array<keyof typeof variants>
    const r = py({ save: names.map((name) => ({ dir: dirOf(name), seed: 3, ...variants[name] })) })
    names.forEach((name, i) => {
      saved[name] = r.save[i]!
    })
  })

  for (const [name, v] of Object.entries(variants))
    test(`${name}: loads with transformers' float32 logits`, () => {
      const dir = dirOf(name)
      expect(fs.existsSync(path.join(dir, "model.safetensors.index.json"))).toBe("shard" in v)
      if ("shard" in v)
        expect(fs.readdirSync(dir).filter((f) => f.endsWith(".safetensors")).length).toBeGreaterThan(2)
      const model = loadModel(dir)
      expect(model.dtype).toBe({ float32: "F32", float16: "F16", bfloat16: "BF16" }[v.dtype])
      expect(model.weights.size).toBe(2 * 9 + 3)
      expect(maxDiff(tfjsLogits(dir), saved[name]!.logits)).toBeLessThan(1e-4)
    })

  test("one tensor is read without the rest: header first, then positioned reads", () => {
    const dir = dirOf("bfloat16, sharded")
    const shard = fs.readdirSync(dir).find((f) => f.startsWith("model-00002"))!
    const file = path.join(dir, shard)
    const header = readSafetensorsHeader(file)
    const [name] = [...header.entries.keys()]
    const r = SafetensorsReader.open(file)
    try {
      const one = r.read(name!)
      expect(one.data).toEqual(readSafetensors(file).tensors.get(name!)!.data)
      expect(one.data).toEqual(readSafetensors(fs.readFileSync(file)).tensors.get(name!)!.data)
      const into = new Float32Array(one.data.length)
      expect(r.read(name!, into).data).toBe(into)
      expect(() => r.read(name!, new Float32Array(3))).toThrow(/holds \d+ values, the destination 3/)
    } finally {
      r.close()
    }
  })

  test("a missing shard, a tensor the index lists that its shard lacks, or a wrong shape names the file and tensor", () => {
    const fails = (dir: string, ...patterns: RegExp[]) => {
      let error: unknown
      try {
        loadModel(dir)
      } catch (e) {
        error = e
      }
      expect(error).toBeInstanceOf(Error)
      for (const p of patterns) expect((error as Error).message).toMatch(p)
    }
    const src = dirOf("bfloat16, sharded")
    const index = (dir: string) => path.join(dir, "model.safetensors.index.json")
    const readIndex = (dir: string) =>
      JSON.parse(fs.readFileSync(index(dir), "utf8")) as { weight_map: Record<string, string> }

    const missing = copyOf(src)
    fs.rmSync(path.join(missing, "model-00003-of-00005.safetensors"))
    fails(
      missing,
      new RegExp(`^${index(missing)}: shard model-00003-of-00005.safetensors \\(holding model\\.layers\\.`),
      /is missing: no .*model-00003-of-00005.safetensors$/,
    )

    const moved = copyOf(src)
    const idx = readIndex(moved)
    idx.weight_map["model.norm.weight"] = "model-00001-of-00005.safetensors"
    fs.writeFileSync(index(moved), JSON.stringify(idx))
    fails(
      moved,
      /model-00001-of-00005.safetensors: tensor model\.norm\.weight is listed in model\.safetensors\.index\.json but absent from this shard/,
    )

    const unlisted = copyOf(src)
    const idx2 = readIndex(unlisted)
    delete idx2.weight_map["model.norm.weight"]
    fs.writeFileSync(index(unlisted), JSON.stringify(idx2))
    fails(
      unlisted,
      /safetensors: tensor model\.norm\.weight is in this shard but model\.safetensors\.index\.json does not list it/,
    )

    const shape = copyOf(src)
    const cfg = JSON.parse(fs.readFileSync(path.join(shape, "config.json"), "utf8"))
    fs.writeFileSync(path.join(shape, "config.json"), JSON.stringify({ ...cfg, intermediate_size: 80 }))
    fails(
      shape,
      /model-0000\d-of-00005\.safetensors: tensor model\.layers\.\d\.mlp\.(gate|up|down)_proj\.weight has shape \[(96, 64|64, 96)\], config\.json implies \[(80, 64|64, 80)\]/,
    )

    const truncated = copyOf(src)
    const shard = path.join(truncated, "model-00002-of-00005.safetensors")
    fs.truncateSync(shard, fs.statSync(shard).size - 2)
    fails(truncated, new RegExp(`^${shard}: tensor \\S+: data_offsets \\[\\d+,\\d+\\] out of range`))

    const badIndex = copyOf(src)
    fs.writeFileSync(index(badIndex), "{ not json")
    fails(badIndex, new RegExp(`^${index(badIndex)}: invalid JSON`))
    fs.writeFileSync(
      index(badIndex),
      JSON.stringify({ weight_map: { "model.norm.weight": "../x.safetensors" } }),
    )
    fails(badIndex, /weight_map\["model\.norm\.weight"\] is "\.\.\/x\.safetensors", not a file name/)

    const lacking = copyOf(dirOf("float16, one file"))
    const cfg2 = JSON.parse(fs.readFileSync(path.join(lacking, "config.json"), "utf8"))
    fs.writeFileSync(path.join(lacking, "config.json"), JSON.stringify({ ...cfg2, num_hidden_layers: 3 }))
    fails(lacking, /model\.safetensors: missing tensor model\.layers\.2\./)
    expect(ModelError).toBeDefined()
  })

  test("a merged export keeps the checkpoint's dtype; float32 on request; transformers loads it with the same logits", async () => {
    const cwd = tempDir("ckpt-export")
    const bf16 = dirOf("bfloat16, sharded")
    const same = await inDir(cwd, () =>
      runStep(exportMerged, { model: artifact(bf16, "Model") }, { to: "same" }),
    )
    expect(same.error).toBeUndefined()
    const f32 = await inDir(cwd, () =>
      runStep(exportMerged, { model: artifact(bf16, "Model") }, { to: "f32", dtype: "float32" }),
    )
    expect(f32.error).toBeUndefined()
    const [back, wide] = py({ load: [path.join(cwd, "same"), path.join(cwd, "f32")] }).load as [
      Loaded,
      Loaded,
    ]
    expect(back.dtype).toBe("bfloat16")
    expect(new Set(Object.values(back.disk))).toEqual(new Set(["BF16"]))
    // bfloat16 to float32 and back is exact: the export holds the checkpoint's own weights.
    expect(maxDiff(back.logits, saved["bfloat16, sharded"]!.logits)).toBeLessThan(1e-5)

    expect(wide.dtype).toBe("float32")
    expect(new Set(Object.values(wide.disk))).toEqual(new Set(["F32"]))
    expect(maxDiff(wide.logits, saved["bfloat16, sharded"]!.logits)).toBeLessThan(1e-5)

    // With an adapter merged in: still the base's bfloat16, rounded once.
    const adapter = path.join(root, "adapter")
    writeTestAdapter(adapter, loadModel(bf16), { seed: 4 })
    const merged = await inDir(cwd, () =>
      runStep(
        exportMerged,
        { model: artifact(bf16, "Model"), adapter: artifact(adapter, "Adapter") },
        { to: "merged" },
      ),
    )
    expect(merged.error).toBeUndefined()
    expect(new Set(readSafetensors(path.join(cwd, "merged/model.safetensors")).dtypes.values())).toEqual(
      new Set(["BF16"]),
    )
    expect(declaredDtype(path.join(cwd, "merged/config.json"))).toBe("bfloat16")

    // Adapters stay float32, as PEFT saves them, unless told otherwise.
    const a32 = await inDir(cwd, () =>
      runStep(exportAdapter, { adapter: artifact(adapter, "Adapter") }, { to: "a32" }),
    )
    expect(a32.error).toBeUndefined()
    expect(new Set(readSafetensors(path.join(cwd, "a32/adapter_model.safetensors")).dtypes.values())).toEqual(
      new Set(["F32"]),
    )
    const a16 = await inDir(cwd, () =>
      runStep(exportAdapter, { adapter: artifact(adapter, "Adapter") }, { to: "a16", dtype: "bfloat16" }),
    )
    expect(a16.error).toBeUndefined()
    expect(new Set(readSafetensors(path.join(cwd, "a16/adapter_model.safetensors")).dtypes.values())).toEqual(
      new Set(["BF16"]),
    )
  })
})

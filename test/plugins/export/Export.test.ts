/**
 * The export steps on stories260K: PEFT names and shapes, logits of the
 * exported adapter and of the merged model, QLoRA merges against the NF4
 * base the trainer held, and where an export may write.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs-core"
import { beforeAll, describe, expect, test } from "vitest"
import { exportAdapter, exportMerged } from "../../../plugins/export/index.ts"
import { nf4Base } from "../../../plugins/export/Merge.ts"
import { MARKER } from "../../../plugins/export/Target.ts"
import { loadTokenizer } from "../../../plugins/tokenize/Tokenizer.ts"
import { initBackend } from "../../../plugins/train/Backend.ts"
import { inferenceModel } from "../../../plugins/train/Generate.ts"
import { LlamaModel } from "../../../plugins/train/Llama.ts"
import { mergeAdapter, readAdapter } from "../../../plugins/train/Lora.ts"
import { type HostModel, loadModel } from "../../../plugins/train/ModelIO.ts"
import { readSafetensors } from "../../../plugins/train/Safetensors.ts"
import { ALL_MODULES, writeTestAdapter } from "./Adapters.ts"
import { artifact, inDir, runStep, storiesBin, tempDir, tok512 } from "./Step.ts"

const base = loadModel(storiesBin)
const ids = [1, 403, 407, 261, 378, 292, 496, 300, 72, 86]

const logits = (m: HostModel | LlamaModel): Float32Array => {
  const model = m instanceof LlamaModel ? m : new LlamaModel(m.config, m.weights, { mode: "frozen" })
  const t = tf.tidy(() => model.logits({ ids: Int32Array.from(ids), batch: 1, seq: ids.length }))
  const out = t.dataSync() as Float32Array
  t.dispose()
  if (!(m instanceof LlamaModel)) model.dispose()
  return out
}

const maxDiff = (a: Float32Array, b: Float32Array) =>
  a.reduce((m, x, i) => Math.max(m, Math.abs(x - (b[i] as number))), 0)

/** A fresh adapter directory (random B unless zeroB). */
const adapterDir = (o: Parameters<typeof writeTestAdapter>[2] = {}) => {
  const dir = tempDir("adapter")
  const adapter = writeTestAdapter(dir, base, o)
  return { dir, adapter }
}

beforeAll(async () => {
  await initBackend("cpu")
})

describe("export-adapter", () => {
  test("writes PEFT names, shapes and config, a marker, and the same files as its artifact", async () => {
    const { dir } = adapterDir({ spec: { r: 4, alpha: 8, targets: ALL_MODULES } })
    const cwd = tempDir("cwd")
    const r = await inDir(cwd, () =>
      runStep(
        exportAdapter,
        { adapter: artifact(dir, "Adapter"), base: artifact(storiesBin, "Model") },
        { to: "exports/lora", baseModel: "karpathy/tinyllamas-stories260K" },
        "export-lora",
      ),
    )
    expect(r.error).toBeUndefined()
    const target = path.join(fs.realpathSync(cwd), "exports/lora")
    expect(fs.readdirSync(target).sort()).toEqual([
      "adapter_config.json",
      "adapter_model.safetensors",
      "training.json",
      MARKER,
    ])
    const { tensors } = readSafetensors(path.join(target, "adapter_model.safetensors"))
    const expected = new Map<string, number[]>()
    const dims: Record<string, [number, number]> = {
      "self_attn.q_proj": [64, 64],
      "self_attn.k_proj": [32, 64],
      "self_attn.v_proj": [32, 64],
      "self_attn.o_proj": [64, 64],
      "mlp.gate_proj": [172, 64],
      "mlp.up_proj": [172, 64],
      "mlp.down_proj": [64, 172],
    }
    for (let i = 0; i < 5; i++)
      for (const [m, [out, inn]] of Object.entries(dims)) {
        expected.set(`base_model.model.model.layers.${i}.${m}.lora_A.weight`, [4, inn])
        expected.set(`base_model.model.model.layers.${i}.${m}.lora_B.weight`, [out, 4])
      }
    expect(new Map([...tensors].map(([k, t]) => [k, [...t.shape]]))).toEqual(expected)
    const config = JSON.parse(fs.readFileSync(path.join(target, "adapter_config.json"), "utf8"))
    expect(config).toMatchObject({
      peft_type: "LORA",
      task_type: "CAUSAL_LM",
      r: 4,
      lora_alpha: 8,
      lora_dropout: 0,
      use_rslora: false,
      target_modules: [...ALL_MODULES].sort(),
      base_model_name_or_path: "karpathy/tinyllamas-stories260K",
      inference_mode: true,
      bias: "none",
    })
    const marker = JSON.parse(fs.readFileSync(path.join(target, MARKER), "utf8"))
    expect(marker).toEqual({
      artifact: artifact(dir).digest,
      node: "export-lora",
      kind: "peft-adapter",
      files: ["adapter_config.json", "adapter_model.safetensors", "training.json"],
    })
    // The step's own output is a copy of what it wrote.
    const copy = r.outputs.export as string
    for (const f of fs.readdirSync(target))
      expect(fs.readFileSync(path.join(copy, f)).equals(fs.readFileSync(path.join(target, f)))).toBe(true)
    expect(fs.readdirSync(copy).sort()).toEqual(fs.readdirSync(target).sort())
  })

  test("an exported adapter loaded again gives the same logits as the trained one", async () => {
    const { dir } = adapterDir({ seed: 5 })
    const cwd = tempDir("cwd")
    const r = await inDir(cwd, () =>
      runStep(exportAdapter, { adapter: artifact(dir, "Adapter") }, { to: "out" }),
    )
    expect(r.error).toBeUndefined()
    const original = inferenceModel(base, readAdapter(dir))
    const exported = inferenceModel(base, readAdapter(path.join(cwd, "out")))
    const a = logits(original)
    const b = logits(exported)
    original.dispose()
    exported.dispose()
    expect(b).toEqual(a)
    // The adapter is not a no-op, and the unmerged LoRA branch computes the same function.
    expect(maxDiff(a, logits(base))).toBeGreaterThan(1e-3)
    const adapter = readAdapter(path.join(cwd, "out"))
    const branch = new LlamaModel(base.config, base.weights, {
      mode: "frozen",
      lora: adapter.spec,
      loraWeights: adapter.pairs,
    })
    expect(maxDiff(logits(branch), a)).toBeLessThan(1e-4)
    branch.dispose()
  })

  test("renames PEFT's in-memory '.default' tensor names to the saved ones", async () => {
    const { dir } = adapterDir({ seed: 2, spec: { targets: ["q_proj", "v_proj"] } })
    const file = path.join(dir, "adapter_model.safetensors")
    const { tensors } = readSafetensors(file)
    const { writeSafetensors } = await import("../../../plugins/train/Safetensors.ts")
    const renamed = new Map([...tensors].map(([k, t]) => [k.replace(/\.weight$/, ".default.weight"), t]))
    fs.writeFileSync(file, writeSafetensors(renamed))
    const cwd = tempDir("cwd")
    const r = await inDir(cwd, () =>
      runStep(exportAdapter, { adapter: artifact(dir, "Adapter") }, { to: "x" }),
    )
    expect(r.error).toBeUndefined()
    const out = readSafetensors(path.join(cwd, "x/adapter_model.safetensors")).tensors
    expect([...out.keys()].sort()).toEqual([...tensors.keys()].sort())
    for (const [k, t] of tensors) expect(out.get(k)?.data).toEqual(t.data)
  })

  test("refuses an adapter whose shapes do not fit the base or whose names are not PEFT's", async () => {
    const { dir } = adapterDir({ spec: { targets: ["q_proj"] } })
    const cfg = path.join(dir, "adapter_config.json")
    fs.writeFileSync(cfg, fs.readFileSync(cfg, "utf8").replace('"r": 4', '"r": 3'))
    const cwd = tempDir("cwd")
    const bad = await inDir(cwd, () =>
      runStep(exportAdapter, { adapter: artifact(dir, "Adapter") }, { to: "x" }),
    )
    expect(bad.ok).toBe(false)
    expect(bad.error?.message).toMatch(/lora_A must be \[3, in\]/)
    expect(fs.existsSync(path.join(cwd, "x"))).toBe(false)
  })
})

describe("export-merged", () => {
  test("a llama2.c base with an adapter becomes a Hugging Face Llama directory with the same logits", async () => {
    const { dir } = adapterDir({ seed: 7 })
    const cwd = tempDir("cwd")
    const r = await inDir(cwd, () =>
      runStep(
        exportMerged,
        {
          model: artifact(storiesBin, "Model"),
          adapter: artifact(dir, "Adapter"),
          tokenizer: artifact(tok512, "Tokenizer"),
        },
        { to: "merged" },
      ),
    )
    expect(r.error).toBeUndefined()
    const out = path.join(cwd, "merged")
    expect(fs.readdirSync(out).sort()).toEqual(
      [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tok512.bin",
        "tokenizer.json",
        "tokenizer_config.json",
        MARKER,
      ].sort(),
    )
    const config = JSON.parse(fs.readFileSync(path.join(out, "config.json"), "utf8"))
    expect(config).toMatchObject({
      model_type: "llama",
      hidden_size: 64,
      num_key_value_heads: 4,
      vocab_size: 512,
    })
    const merged = loadModel(out)
    expect(merged.source).toBe("hf")
    const tuned = inferenceModel(base, readAdapter(dir))
    expect(logits(merged)).toEqual(logits(tuned))
    tuned.dispose()
    const marker = JSON.parse(fs.readFileSync(path.join(out, MARKER), "utf8"))
    expect(marker.artifact).toBe(artifact(dir).digest)
    expect(marker.base).toBe(artifact(storiesBin).digest)
    expect(marker.kind).toBe("merged-model")
    // The converted tokenizer.json gives the ids of tok512.bin.
    const hf = await loadTokenizer(out)
    const l2c = await loadTokenizer(tok512)
    expect(hf.type).toBe("huggingface")
    const text = "Once upon a time, there was a little girl named Lily. She loved to play outside."
    expect(await hf.encode(text)).toEqual(await l2c.encode(text))
    expect(hf.bosId).toBe(1)
    expect(hf.eosId).toBe(2)
    expect(hf.addsBos).toBe(true)
  })

  test("a QLoRA adapter merges into the NF4-dequantised base it trained against", async () => {
    const { dir } = adapterDir({ seed: 11, training: { kind: "qlora", params: { r: 4 } } })
    const cwd = tempDir("cwd")
    const r = await inDir(cwd, () =>
      runStep(
        exportMerged,
        { model: artifact(storiesBin, "Model"), adapter: artifact(dir, "Adapter") },
        { to: "q" },
      ),
    )
    expect(r.error).toBeUndefined()
    const merged = loadModel(path.join(cwd, "q"))
    const adapter = readAdapter(dir)
    const want = mergeAdapter(nf4Base(base), adapter)
    for (const [name, t] of want.weights) expect(merged.weights.get(name)?.data).toEqual(t.data)
    const float = mergeAdapter(base, adapter)
    const q = "model.layers.0.self_attn.q_proj.weight"
    expect(maxDiff(float.weights.get(q)!.data, merged.weights.get(q)!.data)).toBeGreaterThan(1e-4)
    // The trainer's own QLoRA model (NF4 base + LoRA branch) computes what the merged model does.
    const qlora = new LlamaModel(base.config, base.weights, {
      mode: "qlora",
      lora: adapter.spec,
      loraWeights: adapter.pairs,
    })
    expect(maxDiff(logits(qlora), logits(merged))).toBeLessThan(1e-4)
    qlora.dispose()
    // adapterBase: "none" overrides the record.
    const r2 = await inDir(cwd, () =>
      runStep(
        exportMerged,
        { model: artifact(storiesBin, "Model"), adapter: artifact(dir, "Adapter") },
        { to: "f", adapterBase: "none" },
      ),
    )
    expect(r2.error).toBeUndefined()
    expect(loadModel(path.join(cwd, "f")).weights.get(q)?.data).toEqual(float.weights.get(q)?.data)
  })

  test("float16 and bfloat16 weights", async () => {
    const cwd = tempDir("cwd")
    for (const dtype of ["float16", "bfloat16"] as const) {
      const r = await inDir(cwd, () =>
        runStep(exportMerged, { model: artifact(storiesBin, "Model") }, { to: dtype, dtype }),
      )
      expect(r.error).toBeUndefined()
      const file = readSafetensors(path.join(cwd, dtype, "model.safetensors"))
      expect(new Set(file.dtypes.values())).toEqual(new Set([dtype === "float16" ? "F16" : "BF16"]))
      const m = loadModel(path.join(cwd, dtype))
      expect(
        maxDiff(m.weights.get("model.norm.weight")!.data, base.weights.get("model.norm.weight")!.data),
      ).toBeLessThan(dtype === "float16" ? 1e-2 : 5e-2)
    }
  })
})

describe("where an export writes", () => {
  const exportTo = async (cwd: string, to: string, extra: Record<string, unknown> = {}, seed = 1) => {
    const { dir } = adapterDir({ seed, spec: { targets: ["q_proj"] } })
    return inDir(cwd, () => runStep(exportAdapter, { adapter: artifact(dir, "Adapter") }, { to, ...extra }))
  }

  test("refuses '..', the working directory itself, and symbolic links that lead out", async () => {
    const cwd = tempDir("cwd")
    const outside = tempDir("outside")
    fs.symlinkSync(outside, path.join(cwd, "link"))
    fs.mkdirSync(path.join(cwd, "real"))
    fs.symlinkSync(path.join(cwd, "real"), path.join(cwd, "inner-link"))
    // A ".." is refused by the parameter Schema, before the step runs.
    for (const to of ["../escape", "a/../../b", "a/.."])
      await expect(exportTo(cwd, to), to).rejects.toThrow(/"\.\." segment/)
    for (const to of [".", "link/adapter", "link"]) {
      const r = await exportTo(cwd, to)
      expect(r.ok, to).toBe(false)
      expect(r.error?.field, to).toBe("to")
    }
    expect(fs.readdirSync(outside)).toEqual([])
    expect(fs.readdirSync(cwd).sort()).toEqual(["inner-link", "link", "real"])
    // A link that stays inside is fine (the directory lands at its real place); the link itself is not a target.
    expect((await exportTo(cwd, "inner-link/adapter")).error).toBeUndefined()
    expect(fs.readdirSync(path.join(cwd, "real/adapter"))).toContain(MARKER)
    expect((await exportTo(cwd, "inner-link")).error?.message).toMatch(/symbolic link/)
    // An absolute path is the user's explicit choice.
    const abs = path.join(tempDir("abs"), "adapter")
    expect((await exportTo(cwd, abs)).error).toBeUndefined()
    expect(fs.existsSync(path.join(abs, MARKER))).toBe(true)
  })

  test("does not overwrite a directory it did not write, unless told to", async () => {
    const cwd = tempDir("cwd")
    fs.mkdirSync(path.join(cwd, "mine"))
    fs.writeFileSync(path.join(cwd, "mine/notes.txt"), "keep me")
    const r = await exportTo(cwd, "mine")
    expect(r.ok).toBe(false)
    expect(r.error?.message).toMatch(/not written by an export/)
    expect(fs.readdirSync(path.join(cwd, "mine"))).toEqual(["notes.txt"])
    fs.writeFileSync(path.join(cwd, "file"), "a file")
    expect((await exportTo(cwd, "file")).ok).toBe(false)
    expect(fs.readFileSync(path.join(cwd, "file"), "utf8")).toBe("a file")
    const forced = await exportTo(cwd, "mine", { overwrite: true })
    expect(forced.error).toBeUndefined()
    expect(fs.readdirSync(path.join(cwd, "mine"))).toContain(MARKER)
    expect(fs.existsSync(path.join(cwd, "mine/notes.txt"))).toBe(false)
  })

  test("replaces its own directory whole, and refuses one a user has added files to", async () => {
    const cwd = tempDir("cwd")
    expect((await exportTo(cwd, "exports/a", {}, 1)).error).toBeUndefined()
    const target = path.join(cwd, "exports/a")
    const before = fs.statSync(target).ino
    const firstBytes = fs.readFileSync(path.join(target, "adapter_model.safetensors"))
    // A reader holding the old file keeps reading the old bytes: the new directory was renamed in.
    const held = fs.openSync(path.join(target, "adapter_model.safetensors"), "r")
    const second = await exportTo(cwd, "exports/a", {}, 2)
    expect(second.error).toBeUndefined()
    const after = fs.readFileSync(path.join(target, "adapter_model.safetensors"))
    expect(after.equals(firstBytes)).toBe(false)
    expect(fs.statSync(target).ino).not.toBe(before)
    const old = Buffer.alloc(firstBytes.length)
    fs.readSync(held, old, 0, old.length, 0)
    fs.closeSync(held)
    expect(old.equals(firstBytes)).toBe(true)
    // No temporary or old directories are left beside it.
    expect(fs.readdirSync(path.join(cwd, "exports"))).toEqual(["a"])
    fs.writeFileSync(path.join(target, "README.md"), "my notes")
    const refused = await exportTo(cwd, "exports/a", {}, 3)
    expect(refused.error?.message).toMatch(/files the export did not write \(README\.md\)/)
    expect(fs.readFileSync(path.join(target, "adapter_model.safetensors")).equals(after)).toBe(true)
  })
})

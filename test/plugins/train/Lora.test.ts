import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs-core"
import { beforeAll, describe, expect, test } from "vitest"
import { initBackend } from "../../../plugins/train/Backend.ts"
import { LlamaModel, type TokenBatch } from "../../../plugins/train/Llama.ts"
import {
  type LoraSpec,
  loraScale,
  mergeAdapter,
  readAdapter,
  writeAdapter,
} from "../../../plugins/train/Lora.ts"
import { loadModel, saveHfModel } from "../../../plugins/train/ModelIO.ts"
import { Rng } from "../../../plugins/train/Rng.ts"
import { randomIds, randomWeights, tinyConfig } from "./Tiny.ts"

const config = tinyConfig()
const weights = randomWeights(config)
const B = 2
const S = 6
const batch: TokenBatch = { ids: randomIds(B * S, config.vocabSize), batch: B, seq: S }
const targets = Int32Array.from(randomIds(B * S, config.vocabSize, 9), (t, i) => (i % S === S - 1 ? -1 : t))
const spec: LoraSpec = {
  r: 2,
  alpha: 4,
  dropout: 0,
  targets: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
  rslora: false,
}

const logitsOf = (m: LlamaModel) => tf.tidy(() => m.logits(batch)).dataSync() as Float32Array
const lossOf = (m: LlamaModel) => tf.tidy(() => m.lossSum(batch, targets)).dataSync()[0] as number

/** Random LoRA pairs (B ≠ 0, so every gradient is non-trivial). */
const randomPairs = (seed: number) => {
  const m = new LlamaModel(config, weights, { mode: "lora", lora: spec, seed })
  const rng = new Rng(seed)
  for (const [name, v] of m.variables)
    if (name.endsWith("lora_B"))
      v.assign(
        tf.tensor(
          Float32Array.from({ length: v.size }, () => rng.next() - 0.5),
          v.shape,
        ),
      )
  const pairs = m.loraToHost()
  m.dispose()
  return pairs
}

/** Central finite differences on a few coordinates of each variable, against the analytic gradient. */
const checkGradients = (m: LlamaModel) => {
  const names = [...m.variables.keys()]
  const { grads } = tf.variableGrads(() => m.lossSum(batch, targets) as tf.Scalar, [...m.variables.values()])
  const rng = new Rng(3)
  let checked = 0
  for (const name of names) {
    const v = m.variables.get(name) as tf.Variable
    const g = (grads[v.name] as tf.Tensor).dataSync()
    const base = v.dataSync().slice()
    for (let trial = 0; trial < 2; trial++) {
      const i = Math.floor(rng.next() * v.size)
      const eps = 1e-2
      const at = (delta: number) => {
        const d = base.slice()
        d[i] = (d[i] as number) + delta
        v.assign(tf.tensor(d, v.shape))
        return lossOf(m)
      }
      const fd = (at(eps) - at(-eps)) / (2 * eps)
      v.assign(tf.tensor(base, v.shape))
      expect(Math.abs((g[i] as number) - fd), `${name}[${i}]: analytic ${g[i]} vs ${fd}`).toBeLessThan(
        2e-2 * Math.max(1, Math.abs(fd)),
      )
      checked++
    }
  }
  tf.dispose(Object.values(grads))
  return checked
}

describe("LoRA", () => {
  beforeAll(async () => {
    await initBackend("cpu")
  })

  test("with B = 0 the output equals the base model's", () => {
    const base = new LlamaModel(config, weights, { mode: "frozen" })
    const lora = new LlamaModel(config, weights, { mode: "lora", lora: spec, seed: 5 })
    expect(logitsOf(lora)).toEqual(logitsOf(base))
    base.dispose()
    lora.dispose()
  })

  test("A starts Kaiming-uniform (bound 1/√in) and B at zero, as PEFT does", () => {
    const m = new LlamaModel(config, weights, { mode: "lora", lora: spec, seed: 5 })
    const pairs = m.loraToHost()
    const q = pairs.get("model.layers.0.self_attn.q_proj.weight")
    expect(q?.a.shape).toEqual([2, 16])
    expect(q?.b.shape).toEqual([16, 2])
    expect(Math.max(...(q?.a.data ?? []).map(Math.abs))).toBeLessThanOrEqual(1 / 4)
    expect(Math.max(...(q?.a.data ?? []).map(Math.abs))).toBeGreaterThan(0.1)
    expect([...(q?.b.data ?? [])].every((x) => x === 0)).toBe(true)
    m.dispose()
  })

  test("gradients of A and B match finite differences", () => {
    const m = new LlamaModel(config, weights, { mode: "lora", lora: spec, loraWeights: randomPairs(11) })
    expect(checkGradients(m)).toBe(2 * 2 * 7 * 2)
    m.dispose()
  })

  test("gradients of every weight match finite differences in full fine-tuning (untied head)", () => {
    const c = tinyConfig({ tiedEmbeddings: false })
    const m = new LlamaModel(c, randomWeights(c, 4), { mode: "full" })
    expect(checkGradients(m)).toBe(2 * m.variables.size)
    m.dispose()
  })

  test("gradients match finite differences on the WebAssembly backend (our UnsortedSegmentSum kernel)", async () => {
    await initBackend("wasm")
    try {
      const m = new LlamaModel(config, weights, { mode: "full" })
      expect(checkGradients(m)).toBe(2 * m.variables.size)
      m.dispose()
    } finally {
      await initBackend("cpu")
    }
  })

  test("gradients match finite differences with a tied head and packed sequences", () => {
    const m = new LlamaModel(config, weights, { mode: "full" })
    const packed: TokenBatch = {
      ...batch,
      segments: Int32Array.from({ length: B * S }, (_, i) => (i % S < 3 ? 0 : 1)),
      positions: Int32Array.from({ length: B * S }, (_, i) => (i % S) % 3),
    }
    const { grads } = tf.variableGrads(
      () => m.lossSum(packed, targets) as tf.Scalar,
      [...m.variables.values()],
    )
    const emb = m.variables.get("model.embed_tokens.weight") as tf.Variable
    const g = (grads[emb.name] as tf.Tensor).dataSync()
    const i = (batch.ids[0] as number) * config.dim + 3
    const base = emb.dataSync().slice()
    const at = (d: number) => {
      const x = base.slice()
      x[i] = (x[i] as number) + d
      emb.assign(tf.tensor(x, emb.shape))
      return tf.tidy(() => m.lossSum(packed, targets)).dataSync()[0] as number
    }
    const fd = (at(1e-2) - at(-1e-2)) / 2e-2
    expect(Math.abs((g[i] as number) - fd)).toBeLessThan(2e-2 * Math.max(1, Math.abs(fd)))
    tf.dispose(Object.values(grads))
    m.dispose()
  })

  test("SIMD, JavaScript and tensor-op attention agree on outputs and gradients, packed sequences included", () => {
    const packed: TokenBatch = {
      ...batch,
      segments: Int32Array.from({ length: B * S }, (_, i) => (i % S < 2 ? 0 : 1)),
      positions: Int32Array.from({ length: B * S }, (_, i) => (i % S < 2 ? i % S : (i % S) - 2)),
    }
    const run = (attention: "simd" | "js" | "tf") => {
      const m = new LlamaModel(config, weights, { mode: "full", attention })
      const names = [...m.variables.keys()]
      const { value, grads } = tf.variableGrads(
        () => m.lossSum(packed, targets) as tf.Scalar,
        [...m.variables.values()],
      )
      const out = {
        loss: value.dataSync()[0] as number,
        grads: names.map((n) => grads[(m.variables.get(n) as tf.Variable).name]?.dataSync() as Float32Array),
      }
      tf.dispose([value, ...Object.values(grads)])
      m.dispose()
      return out
    }
    const ops = run("tf")
    for (const other of [run("simd"), run("js")]) {
      expect(Math.abs(other.loss - ops.loss)).toBeLessThan(1e-4)
      other.grads.forEach((g, i) => {
        const h = ops.grads[i] as Float32Array
        for (let j = 0; j < g.length; j++)
          expect(Math.abs((g[j] as number) - (h[j] as number))).toBeLessThan(1e-4)
      })
    }
  })

  test.each(["simd", "js", "tf"] as const)(
    "packed: changing example 1 leaves example 2's logits unchanged (%s attention)",
    (attention) => {
      // Each row packs example 1 (positions 0-1) and example 2 (positions 2-5).
      const packed = (ids: Int32Array): TokenBatch => ({
        ids,
        batch: B,
        seq: S,
        segments: Int32Array.from({ length: B * S }, (_, i) => (i % S < 2 ? 0 : 1)),
        positions: Int32Array.from({ length: B * S }, (_, i) => (i % S < 2 ? i % S : (i % S) - 2)),
      })
      const changed = Int32Array.from(batch.ids, (t, i) => (i % S < 2 ? (t + 7) % config.vocabSize : t))
      const m = new LlamaModel(config, weights, { mode: "full", attention })
      const a = tf.tidy(() => m.logits(packed(Int32Array.from(batch.ids)))).dataSync() as Float32Array
      const b = tf.tidy(() => m.logits(packed(changed))).dataSync() as Float32Array
      m.dispose()
      const V = config.vocabSize
      let inside = 0
      let first = 0
      for (let t = 0; t < B * S; t++)
        for (let v = 0; v < V; v++) {
          const d = Math.abs((a[t * V + v] as number) - (b[t * V + v] as number))
          if (t % S < 2) first = Math.max(first, d)
          else inside = Math.max(inside, d)
        }
      expect(first).toBeGreaterThan(1e-3)
      expect(inside).toBe(0)
    },
  )

  test("gradients of A and B through the NF4 base (QLoRA) match finite differences", () => {
    const m = new LlamaModel(config, weights, { mode: "qlora", lora: spec, loraWeights: randomPairs(11) })
    expect(m.baseBytes().resident).toBeLessThan(m.baseBytes().float32 / 2)
    expect(checkGradients(m)).toBe(2 * 2 * 7 * 2)
    m.dispose()
  })

  test("a merged adapter gives the logits of the unmerged one, and PEFT files round-trip", () => {
    const pairs = randomPairs(12)
    const unmerged = new LlamaModel(config, weights, { mode: "lora", lora: spec, loraWeights: pairs })
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "lora-"))
    writeAdapter(dir, { spec, pairs, baseModel: "stories260K" })
    const cfg = JSON.parse(fs.readFileSync(path.join(dir, "adapter_config.json"), "utf-8"))
    expect(cfg).toMatchObject({
      peft_type: "LORA",
      r: 2,
      lora_alpha: 4,
      bias: "none",
      task_type: "CAUSAL_LM",
    })
    expect(cfg.use_rslora).toBe(false)
    const adapter = readAdapter(dir)
    const merged = mergeAdapter({ config, weights, source: "hf" }, adapter)
    const plain = new LlamaModel(config, merged.weights, { mode: "frozen" })
    const a = logitsOf(unmerged)
    const b = logitsOf(plain)
    let worst = 0
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs((a[i] as number) - (b[i] as number)))
    expect(worst).toBeLessThan(1e-5)
    // The merge must have changed something: the adapter is not a no-op.
    const base = new LlamaModel(config, weights, { mode: "frozen" })
    expect(Math.max(...logitsOf(base).map((x, i) => Math.abs(x - (a[i] as number))))).toBeGreaterThan(1e-2)
    for (const m of [unmerged, plain, base]) m.dispose()
  })

  test("an untied model saves to and loads from a Hugging Face directory unchanged", () => {
    const c = tinyConfig({ tiedEmbeddings: false })
    const w = randomWeights(c, 8)
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), "untied-"))
    saveHfModel(dir, { config: c, weights: w })
    const back = loadModel(dir)
    // Read back, a config also carries the config.json it came from (written back on export).
    expect(back.config).toEqual({ ...c, source: expect.objectContaining({ model_type: "llama" }) })
    for (const [name, t] of w) expect(back.weights.get(name)?.data).toEqual(t.data)
    expect(JSON.parse(fs.readFileSync(path.join(dir, "config.json"), "utf-8")).tie_word_embeddings).toBe(
      false,
    )
  })

  test("the scale is alpha/√r with rsLoRA and alpha/r without, as numbers", () => {
    expect(loraScale({ ...spec, r: 4, alpha: 16, rslora: true })).toBe(8)
    expect(loraScale({ ...spec, r: 4, alpha: 16, rslora: false })).toBe(4)
    expect(loraScale({ ...spec, r: 2, alpha: 3, rslora: true })).toBeCloseTo(3 / Math.SQRT2, 12)
    // The model applies that number: rsLoRA (r = 2, alpha 4) is plain LoRA with alpha 4·√2, not alpha 4.
    const pairs = randomPairs(14)
    const rs = new LlamaModel(config, weights, {
      mode: "lora",
      lora: { ...spec, alpha: 4, rslora: true },
      loraWeights: pairs,
    })
    const plain = new LlamaModel(config, weights, {
      mode: "lora",
      lora: { ...spec, alpha: 4 * Math.SQRT2, rslora: false },
      loraWeights: pairs,
    })
    const a = logitsOf(rs)
    const b = logitsOf(plain)
    expect(Math.max(...a.map((x, i) => Math.abs(x - (b[i] as number))))).toBeLessThan(1e-5)
    const other = new LlamaModel(config, weights, {
      mode: "lora",
      lora: { ...spec, alpha: 4 },
      loraWeights: pairs,
    })
    expect(Math.max(...a.map((x, i) => Math.abs(x - (logitsOf(other)[i] as number))))).toBeGreaterThan(1e-3)
    for (const m of [rs, plain, other]) m.dispose()
  })

  test("rsLoRA scales by alpha/√r", () => {
    const pairs = randomPairs(13)
    const rs = { ...spec, r: 2, rslora: true }
    const m1 = new LlamaModel(config, weights, { mode: "lora", lora: rs, loraWeights: pairs })
    const plain = new LlamaModel(
      config,
      mergeAdapter({ config, weights, source: "hf" }, { spec: rs, pairs, baseModel: "" }).weights,
      { mode: "frozen" },
    )
    const a = logitsOf(m1)
    const b = logitsOf(plain)
    expect(Math.max(...a.map((x, i) => Math.abs(x - (b[i] as number))))).toBeLessThan(1e-5)
    m1.dispose()
    plain.dispose()
  })
})

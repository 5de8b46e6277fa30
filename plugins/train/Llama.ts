/**
 * The Llama decoder in TensorFlow.js, top to bottom: embedding, then per
 * layer RMSNorm → attention (biases, q/k norm, RoPE, grouped-query) →
 * residual, RMSNorm → SwiGLU MLP → residual, then a final RMSNorm and the
 * output projection (tied to the embedding or not). The equations of every
 * family it runs (llama, mistral, qwen2, qwen3) are in LlamaConfig.ts.
 *
 * Linear weights are held transposed, W^T [in, out], so the forward product
 * is a plain x @ W^T. What trains depends on the mode:
 *   full    every weight is a variable
 *   lora    the base is constant; LoRA A^T [in, r] and B^T [r, out] train
 *   qlora   as lora, the base linears held as NF4 and dequantised per use
 *   frozen  nothing trains (generation, evaluation)
 */
import * as tf from "@tensorflow/tfjs-core"
import { type AttentionMask, attentionJs, attentionSimd, attentionTf } from "./Attention.ts"
import {
  biasName,
  checkContext,
  EMBED,
  FINAL_NORM,
  headDim,
  type LlamaConfig,
  LM_HEAD,
  layerNames,
  ropeInvFreq,
} from "./LlamaConfig.ts"
import {
  LORA_MODULES,
  type LoraModule,
  type LoraPair,
  type LoraSpec,
  loraScale,
  moduleWeight,
} from "./Lora.ts"
import { dequantizeNf4, type Nf4Matrix, nf4Bytes, quantizeNf4 } from "./Nf4.ts"
import {
  applyMask,
  crossEntropySum,
  embedding,
  halfSwap,
  matmul,
  matmulConst,
  matmulLazy,
  rmsnorm,
  rope,
  swiglu,
} from "./Ops.ts"
import { mixSeed, Rng } from "./Rng.ts"
import type { HostTensor } from "./Safetensors.ts"

type T = tf.Tensor

export type Mode = "full" | "lora" | "qlora" | "frozen"

/** A frozen or trainable linear map and its optional LoRA pair. */
interface Linear {
  readonly name: string
  readonly inDim: number
  readonly outDim: number
  /** W^T [in, out]: a variable (full) or a constant; absent when held as NF4. */
  readonly wT?: T
  readonly nf4?: Nf4Matrix
  /** b [out]: trains in full fine-tuning, frozen under LoRA (PEFT's bias "none"). */
  readonly bias?: T
  lora?: { aT: tf.Variable; bT: tf.Variable; scale: number; module: LoraModule }
}

interface Layer {
  readonly attnNorm: T
  readonly ffnNorm: T
  /** Per-head RMSNorm weights [hd] of queries and keys (Qwen3). */
  readonly qNorm?: T
  readonly kNorm?: T
  readonly q: Linear
  readonly k: Linear
  readonly v: Linear
  readonly o: Linear
  readonly gate: Linear
  readonly up: Linear
  readonly down: Linear
}

/** Token ids of a batch, row-major [batch, seq]. */
export interface TokenBatch {
  readonly ids: Int32Array
  readonly batch: number
  readonly seq: number
  /** Each token's position; defaults to past + 0..seq-1. Packed sequences restart it per example. */
  readonly positions?: Int32Array
  /** Packed sequences: the example each token belongs to; attention stays inside an example. */
  readonly segments?: Int32Array
}

/** Keys and values of earlier positions, per layer [batch, past, kvHeads, head]. */
export interface KvCache {
  keys: T[]
  values: T[]
  length: number
}

export interface ForwardOptions {
  /** Dropout masks for the LoRA inputs: (layer, module, [N, in]) → mask or undefined. */
  readonly loraMask?: (layer: number, module: LoraModule, shape: [number, number]) => T | undefined
  /** Grows this cache with the batch's keys and values (generation). */
  readonly cache?: KvCache
}

const LINEARS = ["q", "k", "v", "o", "gate", "up", "down"] as const
const MODULE_OF: Record<(typeof LINEARS)[number], LoraModule> = {
  q: "q_proj",
  k: "k_proj",
  v: "v_proj",
  o: "o_proj",
  gate: "gate_proj",
  up: "up_proj",
  down: "down_proj",
}

const transposeHost = (t: HostTensor): Float32Array => {
  const [rows, cols] = t.shape as [number, number]
  const out = new Float32Array(t.data.length)
  for (let r = 0; r < rows; r++)
    for (let c = 0; c < cols; c++) out[c * rows + r] = t.data[r * cols + c] as number
  return out
}

export interface ModelOptions {
  readonly mode: Mode
  readonly lora?: LoraSpec
  /** LoRA weights to start from (an adapter being applied or resumed); else PEFT's initialisation. */
  readonly loraWeights?: ReadonlyMap<string, LoraPair>
  /** Seed of the LoRA A initialisation. */
  readonly seed?: number
  /**
   * Attention on the host with WebAssembly SIMD kernels ("simd", the CPU backends' default), in
   * JavaScript loops ("js"), or in tensor ops ("tf", the native backends' default).
   */
  readonly attention?: "simd" | "js" | "tf"
}

export class LlamaModel {
  readonly config: LlamaConfig
  readonly mode: Mode
  readonly lora: LoraSpec | undefined
  private readonly embed: T
  private readonly finalNorm: T
  private readonly lmHead: Linear | undefined
  private readonly layers: Layer[] = []
  private readonly swap: T
  readonly attention: "simd" | "js" | "tf"
  /** Trainable variables by name (HF names for full, PEFT-style names for LoRA), in a fixed order. */
  readonly variables = new Map<string, tf.Variable>()

  constructor(config: LlamaConfig, weights: ReadonlyMap<string, HostTensor>, options: ModelOptions) {
    this.config = config
    this.mode = options.mode
    this.lora = options.lora
    this.attention = options.attention ?? (["wasm", "cpu"].includes(tf.getBackend()) ? "simd" : "tf")
    this.swap = halfSwap(headDim(config))
    const full = options.mode === "full"
    const get = (name: string): HostTensor => {
      const t = weights.get(name)
      if (t === undefined) throw new Error(`missing weight ${name}`)
      return t
    }
    const param = (name: string, data: Float32Array, shape: number[]): T => {
      if (!full) return tf.tensor(data, shape)
      const v = tf.variable(tf.tensor(data, shape), true)
      this.variables.set(name, v)
      return v
    }
    const vector = (name: string) => param(name, get(name).data, [...get(name).shape])
    const linear = (name: string, layer: number, module: LoraModule | undefined, biased = false): Linear => {
      const w = get(name)
      const [outDim, inDim] = w.shape as [number, number]
      const bias = biased ? { bias: vector(biasName(name)) } : {}
      const lin: Linear =
        options.mode === "qlora" && module !== undefined
          ? { name, inDim, outDim, nf4: quantizeNf4(w.data, [outDim, inDim]), ...bias }
          : { name, inDim, outDim, wT: param(name, transposeHost(w), [inDim, outDim]), ...bias }
      const spec = options.lora
      if (spec !== undefined && module !== undefined && spec.targets.includes(module)) {
        const given = options.loraWeights?.get(name)
        let a: Float32Array
        let b: Float32Array
        if (given !== undefined) {
          a = transposeHost(given.a)
          b = transposeHost(given.b)
        } else {
          // PEFT: A Kaiming-uniform (a = √5, so bound 1/√in), B zero.
          const rng = new Rng(mixSeed(options.seed ?? 0, layer, LORA_MODULES.indexOf(module)))
          const bound = 1 / Math.sqrt(inDim)
          a = new Float32Array(inDim * spec.r)
          for (let i = 0; i < spec.r; i++)
            for (let j = 0; j < inDim; j++) a[j * spec.r + i] = Math.fround((rng.next() * 2 - 1) * bound)
          b = new Float32Array(spec.r * outDim)
        }
        const aT = tf.variable(tf.tensor(a, [inDim, spec.r]), options.mode !== "frozen")
        const bT = tf.variable(tf.tensor(b, [spec.r, outDim]), options.mode !== "frozen")
        const prefix = name.replace(/\.weight$/, "")
        this.variables.set(`${prefix}.lora_A`, aT)
        this.variables.set(`${prefix}.lora_B`, bT)
        lin.lora = { aT, bT, scale: loraScale(spec), module }
      }
      return lin
    }
    this.embed = vector(EMBED)
    for (let i = 0; i < config.nLayers; i++) {
      const n = layerNames(i)
      const lin = (k: (typeof LINEARS)[number], biased = false) => linear(n[k], i, MODULE_OF[k], biased)
      const qkv = config.qkvBias === true
      this.layers.push({
        attnNorm: vector(n.attnNorm),
        ...(config.qkNorm === true ? { qNorm: vector(n.qNorm), kNorm: vector(n.kNorm) } : {}),
        q: lin("q", qkv),
        k: lin("k", qkv),
        v: lin("v", qkv),
        o: lin("o", config.oBias === true),
        ffnNorm: vector(n.ffnNorm),
        gate: lin("gate"),
        up: lin("up"),
        down: lin("down"),
      })
    }
    this.finalNorm = vector(FINAL_NORM)
    this.lmHead = config.tiedEmbeddings ? undefined : linear(LM_HEAD, -1, undefined)
  }

  /** x [N, in] → [N, out], plus the LoRA branch when present. */
  private linear(x: T, lin: Linear, layer: number, options: ForwardOptions): T {
    let y: T
    if (lin.nf4 !== undefined) {
      const q = lin.nf4
      y = matmulLazy(
        x,
        () => tf.tensor(dequantizeNf4(q, true), [lin.inDim, lin.outDim]),
        () => tf.tensor(dequantizeNf4(q, false), [lin.outDim, lin.inDim]),
      )
    } else if (this.mode === "full") y = matmul(x, lin.wT as T)
    else y = matmulConst(x, lin.wT as T)
    if (lin.bias !== undefined) y = tf.add(y, lin.bias)
    const l = lin.lora
    if (l === undefined) return y
    const mask = options.loraMask?.(layer, l.module, [x.shape[0] as number, lin.inDim])
    const delta = matmul(matmul(applyMask(x, mask), l.aT), l.bT)
    return tf.add(y, tf.mul(delta, l.scale))
  }

  /** Hidden states after the final norm, [batch·seq, dim]. */
  hidden(batch: TokenBatch, options: ForwardOptions = {}): T {
    const c = this.config
    const { batch: B, seq: S } = batch
    const hd = headDim(c)
    const past = options.cache?.length ?? 0
    checkContext(c, past + S, "the tfjs decoder")
    const { cos, sin } = this.ropeTables(batch, past)
    const mask: AttentionMask = { past, ...(batch.segments ? { segments: batch.segments } : {}) }
    const attention = { simd: attentionSimd, js: attentionJs, tf: attentionTf }[this.attention]
    const ids = tf.tensor(batch.ids, [B * S], "int32")
    let x = this.mode === "full" ? embedding(this.embed, ids) : tf.gather(this.embed, ids)
    for (let i = 0; i < this.layers.length; i++) {
      const L = this.layers[i] as Layer
      const h = rmsnorm(x, L.attnNorm, c.normEps)
      // [B·S, heads·hd] → [B, S, heads, hd], normed per head (Qwen3), rotated
      const heads = (lin: Linear, n: number, norm: T | undefined) => {
        const t = tf.reshape(this.linear(h, lin, i, options), [B, S, n, hd])
        return rope(norm === undefined ? t : rmsnorm(t, norm, c.normEps), cos, sin, this.swap)
      }
      const q = heads(L.q, c.nHeads, L.qNorm)
      let k = heads(L.k, c.nKvHeads, L.kNorm)
      let v = tf.reshape(this.linear(h, L.v, i, options), [B, S, c.nKvHeads, hd])
      if (options.cache !== undefined) {
        const ck = options.cache.keys[i]
        const cv = options.cache.values[i]
        if (ck !== undefined && cv !== undefined) {
          k = tf.concat([ck, k], 1)
          v = tf.concat([cv, v], 1)
        }
        options.cache.keys[i] = tf.keep(k)
        options.cache.values[i] = tf.keep(v)
        ck?.dispose()
        cv?.dispose()
      }
      const att = tf.reshape(attention(q, k, v, mask), [B * S, c.nHeads * hd])
      x = tf.add(x, this.linear(att, L.o, i, options))
      const f = rmsnorm(x, L.ffnNorm, c.normEps)
      const g = swiglu(this.linear(f, L.gate, i, options), this.linear(f, L.up, i, options))
      x = tf.add(x, this.linear(g, L.down, i, options))
    }
    if (options.cache !== undefined) options.cache.length = past + S
    return rmsnorm(x, this.finalNorm, c.normEps)
  }

  /** Logits [batch·seq, vocab]. */
  logits(batch: TokenBatch, options: ForwardOptions = {}): T {
    const h = this.hidden(batch, options)
    if (this.lmHead !== undefined) return this.linear(h, this.lmHead, -1, options)
    return this.mode === "full"
      ? matmul(h, tf.transpose(this.embed))
      : matmulConst(h, tf.transpose(this.embed))
  }

  /**
   * Summed cross-entropy of next-token predictions: position t predicts
   * targets[t] (-1 = ignored). Returns [sum, count].
   */
  lossSum(batch: TokenBatch, targets: Int32Array, options: ForwardOptions = {}): T {
    const n = targets.length
    const safe = new Int32Array(n)
    const w = new Float32Array(n)
    for (let i = 0; i < n; i++) {
      const t = targets[i] as number
      if (t >= 0) {
        safe[i] = t
        w[i] = 1
      }
    }
    const logits = this.logits(batch, options)
    return crossEntropySum(
      logits,
      tf.oneHot(tf.tensor(safe, [n], "int32"), this.config.vocabSize),
      tf.tensor(w, [n, 1]),
    )
  }

  /** RoPE tables [B|1, S, 1, hd]: cos, and sin with the sign of rotate_half folded in. */
  private ropeTables(batch: TokenBatch, past: number): { cos: T; sin: T } {
    const c = this.config
    const { batch: B, seq: S } = batch
    const hd = headDim(c)
    const half = hd / 2
    const rows = batch.positions === undefined ? 1 : B
    const invFreq = ropeInvFreq(c)
    const cos = new Float32Array(rows * S * hd)
    const sin = new Float32Array(rows * S * hd)
    for (let b = 0; b < rows; b++)
      for (let s = 0; s < S; s++) {
        const pos = batch.positions === undefined ? past + s : (batch.positions[b * S + s] as number)
        const at = (b * S + s) * hd
        for (let i = 0; i < half; i++) {
          const a = pos * (invFreq[i] as number)
          cos[at + i] = cos[at + i + half] = Math.cos(a)
          sin[at + i] = -Math.sin(a)
          sin[at + i + half] = Math.sin(a)
        }
      }
    return { cos: tf.tensor(cos, [rows, S, 1, hd]), sin: tf.tensor(sin, [rows, S, 1, hd]) }
  }

  /** Float32 bytes the base weights would take, and the bytes they take as held. */
  baseBytes(): { float32: number; resident: number } {
    let float32 = 0
    let resident = 0
    const add = (n: number, held: number) => {
      float32 += n * 4
      resident += held
    }
    add(this.embed.size, this.embed.size * 4)
    add(this.finalNorm.size, this.finalNorm.size * 4)
    const lins: Linear[] = this.lmHead === undefined ? [] : [this.lmHead]
    for (const L of this.layers) {
      const norms = L.attnNorm.size + L.ffnNorm.size + (L.qNorm?.size ?? 0) + (L.kNorm?.size ?? 0)
      add(norms, norms * 4)
      for (const k of LINEARS) lins.push(L[k])
    }
    for (const l of lins) {
      add(l.inDim * l.outDim, l.nf4 !== undefined ? nf4Bytes(l.nf4) : l.inDim * l.outDim * 4)
      if (l.bias !== undefined) add(l.outDim, l.outDim * 4)
    }
    return { float32, resident }
  }

  /** Every weight in Hugging Face layout (NF4 weights dequantised). */
  toHost(): Map<string, HostTensor> {
    const out = new Map<string, HostTensor>()
    const put = (name: string, t: T) => out.set(name, { shape: t.shape, data: t.dataSync() as Float32Array })
    const putLinear = (l: Linear) => {
      const data =
        l.nf4 !== undefined
          ? dequantizeNf4(l.nf4, false)
          : (tf.tidy(() => tf.transpose(l.wT as T)).dataSync() as Float32Array)
      out.set(l.name, { shape: [l.outDim, l.inDim], data: Float32Array.from(data) })
      if (l.bias !== undefined) put(biasName(l.name), l.bias)
    }
    put(EMBED, this.embed)
    this.layers.forEach((L, i) => {
      const n = layerNames(i)
      put(n.attnNorm, L.attnNorm)
      put(n.ffnNorm, L.ffnNorm)
      if (L.qNorm !== undefined) put(n.qNorm, L.qNorm)
      if (L.kNorm !== undefined) put(n.kNorm, L.kNorm)
      for (const k of LINEARS) putLinear(L[k])
    })
    put(FINAL_NORM, this.finalNorm)
    if (this.lmHead !== undefined) putLinear(this.lmHead)
    return new Map([...out.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
  }

  /** The LoRA pairs in PEFT orientation: A [r, in], B [out, r], keyed by base weight name. */
  loraToHost(): Map<string, LoraPair> {
    const out = new Map<string, LoraPair>()
    const visit = (l: Linear) => {
      if (l.lora === undefined) return
      const a = tf.tidy(() => tf.transpose(l.lora?.aT as T))
      const b = tf.tidy(() => tf.transpose(l.lora?.bT as T))
      out.set(l.name, {
        a: { shape: a.shape, data: a.dataSync() as Float32Array },
        b: { shape: b.shape, data: b.dataSync() as Float32Array },
      })
      a.dispose()
      b.dispose()
    }
    for (const L of this.layers) for (const k of LINEARS) visit(L[k])
    return out
  }

  dispose(): void {
    const seen = new Set<T>()
    const drop = (t: T | undefined) => {
      if (t !== undefined && !seen.has(t)) {
        seen.add(t)
        t.dispose()
      }
    }
    drop(this.embed)
    drop(this.finalNorm)
    drop(this.swap)
    for (const L of this.layers) {
      drop(L.attnNorm)
      drop(L.ffnNorm)
      drop(L.qNorm)
      drop(L.kNorm)
      for (const k of LINEARS) {
        drop(L[k].wT)
        drop(L[k].bias)
        drop(L[k].lora?.aT)
        drop(L[k].lora?.bT)
      }
    }
    drop(this.lmHead?.wT)
  }
}

export { moduleWeight }

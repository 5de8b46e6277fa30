/**
 * A tuned model as plain weights: base + scale · B A for every adapted
 * projection. A QLoRA adapter learned its update against the NF4 base, not
 * the float one, so its merge starts from the base quantised and dequantised
 * exactly as the trainer held it (plugins/train/Nf4.ts: every projection of
 * every layer; embeddings, norms and lm_head stay float).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { type LlamaConfig, layerNames } from "../train/LlamaConfig.ts"
import { type HostAdapter, mergeAdapter } from "../train/Lora.ts"
import type { HostModel } from "../train/ModelIO.ts"
import { dequantizeNf4, quantizeNf4 } from "../train/Nf4.ts"
import type { HostTensor } from "../train/Safetensors.ts"

export type BaseQuantization = "nf4" | "none"

const QLORA = /^(train-)?qlora$/i
const LORA = /^(train-)?lora$/i

/** What a training record says about the base, when it says anything. */
const fromRecord = (json: unknown, depth = 0): BaseQuantization | undefined => {
  if (typeof json !== "object" || json === null || Array.isArray(json) || depth > 3) return undefined
  const o = json as Record<string, unknown>
  for (const key of ["quantization", "baseQuantization", "quant", "base_quantization", "quantize"]) {
    const v = o[key]
    if (typeof v === "string")
      return /nf4/i.test(v) ? "nf4" : /^(none|float|fp32|float32|no)$/i.test(v) ? "none" : undefined
    if (v === false || v === null) return "none"
  }
  if (o.load_in_4bit === true || o.bnb_4bit_quant_type === "nf4") return "nf4"
  for (const key of ["kind", "plugin", "step", "method", "mode", "trainer"]) {
    const v = o[key]
    if (typeof v === "string" && QLORA.test(v)) return "nf4"
    if (typeof v === "string" && LORA.test(v)) return "none"
  }
  for (const key of ["base", "model", "training", "params", "quantization_config"]) {
    const found = fromRecord(o[key], depth + 1)
    if (found !== undefined) return found
  }
  return undefined
}

const readJson = (file: string): unknown => {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8"))
  } catch {
    return undefined
  }
}

/**
 * How the base was held while the adapter trained, from the adapter's
 * training.json (the trainer's `"kind": "qlora"` or `"lora"`, a
 * `quantization` field, the step name) or its adapter_config.json (a
 * quantization_config); undefined when neither says.
 */
export const adapterBaseQuantization = (adapterDir: string): BaseQuantization | undefined =>
  fromRecord(readJson(path.join(adapterDir, "training.json"))) ??
  fromRecord(readJson(path.join(adapterDir, "adapter_config.json")))

/** The base as a QLoRA trainer sees it: every projection through NF4 and back. */
export const nf4Base = (model: HostModel): HostModel => {
  const weights = new Map(model.weights)
  for (let i = 0; i < model.config.nLayers; i++) {
    const n = layerNames(i)
    for (const name of [n.q, n.k, n.v, n.o, n.gate, n.up, n.down]) {
      const w = weights.get(name) as HostTensor
      const shape = w.shape as [number, number]
      weights.set(name, { shape, data: dequantizeNf4(quantizeNf4(w.data, shape)) })
    }
  }
  return { ...model, weights }
}

/** The tuned model's weights: the (dequantised, for QLoRA) base with the adapter merged in. */
export const mergedModel = (
  base: HostModel,
  adapter: HostAdapter,
  quantization: BaseQuantization,
): HostModel => mergeAdapter(quantization === "nf4" ? nf4Base(base) : base, adapter)

export type { LlamaConfig }

/**
 * LoRA adapters (Hu et al. 2021) as PEFT stores them: for a frozen linear
 * W [out, in], y = W x + scale · B (A x) with A [r, in], B [out, r] and
 * scale = alpha / r (alpha / √r with rsLoRA). Saved as adapter_config.json
 * and adapter_model.safetensors with PEFT's tensor names, so Python's
 * `PeftModel.from_pretrained` loads it.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { expectedShapes, type LlamaConfig, layerNames } from "./LlamaConfig.ts"
import type { HostModel } from "./ModelIO.ts"
import { type HostTensor, readSafetensors, writeSafetensors } from "./Safetensors.ts"

export const LORA_MODULES = [
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
] as const
export type LoraModule = (typeof LORA_MODULES)[number]
export const DEFAULT_TARGETS: ReadonlyArray<LoraModule> = ["q_proj", "k_proj", "v_proj", "o_proj"]

export interface LoraSpec {
  readonly r: number
  readonly alpha: number
  readonly dropout: number
  readonly targets: ReadonlyArray<LoraModule>
  readonly rslora: boolean
}

export const loraScale = (s: LoraSpec): number => (s.rslora ? s.alpha / Math.sqrt(s.r) : s.alpha / s.r)

/** One adapted projection: A [r, in], B [out, r]. */
export interface LoraPair {
  readonly a: HostTensor
  readonly b: HostTensor
}

export interface HostAdapter {
  readonly spec: LoraSpec
  /** Keyed by the base weight's Hugging Face name (model.layers.0.self_attn.q_proj.weight). */
  readonly pairs: Map<string, LoraPair>
  readonly baseModel: string
}

export class AdapterError extends Error {
  override readonly name = "AdapterError"
}

/** The base weight a module targets in layer i. */
export const moduleWeight = (i: number, m: LoraModule): string => {
  const n = layerNames(i)
  const byModule: Record<LoraModule, string> = {
    q_proj: n.q,
    k_proj: n.k,
    v_proj: n.v,
    o_proj: n.o,
    gate_proj: n.gate,
    up_proj: n.up,
    down_proj: n.down,
  }
  return byModule[m]
}

const peftPrefix = (weight: string) => `base_model.model.${weight.replace(/\.weight$/, "")}`

/** The adapter_config.json PEFT writes for a LoRA on a causal LM (sorted keys). */
export const adapterConfigJson = (spec: LoraSpec, baseModel: string): Record<string, unknown> => ({
  alpha_pattern: {},
  auto_mapping: null,
  base_model_name_or_path: baseModel,
  bias: "none",
  fan_in_fan_out: false,
  inference_mode: true,
  init_lora_weights: true,
  layers_pattern: null,
  layers_to_transform: null,
  lora_alpha: spec.alpha,
  lora_dropout: spec.dropout,
  modules_to_save: null,
  peft_type: "LORA",
  r: spec.r,
  rank_pattern: {},
  revision: null,
  target_modules: [...spec.targets].sort(),
  task_type: "CAUSAL_LM",
  use_dora: false,
  use_rslora: spec.rslora,
})

/** Writes a PEFT adapter directory; the bytes depend only on the weights and the spec. */
export const writeAdapter = (dir: string, adapter: HostAdapter): void => {
  fs.mkdirSync(dir, { recursive: true })
  const cfg = adapterConfigJson(adapter.spec, adapter.baseModel)
  fs.writeFileSync(path.join(dir, "adapter_config.json"), `${JSON.stringify(cfg, null, 2)}\n`)
  const tensors = new Map<string, HostTensor>()
  for (const [w, p] of adapter.pairs) {
    tensors.set(`${peftPrefix(w)}.lora_A.weight`, p.a)
    tensors.set(`${peftPrefix(w)}.lora_B.weight`, p.b)
  }
  fs.writeFileSync(path.join(dir, "adapter_model.safetensors"), writeSafetensors(tensors, { format: "pt" }))
}

/** Reads a PEFT LoRA directory (names with or without PEFT's ".default" adapter suffix). */
export const readAdapter = (dir: string): HostAdapter => {
  const cfgPath = path.join(dir, "adapter_config.json")
  if (!fs.existsSync(cfgPath))
    throw new AdapterError(`${dir}: no adapter_config.json (not a PEFT adapter directory)`)
  const cfg = JSON.parse(fs.readFileSync(cfgPath, "utf-8")) as Record<string, unknown>
  if (cfg.peft_type !== "LORA")
    throw new AdapterError(`${cfgPath}: peft_type ${JSON.stringify(cfg.peft_type)} is not "LORA"`)
  const r = cfg.r
  const alpha = cfg.lora_alpha
  if (typeof r !== "number" || typeof alpha !== "number")
    throw new AdapterError(`${cfgPath}: r and lora_alpha must be numbers`)
  const rawTargets = Array.isArray(cfg.target_modules) ? (cfg.target_modules as string[]) : []
  const targets = rawTargets.filter((t): t is LoraModule =>
    (LORA_MODULES as ReadonlyArray<string>).includes(t),
  )
  const spec: LoraSpec = {
    r,
    alpha,
    dropout: typeof cfg.lora_dropout === "number" ? cfg.lora_dropout : 0,
    targets,
    rslora: cfg.use_rslora === true,
  }
  const file = path.join(dir, "adapter_model.safetensors")
  if (!fs.existsSync(file)) throw new AdapterError(`${dir}: no adapter_model.safetensors`)
  const pairs = new Map<string, LoraPair>()
  const tensors = readSafetensors(file).tensors
  for (const [name, t] of tensors) {
    const m = /^base_model\.model\.(.+)\.lora_(A|B)(?:\.default)?\.weight$/.exec(name)
    if (!m) throw new AdapterError(`${file}: unexpected tensor ${name}`)
    const weight = `${m[1]}.weight`
    const prev = pairs.get(weight)
    const a = m[2] === "A" ? t : prev?.a
    const b = m[2] === "B" ? t : prev?.b
    pairs.set(weight, { a: a as HostTensor, b: b as HostTensor })
  }
  for (const [w, p] of pairs)
    if (p.a === undefined || p.b === undefined) throw new AdapterError(`${file}: ${w} lacks lora_A or lora_B`)
  return {
    spec,
    pairs,
    baseModel: typeof cfg.base_model_name_or_path === "string" ? cfg.base_model_name_or_path : "",
  }
}

/** Checks that an adapter fits a model: every pair names a weight of the right shape. */
export const checkAdapter = (config: LlamaConfig, model: HostModel, adapter: HostAdapter): void => {
  for (const [w, p] of adapter.pairs) {
    const base = model.weights.get(w)
    if (base === undefined) throw new AdapterError(`adapter targets ${w}, which the model does not have`)
    const [out, inn] = base.shape as [number, number]
    const r = adapter.spec.r
    if (p.a.shape[0] !== r || p.a.shape[1] !== inn || p.b.shape[0] !== out || p.b.shape[1] !== r)
      throw new AdapterError(
        `adapter ${w}: A [${p.a.shape.join(", ")}] and B [${p.b.shape.join(", ")}] do not fit r=${r} and weight [${out}, ${inn}] (${config.nLayers} layers)`,
      )
  }
}

/** checkAdapter against the shapes a config implies, for a model whose weights are not loaded here. */
export const checkAdapterShapes = (config: LlamaConfig, adapter: HostAdapter): void => {
  const weights = new Map<string, HostTensor>()
  for (const [name, shape] of expectedShapes(config)) weights.set(name, { shape, data: new Float32Array(0) })
  checkAdapter(config, { config, weights, source: "hf" }, adapter)
}

/** W + scale · B A for every adapted weight: a plain model that needs no adapter. */
export const mergeAdapter = (model: HostModel, adapter: HostAdapter): HostModel => {
  checkAdapter(model.config, model, adapter)
  const scale = loraScale(adapter.spec)
  const weights = new Map(model.weights)
  for (const [w, p] of adapter.pairs) {
    const base = model.weights.get(w) as HostTensor
    const [out, inn] = base.shape as [number, number]
    const r = adapter.spec.r
    const merged = Float32Array.from(base.data)
    const delta = new Float64Array(inn)
    for (let o = 0; o < out; o++) {
      delta.fill(0)
      for (let k = 0; k < r; k++) {
        const bk = (p.b.data[o * r + k] as number) * scale
        if (bk === 0) continue
        for (let i = 0; i < inn; i++) delta[i] = (delta[i] as number) + bk * (p.a.data[k * inn + i] as number)
      }
      for (let i = 0; i < inn; i++)
        merged[o * inn + i] = (merged[o * inn + i] as number) + (delta[i] as number)
    }
    weights.set(w, { shape: base.shape, data: merged })
  }
  return { ...model, weights }
}

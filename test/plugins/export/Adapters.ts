/** LoRA adapters for stories260K, written as the trainers write them (PEFT layout plus training.json). */
import * as fs from "node:fs"
import * as path from "node:path"
import { type LoraModule, type LoraSpec, moduleWeight, writeAdapter } from "../../../plugins/train/Lora.ts"
import type { HostModel } from "../../../plugins/train/ModelIO.ts"
import { Rng } from "../../../plugins/train/Rng.ts"
import type { HostTensor } from "../../../plugins/train/Safetensors.ts"

export const ALL_MODULES: LoraModule[] = [
  "q_proj",
  "k_proj",
  "v_proj",
  "o_proj",
  "gate_proj",
  "up_proj",
  "down_proj",
]

export interface AdapterOptions {
  readonly spec?: Partial<LoraSpec>
  readonly seed?: number
  /** B = 0, as PEFT initialises it: the adapter changes nothing. */
  readonly zeroB?: boolean
  /** Written to training.json. */
  readonly training?: Record<string, unknown>
}

/** Writes an adapter for `model` into `dir` and returns its spec and pairs. */
export const writeTestAdapter = (dir: string, model: HostModel, o: AdapterOptions = {}) => {
  const spec: LoraSpec = { r: 4, alpha: 8, dropout: 0, targets: ALL_MODULES, rslora: false, ...o.spec }
  const rng = new Rng(o.seed ?? 1)
  const rand = (n: number, scale: number) =>
    Float32Array.from({ length: n }, () => (rng.next() * 2 - 1) * scale)
  const pairs = new Map<string, { a: HostTensor; b: HostTensor }>()
  for (let i = 0; i < model.config.nLayers; i++)
    for (const m of spec.targets) {
      const w = moduleWeight(i, m)
      const [out, inn] = (model.weights.get(w) as HostTensor).shape as [number, number]
      pairs.set(w, {
        a: { shape: [spec.r, inn], data: rand(spec.r * inn, 1 / Math.sqrt(inn)) },
        b: { shape: [out, spec.r], data: o.zeroB ? new Float32Array(out * spec.r) : rand(out * spec.r, 0.2) },
      })
    }
  const adapter = { spec, pairs, baseModel: "stories260K" }
  writeAdapter(dir, adapter)
  fs.writeFileSync(
    path.join(dir, "training.json"),
    `${JSON.stringify(o.training ?? { kind: "lora" }, null, 2)}\n`,
  )
  return adapter
}

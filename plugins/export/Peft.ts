/**
 * A PEFT LoRA adapter directory as Hugging Face PEFT loads it: every tensor
 * is `base_model.model.<weight path>.lora_A.weight` [r, in] or `.lora_B.weight`
 * [out, r] for a module listed in adapter_config.json's target_modules, each
 * A with its B. The Adapter artifact is already in this layout; the export
 * checks it (names, shapes, pairs, config) and copies it, dropping the
 * in-memory ".default" adapter name PEFT leaves out of saved files.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { LORA_MODULES, type LoraModule } from "../train/Lora.ts"
import {
  type HostTensor,
  readSafetensors,
  type SafetensorsDtype,
  writeSafetensors,
} from "../train/Safetensors.ts"
import { DTYPES, type Dtype } from "./HfModel.ts"

export class PeftError extends Error {
  override readonly name = "PeftError"
}

const PARENT: Record<LoraModule, "self_attn" | "mlp"> = {
  q_proj: "self_attn",
  k_proj: "self_attn",
  v_proj: "self_attn",
  o_proj: "self_attn",
  gate_proj: "mlp",
  up_proj: "mlp",
  down_proj: "mlp",
}

const NAME =
  /^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_(A|B)(\.default)?\.weight$/

/** The saved name of one LoRA matrix. */
export const peftName = (layer: number, module: LoraModule, which: "A" | "B"): string =>
  `base_model.model.model.layers.${layer}.${PARENT[module]}.${module}.lora_${which}.weight`

export interface PeftAdapter {
  readonly config: Record<string, unknown>
  readonly r: number
  readonly targets: ReadonlyArray<LoraModule>
  /** Saved names (no ".default") to tensors. */
  readonly tensors: Map<string, HostTensor>
  /** Whether the file already used the saved names (so its bytes can be copied as they are). */
  readonly savedNames: boolean
  /** Each tensor's type on disk. */
  readonly dtypes: ReadonlyMap<string, SafetensorsDtype>
  /** Layers adapted, ascending. */
  readonly layers: ReadonlyArray<number>
}

/** Reads and checks a PEFT LoRA directory; every problem names the file and the tensor. */
export const checkPeftAdapter = (dir: string): PeftAdapter => {
  const cfgFile = path.join(dir, "adapter_config.json")
  const weightsFile = path.join(dir, "adapter_model.safetensors")
  if (!fs.existsSync(cfgFile)) throw new PeftError(`${dir}: no adapter_config.json (not a PEFT adapter)`)
  if (!fs.existsSync(weightsFile)) throw new PeftError(`${dir}: no adapter_model.safetensors`)
  let config: Record<string, unknown>
  try {
    config = JSON.parse(fs.readFileSync(cfgFile, "utf8")) as Record<string, unknown>
  } catch (e) {
    throw new PeftError(`${cfgFile}: invalid JSON (${(e as Error).message})`)
  }
  if (config.peft_type !== "LORA")
    throw new PeftError(`${cfgFile}: peft_type ${JSON.stringify(config.peft_type)} is not "LORA"`)
  const r = config.r
  if (typeof r !== "number" || !Number.isInteger(r) || r <= 0)
    throw new PeftError(`${cfgFile}: r must be a positive integer, got ${JSON.stringify(r)}`)
  if (typeof config.lora_alpha !== "number" || !(config.lora_alpha > 0))
    throw new PeftError(
      `${cfgFile}: lora_alpha must be a positive number, got ${JSON.stringify(config.lora_alpha)}`,
    )
  const rawTargets = config.target_modules
  if (!Array.isArray(rawTargets) || rawTargets.length === 0)
    throw new PeftError(`${cfgFile}: target_modules must be a non-empty list`)
  for (const t of rawTargets)
    if (!(LORA_MODULES as ReadonlyArray<unknown>).includes(t))
      throw new PeftError(
        `${cfgFile}: target module ${JSON.stringify(t)} is not one of ${LORA_MODULES.join(", ")}`,
      )
  const targets = rawTargets as LoraModule[]
  const file = readSafetensors(weightsFile)
  const tensors = new Map<string, HostTensor>()
  const layers = new Set<number>()
  let savedNames = true
  // module -> [out, in] seen so far, so every layer agrees.
  const dims = new Map<LoraModule, [number, number]>()
  for (const [name, t] of file.tensors) {
    const m = NAME.exec(name)
    if (m === null)
      throw new PeftError(
        `${weightsFile}: tensor ${name} is not a LoRA matrix of a Llama projection (base_model.model.model.layers.N.<self_attn|mlp>.<module>.lora_<A|B>.weight)`,
      )
    const layer = Number(m[1])
    const module = m[3] as LoraModule
    const which = m[4] as "A" | "B"
    if (PARENT[module] !== m[2])
      throw new PeftError(`${weightsFile}: tensor ${name}: ${module} belongs under ${PARENT[module]}`)
    if (!targets.includes(module))
      throw new PeftError(
        `${weightsFile}: tensor ${name}: ${module} is not in target_modules (${targets.join(", ")})`,
      )
    if (t.shape.length !== 2)
      throw new PeftError(`${weightsFile}: tensor ${name} has ${t.shape.length} dimensions, not 2`)
    const [rows, cols] = t.shape as [number, number]
    if (which === "A" ? rows !== r : cols !== r)
      throw new PeftError(
        `${weightsFile}: tensor ${name} has shape [${rows}, ${cols}]; lora_${which} must be ${which === "A" ? `[${r}, in]` : `[out, ${r}]`} for r = ${r}`,
      )
    const known = dims.get(module) ?? [0, 0]
    const side = which === "A" ? 1 : 0
    const size = which === "A" ? cols : rows
    if (known[side] !== 0 && known[side] !== size)
      throw new PeftError(
        `${weightsFile}: tensor ${name}: its ${which === "A" ? "input" : "output"} size ${size} differs from other layers' ${known[side]}`,
      )
    known[side] = size
    dims.set(module, known)
    if (m[5] !== undefined) savedNames = false
    const saved = peftName(layer, module, which)
    if (tensors.has(saved)) throw new PeftError(`${weightsFile}: ${saved} appears twice`)
    tensors.set(saved, t)
    layers.add(layer)
  }
  if (tensors.size === 0) throw new PeftError(`${weightsFile}: no LoRA tensors`)
  for (const name of tensors.keys()) {
    const other = name.endsWith("lora_A.weight")
      ? name.replace(/lora_A\.weight$/, "lora_B.weight")
      : name.replace(/lora_B\.weight$/, "lora_A.weight")
    if (!tensors.has(other)) throw new PeftError(`${weightsFile}: ${name} has no ${other.slice(-13)}`)
  }
  return {
    config,
    r,
    targets,
    tensors,
    savedNames,
    dtypes: file.dtypes,
    layers: [...layers].sort((a, b) => a - b),
  }
}

export interface PeftExportOptions {
  /** base_model_name_or_path to write (a Hugging Face id or a path); the adapter's own when absent. */
  readonly baseModel?: string | undefined
  /** Weight type of adapter_model.safetensors (float32 by default, as PEFT saves adapters). */
  readonly dtype?: Dtype | undefined
}

/**
 * Writes a checked adapter as a PEFT directory: adapter_config.json,
 * adapter_model.safetensors (the original bytes when nothing needs renaming),
 * and training.json when the adapter has one. Renamed tensors are written as
 * float32. Returns the files written.
 */
export const writePeftAdapter = (
  sourceDir: string,
  adapter: PeftAdapter,
  outDir: string,
  options: PeftExportOptions = {},
): string[] => {
  fs.mkdirSync(outDir, { recursive: true })
  const config: Record<string, unknown> = { ...adapter.config, inference_mode: true }
  if (options.baseModel !== undefined) config.base_model_name_or_path = options.baseModel
  const sorted = Object.fromEntries(
    Object.keys(config)
      .sort()
      .map((k) => [k, config[k]]),
  )
  fs.writeFileSync(path.join(outDir, "adapter_config.json"), `${JSON.stringify(sorted, null, 2)}\n`)
  const weights = path.join(outDir, "adapter_model.safetensors")
  const dtype = DTYPES[options.dtype ?? "float32"]
  if (adapter.savedNames && [...adapter.dtypes.values()].every((d) => d === dtype))
    fs.copyFileSync(path.join(sourceDir, "adapter_model.safetensors"), weights)
  else fs.writeFileSync(weights, writeSafetensors(adapter.tensors, { format: "pt" }, dtype))
  const files = ["adapter_config.json", "adapter_model.safetensors"]
  const training = path.join(sourceDir, "training.json")
  if (fs.existsSync(training)) {
    fs.copyFileSync(training, path.join(outDir, "training.json"))
    files.push("training.json")
  }
  return files
}

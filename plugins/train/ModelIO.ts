/**
 * Base models on disk: a Hugging Face Llama directory (config.json plus
 * model.safetensors or its shards) or a llama2.c checkpoint file, loaded into
 * host tensors with Hugging Face names; and the Hugging Face directory a
 * trained model is saved as.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { readLlama2c } from "./Llama2c.ts"
import { ConfigError, configFromHf, configToHf, expectedShapes, type LlamaConfig } from "./LlamaConfig.ts"
import { type HostTensor, readSafetensors, writeSafetensors } from "./Safetensors.ts"

/** Where a model's tokenizer lives: a Hugging Face tokenizer.json or a llama2.c tok*.bin. */
export interface TokenizerRef {
  readonly kind: "hf" | "llama2c"
  readonly path: string
}

export interface HostModel {
  readonly config: LlamaConfig
  readonly weights: Map<string, HostTensor>
  readonly tokenizer?: TokenizerRef
  readonly source: "hf" | "llama2c"
}

export class ModelError extends Error {
  override readonly name = "ModelError"
}

const HF_TOKENIZER_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]

const findTokenizer = (dir: string, vocabSize: number): TokenizerRef | undefined => {
  if (fs.existsSync(path.join(dir, "tokenizer.json")))
    return { kind: "hf", path: path.join(dir, "tokenizer.json") }
  const exact = path.join(dir, `tok${vocabSize}.bin`)
  if (fs.existsSync(exact)) return { kind: "llama2c", path: exact }
  const any = fs
    .readdirSync(dir)
    .filter((f) => /^tok.*\.bin$/.test(f) || f === "tokenizer.bin")
    .sort()[0]
  return any === undefined ? undefined : { kind: "llama2c", path: path.join(dir, any) }
}

const readHfWeights = (dir: string): Map<string, HostTensor> => {
  const single = path.join(dir, "model.safetensors")
  if (fs.existsSync(single)) return readSafetensors(single).tensors
  const index = path.join(dir, "model.safetensors.index.json")
  if (!fs.existsSync(index))
    throw new ModelError(`${dir}: no model.safetensors (or model.safetensors.index.json)`)
  const map = (JSON.parse(fs.readFileSync(index, "utf-8")) as { weight_map?: Record<string, string> })
    .weight_map
  if (map === undefined) throw new ModelError(`${index}: no weight_map`)
  const out = new Map<string, HostTensor>()
  for (const shard of [...new Set(Object.values(map))].sort()) {
    if (shard.includes("/") || shard.includes("\\"))
      throw new ModelError(`${index}: shard ${shard} is not a file name`)
    for (const [k, v] of readSafetensors(path.join(dir, shard)).tensors) out.set(k, v)
  }
  return out
}

/** Checks names and shapes against the config; drops buffers HF may save (rotary inv_freq, a tied lm_head). */
export const checkWeights = (config: LlamaConfig, weights: Map<string, HostTensor>, where: string) => {
  const shapes = expectedShapes(config)
  for (const name of [...weights.keys()]) {
    if (name.endsWith("rotary_emb.inv_freq") || (config.tiedEmbeddings && name === "lm_head.weight")) {
      weights.delete(name)
      continue
    }
    const want = shapes.get(name)
    if (want === undefined) throw new ModelError(`${where}: unexpected tensor ${name}`)
    const got = (weights.get(name) as HostTensor).shape
    if (got.length !== want.length || got.some((d, i) => d !== want[i]))
      throw new ModelError(
        `${where}: tensor ${name} has shape [${got.join(", ")}], config.json implies [${want.join(", ")}]`,
      )
  }
  for (const name of shapes.keys())
    if (!weights.has(name)) throw new ModelError(`${where}: missing tensor ${name}`)
}

/** Loads a Hugging Face Llama directory or a llama2.c checkpoint file. */
export const loadModel = (pathOrDir: string): HostModel => {
  if (!fs.existsSync(pathOrDir)) throw new ModelError(`${pathOrDir}: no such file or directory`)
  if (fs.statSync(pathOrDir).isDirectory()) {
    const cfgPath = path.join(pathOrDir, "config.json")
    if (!fs.existsSync(cfgPath)) {
      // A directory holding just a llama2.c checkpoint is a llama2.c source too.
      const bins = fs
        .readdirSync(pathOrDir)
        .filter((f) => f.endsWith(".bin") && !/^tok.*\.bin$/.test(f) && f !== "tokenizer.bin")
      if (bins.length === 1) return loadModel(path.join(pathOrDir, bins[0] as string))
      throw new ModelError(`${pathOrDir}: no config.json (not a Hugging Face model directory)`)
    }
    let json: unknown
    try {
      json = JSON.parse(fs.readFileSync(cfgPath, "utf-8"))
    } catch (e) {
      throw new ModelError(`${cfgPath}: invalid JSON (${e instanceof Error ? e.message : String(e)})`)
    }
    const config = configFromHf(json as Record<string, unknown>, cfgPath)
    const weights = readHfWeights(pathOrDir)
    checkWeights(config, weights, pathOrDir)
    const tokenizer = findTokenizer(pathOrDir, config.vocabSize)
    return { config, weights, source: "hf", ...(tokenizer ? { tokenizer } : {}) }
  }
  const { config, weights } = readLlama2c(pathOrDir)
  const tokenizer = findTokenizer(path.dirname(pathOrDir), config.vocabSize)
  return { config, weights, source: "llama2c", ...(tokenizer ? { tokenizer } : {}) }
}

/**
 * A model's config and tokenizer without its weights, for the torch backend,
 * which loads them itself: a Hugging Face directory's config.json, read as
 * the tfjs decoder reads it where it can, else leniently (any architecture
 * transformers loads: the vocabulary, context and special ids are what
 * tunegraph needs of it; `exact` is false then); a llama2.c checkpoint is
 * read whole.
 */
export const loadModelInfo = (
  pathOrDir: string,
): Omit<HostModel, "weights"> & { readonly exact: boolean } => {
  const cfgPath = path.join(pathOrDir, "config.json")
  if (!fs.existsSync(pathOrDir) || !fs.statSync(pathOrDir).isDirectory() || !fs.existsSync(cfgPath)) {
    const { weights: _, ...info } = loadModel(pathOrDir)
    return { ...info, exact: true }
  }
  let json: Record<string, unknown>
  try {
    json = JSON.parse(fs.readFileSync(cfgPath, "utf-8")) as Record<string, unknown>
  } catch (e) {
    throw new ModelError(`${cfgPath}: invalid JSON (${e instanceof Error ? e.message : String(e)})`)
  }
  let config: LlamaConfig
  let exact = true
  try {
    config = configFromHf(json, cfgPath)
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e
    config = lenientConfig(json, cfgPath)
    exact = false
  }
  const tokenizer = findTokenizer(pathOrDir, config.vocabSize)
  return { config, source: "hf", exact, ...(tokenizer ? { tokenizer } : {}) }
}

/** The fields every causal LM's config.json has, whatever its architecture (lists of ids: the first). */
const lenientConfig = (json: Record<string, unknown>, where: string): LlamaConfig => {
  const text = (json.text_config ?? json) as Record<string, unknown>
  const num = (key: string, fallback?: number): number => {
    const v = text[key] ?? json[key]
    if (typeof v === "number" && Number.isFinite(v)) return v
    if (fallback !== undefined) return fallback
    throw new ModelError(`${where}: ${key} must be a number, got ${JSON.stringify(v)}`)
  }
  const id = (key: string, fallback: number): number => {
    const v = json[key] ?? text[key]
    const first = Array.isArray(v) ? v[0] : v
    return typeof first === "number" ? first : fallback
  }
  const heads = num("num_attention_heads", 1)
  return {
    dim: num("hidden_size", 0),
    hiddenDim: num("intermediate_size", 0),
    nLayers: num("num_hidden_layers", 0),
    nHeads: heads,
    nKvHeads: num("num_key_value_heads", heads),
    vocabSize: num("vocab_size"),
    maxSeqLen: num("max_position_embeddings", 2048),
    normEps: num("rms_norm_eps", 1e-6),
    ropeTheta: num("rope_theta", 10000),
    tiedEmbeddings: json.tie_word_embeddings === true,
    bosId: id("bos_token_id", 1),
    eosId: id("eos_token_id", 2),
  }
}

/**
 * Saves a Hugging Face Llama directory: config.json, model.safetensors and
 * the tokenizer files when known. The bytes depend only on the weights.
 */
export const saveHfModel = (
  dir: string,
  model: {
    config: LlamaConfig
    weights: ReadonlyMap<string, HostTensor>
    tokenizer?: TokenizerRef | undefined
  },
): void => {
  fs.mkdirSync(dir, { recursive: true })
  fs.writeFileSync(path.join(dir, "config.json"), `${JSON.stringify(configToHf(model.config), null, 2)}\n`)
  fs.writeFileSync(path.join(dir, "model.safetensors"), writeSafetensors(model.weights, { format: "pt" }))
  const t = model.tokenizer
  if (t === undefined) return
  if (t.kind === "llama2c") fs.copyFileSync(t.path, path.join(dir, path.basename(t.path)))
  else
    for (const f of HF_TOKENIZER_FILES) {
      const src = path.join(path.dirname(t.path), f)
      if (fs.existsSync(src)) fs.copyFileSync(src, path.join(dir, f))
    }
}

export { ConfigError }

/**
 * Base models on disk: a Hugging Face Llama directory (config.json plus
 * model.safetensors, or the shards model.safetensors.index.json names) or a
 * llama2.c checkpoint file, loaded into float32 host tensors with Hugging
 * Face names; and the Hugging Face directory a trained model is saved as.
 *
 * Loading checks every header against the index and config.json before a
 * single weight is read, then reads one tensor at a time from disk into its
 * float32 array, so the peak is about the float32 weights themselves
 * (1.01x for a 207M-parameter bfloat16 checkpoint, bench/load.ts).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { readLlama2c } from "./Llama2c.ts"
import { ConfigError, configFromHf, configToHf, expectedShapes, type LlamaConfig } from "./LlamaConfig.ts"
import {
  type HostTensor,
  type SafetensorsDtype,
  SafetensorsReader,
  type TensorEntry,
  writeSafetensorsFile,
} from "./Safetensors.ts"

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
  /**
   * The weights' type on disk (config.json's dtype, else the tensors'): they
   * are float32 in memory whatever it is, and saved back in it by default.
   */
  readonly dtype?: SafetensorsDtype
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

/** Where each tensor of a Hugging Face directory lives: one file, or the shards an index names. */
interface WeightFiles {
  readonly readers: ReadonlyArray<SafetensorsReader>
  /** Tensor name to the reader of the file holding it. */
  readonly at: ReadonlyMap<string, SafetensorsReader>
}

const closeAll = (readers: ReadonlyArray<SafetensorsReader>) => {
  for (const r of readers) r.close()
}

/**
 * Opens model.safetensors, or every shard model.safetensors.index.json
 * names, reading only their headers. The index and the shards must agree:
 * a missing shard, a tensor the index lists that its shard lacks, or a tensor
 * a shard holds that the index does not list is an error naming both.
 */
const openWeights = (dir: string): WeightFiles => {
  const single = path.join(dir, "model.safetensors")
  if (fs.existsSync(single)) {
    const r = SafetensorsReader.open(single)
    return { readers: [r], at: new Map(r.names.map((n) => [n, r])) }
  }
  const index = path.join(dir, "model.safetensors.index.json")
  if (!fs.existsSync(index))
    throw new ModelError(`${dir}: no model.safetensors (or model.safetensors.index.json)`)
  let json: unknown
  try {
    json = JSON.parse(fs.readFileSync(index, "utf-8"))
  } catch (e) {
    throw new ModelError(`${index}: invalid JSON (${e instanceof Error ? e.message : String(e)})`)
  }
  const map = (json as { weight_map?: unknown } | null)?.weight_map
  if (typeof map !== "object" || map === null || Array.isArray(map))
    throw new ModelError(`${index}: weight_map must be an object of tensor name to shard file`)
  const byShard = new Map<string, string[]>()
  for (const [tensor, shard] of Object.entries(map as Record<string, unknown>)) {
    if (typeof shard !== "string" || shard === "" || /[\\/]/.test(shard) || shard === "." || shard === "..")
      throw new ModelError(
        `${index}: weight_map[${JSON.stringify(tensor)}] is ${JSON.stringify(shard)}, not a file name in ${dir}`,
      )
    byShard.set(shard, [...(byShard.get(shard) ?? []), tensor])
  }
  if (byShard.size === 0) throw new ModelError(`${index}: weight_map lists no tensors`)
  const readers: SafetensorsReader[] = []
  const at = new Map<string, SafetensorsReader>()
  try {
    for (const [shard, tensors] of [...byShard].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
      const file = path.join(dir, shard)
      if (!fs.existsSync(file))
        throw new ModelError(
          `${index}: shard ${shard} (holding ${tensors[0]}${tensors.length > 1 ? ` and ${tensors.length - 1} more` : ""}) is missing: no ${file}`,
        )
      const r = SafetensorsReader.open(file)
      readers.push(r)
      for (const t of tensors)
        if (r.entry(t) === undefined)
          throw new ModelError(
            `${file}: tensor ${t} is listed in ${path.basename(index)} but absent from this shard`,
          )
      for (const t of r.names) {
        if ((map as Record<string, unknown>)[t] !== shard)
          throw new ModelError(
            `${file}: tensor ${t} is in this shard but ${path.basename(index)} ${
              (map as Record<string, unknown>)[t] === undefined
                ? "does not list it"
                : `places it in ${(map as Record<string, string>)[t]}`
            }`,
          )
        at.set(t, r)
      }
    }
  } catch (e) {
    closeAll(readers)
    throw e
  }
  return { readers, at }
}

/** Buffers Hugging Face saves beside the weights, which the model recomputes or shares. */
const isDropped = (config: LlamaConfig, name: string) =>
  name.endsWith("rotary_emb.inv_freq") || (config.tiedEmbeddings && name === "lm_head.weight")

/**
 * Checks names and shapes from the headers against the config before any
 * tensor is read, so a wrong file fails fast, naming the file and tensor.
 */
const checkHeaders = (config: LlamaConfig, files: WeightFiles, dir: string) => {
  const shapes = expectedShapes(config)
  for (const [name, r] of files.at) {
    if (isDropped(config, name)) continue
    const want = shapes.get(name)
    if (want === undefined) throw new ModelError(`${r.file}: unexpected tensor ${name}`)
    const e = r.entry(name) as TensorEntry
    if (e.shape.length !== want.length || e.shape.some((d, i) => d !== want[i]))
      throw new ModelError(
        `${r.file}: tensor ${name} has shape [${e.shape.join(", ")}], config.json implies [${want.join(", ")}]`,
      )
    if (e.dtype !== "F32" && e.dtype !== "F16" && e.dtype !== "BF16")
      throw new ModelError(`${r.file}: tensor ${name} is ${e.dtype}; tunegraph loads F32, F16 and BF16`)
  }
  const where =
    files.readers.length === 1 && path.basename(files.readers[0]!.file) === "model.safetensors"
      ? files.readers[0]!.file
      : path.join(dir, "model.safetensors.index.json")
  for (const name of shapes.keys())
    if (!files.at.has(name)) throw new ModelError(`${where}: missing tensor ${name}`)
}

/** The weights' type as transformers' dtype="auto" picks it: config.json's, else the first float tensor's. */
const sourceDtype = (json: Record<string, unknown>, files: WeightFiles): SafetensorsDtype => {
  const named = json.dtype ?? json.torch_dtype
  if (typeof named === "string" && named in FROM_TORCH) return FROM_TORCH[named] as SafetensorsDtype
  for (const r of files.readers)
    for (const name of r.names) {
      const d = r.entry(name)?.dtype
      if (d === "F32" || d === "F16" || d === "BF16") return d
    }
  return "F32"
}

const FROM_TORCH: Record<string, SafetensorsDtype> = { float32: "F32", float16: "F16", bfloat16: "BF16" }
export const TORCH_DTYPE: Record<SafetensorsDtype, string> = {
  F32: "float32",
  F16: "float16",
  BF16: "bfloat16",
}

/** Checks names and shapes against the config; drops buffers HF may save (rotary inv_freq, a tied lm_head). */
export const checkWeights = (config: LlamaConfig, weights: Map<string, HostTensor>, where: string) => {
  const shapes = expectedShapes(config)
  for (const name of [...weights.keys()]) {
    if (isDropped(config, name)) {
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
    const files = openWeights(pathOrDir)
    const weights = new Map<string, HostTensor>()
    let dtype: SafetensorsDtype
    try {
      checkHeaders(config, files, pathOrDir)
      dtype = sourceDtype(json as Record<string, unknown>, files)
      // One tensor at a time, from disk straight into its float32 array.
      for (const [name, r] of [...files.at].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
        if (!isDropped(config, name)) weights.set(name, r.read(name))
    } finally {
      closeAll(files.readers)
    }
    const tokenizer = findTokenizer(pathOrDir, config.vocabSize)
    return { config, weights, source: "hf", dtype, ...(tokenizer ? { tokenizer } : {}) }
  }
  const { config, weights } = readLlama2c(pathOrDir)
  const tokenizer = findTokenizer(path.dirname(pathOrDir), config.vocabSize)
  return { config, weights, source: "llama2c", dtype: "F32", ...(tokenizer ? { tokenizer } : {}) }
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
 * the tokenizer files when known. The bytes depend only on the weights and
 * these fields. Weights are stored as float32 (what trained, exactly) unless
 * `store` says otherwise; config.json's dtype (torch_dtype before transformers 5) is the model's own type
 * (a bf16 base fine-tuned stays a bf16 model, as transformers loads it with
 * dtype="auto"), and `_name_or_path` the name of the base it came from.
 */
export const saveHfModel = (
  dir: string,
  model: {
    config: LlamaConfig
    weights: ReadonlyMap<string, HostTensor>
    tokenizer?: TokenizerRef | undefined
    dtype?: SafetensorsDtype | undefined
  },
  options: { readonly store?: SafetensorsDtype; readonly name?: string } = {},
): void => {
  fs.mkdirSync(dir, { recursive: true })
  const config = {
    ...(options.name === undefined ? {} : { _name_or_path: options.name }),
    ...configToHf(model.config, TORCH_DTYPE[model.dtype ?? "F32"]),
  }
  fs.writeFileSync(path.join(dir, "config.json"), `${JSON.stringify(config, null, 2)}\n`)
  writeSafetensorsFile(path.join(dir, "model.safetensors"), model.weights, { format: "pt" }, options.store)
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

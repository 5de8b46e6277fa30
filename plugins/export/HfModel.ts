/**
 * A Hugging Face Llama directory that `LlamaForCausalLM.from_pretrained` and
 * `AutoTokenizer.from_pretrained` load: config.json, generation_config.json,
 * model.safetensors (float32, float16 or bfloat16) and the tokenizer files.
 *
 * A llama2.c tokenizer (tok*.bin) is copied as it is and also converted to
 * tokenizer.json, tokenizer_config.json and special_tokens_map.json
 * (TokenizerJson.ts), which encode the same ids.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { configToHf, type LlamaConfig } from "../train/LlamaConfig.ts"
import { type HostTensor, type SafetensorsDtype, writeSafetensorsFile } from "../train/Safetensors.ts"
import { hfTokenizerFilesFromBin } from "./TokenizerJson.ts"

export const DTYPES = { float32: "F32", float16: "F16", bfloat16: "BF16" } as const
export type Dtype = keyof typeof DTYPES

/** The export name of a safetensors dtype. */
export const dtypeName = (d: SafetensorsDtype): Dtype =>
  (Object.keys(DTYPES) as Dtype[]).find((k) => DTYPES[k] === d) ?? "float32"

const HF_TOKENIZER_FILES = [
  "tokenizer.json",
  "tokenizer_config.json",
  "special_tokens_map.json",
  "tokenizer.model",
]

/** The tokenizer to ship with a model: a tokenizer.json, a directory holding one, or a llama2.c tok*.bin. */
export interface TokenizerSource {
  readonly path: string
}

const writeJson = (file: string, value: unknown) =>
  fs.writeFileSync(file, `${JSON.stringify(value, null, 2)}\n`)

/** Copies or converts the tokenizer into `dir`; returns what it did, for the log. */
export const writeTokenizer = (dir: string, source: TokenizerSource, maxLength: number): string => {
  const st = fs.statSync(source.path)
  if (st.isDirectory()) {
    const present = HF_TOKENIZER_FILES.filter((f) => fs.existsSync(path.join(source.path, f)))
    if (present.includes("tokenizer.json")) {
      for (const f of present) fs.copyFileSync(path.join(source.path, f), path.join(dir, f))
      return `copied ${present.join(", ")}`
    }
    const bins = fs.readdirSync(source.path).filter((f) => /^tok.*\.bin$/.test(f))
    if (bins.length !== 1)
      throw new Error(
        `${source.path}: no tokenizer.json and ${bins.length === 0 ? "no" : "several"} tok*.bin`,
      )
    return writeTokenizer(dir, { path: path.join(source.path, bins[0] as string) }, maxLength)
  }
  const base = path.basename(source.path)
  if (base.endsWith(".json")) {
    fs.copyFileSync(source.path, path.join(dir, "tokenizer.json"))
    return "copied tokenizer.json"
  }
  fs.copyFileSync(source.path, path.join(dir, base))
  const files = hfTokenizerFilesFromBin(source.path, maxLength)
  for (const [name, value] of Object.entries(files)) writeJson(path.join(dir, name), value)
  return `copied ${base} and converted it to ${Object.keys(files).join(", ")}`
}

/** Writes config.json, generation_config.json and model.safetensors. */
export const writeHfModel = (
  dir: string,
  model: { readonly config: LlamaConfig; readonly weights: ReadonlyMap<string, HostTensor> },
  dtype: Dtype = "float32",
): void => {
  fs.mkdirSync(dir, { recursive: true })
  const config = configToHf(model.config, dtype)
  writeJson(path.join(dir, "config.json"), config)
  writeJson(path.join(dir, "generation_config.json"), {
    bos_token_id: model.config.bosId,
    eos_token_id: model.config.eosIds === undefined ? model.config.eosId : [...model.config.eosIds],
  })
  // A tied lm_head is not stored, as transformers saves tied weights once.
  const weights = new Map(
    [...model.weights].filter(([k]) => !(model.config.tiedEmbeddings && k === "lm_head.weight")),
  )
  // Tensor by tensor, so a large model is never encoded whole in memory.
  writeSafetensorsFile(path.join(dir, "model.safetensors"), weights, { format: "pt" }, DTYPES[dtype])
}

/**
 * One interface over the tokenizers a pipeline can name: a Hugging Face
 * `tokenizer.json` (encoded by the `tokenizers` package itself, so ids are
 * exactly its own) and llama2.c's `tok*.bin`. Loaded from a Tokenizer
 * artifact: the file itself, or a directory holding `tokenizer.json` (with
 * `tokenizer_config.json` for special tokens and the chat template) or a
 * `tok*.bin`.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { StepError } from "../../core/Plugin.ts"
import { Llama2cTokenizer } from "./Tok512.ts"

export interface TextTokenizer {
  readonly type: "huggingface" | "llama2c"
  /** The file the vocabulary came from. */
  readonly file: string
  readonly vocabSize: number
  readonly bosId: number | undefined
  readonly eosId: number
  readonly padId: number
  readonly bosToken: string | undefined
  readonly eosToken: string
  /** Whether the model expects BOS in front of each sequence (tokenizer_config's add_bos_token; always for llama2.c). */
  readonly addsBos: boolean
  /** Settings of the file that were overridden (a tokenizer.json's own truncation or padding), for the report. */
  readonly notes: ReadonlyArray<string>
  /** The model's own Jinja chat template (tokenizer_config.json), when it has one. */
  readonly chatTemplate: string | undefined
  /** Ids of each text, without special tokens. `continued[i]` marks a text that follows another in the same sequence. */
  encodeBatch(texts: ReadonlyArray<string>, continued?: ReadonlyArray<boolean>): Promise<number[][]>
  encode(text: string): Promise<number[]>
  decode(ids: ReadonlyArray<number>, options?: { readonly skipSpecial?: boolean }): Promise<string>
}

const tokenizerError = (file: string, message: string, extra: { line?: number; field?: string } = {}) =>
  new StepError({ message, file, ...extra })

/** Loads the tokenizer a Tokenizer artifact (or any path to one) holds. */
export const loadTokenizer = async (source: string): Promise<TextTokenizer> => {
  let st: fs.Stats
  try {
    st = fs.statSync(source)
  } catch {
    throw tokenizerError(source, `tokenizer ${source} does not exist`)
  }
  if (st.isDirectory()) {
    const json = path.join(source, "tokenizer.json")
    if (fs.existsSync(json)) return HfTokenizer.load(json, path.join(source, "tokenizer_config.json"))
    const bins = fs.readdirSync(source).filter((f) => /^tok.*\.bin$/.test(f))
    if (bins.length === 1)
      return new Llama2cTextTokenizer(
        Llama2cTokenizer.fromFile(path.join(source, bins[0]!)),
        path.join(source, bins[0]!),
      )
    throw tokenizerError(
      source,
      `${source} holds no tokenizer: expected tokenizer.json or one tok*.bin` +
        (bins.length > 1 ? ` (found ${bins.join(", ")})` : ""),
    )
  }
  if (looksLikeJson(source)) return HfTokenizer.load(source, undefined)
  return new Llama2cTextTokenizer(Llama2cTokenizer.fromFile(source), source)
}

const looksLikeJson = (file: string): boolean => {
  if (file.endsWith(".json")) return true
  const fd = fs.openSync(file, "r")
  try {
    const head = Buffer.alloc(64)
    const n = fs.readSync(fd, head, 0, 64, 0)
    return /^\s*\{/.test(head.subarray(0, n).toString("latin1"))
  } finally {
    fs.closeSync(fd)
  }
}

/** Parses JSON, turning a syntax error into the file, line and column where it is. */
export const parseJsonFile = (file: string, text: string): unknown => {
  try {
    return JSON.parse(text)
  } catch (e) {
    const msg = (e as Error).message
    const pos = /position (\d+)/.exec(msg)
    const end = /end of JSON input/.test(msg)
    if (pos || end) {
      const at = pos ? Number(pos[1]) : text.length
      const before = text.slice(0, at)
      const line = before.split("\n").length
      const column = at - before.lastIndexOf("\n")
      throw tokenizerError(file, `${file}:${line}:${column}: invalid JSON (${msg})`, { line })
    }
    throw tokenizerError(file, `${file}: invalid JSON (${msg})`)
  }
}

const isRecord = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v)

/** A special token in tokenizer_config.json: a string, or an AddedToken object with `content`. */
const tokenString = (file: string, config: Record<string, unknown>, field: string): string | undefined => {
  const v = config[field]
  if (v === undefined || v === null) return undefined
  if (typeof v === "string") return v
  if (isRecord(v) && typeof v.content === "string") return v.content
  throw tokenizerError(
    file,
    `${file}: ${field} must be a string or {"content": string}, got ${JSON.stringify(v)}`,
    { field },
  )
}

const chatTemplateOf = (file: string, config: Record<string, unknown>): string | undefined => {
  const t = config.chat_template
  if (t === undefined || t === null) return undefined
  if (typeof t === "string") return t
  // Several named templates: the one called "default" is what apply_chat_template uses.
  if (Array.isArray(t)) {
    const named = t.find((x) => isRecord(x) && x.name === "default")
    if (isRecord(named) && typeof named.template === "string") return named.template
  }
  throw tokenizerError(file, `${file}: chat_template must be a string or a list with a "default" template`, {
    field: "chat_template",
  })
}

/** End-of-text tokens by convention, for a tokenizer.json that comes without tokenizer_config.json. */
const EOS_CANDIDATES = ["</s>", "<|endoftext|>", "<|end_of_text|>", "<|im_end|>", "<eos>", "<|eot_id|>"]
const BOS_CANDIDATES = ["<s>", "<|begin_of_text|>", "<bos>"]

type HfNative = import("tokenizers").Tokenizer

class HfTokenizer implements TextTokenizer {
  readonly type = "huggingface"
  private constructor(
    private readonly native: HfNative,
    readonly file: string,
    readonly vocabSize: number,
    readonly bosId: number | undefined,
    readonly eosId: number,
    readonly padId: number,
    readonly bosToken: string | undefined,
    readonly eosToken: string,
    readonly addsBos: boolean,
    readonly chatTemplate: string | undefined,
    readonly notes: ReadonlyArray<string>,
  ) {}

  static async load(file: string, configFile: string | undefined): Promise<HfTokenizer> {
    let text: string
    try {
      text = fs.readFileSync(file, "utf8")
    } catch (e) {
      throw tokenizerError(file, `cannot read tokenizer ${file}: ${(e as Error).message}`)
    }
    const json = parseJsonFile(file, text)
    if (!isRecord(json) || !isRecord(json.model)) {
      throw tokenizerError(file, `${file} is not a Hugging Face tokenizer.json: it has no "model" object`, {
        field: "model",
      })
    }
    const { Tokenizer } = await import("tokenizers")
    let native: HfNative
    try {
      native = Tokenizer.fromString(text)
    } catch (e) {
      throw tokenizerError(file, `${file} is not a valid tokenizer.json: ${(e as Error).message}`)
    }
    // tokenizer.json may carry truncation (GPT-2's cuts at 50 tokens) or padding; maxLength and overflow decide here.
    const notes: string[] = []
    const truncation = json.truncation
    if (isRecord(truncation)) {
      notes.push(
        `${path.basename(file)} truncates at ${String(truncation.max_length)} tokens; that setting is ignored (maxLength and overflow apply)`,
      )
    }
    if (isRecord(json.padding)) notes.push(`${path.basename(file)} pads sequences; that setting is ignored`)
    native.disableTruncation()
    native.disablePadding()
    let config: Record<string, unknown> = {}
    if (configFile !== undefined && fs.existsSync(configFile)) {
      const c = parseJsonFile(configFile, fs.readFileSync(configFile, "utf8"))
      if (!isRecord(c)) throw tokenizerError(configFile, `${configFile} must hold a JSON object`)
      config = c
    }
    const cfg = configFile ?? file
    const idOf = (token: string | undefined, field: string): number | undefined => {
      if (token === undefined) return undefined
      const id = native.tokenToId(token)
      if (id === null || id === undefined) {
        throw tokenizerError(
          cfg,
          `${cfg}: ${field} ${JSON.stringify(token)} is not in the vocabulary of ${file}`,
          { field },
        )
      }
      return id
    }
    const known = (list: ReadonlyArray<string>) => list.find((t) => native.tokenToId(t) != null)
    const eosToken = tokenString(cfg, config, "eos_token") ?? known(EOS_CANDIDATES)
    if (eosToken === undefined) {
      throw tokenizerError(
        file,
        `${file}: no end-of-sequence token: put tokenizer_config.json with "eos_token" beside tokenizer.json`,
        { field: "eos_token" },
      )
    }
    const bosToken = tokenString(cfg, config, "bos_token") ?? known(BOS_CANDIDATES)
    const eosId = idOf(eosToken, "eos_token")!
    const bosId = idOf(bosToken, "bos_token")
    const padId = idOf(tokenString(cfg, config, "pad_token"), "pad_token") ?? eosId
    const addsBos = config.add_bos_token === true && bosId !== undefined
    return new HfTokenizer(
      native,
      file,
      native.getVocabSize(true),
      bosId,
      eosId,
      padId,
      bosToken,
      eosToken,
      addsBos,
      chatTemplateOf(cfg, config),
      notes,
    )
  }

  async encodeBatch(texts: ReadonlyArray<string>): Promise<number[][]> {
    const encodings = await this.native.encodeBatch(texts as string[], { addSpecialTokens: false })
    return encodings.map((e) => e.getIds())
  }

  async encode(text: string): Promise<number[]> {
    return (await this.native.encode(text, null, { addSpecialTokens: false })).getIds()
  }

  decode(ids: ReadonlyArray<number>, options: { readonly skipSpecial?: boolean } = {}): Promise<string> {
    return this.native.decode(ids as number[], options.skipSpecial ?? true)
  }
}

class Llama2cTextTokenizer implements TextTokenizer {
  readonly type = "llama2c"
  readonly vocabSize: number
  readonly bosId: number
  readonly eosId: number
  readonly padId = 0
  readonly bosToken = "<s>"
  readonly eosToken = "</s>"
  readonly addsBos = true
  readonly chatTemplate = undefined
  readonly notes = []
  constructor(
    readonly tok: Llama2cTokenizer,
    readonly file: string,
  ) {
    this.vocabSize = tok.vocabSize
    this.bosId = tok.bosId
    this.eosId = tok.eosId
  }

  // Only a sequence's first text gets SentencePiece's dummy-prefix space, as if the parts were one string.
  async encodeBatch(texts: ReadonlyArray<string>, continued?: ReadonlyArray<boolean>): Promise<number[][]> {
    return texts.map((t, i) => this.tok.encode(t, { dummyPrefix: !(continued?.[i] ?? false) }))
  }

  async encode(text: string): Promise<number[]> {
    return this.tok.encode(text)
  }

  async decode(
    ids: ReadonlyArray<number>,
    options: { readonly skipSpecial?: boolean } = {},
  ): Promise<string> {
    return this.tok.decode(ids, options)
  }
}

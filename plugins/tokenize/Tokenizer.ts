/**
 * One interface over the tokenizers a pipeline can name: a Hugging Face
 * `tokenizer.json` (encoded by the `tokenizers` package itself, so ids are
 * exactly its own) and llama2.c's `tok*.bin`. Loaded from a Tokenizer
 * artifact: the file itself, or a directory holding a `tok*.bin` or, as a
 * Hugging Face model directory does, `tokenizer.json` with
 *
 *   tokenizer_config.json      bos/eos/pad/unk tokens (strings or AddedToken
 *                              objects), add_bos_token / add_eos_token, and
 *                              chat_template (a string or named templates)
 *   special_tokens_map.json    the tokens tokenizer_config.json leaves out
 *   chat_template.jinja        the template as transformers 5 saves it; it
 *                              wins over tokenizer_config.json's, and
 *                              additional_chat_templates/*.jinja are named ones
 *   generation_config.json     eos_token_id, a number or a list (Llama 3 stops
 *                              at <|eot_id|>, <|eom_id|> and <|end_of_text|>);
 *                              config.json's when there is none
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { StepError } from "../../core/Plugin.ts"
import { type PartIds, partIdsOf, splitPartIds } from "./Encode.ts"
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
  /** Every id that ends a generated answer: eosId and generation_config.json's eos_token_id, in that order. */
  readonly eosIds: ReadonlyArray<number>
  /** The text of each of eosIds, for stop strings. */
  readonly eosTokens: ReadonlyArray<string>
  /**
   * Whether the model expects BOS in front of each sequence: tokenizer_config's add_bos_token, else whether
   * tokenizer.json's post-processor adds it (Llama 3, Mistral); always for llama2.c.
   */
  readonly addsBos: boolean
  /** Whether it appends EOS to each sequence (add_eos_token, else the post-processor); never for llama2.c. */
  readonly addsEos: boolean
  /** Settings of the file that were overridden (a tokenizer.json's own truncation or padding), for the report. */
  readonly notes: ReadonlyArray<string>
  /** The model's own Jinja chat template (chat_template.jinja or tokenizer_config.json), when it has one. */
  readonly chatTemplate: string | undefined
  /** The file the chat template was read from, for errors. */
  readonly chatTemplateFile: string | undefined
  /** The named special tokens a chat template sees (bos_token, eos_token, pad_token, unk_token, ...), as transformers passes them. */
  readonly specialTokens: Readonly<Record<string, string>>
  /** Ids of each text, without special tokens. `continued[i]` marks a text that follows another in the same sequence. */
  encodeBatch(texts: ReadonlyArray<string>, continued?: ReadonlyArray<boolean>): Promise<number[][]>
  /** The same ids as encodeBatch, as ranges of the tokenizer's own arrays (no copy per text). */
  encodeParts(texts: ReadonlyArray<string>, continued?: ReadonlyArray<boolean>): Promise<PartIds>
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
    if (fs.existsSync(json)) return HfTokenizer.load(json, source)
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

/**
 * The text of each value of a JSON object's top-level keys (the last one of a repeated key, as JSON.parse keeps),
 * for a text known to be valid JSON: a tokenizer.json's model and vocabulary are skipped, not parsed.
 */
export const topLevelValues = (text: string): Map<string, string> => {
  const out = new Map<string, string>()
  const n = text.length
  /** Past the string whose opening quote is at i. */
  const skipString = (i: number): number => {
    let j = i + 1
    for (;;) {
      const q = text.indexOf('"', j)
      if (q < 0) return n
      let k = q - 1
      while (text.charCodeAt(k) === 92) k--
      if ((q - 1 - k) % 2 === 0) return q + 1
      j = q + 1
    }
  }
  const isSpace = (c: number) => c === 32 || c === 10 || c === 13 || c === 9
  let i = 0
  while (i < n && isSpace(text.charCodeAt(i))) i++
  if (text.charCodeAt(i) !== 123) return out
  i++
  for (;;) {
    while (i < n && (isSpace(text.charCodeAt(i)) || text.charCodeAt(i) === 44)) i++
    if (i >= n || text.charCodeAt(i) !== 34) return out
    const keyEnd = skipString(i)
    const key = JSON.parse(text.slice(i, keyEnd)) as string
    i = keyEnd
    while (i < n && (isSpace(text.charCodeAt(i)) || text.charCodeAt(i) === 58)) i++
    const start = i
    let depth = 0
    while (i < n) {
      const c = text.charCodeAt(i)
      if (c === 34) {
        i = skipString(i)
        if (depth === 0) break
        continue
      }
      if (c === 123 || c === 91) depth++
      else if (c === 125 || c === 93) {
        if (depth === 0) break
        depth--
        if (depth === 0) {
          i++
          break
        }
      } else if (depth === 0 && (c === 44 || isSpace(c))) break
      i++
    }
    out.set(key, text.slice(start, i))
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

/** The line of `"field":` in a JSON text, for errors that point into tokenizer_config.json. */
const lineOfField = (text: string, field: string): number | undefined => {
  const at = text.indexOf(`"${field}"`)
  return at < 0 ? undefined : text.slice(0, at).split("\n").length
}

interface ChatTemplateSource {
  readonly template: string
  readonly file: string
}

/**
 * The chat template apply_chat_template uses: chat_template.jinja beside the tokenizer (transformers 5 saves it
 * there, and it wins over tokenizer_config.json), else tokenizer_config.json's chat_template, a string or a list
 * of named templates; of several, the one named "default".
 */
const chatTemplateOf = (
  dir: string | undefined,
  configFile: string,
  configText: string,
  config: Record<string, unknown>,
): ChatTemplateSource | undefined => {
  const named = new Map<string, ChatTemplateSource>()
  if (dir !== undefined) {
    const jinja = path.join(dir, "chat_template.jinja")
    if (fs.existsSync(jinja)) named.set("default", { template: fs.readFileSync(jinja, "utf8"), file: jinja })
    const extra = path.join(dir, "additional_chat_templates")
    if (fs.existsSync(extra) && fs.statSync(extra).isDirectory())
      for (const f of fs.readdirSync(extra).sort())
        if (f.endsWith(".jinja"))
          named.set(f.slice(0, -".jinja".length), {
            template: fs.readFileSync(path.join(extra, f), "utf8"),
            file: path.join(extra, f),
          })
  }
  const line = lineOfField(configText, "chat_template")
  const where = `${configFile}${line === undefined ? "" : `:${line}`}`
  const t = config.chat_template
  if (named.size === 0 && t !== undefined && t !== null) {
    if (typeof t === "string") named.set("default", { template: t, file: configFile })
    else if (Array.isArray(t)) {
      t.forEach((x, i) => {
        if (!isRecord(x) || typeof x.name !== "string" || typeof x.template !== "string")
          throw tokenizerError(
            configFile,
            `${where}: chat_template[${i}] must be {"name": string, "template": string}, got ${JSON.stringify(x)?.slice(0, 80)}`,
            { field: "chat_template", ...(line === undefined ? {} : { line }) },
          )
        named.set(x.name, { template: x.template, file: configFile })
      })
    } else
      throw tokenizerError(
        configFile,
        `${where}: chat_template must be a string or a list of {"name", "template"}, got ${typeof t}`,
        { field: "chat_template", ...(line === undefined ? {} : { line }) },
      )
  }
  if (named.size === 0) return undefined
  const chosen = named.get("default") ?? (named.size === 1 ? [...named.values()][0] : undefined)
  if (chosen === undefined)
    throw tokenizerError(
      configFile,
      `${where}: there are several chat templates (${[...named.keys()].sort().join(", ")}) and none is named "default"`,
      { field: "chat_template" },
    )
  return chosen
}

/** eos_token_id of generation_config.json (or config.json): a number or a list of numbers. */
const generationEosIds = (dir: string, vocabSize: number): number[] => {
  for (const name of ["generation_config.json", "config.json"]) {
    const file = path.join(dir, name)
    if (!fs.existsSync(file)) continue
    const text = fs.readFileSync(file, "utf8")
    const json = parseJsonFile(file, text)
    if (!isRecord(json)) throw tokenizerError(file, `${file} must hold a JSON object`)
    const v = json.eos_token_id
    if (v === undefined || v === null) continue
    const ids = Array.isArray(v) ? v : [v]
    const line = lineOfField(text, "eos_token_id")
    for (const id of ids)
      if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= vocabSize)
        throw tokenizerError(
          file,
          `${file}${line === undefined ? "" : `:${line}`}: eos_token_id must be a token id below the vocabulary size ${vocabSize} (or a list of them), got ${JSON.stringify(v)}`,
          { field: "eos_token_id", ...(line === undefined ? {} : { line }) },
        )
    return ids as number[]
  }
  return []
}

/** The named special tokens transformers passes to a chat template (its special_tokens_map). */
const SPECIAL_TOKEN_FIELDS = [
  "bos_token",
  "eos_token",
  "unk_token",
  "sep_token",
  "pad_token",
  "cls_token",
  "mask_token",
] as const

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
    readonly eosIds: ReadonlyArray<number>,
    readonly eosTokens: ReadonlyArray<string>,
    readonly padId: number,
    readonly bosToken: string | undefined,
    readonly eosToken: string,
    readonly addsBos: boolean,
    readonly addsEos: boolean,
    readonly chatTemplate: string | undefined,
    readonly chatTemplateFile: string | undefined,
    readonly specialTokens: Readonly<Record<string, string>>,
    readonly notes: ReadonlyArray<string>,
  ) {}

  /** `dir`: the model directory holding the file, with tokenizer_config.json and the rest beside it. */
  static async load(file: string, dir: string | undefined): Promise<HfTokenizer> {
    let text: string
    try {
      text = fs.readFileSync(file, "utf8")
    } catch (e) {
      throw tokenizerError(file, `cannot read tokenizer ${file}: ${(e as Error).message}`)
    }
    const { Tokenizer } = await import("tokenizers")
    let native: HfNative
    try {
      native = Tokenizer.fromString(text)
    } catch (e) {
      // What is wrong, as precisely as the text allows.
      const json = parseJsonFile(file, text)
      if (!isRecord(json) || !isRecord(json.model)) {
        throw tokenizerError(file, `${file} is not a Hugging Face tokenizer.json: it has no "model" object`, {
          field: "model",
        })
      }
      throw tokenizerError(file, `${file} is not a valid tokenizer.json: ${(e as Error).message}`)
    }
    // The file is valid JSON with a model (tokenizers read it): only its small top-level settings are parsed here.
    const top = topLevelValues(text)
    const setting = (key: string): unknown => {
      const v = top.get(key)
      return v === undefined ? undefined : JSON.parse(v)
    }
    if (!top.has("model") || !top.get("model")!.startsWith("{")) {
      throw tokenizerError(file, `${file} is not a Hugging Face tokenizer.json: it has no "model" object`, {
        field: "model",
      })
    }
    // tokenizer.json may carry truncation (GPT-2's cuts at 50 tokens) or padding; maxLength and overflow decide here.
    const notes: string[] = []
    const truncation = setting("truncation")
    if (isRecord(truncation)) {
      notes.push(
        `${path.basename(file)} truncates at ${String(truncation.max_length)} tokens; that setting is ignored (maxLength and overflow apply)`,
      )
    }
    if (isRecord(setting("padding")))
      notes.push(`${path.basename(file)} pads sequences; that setting is ignored`)
    native.disableTruncation()
    native.disablePadding()
    let config: Record<string, unknown> = {}
    let configText = ""
    const configFile = dir === undefined ? undefined : path.join(dir, "tokenizer_config.json")
    if (configFile !== undefined && fs.existsSync(configFile)) {
      configText = fs.readFileSync(configFile, "utf8")
      const c = parseJsonFile(configFile, configText)
      if (!isRecord(c)) throw tokenizerError(configFile, `${configFile} must hold a JSON object`)
      config = c
    }
    const cfg = configFile ?? file
    // special_tokens_map.json (older repositories keep the tokens there) fills what tokenizer_config.json leaves out.
    const mapFile = dir === undefined ? undefined : path.join(dir, "special_tokens_map.json")
    let map: Record<string, unknown> = {}
    if (mapFile !== undefined && fs.existsSync(mapFile)) {
      const m = parseJsonFile(mapFile, fs.readFileSync(mapFile, "utf8"))
      if (!isRecord(m)) throw tokenizerError(mapFile, `${mapFile} must hold a JSON object`)
      map = m
    }
    const tokenOf = (field: string): { token: string; file: string } | undefined => {
      const own = tokenString(cfg, config, field)
      if (own !== undefined) return { token: own, file: cfg }
      const mapped = mapFile === undefined ? undefined : tokenString(mapFile, map, field)
      return mapped === undefined ? undefined : { token: mapped, file: mapFile! }
    }
    const idOf = (found: { token: string; file: string } | undefined, field: string): number | undefined => {
      if (found === undefined) return undefined
      const id = native.tokenToId(found.token)
      if (id === null || id === undefined) {
        throw tokenizerError(
          found.file,
          `${found.file}: ${field} ${JSON.stringify(found.token)} is not in the vocabulary of ${file}`,
          { field },
        )
      }
      return id
    }
    const known = (list: ReadonlyArray<string>) => {
      const token = list.find((t) => native.tokenToId(t) != null)
      return token === undefined ? undefined : { token, file }
    }
    const eos = tokenOf("eos_token") ?? known(EOS_CANDIDATES)
    if (eos === undefined) {
      throw tokenizerError(
        file,
        `${file}: no end-of-sequence token: put tokenizer_config.json with "eos_token" beside tokenizer.json`,
        { field: "eos_token" },
      )
    }
    const bos = tokenOf("bos_token") ?? known(BOS_CANDIDATES)
    const eosToken = eos.token
    const bosToken = bos?.token
    const eosId = idOf(eos, "eos_token")!
    const bosId = idOf(bos, "bos_token")
    const padId = idOf(tokenOf("pad_token"), "pad_token") ?? eosId
    const specialTokens: Record<string, string> = {}
    for (const field of SPECIAL_TOKEN_FIELDS) {
      const t = tokenOf(field)
      if (t !== undefined) specialTokens[field] = t.token
    }
    // Without tokenizer_config.json, the tokens found by convention.
    if (configFile === undefined || !fs.existsSync(configFile)) {
      specialTokens.eos_token = eosToken
      if (bosToken !== undefined) specialTokens.bos_token = bosToken
    }
    // add_bos_token when it is set; else what tokenizer.json's post-processor does (Llama 3 and Mistral add BOS there).
    const probe = (await native.encode("a", null, { addSpecialTokens: true })).getIds()
    const flag = (v: unknown, field: string): boolean | undefined => {
      if (v === undefined || v === null) return undefined
      if (typeof v === "boolean") return v
      throw tokenizerError(cfg, `${cfg}: ${field} must be true or false, got ${JSON.stringify(v)}`, { field })
    }
    const addBosFlag = flag(config.add_bos_token, "add_bos_token")
    const addsBos = bosId !== undefined && (addBosFlag ?? probe[0] === bosId)
    const addsEos = flag(config.add_eos_token, "add_eos_token") ?? probe[probe.length - 1] === eosId
    const vocabSize = native.getVocabSize(true)
    const eosIds = [...new Set([eosId, ...(dir === undefined ? [] : generationEosIds(dir, vocabSize))])]
    const eosTokens = eosIds.map((id) => native.idToToken(id) ?? "").filter((t) => t !== "")
    const template = chatTemplateOf(dir, cfg, configText, config)
    return new HfTokenizer(
      native,
      file,
      vocabSize,
      bosId,
      eosId,
      eosIds,
      eosTokens,
      padId,
      bosToken,
      eosToken,
      addsBos,
      addsEos,
      template?.template,
      template?.file,
      specialTokens,
      notes,
    )
  }

  /**
   * The texts of one sequence (a text and the `continued` ones after it) are encoded together, as the whole
   * string, so the ids are exactly those of the joined text (what apply_chat_template(tokenize=True) gives);
   * each token goes to the text that holds its last character.
   */
  async encodeParts(texts: ReadonlyArray<string>, continued?: ReadonlyArray<boolean>): Promise<PartIds> {
    const n = texts.length
    const joined: string[] = []
    /** Index of the first text of each sequence. */
    const firsts: number[] = []
    for (let i = 0; i < n; i++) {
      if (i > 0 && continued?.[i] === true) joined[joined.length - 1] += texts[i]!
      else {
        joined.push(texts[i]!)
        firsts.push(i)
      }
    }
    const encodings = await this.native.encodeBatch(joined, { addSpecialTokens: false })
    const sequences: number[][] = []
    const sequenceOf = new Uint32Array(n)
    const starts = new Uint32Array(n)
    const ends = new Uint32Array(n)
    let tokens = 0
    for (let k = 0; k < firsts.length; k++) {
      const e = encodings[k]!
      const ids = e.getIds()
      sequences.push(ids)
      tokens += ids.length
      const first = firsts[k]!
      const count = (k + 1 < firsts.length ? firsts[k + 1]! : n) - first
      sequenceOf.fill(k, first, first + count)
      if (count === 1) {
        ends[first] = ids.length
        continue
      }
      // Offsets count code points, not UTF-16 units. Only the ends of the texts before the last are needed.
      const textEnds: number[] = []
      let at = 0
      for (let i = 0; i < count - 1; i++) {
        at += codePoints(texts[first + i]!)
        textEnds.push(at)
      }
      // Where each text's tokens end: after the token that holds its last character, unless that token runs on
      // into the next text (then it is the next text's). Asking only at the boundaries spares getOffsets().
      const cuts: number[] = []
      let previous = 0
      for (let i = 0; i < count - 1; i++) {
        let cut = previous
        if (textEnds[i]! > 0) {
          let t = e.charToToken(textEnds[i]! - 1)
          if (t === undefined || t === null || t < 0) {
            cut = -1
          } else {
            // The last token ending inside this text (a character can span tokens: byte-level BPE splits 😀).
            while (t + 1 < ids.length && (e.tokenToChars(t + 1)?.[1] ?? Infinity) <= textEnds[i]!) t++
            cut = (e.tokenToChars(t)?.[1] ?? 0) > textEnds[i]! ? t : t + 1
          }
        }
        if (cut < previous) {
          cuts.length = 0
          break
        }
        cuts.push(cut)
        previous = cut
      }
      if (cuts.length !== count - 1) {
        // A character no token holds (a normalizer dropped it): by every token's offsets. Tokens go to the
        // texts in order, so each text's tokens are still one range.
        cuts.length = 0
        const offsets = e.getOffsets()
        let part = 0
        for (let t = 0; t < ids.length; t++) {
          const start = offsets[t]![0]!
          const end = offsets[t]![1]!
          const last = end > start ? end - 1 : start
          while (part < count - 1 && last >= textEnds[part]!) {
            cuts.push(t)
            part++
          }
        }
        while (cuts.length < count - 1) cuts.push(ids.length)
      }
      for (let i = 0; i < count; i++) {
        starts[first + i] = i === 0 ? 0 : cuts[i - 1]!
        ends[first + i] = i === count - 1 ? ids.length : cuts[i]!
      }
    }
    return { sequences, sequenceOf, starts, ends, tokens }
  }

  async encodeBatch(texts: ReadonlyArray<string>, continued?: ReadonlyArray<boolean>): Promise<number[][]> {
    return splitPartIds(await this.encodeParts(texts, continued))
  }

  async encode(text: string): Promise<number[]> {
    return (await this.native.encode(text, null, { addSpecialTokens: false })).getIds()
  }

  decode(ids: ReadonlyArray<number>, options: { readonly skipSpecial?: boolean } = {}): Promise<string> {
    return this.native.decode(ids as number[], options.skipSpecial ?? true)
  }
}

const codePoints = (text: string): number => {
  let n = text.length
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c >= 0xd800 && c <= 0xdbff) n--
  }
  return n
}

class Llama2cTextTokenizer implements TextTokenizer {
  readonly type = "llama2c"
  readonly vocabSize: number
  readonly bosId: number
  readonly eosId: number
  readonly padId = 0
  readonly bosToken = "<s>"
  readonly eosToken = "</s>"
  readonly eosIds: ReadonlyArray<number>
  readonly eosTokens = ["</s>"]
  readonly addsBos = true
  readonly addsEos = false
  readonly chatTemplate = undefined
  readonly chatTemplateFile = undefined
  readonly specialTokens = { bos_token: "<s>", eos_token: "</s>", unk_token: "<unk>" }
  readonly notes = []
  constructor(
    readonly tok: Llama2cTokenizer,
    readonly file: string,
  ) {
    this.vocabSize = tok.vocabSize
    this.bosId = tok.bosId
    this.eosId = tok.eosId
    this.eosIds = [tok.eosId]
  }

  // Only a sequence's first text gets SentencePiece's dummy-prefix space, as if the parts were one string.
  async encodeBatch(texts: ReadonlyArray<string>, continued?: ReadonlyArray<boolean>): Promise<number[][]> {
    return texts.map((t, i) => this.tok.encode(t, { dummyPrefix: !(continued?.[i] ?? false) }))
  }

  async encodeParts(texts: ReadonlyArray<string>, continued?: ReadonlyArray<boolean>): Promise<PartIds> {
    return partIdsOf(await this.encodeBatch(texts, continued))
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

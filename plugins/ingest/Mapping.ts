/**
 * Source records to canonical records: renames fields (GSM8K's
 * question/answer to instruction/output), expands nested lists (one record
 * per alpaca seed-task instance), normalises chat role names, keeps chosen
 * extra fields under `meta`, and checks every field's type by hand (this runs
 * once per record; the messages say which field is wrong and how to map it).
 */
import { type Problem, preview } from "./Problem.ts"
import type { CanonicalRecord, Message, RecordKind, Role } from "./Records.ts"

export interface MappingOptions {
  /** The canonical kind; inferred from the first record's fields when absent. */
  readonly kind?: RecordKind
  /** Source field (a dotted path) to canonical field or meta name. */
  readonly rename: Readonly<Record<string, string>>
  /** Source fields (after renaming) to keep under `meta`. */
  readonly keep: ReadonlyArray<string>
  /** A list field (dotted path) whose elements each become a record, merged over the parent's fields. */
  readonly expand?: string
  /** Extra role names, e.g. { narrator: "system" }; matched before the built-in names, case-insensitively. */
  readonly roles: Readonly<Record<string, Role>>
}

const ROLE_NAMES: Record<string, Role> = {
  system: "system",
  sys: "system",
  developer: "system",
  user: "user",
  human: "user",
  customer: "user",
  client: "user",
  prompter: "user",
  person: "user",
  usr: "user",
  assistant: "assistant",
  gpt: "assistant",
  chatgpt: "assistant",
  bot: "assistant",
  chatbot: "assistant",
  agent: "assistant",
  model: "assistant",
  ai: "assistant",
  llm: "assistant",
}

type Path = ReadonlyArray<string>

const get = (o: unknown, path: Path): unknown => {
  let v = o
  for (const k of path) {
    if (v === null || typeof v !== "object") return undefined
    v = (v as Record<string, unknown>)[k]
  }
  return v
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  v !== null && typeof v === "object" && !Array.isArray(v)

const isProblem = (v: unknown): v is Problem =>
  isObject(v) && typeof v.message === "string" && !("messages" in v)

const lf = (s: string): string => (s.includes("\r") ? s.replace(/\r\n?/g, "\n") : s)

interface Source {
  readonly path: Path
  /** The name the user knows the field by (the source path when renamed). */
  readonly from: string | undefined
}

export class Mapper {
  kind: RecordKind | undefined
  /** Records expanded from nested lists, and parents whose list was empty. */
  expanded = 0
  emptyExpansions = 0
  private readonly sources = new Map<string, Source>()
  private readonly expandPath: Path | undefined
  private readonly roles = new Map<string, Role>()

  constructor(private readonly options: MappingOptions) {
    this.kind = options.kind
    for (const [from, to] of Object.entries(options.rename))
      this.sources.set(to, { path: from.split("."), from })
    this.expandPath = options.expand === undefined ? undefined : options.expand.split(".")
    for (const [k, v] of Object.entries(ROLE_NAMES)) this.roles.set(k, v)
    for (const [k, v] of Object.entries(options.roles)) this.roles.set(k.toLowerCase(), v)
  }

  /** Maps one source record: emits its canonical records, or returns what is wrong (and emits nothing). */
  map(raw: unknown, emit: (r: CanonicalRecord) => void): Problem | undefined {
    if (!isObject(raw)) return { message: `expected an object, got ${preview(raw)}` }
    const ep = this.expandPath
    if (ep === undefined) {
      const r = this.one(raw, undefined)
      if (isProblem(r)) return r
      emit(r)
      return undefined
    }
    const name = this.options.expand!
    const list = get(raw, ep)
    if (!Array.isArray(list))
      return { field: name, message: `expected a list to expand, got ${preview(list)}` }
    if (list.length === 0) {
      this.emptyExpansions++
      return undefined
    }
    const out: CanonicalRecord[] = []
    for (let i = 0; i < list.length; i++) {
      const el = list[i]
      if (!isObject(el)) return { field: `${name}[${i}]`, message: `expected an object, got ${preview(el)}` }
      const view: Record<string, unknown> = { ...raw, ...el }
      if (ep.length === 1 && !(ep[0]! in el)) delete view[ep[0]!]
      const r = this.one(view, { el, prefix: `${name}[${i}].` })
      if (isProblem(r)) return r
      out.push(r)
    }
    this.expanded += out.length
    for (const r of out) emit(r)
    return undefined
  }

  private source(name: string): Source {
    return this.sources.get(name) ?? { path: name.includes(".") ? name.split(".") : [name], from: undefined }
  }

  private label(name: string, ctx: Ctx): string {
    const s = this.source(name)
    const base = s.from ?? name
    return ctx !== undefined && s.path[0]! in ctx.el ? `${ctx.prefix}${base}` : base
  }

  private value(view: Record<string, unknown>, name: string): unknown {
    const s = this.source(name)
    return s.path.length === 1 ? view[s.path[0]!] : get(view, s.path)
  }

  private missing(view: Record<string, unknown>, name: string, ctx: Ctx): Problem {
    const fields = Object.keys(view).slice(0, 12).join(", ")
    const s = this.sources.get(name)
    const hint = s === undefined ? `; map a field to it with rename: { <field>: "${name}" }` : ""
    return { field: this.label(name, ctx), message: `is missing (the record has: ${fields})${hint}` }
  }

  private text(view: Record<string, unknown>, name: string, ctx: Ctx): string | Problem {
    const v = this.value(view, name)
    if (typeof v === "string") return lf(v)
    if (v === undefined) return this.missing(view, name, ctx)
    return { field: this.label(name, ctx), message: `expected a string, got ${preview(v)}` }
  }

  private infer(view: Record<string, unknown>): RecordKind | Problem {
    const has = (n: string) => this.value(view, n) !== undefined
    if (Array.isArray(this.value(view, "messages")) || Array.isArray(view.conversations)) return "chat"
    if (has("prompt") || has("completion")) return "completion"
    if (has("instruction") || has("output")) return "instruction"
    if (has("text")) return "completion"
    const absent = Object.keys(this.options.rename).filter((from) => get(view, from.split(".")) === undefined)
    return {
      message:
        `cannot tell the kind of record from its fields (${Object.keys(view).join(", ")}): ` +
        (absent.length > 0
          ? `the renamed field(s) ${absent.map((a) => `"${a}"`).join(", ")} are not in the record`
          : `expected instruction/output, prompt/completion, messages or text; set kind and rename fields, e.g. rename: { question: "instruction", answer: "output" }`),
    }
  }

  private one(view: Record<string, unknown>, ctx: Ctx): CanonicalRecord | Problem {
    let kind = this.kind
    if (kind === undefined) {
      const k = this.infer(view)
      if (isProblem(k)) return k
      kind = this.kind = k
    }
    const meta = this.meta(view)
    if (kind === "instruction") {
      const instruction = this.text(view, "instruction", ctx)
      if (isProblem(instruction)) return instruction
      const output = this.text(view, "output", ctx)
      if (isProblem(output)) return output
      const inputValue = this.value(view, "input")
      if (inputValue !== undefined && inputValue !== null && typeof inputValue !== "string")
        return { field: this.label("input", ctx), message: `expected a string, got ${preview(inputValue)}` }
      // an empty input and no input are the same record
      const input = typeof inputValue === "string" && inputValue.length > 0 ? lf(inputValue) : undefined
      return {
        instruction,
        ...(input === undefined ? {} : { input }),
        output,
        ...(meta === undefined ? {} : { meta }),
      }
    }
    if (kind === "completion") {
      const hasPair = this.value(view, "prompt") !== undefined || this.value(view, "completion") !== undefined
      if (!hasPair && this.value(view, "text") !== undefined) {
        const text = this.text(view, "text", ctx)
        if (isProblem(text)) return text
        return { prompt: "", completion: text, ...(meta === undefined ? {} : { meta }) }
      }
      const prompt = this.text(view, "prompt", ctx)
      if (isProblem(prompt)) return prompt
      const completion = this.text(view, "completion", ctx)
      if (isProblem(completion)) return completion
      return { prompt, completion, ...(meta === undefined ? {} : { meta }) }
    }
    return this.chat(view, ctx, meta)
  }

  private chat(
    view: Record<string, unknown>,
    ctx: Ctx,
    meta: Record<string, unknown> | undefined,
  ): CanonicalRecord | Problem {
    let name = "messages"
    let list = this.value(view, "messages")
    if (list === undefined && !this.sources.has("messages"))
      for (const alt of ["conversations", "conversation"])
        if (view[alt] !== undefined) {
          name = alt
          list = view[alt]
          break
        }
    const field = name === "messages" ? this.label("messages", ctx) : name
    if (list === undefined) return this.missing(view, "messages", ctx)
    if (!Array.isArray(list)) return { field, message: `expected a list of messages, got ${preview(list)}` }
    if (list.length === 0) return { field, message: "has no messages" }
    const messages: Message[] = []
    for (let i = 0; i < list.length; i++) {
      const m = list[i]
      const at = `${field}[${i}]`
      if (!isObject(m)) return { field: at, message: `expected a message object, got ${preview(m)}` }
      const roleKey = "role" in m ? "role" : "from" in m ? "from" : "speaker" in m ? "speaker" : "role"
      const rawRole = m[roleKey]
      if (typeof rawRole !== "string")
        return {
          field: `${at}.${roleKey}`,
          message: rawRole === undefined ? "is missing" : `expected a string, got ${preview(rawRole)}`,
        }
      const role = this.roles.get(rawRole.toLowerCase())
      if (role === undefined)
        return {
          field: `${at}.${roleKey}`,
          message: `unknown role ${JSON.stringify(rawRole)}: map it with roles: { ${JSON.stringify(rawRole)}: "user" | "assistant" | "system" }`,
        }
      const contentKey =
        "content" in m ? "content" : "value" in m ? "value" : "text" in m ? "text" : "content"
      const content = m[contentKey]
      if (typeof content !== "string")
        return {
          field: `${at}.${contentKey}`,
          message: content === undefined ? "is missing" : `expected a string, got ${preview(content)}`,
        }
      messages.push({ role, content: lf(content) })
    }
    return { messages, ...(meta === undefined ? {} : { meta }) }
  }

  private meta(view: Record<string, unknown>): Record<string, unknown> | undefined {
    let meta: Record<string, unknown> | undefined
    // records that already carry meta (canonical records read again) keep it
    const own = view.meta
    if (isObject(own) && !this.sources.has("meta")) meta = { ...own }
    for (const name of this.options.keep) {
      const v = this.value(view, name)
      if (v === undefined) continue
      meta ??= {}
      meta[name] = v
    }
    return meta
  }
}

type Ctx = { readonly el: Record<string, unknown>; readonly prefix: string } | undefined

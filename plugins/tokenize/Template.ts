/**
 * Prompt formats: a record becomes a list of text parts, each marked as
 * prompt (masked from the loss unless trainOnInputs) or response (trained).
 * The parts are tokenized one by one, so the labels' boundary is exact and
 * the prompt's tokens are the ones a model sees when it is asked the same
 * prompt at inference.
 *
 *   alpaca         Stanford Alpaca's preamble, "### Instruction:", "### Input:", "### Response:\n"
 *   chatml         <|im_start|>role\ncontent<|im_end|>\n; the reply trains up to and including <|im_end|>
 *   chat_template  the model's own Jinja template (chat_template.jinja or tokenizer_config.json), rendered
 *                  as transformers' apply_chat_template renders it
 *   none           the record's text as it is: prompt then completion (instruction, blank line, output)
 */
import type { CanonicalRecord, Message } from "./RecordReader.ts"
import type { TextTokenizer } from "./Tokenizer.ts"

export const TEMPLATES = ["alpaca", "chatml", "chat_template", "none"] as const
export type TemplateName = (typeof TEMPLATES)[number]

export interface Part {
  readonly text: string
  /** Response text: its tokens stay in the loss. */
  readonly train: boolean
}

export interface Renderer {
  readonly name: TemplateName
  /** The parts of a record, in order. Throws TemplateError when the record cannot be rendered. */
  render(record: CanonicalRecord): Part[]
  /** The text a model is asked to continue with the record's last reply; undefined when it has none. */
  prompt(record: CanonicalRecord): string | undefined
  /** What a user should know about the renders so far (a template that wrote today's date), for the report. */
  notes?(): ReadonlyArray<string>
}

export interface RendererOptions {
  /** The model's chat template (required for "chat_template"). */
  readonly chatTemplate?: string | undefined
  /** The file the template came from, named in errors. */
  readonly chatTemplateFile?: string | undefined
  /** The named special tokens the template sees (bos_token, eos_token, pad_token, ...), as transformers passes them. */
  readonly specialTokens?: Readonly<Record<string, string>> | undefined
  /** bos_token and eos_token when specialTokens is not given. */
  readonly bosToken?: string | undefined
  readonly eosToken?: string | undefined
  /** More template variables, as apply_chat_template's keyword arguments: enable_thinking (Qwen3), date_string (Llama 3), ... */
  readonly templateKwargs?: Readonly<Record<string, unknown>> | undefined
  /** The clock strftime_now reads (local time, as transformers reads it). */
  readonly now?: () => Date
}

/** The options a tokenizer gives a renderer: its chat template, where it came from and its special tokens. */
export const tokenizerTemplateOptions = (
  tok: TextTokenizer,
  templateKwargs?: Readonly<Record<string, unknown>>,
): RendererOptions => ({
  chatTemplate: tok.chatTemplate,
  chatTemplateFile: tok.chatTemplateFile,
  specialTokens: tok.specialTokens,
  templateKwargs,
})

/** A record the template cannot render (the caller adds file and line). */
export class TemplateError extends Error {
  override readonly name = "TemplateError"
}

/** Any record as a conversation: instruction (+ input) or prompt is the user turn, output or completion the reply. */
export const toMessages = (record: CanonicalRecord): ReadonlyArray<Message> => {
  if ("messages" in record) return record.messages
  if ("prompt" in record) {
    return [
      { role: "user", content: record.prompt },
      { role: "assistant", content: record.completion },
    ]
  }
  return [
    { role: "user", content: record.input ? `${record.instruction}\n\n${record.input}` : record.instruction },
    { role: "assistant", content: record.output },
  ]
}

/** Splits rendered parts into what a model is asked (everything before the last reply) and the reply expected. */
export const promptAndReference = (parts: ReadonlyArray<Part>): { prompt: string; reference: string } => {
  let last = parts.length - 1
  while (last >= 0 && !parts[last]!.train) last--
  if (last < 0) return { prompt: parts.map((p) => p.text).join(""), reference: "" }
  return {
    prompt: parts
      .slice(0, last)
      .map((p) => p.text)
      .join(""),
    reference: parts[last]!.text,
  }
}

/** Merges neighbouring parts of the same kind and leaves out empty ones. */
const compact = (parts: Part[]): Part[] => {
  const out: Part[] = []
  for (const p of parts) {
    if (p.text === "") continue
    const last = out[out.length - 1]
    if (last !== undefined && last.train === p.train)
      out[out.length - 1] = { text: last.text + p.text, train: p.train }
    else out.push(p)
  }
  return out
}

const ALPACA_INPUT =
  "Below is an instruction that describes a task, paired with an input that provides further context. " +
  "Write a response that appropriately completes the request.\n\n"
const ALPACA_NO_INPUT =
  "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"

/** The prompt of a record's last reply: every part before it. */
const promptOfParts =
  (render: (record: CanonicalRecord) => Part[]) =>
  (record: CanonicalRecord): string | undefined => {
    const parts = render(record)
    return parts.some((p) => p.train) ? promptAndReference(parts).prompt : undefined
  }

const alpaca: Renderer = {
  name: "alpaca",
  prompt: (record) => promptOfParts(alpaca.render)(record),
  render(record) {
    if ("instruction" in record) {
      const prompt = record.input
        ? `${ALPACA_INPUT}### Instruction:\n${record.instruction}\n\n### Input:\n${record.input}\n\n### Response:\n`
        : `${ALPACA_NO_INPUT}### Instruction:\n${record.instruction}\n\n### Response:\n`
      return compact([
        { text: prompt, train: false },
        { text: record.output, train: true },
      ])
    }
    // Conversations: a system message replaces the preamble; each exchange is one instruction and response.
    const parts: Part[] = []
    let preamble = ALPACA_NO_INPUT
    let first = true
    for (const m of toMessages(record)) {
      if (m.role === "system") preamble = `${m.content}\n\n`
      else if (m.role === "user") {
        parts.push({
          text: `${first ? preamble : "\n\n"}### Instruction:\n${m.content}\n\n### Response:\n`,
          train: false,
        })
        first = false
      } else parts.push({ text: m.content, train: true })
    }
    return compact(parts)
  },
}

const chatml: Renderer = {
  name: "chatml",
  prompt: (record) => promptOfParts(chatml.render)(record),
  render(record) {
    const parts: Part[] = []
    let pending = ""
    for (const m of toMessages(record)) {
      if (m.role === "assistant") {
        parts.push({ text: `${pending}<|im_start|>assistant\n`, train: false })
        parts.push({ text: `${m.content}<|im_end|>`, train: true })
        pending = "\n"
      } else pending += `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`
    }
    if (pending !== "\n") parts.push({ text: pending, train: false })
    return compact(parts)
  },
}

const none: Renderer = {
  name: "none",
  prompt: (record) => promptOfParts(none.render)(record),
  render(record) {
    if ("prompt" in record) {
      return compact([
        { text: record.prompt, train: false },
        { text: record.completion, train: true },
      ])
    }
    if ("instruction" in record) {
      return compact([
        { text: `${record.instruction}${record.input ? `\n\n${record.input}` : ""}\n\n`, train: false },
        { text: record.output, train: true },
      ])
    }
    return compact(
      record.messages.map((m, i) => ({
        text:
          m.role === "assistant"
            ? m.content
            : `${record.messages[i - 1]?.role === "assistant" ? "\n\n" : ""}${m.content}\n\n`,
        train: m.role === "assistant",
      })),
    )
  },
}

const DAYS = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
const MONTHS = [
  "January",
  "February",
  "March",
  "April",
  "May",
  "June",
  "July",
  "August",
  "September",
  "October",
  "November",
  "December",
]

/** Python's datetime.strftime in the C locale (what transformers' strftime_now calls), local time. */
export const strftime = (date: Date, format: string): string => {
  const pad = (n: number, width = 2) => String(n).padStart(width, "0")
  const h12 = date.getHours() % 12 === 0 ? 12 : date.getHours() % 12
  const start = new Date(date.getFullYear(), 0, 1)
  const yday =
    Math.round(
      (new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime() - start.getTime()) /
        86_400_000,
    ) + 1
  return format.replace(/%(-?)([aAbBdeHIjmMpSyY%])/g, (_, bare: string, c: string) => {
    const num = (n: number, width = 2) => (bare === "-" ? String(n) : pad(n, width))
    switch (c) {
      case "a":
        return DAYS[date.getDay()]!.slice(0, 3)
      case "A":
        return DAYS[date.getDay()]!
      case "b":
        return MONTHS[date.getMonth()]!.slice(0, 3)
      case "B":
        return MONTHS[date.getMonth()]!
      case "d":
        return num(date.getDate())
      case "e":
        return String(date.getDate()).padStart(2, " ")
      case "H":
        return num(date.getHours())
      case "I":
        return num(h12)
      case "j":
        return num(yday, 3)
      case "m":
        return num(date.getMonth() + 1)
      case "M":
        return num(date.getMinutes())
      case "p":
        return date.getHours() < 12 ? "AM" : "PM"
      case "S":
        return num(date.getSeconds())
      case "y":
        return num(date.getFullYear() % 100)
      case "Y":
        return String(date.getFullYear())
      default:
        return "%"
    }
  })
}

const commonPrefix = (a: string, b: string): number => {
  const n = Math.min(a.length, b.length)
  let i = 0
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++
  return i
}

const commonSuffix = (a: string, b: string): number => {
  const n = Math.min(a.length, b.length)
  let i = 0
  while (i < n && a.charCodeAt(a.length - 1 - i) === b.charCodeAt(b.length - 1 - i)) i++
  return i
}

/** Python's str.strip / lstrip / rstrip with the characters to strip. */
const stripChars = (text: string, chars: string, left: boolean, right: boolean): string => {
  let a = 0
  let b = text.length
  if (left) while (a < b && chars.includes(text[a]!)) a++
  if (right) while (b > a && chars.includes(text[b - 1]!)) b--
  return text.slice(a, b)
}
const STRIP = { strip: [true, true], lstrip: [true, false], rstrip: [false, true] } as const
const STRIP_FN = "__tunegraph_strip"

/**
 * @huggingface/jinja's strip, lstrip and rstrip ignore their argument (Qwen3's `content.lstrip('\n')` would
 * eat a reply's leading spaces): calls with one become calls of Python's version, in the parsed template.
 */
const pythonStrip = (node: unknown): void => {
  if (typeof node !== "object" || node === null) return
  if (Array.isArray(node)) {
    for (const x of node) pythonStrip(x)
    return
  }
  const n = node as Record<string, unknown>
  for (const v of Object.values(n)) pythonStrip(v)
  const callee = n.callee as Record<string, unknown> | undefined
  const property = callee?.property as Record<string, unknown> | undefined
  if (
    n.type === "CallExpression" &&
    callee?.type === "MemberExpression" &&
    callee.computed === false &&
    property?.type === "Identifier" &&
    typeof property.value === "string" &&
    property.value in STRIP &&
    Array.isArray(n.args) &&
    n.args.length === 1
  ) {
    const which = property.value as keyof typeof STRIP
    n.args = [callee.object, { type: "StringLiteral", value: which }, ...n.args]
    n.callee = { type: "Identifier", value: STRIP_FN }
  }
}

/** Stands in for a message's content to find where the template puts it (private-use characters no text has). */
const SENTINEL = "\uE000\uE001"

/**
 * A Jinja chat template, rendered with what apply_chat_template gives it
 * (messages, tools=None, documents=None, add_generation_prompt, the special
 * tokens, raise_exception, strftime_now, and the caller's keyword arguments)
 * and split into parts: the whole conversation is rendered once, and each
 * reply's part runs from the end of its generation prompt to the end of its
 * turn (the content and whatever the template writes after it, such as
 * <|im_end|> or </s>).
 *
 * Where rendering each prefix of the conversation extends the previous one,
 * the parts come from the prefixes. Templates that render earlier turns
 * differently once more follow (Qwen3 drops the thinking of past turns;
 * Mistral moves the system message into the last user turn) are located
 * instead by rendering the conversation with one message's content replaced
 * by a marker: the text that changes is that content.
 */
const jinjaRenderer = async (options: RendererOptions): Promise<Renderer> => {
  if (options.chatTemplate === undefined) {
    throw new TemplateError(
      'template "chat_template" needs the tokenizer\'s chat_template: give a model directory with chat_template.jinja, or tokenizer_config.json that has one, or use "alpaca" or "chatml"',
    )
  }
  const source = options.chatTemplateFile ?? "the tokenizer's chat_template"
  const { Environment, Interpreter, Template } = await import("@huggingface/jinja")
  let compiled: InstanceType<typeof Template>
  try {
    compiled = new Template(options.chatTemplate)
  } catch (e) {
    throw new TemplateError(`${source}: the chat template does not parse: ${(e as Error).message}`)
  }
  pythonStrip(compiled.parsed)
  const special = options.specialTokens ?? {
    ...(options.bosToken === undefined ? {} : { bos_token: options.bosToken }),
    ...(options.eosToken === undefined ? {} : { eos_token: options.eosToken }),
  }
  const now = options.now ?? (() => new Date())
  // What strftime_now first gave: the output depends on the day it is made.
  let clock: string | undefined
  // The globals transformers' environment has, with its raise_exception and strftime_now.
  const globals: Record<string, unknown> = {
    true: true,
    false: false,
    none: null,
    True: true,
    False: false,
    None: null,
    range: (start: number, stop?: number, step = 1) => {
      const [from, to] = stop === undefined ? [0, start] : [start, stop]
      if (step === 0) throw new TemplateError("range() arg 3 must not be zero")
      const out: number[] = []
      for (let i = from; step > 0 ? i < to : i > to; i += step) out.push(i)
      return out
    },
    raise_exception: (message: unknown) => {
      throw new TemplateError(String(message))
    },
    strftime_now: (format: unknown) => {
      const text = strftime(now(), String(format))
      clock ??= text
      return text
    },
    [STRIP_FN]: (text: unknown, which: keyof typeof STRIP, chars: unknown) => {
      if (typeof text !== "string")
        throw new TemplateError(`${which}() of ${typeof text}: only strings strip`)
      const [left, right] = STRIP[which]
      if (chars === null || chars === undefined)
        return left && right ? text.trim() : left ? text.trimStart() : text.trimEnd()
      return stripChars(text, String(chars), left, right)
    },
    ...special,
    ...options.templateKwargs,
  }
  const render = (messages: ReadonlyArray<Message>, addGenerationPrompt: boolean): string => {
    const env = new Environment()
    const vars: Record<string, unknown> = {
      ...globals,
      messages: messages.map((m) => ({ role: m.role, content: m.content })),
      tools: null,
      documents: null,
      add_generation_prompt: addGenerationPrompt,
    }
    for (const [k, v] of Object.entries(vars)) env.set(k, v)
    try {
      return String(new Interpreter(env).run(compiled.parsed).value)
    } catch (e) {
      throw new TemplateError(`${source}: the chat template failed: ${(e as Error).message}`)
    }
  }

  // Each reply's part from the renders of the conversation's prefixes, when each extends the one before.
  const byPrefixes = (messages: ReadonlyArray<Message>, full: string): Part[] | undefined => {
    const parts: Part[] = []
    let done = ""
    for (const [k, m] of messages.entries()) {
      if (m.role !== "assistant") continue
      const before = render(messages.slice(0, k), true)
      const after = render(messages.slice(0, k + 1), false)
      if (!before.startsWith(done) || !after.startsWith(before)) return undefined
      parts.push({ text: before.slice(done.length), train: false })
      parts.push({ text: after.slice(before.length), train: true })
      done = after
    }
    if (!full.startsWith(done)) return undefined
    parts.push({ text: full.slice(done.length), train: false })
    return parts
  }

  // Each reply's part located in the whole conversation with markers.
  const byMarkers = (messages: ReadonlyArray<Message>, full: string): Part[] => {
    const marked = (j: number) => messages.map((m, i) => (i === j ? { ...m, content: SENTINEL } : m))
    // Where message j's content starts and its turn ends in the whole conversation; only the replies and the
    // messages before them are asked for.
    const memo = new Map<number, { start: number; end: number } | undefined>()
    const spanOf = (j: number) => {
      if (memo.has(j)) return memo.get(j)
      const last = j === messages.length - 1
      const alt = render(marked(j), false)
      let span: { start: number; end: number } | undefined
      // undefined: the template does not show this message in the whole conversation.
      if (alt !== full) {
        const start = commonPrefix(full, alt)
        const contentEnd = full.length - commonSuffix(full, alt)
        // What the template writes after the message (its end of turn), from the conversation that ends with it.
        const own = last ? full : render(messages.slice(0, j + 1), false)
        const ownAlt = last ? alt : render(marked(j).slice(0, j + 1), false)
        const tail = own.slice(own.length - commonSuffix(own, ownAlt))
        span = { start, end: full.startsWith(tail, contentEnd) ? contentEnd + tail.length : contentEnd }
      }
      memo.set(j, span)
      return span
    }
    const parts: Part[] = []
    let done = 0
    for (const [k, m] of messages.entries()) {
      if (m.role !== "assistant") continue
      const span = spanOf(k)
      if (span === undefined)
        throw new TemplateError(
          `${source}: the chat template does not render reply ${k}, so it cannot be trained`,
        )
      let previous = done
      for (let j = k - 1; j >= 0; j--) {
        const s = spanOf(j)
        if (s !== undefined) {
          previous = Math.max(previous, s.end)
          break
        }
      }
      // The generation prompt is the prompt's; whatever of it the whole conversation has after the previous turn.
      let generation = ""
      if (k > 0) {
        const asked = render(messages.slice(0, k), true)
        generation = asked.slice(commonPrefix(asked, render(messages.slice(0, k), false)))
      }
      const start = Math.min(previous + commonPrefix(generation, full.slice(previous)), span.start)
      if (start < done || span.end < start)
        throw new TemplateError(
          `${source}: the chat template renders message ${k} out of order, so the reply cannot be located; use "chatml" or "alpaca"`,
        )
      parts.push({ text: full.slice(done, start), train: false })
      parts.push({ text: full.slice(start, span.end), train: true })
      done = span.end
    }
    parts.push({ text: full.slice(done), train: false })
    return parts
  }

  return {
    name: "chat_template",
    notes: () =>
      clock === undefined
        ? []
        : [
            `${source}: the chat template writes today's date (strftime_now gave ${JSON.stringify(clock)}), so the same records tokenize differently on another day; pass templateKwargs such as { date_string: "26 Jul 2024" } to fix it`,
          ],
    render(record) {
      const messages = toMessages(record)
      const full = render(messages, false)
      return compact(byPrefixes(messages, full) ?? byMarkers(messages, full))
    },
    prompt(record) {
      const messages = toMessages(record)
      let last = messages.length - 1
      while (last >= 0 && messages[last]!.role !== "assistant") last--
      return last < 0 ? undefined : render(messages.slice(0, last), true)
    },
  }
}

export const makeRenderer = async (name: TemplateName, options: RendererOptions = {}): Promise<Renderer> => {
  switch (name) {
    case "alpaca":
      return alpaca
    case "chatml":
      return chatml
    case "none":
      return none
    case "chat_template":
      return jinjaRenderer(options)
  }
}

/**
 * Prompt formats: a record becomes a list of text parts, each marked as
 * prompt (masked from the loss unless trainOnInputs) or response (trained).
 * The parts are tokenized one by one, so the labels' boundary is exact and
 * the prompt's tokens are the ones a model sees when it is asked the same
 * prompt at inference.
 *
 *   alpaca         Stanford Alpaca's preamble, "### Instruction:", "### Input:", "### Response:\n"
 *   chatml         <|im_start|>role\ncontent<|im_end|>\n; the reply trains up to and including <|im_end|>
 *   chat_template  the model's own Jinja template from tokenizer_config.json, as apply_chat_template renders it
 *   none           the record's text as it is: prompt then completion (instruction, blank line, output)
 */
import type { CanonicalRecord, Message } from "./RecordReader.ts"

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
}

export interface RendererOptions {
  /** The model's chat template (required for "chat_template"). */
  readonly chatTemplate?: string | undefined
  readonly bosToken?: string | undefined
  readonly eosToken?: string | undefined
}

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

const alpaca: Renderer = {
  name: "alpaca",
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

/**
 * A Jinja chat template, split into parts by rendering each prefix of the
 * conversation: the text a reply adds after the generation prompt is the
 * reply's part. Templates that rewrite earlier text when a turn is added
 * cannot be split this way and are reported.
 */
const jinjaRenderer = async (options: RendererOptions): Promise<Renderer> => {
  if (options.chatTemplate === undefined) {
    throw new TemplateError(
      'template "chat_template" needs the tokenizer\'s chat_template: give a directory with tokenizer_config.json that has one, or use "alpaca" or "chatml"',
    )
  }
  const { Template } = await import("@huggingface/jinja")
  let compiled: InstanceType<typeof Template>
  try {
    compiled = new Template(options.chatTemplate)
  } catch (e) {
    throw new TemplateError(`the tokenizer's chat_template does not parse: ${(e as Error).message}`)
  }
  const render = (messages: ReadonlyArray<Message>, addGenerationPrompt: boolean): string => {
    try {
      return compiled.render({
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: addGenerationPrompt,
        bos_token: options.bosToken ?? "",
        eos_token: options.eosToken ?? "",
      })
    } catch (e) {
      throw new TemplateError(`the chat template failed: ${(e as Error).message}`)
    }
  }
  return {
    name: "chat_template",
    render(record) {
      const messages = toMessages(record)
      const parts: Part[] = []
      let done = ""
      messages.forEach((m, k) => {
        if (m.role !== "assistant") return
        const before = render(messages.slice(0, k), true)
        const after = render(messages.slice(0, k + 1), false)
        if (!before.startsWith(done) || !after.startsWith(before)) {
          throw new TemplateError(
            `the chat template renders message ${k} differently once the reply is added, so the reply cannot be located; use "chatml" or "alpaca"`,
          )
        }
        parts.push({ text: before.slice(done.length), train: false })
        parts.push({ text: after.slice(before.length), train: true })
        done = after
      })
      const full = render(messages, false)
      if (full.startsWith(done)) parts.push({ text: full.slice(done.length), train: false })
      return compact(parts)
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

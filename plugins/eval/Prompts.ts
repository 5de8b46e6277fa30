/**
 * The test prompts: each record rendered with the template the tokenize step
 * used and tokenized part by part as it did (so the model is asked exactly
 * the prompt it was trained to answer), everything before the last reply.
 * The reference is the record's own answer: the output, the completion, or
 * the last assistant message.
 */
import type { CanonicalRecord } from "../ingest/Records.ts"
import { iterateRecords } from "../ingest/Records.ts"
import type { Renderer, TemplateName } from "../tokenize/Template.ts"
import type { TextTokenizer } from "../tokenize/Tokenizer.ts"

export interface Prompt {
  /** 1-based number of the record in the Records file (its line). */
  readonly index: number
  readonly record: CanonicalRecord
  /** The rendered prompt text. */
  readonly text: string
  readonly ids: number[]
  readonly reference: string
}

export interface PromptSet {
  readonly prompts: Prompt[]
  /** Records read (up to the limit of usable ones). */
  readonly records: number
  /** Records with no reply to compare with. */
  readonly noReply: number
}

/** Strings that end a generated answer, by template, when the eval names none; with the model's own template, its EOS tokens. */
export const defaultStops = (template: TemplateName, tok?: Pick<TextTokenizer, "eosTokens">): string[] => {
  switch (template) {
    case "alpaca":
      return ["### Instruction:", "### Input:", "### Response:"]
    case "chatml":
      return ["<|im_end|>", "<|im_start|>"]
    case "chat_template":
      return [...(tok?.eosTokens ?? [])]
    default:
      return []
  }
}

export const referenceOf = (record: CanonicalRecord): string | undefined => {
  if ("messages" in record) {
    for (let i = record.messages.length - 1; i >= 0; i--)
      if (record.messages[i]?.role === "assistant") return record.messages[i]?.content
    return undefined
  }
  return "prompt" in record ? record.completion : record.output
}

/** Reads up to `limit` records with a reply and renders and tokenizes their prompts. */
export const preparePrompts = async (
  file: string,
  renderer: Renderer,
  tok: TextTokenizer,
  bosId: number | undefined,
  limit: number,
): Promise<PromptSet> => {
  const found: Array<{ index: number; record: CanonicalRecord; texts: string[]; reference: string }> = []
  let records = 0
  let noReply = 0
  if (limit > 0)
    for (const record of iterateRecords(file)) {
      records++
      const parts = renderer.render(record)
      let last = parts.length - 1
      while (last >= 0 && !parts[last]?.train) last--
      const reference = referenceOf(record)
      if (last < 0 || reference === undefined) {
        noReply++
        continue
      }
      // A chat template's own generation prompt for the conversation so far (apply_chat_template with
      // add_generation_prompt); the other formats' parts before the reply, tokenized as the tokenize step did.
      const texts =
        renderer.name === "chat_template"
          ? [renderer.prompt(record) ?? ""]
          : parts.slice(0, last).map((p) => p.text)
      found.push({ index: records, record, texts, reference })
      if (found.length >= limit) break
    }
  const texts = found.flatMap((f) => f.texts)
  const continued = found.flatMap((f) => f.texts.map((_, i) => i > 0))
  const encoded = texts.length === 0 ? [] : await tok.encodeBatch(texts, continued)
  let at = 0
  const prompts = found.map((f): Prompt => {
    const own: number[] = []
    for (const part of encoded.slice(at, at + f.texts.length)) own.push(...part)
    at += f.texts.length
    // BOS once, also when the template writes it.
    const ids = bosId === undefined || own[0] === bosId ? own : [bosId, ...own]
    return { index: f.index, record: f.record, text: f.texts.join(""), ids, reference: f.reference }
  })
  return { prompts, records, noReply }
}

/** The text the model added after the prompt (decoded together, so pieces that depend on what precedes them come out right). */
export const continuation = async (
  tok: TextTokenizer,
  promptIds: ReadonlyArray<number>,
  generated: ReadonlyArray<number>,
): Promise<string> => {
  const whole = await tok.decode([...promptIds, ...generated], { skipSpecial: false })
  const prompt = await tok.decode(promptIds, { skipSpecial: false })
  return whole.startsWith(prompt) ? whole.slice(prompt.length) : tok.decode(generated, { skipSpecial: false })
}

/** The text up to the first stop string; whether one was found. */
export const cutAtStops = (
  text: string,
  stops: ReadonlyArray<string>,
): { text: string; stopped: boolean } => {
  let end = text.length
  for (const stop of stops) {
    if (stop === "") continue
    const at = text.indexOf(stop)
    if (at >= 0 && at < end) end = at
  }
  return { text: text.slice(0, end), stopped: end < text.length }
}

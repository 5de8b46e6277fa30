/**
 * Streams a Records file (JSON Lines, one canonical record per line) in
 * batches, and checks each record's shape by hand: a Schema decode per line
 * costs more than the tokenizer on large corpora, and the errors here name
 * the file, line and field just the same.
 */
import * as fs from "node:fs"
import { StepError } from "../../core/Plugin.ts"
import { readRecordParts } from "../ingest/RecordParts.ts"

export type Role = "system" | "user" | "assistant"
export interface Message {
  readonly role: Role
  readonly content: string
}

/** The three canonical record shapes (plugins/kinds.ts; the same types as plugins/ingest/Records.ts). */
export interface InstructionRecord {
  readonly instruction: string
  readonly input?: string
  readonly output: string
}
export interface CompletionRecord {
  readonly prompt: string
  readonly completion: string
}
export interface ChatRecord {
  readonly messages: ReadonlyArray<Message>
}
export type CanonicalRecord = InstructionRecord | CompletionRecord | ChatRecord

export interface Line {
  /** 1-based line number in the file. */
  readonly line: number
  readonly text: string
}

const CHUNK = 1024 * 1024

/**
 * Non-empty lines of Records (a directory's parts in order, numbered as one
 * sequence, or one file), in batches of about `batchBytes` of text, holding
 * one chunk in memory at a time.
 */
export async function* readLines(records: string, batchBytes = 256 * 1024): AsyncGenerator<Line[]> {
  const parts = fs.statSync(records).isDirectory()
    ? readRecordParts(records).map((p) => ({ file: p.abs, base: p.firstRecord }))
    : [{ file: records, base: 0 }]
  for (const { file, base } of parts)
    for await (const batch of readFileLines(file, batchBytes))
      yield base === 0 ? batch : batch.map((l) => ({ line: l.line + base, text: l.text }))
}

async function* readFileLines(file: string, batchBytes: number): AsyncGenerator<Line[]> {
  const fd = fs.openSync(file, "r")
  try {
    let buf = Buffer.allocUnsafe(CHUNK)
    let carry = 0 // bytes of an unfinished line at the start of buf
    let lineNo = 0
    let batch: Line[] = []
    let batchSize = 0
    for (;;) {
      if (carry === buf.length) {
        // One line longer than the buffer: grow it.
        const bigger = Buffer.allocUnsafe(buf.length * 2)
        buf.copy(bigger, 0, 0, carry)
        buf = bigger
      }
      const bytesRead = fs.readSync(fd, buf, carry, buf.length - carry, null)
      const end = carry + bytesRead
      let start = 0
      for (;;) {
        const nl = buf.indexOf(10, start)
        if (nl < 0 || nl >= end) break
        lineNo++
        const stop = nl > start && buf[nl - 1] === 13 ? nl - 1 : nl
        if (stop > start) {
          batch.push({ line: lineNo, text: buf.toString("utf8", start, stop) })
          batchSize += stop - start
        }
        start = nl + 1
        // Small batches keep the tokenizer's native allocations small: big ones fragment its heap for good.
        if (batchSize >= batchBytes) {
          yield batch
          batch = []
          batchSize = 0
        }
      }
      if (bytesRead === 0) {
        if (end > start) {
          lineNo++
          const stop = buf[end - 1] === 13 ? end - 1 : end
          batch.push({ line: lineNo, text: buf.toString("utf8", start, stop) })
        }
        if (batch.length > 0) yield batch
        return
      }
      buf.copy(buf, 0, start, end)
      carry = end - start
    }
  } finally {
    fs.closeSync(fd)
  }
}

const typeName = (v: unknown): string => (v === null ? "null" : Array.isArray(v) ? "array" : typeof v)

/** Parses and checks one line; errors name the file, the line and the field. */
export const parseRecord = (file: string, line: Line): CanonicalRecord => {
  const fail = (message: string, field?: string): never => {
    throw new StepError({
      message: `${file}:${line.line}: ${message}`,
      file,
      line: line.line,
      ...(field !== undefined ? { field } : {}),
    })
  }
  let v: unknown
  try {
    v = JSON.parse(line.text)
  } catch (e) {
    return fail(`not valid JSON (${(e as Error).message})`)
  }
  if (typeof v !== "object" || v === null || Array.isArray(v))
    return fail(`a record must be a JSON object, got ${typeName(v)}`)
  const o = v as Record<string, unknown>
  const str = (field: string, optional = false): string | undefined => {
    const x = o[field]
    if (x === undefined && optional) return undefined
    if (typeof x !== "string") {
      return fail(
        `field "${field}" must be a string, got ${x === undefined ? "nothing" : typeName(x)}`,
        field,
      )
    }
    return x
  }
  if ("messages" in o) {
    const m = o.messages
    if (!Array.isArray(m)) return fail(`field "messages" must be an array, got ${typeName(m)}`, "messages")
    if (m.length === 0) return fail(`field "messages" is empty`, "messages")
    const messages = m.map((x, i): Message => {
      const field = `messages[${i}]`
      if (typeof x !== "object" || x === null)
        return fail(`field "${field}" must be an object, got ${typeName(x)}`, field)
      const { role, content } = x as Record<string, unknown>
      if (role !== "system" && role !== "user" && role !== "assistant") {
        return fail(
          `field "${field}.role" must be "system", "user" or "assistant", got ${JSON.stringify(role)}`,
          `${field}.role`,
        )
      }
      if (typeof content !== "string") {
        return fail(`field "${field}.content" must be a string, got ${typeName(content)}`, `${field}.content`)
      }
      return { role, content }
    })
    return { messages }
  }
  if ("prompt" in o || "completion" in o) return { prompt: str("prompt")!, completion: str("completion")! }
  if ("instruction" in o || "output" in o) {
    const input = str("input", true)
    return {
      instruction: str("instruction")!,
      ...(input !== undefined ? { input } : {}),
      output: str("output")!,
    }
  }
  return fail(
    `not a canonical record: expected {instruction, input?, output}, {prompt, completion} or {messages}; got fields ${Object.keys(o).join(", ") || "none"}`,
  )
}

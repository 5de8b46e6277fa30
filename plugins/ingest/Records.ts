/**
 * The canonical records every data step reads and writes (the `Records`
 * artifact of plugins/kinds.ts): one JSON object per line, keys sorted, no
 * spaces. Three shapes, plus an optional `meta` object of passthrough fields.
 *
 * Reading is streaming: a Records file may be larger than memory.
 */
import * as fs from "node:fs"
import { Schema } from "effect"
import { canonicalJson } from "../../core/Canonical.ts"
import { recordFiles } from "./RecordParts.ts"

export const Role = Schema.Literals(["system", "user", "assistant"])
export type Role = typeof Role.Type

export const Message = Schema.Struct({ role: Role, content: Schema.String })
export type Message = typeof Message.Type

const Meta = Schema.optionalKey(Schema.Record(Schema.String, Schema.Unknown))

export const InstructionRecord = Schema.Struct({
  instruction: Schema.String,
  input: Schema.optionalKey(Schema.String),
  output: Schema.String,
  meta: Meta,
})
export type InstructionRecord = typeof InstructionRecord.Type

export const CompletionRecord = Schema.Struct({
  prompt: Schema.String,
  completion: Schema.String,
  meta: Meta,
})
export type CompletionRecord = typeof CompletionRecord.Type

export const ChatRecord = Schema.Struct({ messages: Schema.Array(Message), meta: Meta })
export type ChatRecord = typeof ChatRecord.Type

export const CanonicalRecord = Schema.Union([InstructionRecord, CompletionRecord, ChatRecord])
export type CanonicalRecord = typeof CanonicalRecord.Type

export const RecordKind = Schema.Literals(["instruction", "completion", "chat"])
export type RecordKind = typeof RecordKind.Type

export const schemaOf = (kind: RecordKind) =>
  kind === "instruction" ? InstructionRecord : kind === "completion" ? CompletionRecord : ChatRecord

export const kindOf = (r: CanonicalRecord): RecordKind =>
  "messages" in r ? "chat" : "prompt" in r ? "completion" : "instruction"

// Characters JSON.stringify escapes; a string without them serialises as itself between quotes.
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it looks for
const NEEDS_ESCAPE = /["\\\u0000-\u001f\ud800-\udfff]/

/** JSON string literal, exactly as JSON.stringify writes it, without calling it for plain text. */
export const quote = (s: string): string => (NEEDS_ESCAPE.test(s) ? JSON.stringify(s) : `"${s}"`)

const metaPart = (meta: Readonly<Record<string, unknown>> | undefined): string =>
  meta === undefined || Object.keys(meta).length === 0 ? "" : `"meta":${canonicalJson(meta)},`

/** The canonical line of a record (no trailing newline): canonicalJson(record), built without sorting. */
export const recordLine = (r: CanonicalRecord): string => {
  if ("messages" in r) {
    const msgs = r.messages.map((m) => `{"content":${quote(m.content)},"role":${quote(m.role)}}`).join(",")
    const meta = metaPart(r.meta)
    return meta === "" ? `{"messages":[${msgs}]}` : `{"messages":[${msgs}],${meta.slice(0, -1)}}`
  }
  if ("prompt" in r)
    return `{"completion":${quote(r.completion)},${metaPart(r.meta)}"prompt":${quote(r.prompt)}}`
  const input = r.input === undefined ? "" : `"input":${quote(r.input)},`
  return `{${input}"instruction":${quote(r.instruction)},${metaPart(r.meta)}"output":${quote(r.output)}}`
}

const CHUNK = 4 * 1024 * 1024

/**
 * Calls `f` with each line of a file as bytes (without the newline), its
 * 0-based index and its byte offset, reading in large chunks. The buffer is
 * reused: copy what must outlive the call.
 */
export const forEachLineBytes = (
  file: string,
  f: (buf: Buffer, start: number, end: number, index: number, offset: number) => void,
): number => {
  const fd = fs.openSync(file, "r")
  try {
    let buf = Buffer.allocUnsafe(CHUNK)
    let filled = 0
    let base = 0 // file offset of buf[0]
    let index = 0
    for (;;) {
      if (filled === buf.length) {
        const bigger = Buffer.allocUnsafe(buf.length * 2)
        buf.copy(bigger, 0, 0, filled)
        buf = bigger
      }
      const n = fs.readSync(fd, buf, filled, buf.length - filled, null)
      const eof = n === 0
      filled += n
      let start = 0
      for (;;) {
        const nl = buf.indexOf(10, start)
        if (nl < 0 || nl >= filled) break
        f(buf, start, nl, index++, base + start)
        start = nl + 1
      }
      if (eof) {
        if (start < filled) f(buf, start, filled, index++, base + start)
        return index
      }
      buf.copy(buf, 0, start, filled)
      filled -= start
      base += start
    }
  } finally {
    fs.closeSync(fd)
  }
}

/**
 * forEachLineBytes that yields to the event loop after every chunk (4 MiB),
 * so that a long pass stays interruptible: `signal` is checked there.
 */
export const forEachLineBytesAsync = async (
  file: string,
  f: (buf: Buffer, start: number, end: number, index: number, offset: number) => void,
  signal?: AbortSignal,
): Promise<number> => {
  const fh = await fs.promises.open(file, "r")
  try {
    let buf = Buffer.allocUnsafe(CHUNK)
    let filled = 0
    let base = 0
    let index = 0
    for (;;) {
      signal?.throwIfAborted()
      if (filled === buf.length) {
        const bigger = Buffer.allocUnsafe(buf.length * 2)
        buf.copy(bigger, 0, 0, filled)
        buf = bigger
      }
      const { bytesRead: n } = await fh.read(buf, filled, buf.length - filled, null)
      const eof = n === 0
      filled += n
      let start = 0
      for (;;) {
        const nl = buf.indexOf(10, start)
        if (nl < 0 || nl >= filled) break
        f(buf, start, nl, index++, base + start)
        start = nl + 1
      }
      if (eof) {
        if (start < filled) f(buf, start, filled, index++, base + start)
        return index
      }
      buf.copy(buf, 0, start, filled)
      filled -= start
      base += start
    }
  } finally {
    await fh.close()
  }
}

/** Each line of a Records directory's parts (or of a Records file) as a string, in order. */
export const forEachLine = (records: string, f: (line: string, index: number) => void): number => {
  let base = 0
  for (const file of recordFiles(records))
    base += forEachLineBytes(file, (buf, s, e, i) => f(buf.toString("utf8", s, e), base + i))
  return base
}

/** Records (a directory of parts, or one file) as a lazy sequence (memory stays bounded by one chunk). */
export function* iterateRecords(records: string): Generator<CanonicalRecord> {
  for (const file of recordFiles(records)) yield* iterateFile(file)
}

function* iterateFile(file: string): Generator<CanonicalRecord> {
  const fd = fs.openSync(file, "r")
  try {
    let buf = Buffer.allocUnsafe(CHUNK)
    let filled = 0
    for (;;) {
      if (filled === buf.length) {
        const bigger = Buffer.allocUnsafe(buf.length * 2)
        buf.copy(bigger, 0, 0, filled)
        buf = bigger
      }
      const n = fs.readSync(fd, buf, filled, buf.length - filled, null)
      filled += n
      // decode only whole lines: a chunk may end inside a multi-byte character
      const last = n === 0 ? filled : buf.lastIndexOf(10, filled - 1) + 1
      if (last > 0) {
        const text = buf.toString("utf8", 0, last)
        let start = 0
        while (start < text.length) {
          let nl = text.indexOf("\n", start)
          if (nl < 0) nl = text.length
          if (nl > start) yield JSON.parse(text.slice(start, nl)) as CanonicalRecord
          start = nl + 1
        }
        buf.copy(buf, 0, last, filled)
        filled -= last
      }
      if (n === 0) return
    }
  } finally {
    fs.closeSync(fd)
  }
}

/** A Records file as an async stream of records, yielding to the event loop between chunks. */
export async function* readRecords(file: string): AsyncGenerator<CanonicalRecord> {
  let n = 0
  for (const r of iterateRecords(file)) {
    yield r
    if (++n % 4096 === 0) await new Promise<void>((resolve) => setImmediate(resolve))
  }
}

/** Checks a decoded value against the schema of its kind, with Schema's message on failure. */
export const checkRecord = (value: unknown, kind: RecordKind): string | undefined => {
  const schema = schemaOf(kind)
  if (Schema.is(schema)(value)) return undefined
  try {
    Schema.decodeUnknownSync(schema)(value)
    return undefined
  } catch (e) {
    return e instanceof Error ? e.message : String(e)
  }
}

import { describe, expect, it } from "vitest"
import { canonicalJson } from "../../../core/Canonical.ts"
import { FastJsonl, type FastOptions } from "../../../plugins/ingest/FastJsonl.ts"
import { Mapper } from "../../../plugins/ingest/Mapping.ts"
import { type CanonicalRecord, recordLine } from "../../../plugins/ingest/Records.ts"

/** The general path: JSON.parse, Mapping.ts, recordLine. */
const general = (line: string, options: FastOptions): string | undefined => {
  let value: unknown
  try {
    value = JSON.parse(line)
  } catch {
    return undefined
  }
  const out: CanonicalRecord[] = []
  const problem = new Mapper({ ...options, roles: {} }).map(value, (r) => out.push(r))
  return problem === undefined && out.length === 1 ? recordLine(out[0]!) : undefined
}

const fast = (line: string, options: FastOptions): string | undefined => {
  const f = FastJsonl.make(options)!
  const buf = Buffer.from(`xx${line}yy`)
  const n = f.transcode(buf, 2, buf.length - 2)
  return n < 0 ? undefined : f.output.toString("utf8", 0, n)
}

let seed = 42
const rnd = () => {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0
  return seed / 2 ** 32
}
const pick = <T>(xs: ReadonlyArray<T>): T => xs[Math.floor(rnd() * xs.length)]!

const PIECES = [
  "plain",
  " ",
  "é",
  "日本",
  "😀",
  "\n",
  "\r\n",
  "\r",
  "\t",
  '"',
  "\\",
  "/",
  "\u0001",
  "\u001f",
  "\u2028",
  "\ud800",
  "\udfff",
  "x".repeat(120),
]
const ESCAPES = [
  "\\u00e9",
  "\\/",
  "\\u0041",
  "\\ud83d\\ude00",
  "\\u000d\\u000a",
  "\\r\\n",
  "\\u000D",
  "\\uD800",
  "\\b",
  "\\f",
]

/** A JSON string literal for a random text, encoded in one of several valid ways. */
const literal = (): string => {
  let s = ""
  const n = Math.floor(rnd() * 6)
  for (let i = 0; i < n; i++) s += pick(PIECES)
  let lit = JSON.stringify(s)
  if (rnd() < 0.5) lit = `${lit.slice(0, -1)}${pick(ESCAPES)}"`
  return lit
}

const OPTIONS: FastOptions[] = [
  { kind: "instruction", rename: { question: "instruction", answer: "output" }, keep: ["id", "tag"] },
  { kind: "instruction", rename: {}, keep: [] },
  { kind: "completion", rename: { q: "prompt", a: "completion" }, keep: ["z"] },
]

const randomLine = (o: FastOptions): string => {
  const keys =
    o.kind === "instruction"
      ? ["question", "answer", "instruction", "output", "input", "id", "tag", "other"]
      : ["q", "a", "z", "prompt", "completion", "other"]
  const parts: string[] = []
  for (const k of keys) {
    if (rnd() < 0.15) continue
    const v =
      rnd() < 0.85 ? literal() : pick(["1", "-2.5e3", "null", "true", '{"n": [1, "]"]}', "[]", "01", "tru"])
    parts.push(`${JSON.stringify(k)}${pick([":", " : "])}${v}`)
  }
  if (rnd() < 0.05) parts.push(parts[0] ?? '"x":"y"')
  return `${pick(["", " "])}{${parts.join(pick([",", ", "]))}}${pick(["", " ", "\r"])}`
}

describe("FastJsonl", () => {
  it("writes exactly the general path's canonical line, or declines", () => {
    let taken = 0
    for (const o of OPTIONS)
      for (let i = 0; i < 3000; i++) {
        const line = randomLine(o)
        const f = fast(line, o)
        if (f === undefined) continue
        taken++
        expect(f, line).toBe(general(line, o))
        expect(canonicalJson(JSON.parse(f))).toBe(f)
      }
    // most lines are plain enough for the fast path
    expect(taken).toBeGreaterThan(1500)
  })

  it("declines what it does not handle: nested values in mapped fields, raw control characters, own meta", () => {
    const o = OPTIONS[0]!
    expect(fast('{"question":"q","answer":["a"]}', o)).toBeUndefined()
    expect(fast('{"question":"q\tx","answer":"a"}', o)).toBeUndefined()
    expect(fast('{"question":"q","answer":"a","meta":{"k":1}}', o)).toBeUndefined()
    expect(fast('{"question":"q"}', o)).toBeUndefined()
    expect(fast('{"question":"q","answer":"a"', o)).toBeUndefined()
    expect(fast('{"question":"q","answer":"a"} x', o)).toBeUndefined()
    expect(fast('{"question":"q","answer":"a","question":"again"}', o)).toBeUndefined()
  })

  it("is not offered for chat records, expansions or dotted paths", () => {
    expect(FastJsonl.make({ kind: "chat", rename: {}, keep: [] })).toBeUndefined()
    expect(FastJsonl.make({ kind: "instruction", rename: {}, keep: [], expand: "instances" })).toBeUndefined()
    expect(
      FastJsonl.make({ kind: "instruction", rename: { "a.b": "instruction" }, keep: [] }),
    ).toBeUndefined()
  })
})

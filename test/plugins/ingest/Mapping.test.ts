import { describe, expect, it } from "vitest"
import { canonicalJson } from "../../../core/Canonical.ts"
import { Mapper, type MappingOptions } from "../../../plugins/ingest/Mapping.ts"
import type { Problem } from "../../../plugins/ingest/Problem.ts"
import { type CanonicalRecord, recordLine } from "../../../plugins/ingest/Records.ts"

const map = (raw: unknown, options: Partial<MappingOptions> = {}) => {
  const m = new Mapper({ rename: {}, keep: [], roles: {}, ...options })
  const out: CanonicalRecord[] = []
  const problem = m.map(raw, (r) => out.push(r))
  return { out, problem, kind: m.kind }
}

describe("Mapper", () => {
  it("infers the kind from the fields and renames", () => {
    expect(
      map({ question: "q", answer: "a" }, { rename: { question: "instruction", answer: "output" } }),
    ).toMatchObject({
      out: [{ instruction: "q", output: "a" }],
      kind: "instruction",
    })
    expect(map({ prompt: "p", completion: "c" }).out).toEqual([{ prompt: "p", completion: "c" }])
    expect(map({ text: "t" })).toMatchObject({ out: [{ prompt: "", completion: "t" }], kind: "completion" })
    expect(map({ instruction: "i", input: "", output: "o" }).out).toEqual([{ instruction: "i", output: "o" }])
    expect(map({ instruction: "i\r\nj", input: null, output: "o\r" }).out).toEqual([
      { instruction: "i\nj", output: "o\n" },
    ])
  })

  it("normalises role names and reads ShareGPT conversations", () => {
    const { out } = map({
      conversations: [
        { from: "System", value: "s" },
        { from: "human", value: "h" },
        { from: "gpt", value: "g" },
        { from: "User", value: "u" },
        { from: "Agent", value: "a" },
        { from: "bot", value: "b" },
      ],
      id: 7,
    })
    expect(out).toEqual([
      {
        messages: [
          { role: "system", content: "s" },
          { role: "user", content: "h" },
          { role: "assistant", content: "g" },
          { role: "user", content: "u" },
          { role: "assistant", content: "a" },
          { role: "assistant", content: "b" },
        ],
      },
    ])
    const custom = map({ messages: [{ role: "narrator", content: "x" }] }, { roles: { Narrator: "system" } })
    expect(custom.out).toEqual([{ messages: [{ role: "system", content: "x" }] }])
  })

  it("says which message and field is wrong", () => {
    expect(
      map({
        messages: [
          { role: "user", content: "x" },
          { role: "wizard", content: "y" },
        ],
      }).problem,
    ).toMatchObject({
      field: "messages[1].role",
      message: expect.stringContaining('unknown role "wizard"'),
    })
    expect(map({ messages: [{ role: "user", content: 3 }] }).problem).toEqual({
      field: "messages[0].content",
      message: "expected a string, got number 3",
    })
  })

  it("names the source field of a renamed field with the wrong type", () => {
    const { problem, out } = map(
      { question: 5, answer: "a" },
      { kind: "instruction", rename: { question: "instruction", answer: "output" } },
    )
    expect(out).toEqual([])
    expect(problem).toEqual({ field: "question", message: "expected a string, got number 5" })
    const missing = map({ instruction: "i", response: "r" }, { kind: "instruction" }).problem as Problem
    expect(missing.field).toBe("output")
    expect(missing.message).toContain("instruction, response")
    expect(missing.message).toContain('rename: { <field>: "output" }')
  })

  it("says when renamed fields are not in the record", () => {
    const { problem } = map(
      { instruction: "i", output: "o" },
      { rename: { question: "instruction", answer: "output" } },
    )
    expect(problem?.message).toContain('the renamed field(s) "question", "answer" are not in the record')
  })

  it("expands nested instances, merged over the parent's fields, all or nothing", () => {
    const task = {
      id: "t1",
      instruction: "Add",
      instances: [
        { input: "1+1", output: "2" },
        { input: "", output: "0" },
      ],
    }
    const { out } = map(task, { expand: "instances", keep: ["id"] })
    expect(out).toEqual([
      { instruction: "Add", input: "1+1", output: "2", meta: { id: "t1" } },
      { instruction: "Add", output: "0", meta: { id: "t1" } },
    ])
    const bad = map(
      { instruction: "x", instances: [{ output: "1" }, { output: 2 }] },
      { expand: "instances" },
    )
    expect(bad.out).toEqual([])
    expect(bad.problem).toEqual({ field: "instances[1].output", message: "expected a string, got number 2" })
  })

  it("keeps chosen fields under meta, and a canonical record's own meta", () => {
    const { out } = map(
      { instruction: "i", output: "o", intent: "refund", category: "ORDER", x: 1 },
      { keep: ["intent", "category"] },
    )
    expect(out).toEqual([{ instruction: "i", output: "o", meta: { intent: "refund", category: "ORDER" } }])
    const again = map(JSON.parse(recordLine(out[0]!)))
    expect(again.out).toEqual(out)
  })
})

describe("recordLine", () => {
  it("is canonicalJson of the record", () => {
    const records: CanonicalRecord[] = [
      {
        instruction: 'a "q"\n',
        input: "é\u0001",
        output: "\ud800",
        meta: { z: 1, a: [{ y: null, b: "é" }] },
      },
      { prompt: "", completion: "c" },
      { prompt: "p", completion: "c", meta: { k: "v" } },
      { messages: [{ role: "user", content: "hi" }], meta: { n: 2 } },
      { messages: [{ role: "assistant", content: "\\" }] },
    ]
    for (const r of records) expect(recordLine(r)).toBe(canonicalJson(r))
  })
})

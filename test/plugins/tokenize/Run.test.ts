import * as fs from "node:fs"
import * as path from "node:path"
import { Tokenizer as HfNative } from "tokenizers"
import { describe, expect, it } from "vitest"
import type { TokenizeReport } from "../../../plugins/tokenize/Run.ts"
import { Llama2cTokenizer } from "../../../plugins/tokenize/Tok512.ts"
import { readTokens } from "../../../plugins/tokenize/TokensFile.ts"
import {
  bitextRows,
  gpt2Dir,
  gsm8kRecords,
  hasData,
  runTokenizeStep,
  tmpDir,
  tok512File,
  writeRecords,
} from "./fixtures.ts"

const ALPACA_NO_INPUT =
  "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
const alpacaPrompt = (instruction: string) =>
  `${ALPACA_NO_INPUT}### Instruction:\n${instruction}\n\n### Response:\n`
const gpt2Json = path.join(gpt2Dir, "tokenizer.json")
const EOS = 50256

const readReport = (file: string): TokenizeReport => JSON.parse(fs.readFileSync(file, "utf8"))
const sequences = (dir: string) => {
  const data = readTokens(dir)
  return Array.from({ length: data.meta.count }, (_, i) => {
    const s = data.sequence(i)
    return { ids: [...s.tokens], labels: [...s.labels], segments: s.segments ? [...s.segments] : undefined }
  })
}

// Real tokenizers and real records from the shared data directory; nothing to test against without them.
describe.skipIf(!hasData)("tokenize step (GPT-2 tokenizer.json, gsm8k)", () => {
  const records = gsm8kRecords(200)
  const dir = tmpDir("tokenize")
  const recordsFile = writeRecords(dir, records)
  const reference = HfNative.fromFile(gpt2Json)
  reference.disableTruncation()
  const encode = async (text: string) =>
    (await reference.encode(text, null, { addSpecialTokens: false })).getIds()
  // The plain run (alpaca, maxLength 1024, the tokenizer directory) that other runs are compared with.
  let plain: ReturnType<typeof runTokenizeStep> | undefined
  const plainRun = () => {
    plain ??= runTokenizeStep({ maxLength: 1024 }, { records: recordsFile, tokenizer: gpt2Dir })
    return plain
  }

  it("writes prompt ids + response ids + EOS with the prompt masked, exactly tokenizers' ids", async () => {
    const run = await plainRun()
    const seqs = sequences(run.tokensDir)
    expect(seqs.length).toBe(records.length)
    for (const [i, r] of records.entries()) {
      const prompt = await encode(alpacaPrompt(r.instruction))
      const response = await encode(r.output)
      expect(seqs[i]!.ids).toEqual([...prompt, ...response, EOS])
      expect(seqs[i]!.labels).toEqual([...prompt.map(() => -100), ...response, EOS])
    }
    const meta = readTokens(run.tokensDir).meta
    expect(meta).toMatchObject({
      count: 200,
      vocabSize: 50257,
      eosId: EOS,
      bosId: null,
      maxLength: 1024,
      packed: false,
    })
    expect(meta.format).toBe("alpaca")
    expect(run.meta).toMatchObject({
      tokens: { count: 200, tokens: meta.tokens, vocabSize: 50257, packed: false },
    })
    const report = readReport(run.reportFile)
    expect(report).toMatchObject({ records: 200, examples: 200, sequences: 200, tokens: meta.tokens })
    expect(report.lengths.count).toBe(200)
    expect(report.lengths.max).toBe(Math.max(...seqs.map((s) => s.ids.length)))
    expect(report.lengths.histogram.reduce((a, b) => a + b.count, 0)).toBe(200)
    expect(report.overflow.examples).toBe(0)
    expect(report.tokenizer.notes.join()).toMatch(/truncates at 50 tokens/)
    expect(report.samples[0]!.trained).toBe(`${records[0]!.output}<|endoftext|>`)
    expect(run.logs.join("\n")).toMatch(/200 records -> 200 sequences/)
  })

  it("trainOnInputs keeps the prompt in the loss (all but the first token, which nothing predicts)", async () => {
    const run = await runTokenizeStep(
      { maxLength: 1024, trainOnInputs: true },
      { records: recordsFile, tokenizer: gpt2Json },
    )
    for (const s of sequences(run.tokensDir)) expect(s.labels).toEqual([-100, ...s.ids.slice(1)])
  })

  it("overflow: fail lists the over-long examples, drop leaves them out, truncate cuts them, all reported", async () => {
    const full = sequences((await plainRun()).tokensDir)
    const maxLength = 160
    const over = full.filter((s) => s.ids.length > maxLength)
    expect(over.length).toBeGreaterThan(5)
    const firstLine = full.findIndex((s) => s.ids.length > maxLength) + 1

    await expect(
      runTokenizeStep({ maxLength }, { records: recordsFile, tokenizer: gpt2Json }),
    ).rejects.toThrow(
      new RegExp(
        `^${over.length} of 200 examples are longer than maxLength 160 \\(by \\d+ to \\d+ tokens, median \\d+; lines ${firstLine}, `,
      ),
    )

    const dropped = await runTokenizeStep(
      { maxLength, overflow: "drop" },
      { records: recordsFile, tokenizer: gpt2Json },
    )
    const kept = sequences(dropped.tokensDir)
    expect(kept).toEqual(full.filter((s) => s.ids.length <= maxLength))
    const dropReport = readReport(dropped.reportFile)
    expect(dropReport.overflow).toMatchObject({ examples: over.length, dropped: over.length, truncated: 0 })
    expect(dropReport.overflow.excess.max).toBe(Math.max(...over.map((s) => s.ids.length)) - maxLength)
    expect(dropReport.overflow.lines[0]).toBe(firstLine)

    const cut = await runTokenizeStep(
      { maxLength, overflow: "truncate" },
      { records: recordsFile, tokenizer: gpt2Json },
    )
    const truncated = sequences(cut.tokensDir)
    const cutReport = readReport(cut.reportFile)
    // An example whose prompt alone passes maxLength has nothing left to train once cut: it is left out.
    const expected = full
      .map((f) => ({
        ids: f.ids.slice(0, maxLength),
        labels: f.labels.slice(0, maxLength),
        segments: undefined,
      }))
      .filter((s) => s.labels.some((l) => l !== -100))
    expect(truncated).toEqual(expected)
    expect(cutReport.overflow.droppedNoTarget).toBe(200 - expected.length)
    const cutOff = over.filter((s) => s.labels.slice(0, maxLength).some((l) => l !== -100))
    expect(cutReport.overflow).toMatchObject({
      truncated: cutOff.length,
      tokensCut: cutOff.reduce((a, s) => a + s.ids.length - maxLength, 0),
    })
  })

  it("truncation that leaves nothing to train drops the example and says so", async () => {
    const run = await runTokenizeStep(
      { maxLength: 48, overflow: "truncate" },
      { records: recordsFile, tokenizer: gpt2Json },
    )
    const report = readReport(run.reportFile)
    expect(report.overflow.droppedNoTarget).toBeGreaterThan(0)
    expect(report.examples).toBe(200 - report.overflow.droppedNoTarget)
    for (const s of sequences(run.tokensDir)) {
      expect(s.ids.length).toBeLessThanOrEqual(48)
      expect(s.labels.some((l) => l !== -100)).toBe(true)
    }
  })

  it("packs short examples into maxLength sequences, segments restarting at each example", async () => {
    const unpacked = sequences((await plainRun()).tokensDir)
    const run = await runTokenizeStep(
      { maxLength: 512, pack: true },
      { records: recordsFile, tokenizer: gpt2Json },
    )
    const packed = sequences(run.tokensDir)
    expect(packed.length).toBeLessThan(unpacked.length / 2)
    const examples: string[] = []
    for (const s of packed) {
      expect(s.ids.length).toBeLessThanOrEqual(512)
      const segs = s.segments!
      expect(segs[0]).toBe(0)
      for (let i = 1; i < segs.length; i++) expect(segs[i]! - segs[i - 1]!).toBeGreaterThanOrEqual(0)
      for (let k = 0; k <= segs[segs.length - 1]!; k++) {
        const idx = segs.flatMap((x, i) => (x === k ? [i] : []))
        expect(s.labels[idx[0]!]).toBe(-100) // nothing in the example predicts its first token
        examples.push(JSON.stringify({ ids: idx.map((i) => s.ids[i]), labels: idx.map((i) => s.labels[i]) }))
      }
    }
    const originals = unpacked.map((s) => JSON.stringify({ ids: s.ids, labels: s.labels }))
    expect(examples.sort()).toEqual(originals.sort())
    const report = readReport(run.reportFile)
    expect(report.packing!.examples).toBe(200)
    expect(report.packing!.fill).toBeGreaterThan(0.8)
    expect(readTokens(run.tokensDir).meta.packed).toBe(true)
  })

  it("renders the model's chat_template from tokenizer_config.json; the template writes its own end of turn", async () => {
    const tokDir = tmpDir("tok-chat")
    fs.copyFileSync(gpt2Json, path.join(tokDir, "tokenizer.json"))
    fs.writeFileSync(
      path.join(tokDir, "tokenizer_config.json"),
      JSON.stringify({
        eos_token: "<|endoftext|>",
        chat_template:
          "{% for m in messages %}{{ m['role'] + ': ' + m['content'] }}{% if m['role'] == 'assistant' %}{{ eos_token }}{% else %}{{ '\\n' }}{% endif %}{% endfor %}" +
          "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}",
      }),
    )
    const rows = bitextRows().slice(0, 50)
    const chats = rows.map((r) => ({
      messages: [
        { role: "user", content: r.instruction },
        { role: "assistant", content: r.response },
      ],
    }))
    chats.push({ messages: [{ role: "user", content: "no reply" }] })
    const file = writeRecords(tmpDir("chat"), chats)
    const run = await runTokenizeStep(
      { template: "chat_template", maxLength: 1024, overflow: "drop" },
      { records: file, tokenizer: tokDir },
    )
    const seqs = sequences(run.tokensDir)
    const report = readReport(run.reportFile)
    expect(report.skippedNoReply).toEqual({ count: 1, lines: [51] })
    expect(seqs.length + report.overflow.dropped).toBe(50)
    const s = seqs[0]!
    const prompt = `user: ${rows[0]!.instruction}\nassistant: `
    // The rendered conversation is tokenized whole, as apply_chat_template(tokenize=True) does, and EOS is not
    // appended twice: the template already ended the reply with it.
    expect(s.ids).toEqual(await encode(`${prompt}${rows[0]!.response}<|endoftext|>`))
    // The token that joins the prompt's last space to the reply's first word is the reply's.
    const first = s.labels.findIndex((l) => l !== -100)
    expect(await reference.decode(s.ids.slice(0, first), false)).toBe(prompt.slice(0, -1))
    expect(s.labels.slice(first)).toEqual(s.ids.slice(first))
    expect(s.labels.slice(0, first).every((l) => l === -100)).toBe(true)
  })

  it("fails on a record with a wrong field type, naming the file, line and field", async () => {
    const file = writeRecords(tmpDir("bad"), [
      records[0],
      records[1],
      { instruction: "x", output: 42 },
      records[3],
    ])
    await expect(runTokenizeStep({}, { records: file, tokenizer: gpt2Json })).rejects.toMatchObject({
      _tag: "StepError",
      message: `${file}:3: field "output" must be a string, got number`,
      file,
      line: 3,
      field: "output",
    })
  })

  it("fails on a tokenizer that is not valid, naming the file", async () => {
    const bad = path.join(tmpDir("badtok"), "tokenizer.json")
    fs.writeFileSync(bad, '{"model": ')
    await expect(runTokenizeStep({}, { records: recordsFile, tokenizer: bad })).rejects.toThrow(
      /tokenizer\.json:1:\d+: invalid JSON/,
    )
  })
})

describe.skipIf(!hasData)("tokenize step (llama2.c tok512.bin)", () => {
  it("starts with BOS, gives only the first part the dummy prefix, ends with EOS", async () => {
    const records = gsm8kRecords(40)
    const file = writeRecords(tmpDir("t512"), records)
    const run = await runTokenizeStep(
      { maxLength: 4096, template: "chatml" },
      { records: file, tokenizer: tok512File },
    )
    const tok = Llama2cTokenizer.fromFile(tok512File)
    const seqs = sequences(run.tokensDir)
    records.forEach((r, i) => {
      const prompt = tok.encode(`<|im_start|>user\n${r.instruction}<|im_end|>\n<|im_start|>assistant\n`)
      const reply = tok.encode(`${r.output}<|im_end|>`, { dummyPrefix: false })
      expect(seqs[i]!.ids).toEqual([1, ...prompt, ...reply, 2])
      expect(seqs[i]!.labels).toEqual([-100, ...prompt.map(() => -100), ...reply, 2])
    })
    const meta = readTokens(run.tokensDir).meta
    expect(meta).toMatchObject({ vocabSize: 512, bosId: 1, eosId: 2, padId: 0 })
    expect(readReport(run.reportFile).samples[0]!.text).toContain(records[0]!.instruction)
  })
})

/**
 * chat_template benchmark: how fast the tokenize step renders and tokenizes
 * conversations with the real templates of test/fixtures/templates, in a
 * model directory made of GPT-2's tokenizer.json plus the template's special
 * tokens. Qwen2.5's and SmolLM2's templates extend each prefix of a
 * conversation, so replies are split by rendering prefixes; Qwen3's (past
 * thinking dropped) and Mistral's (system message moved into the last user
 * turn) do not, so each message is located with a marker, which costs more
 * renders per record.
 *
 *   npx tsx bench/chat-template.ts                      # 2,000 conversations, 3 runs, medians
 *   CHAT_BENCH_RECORDS=500 CHAT_BENCH_RUNS=5 npx tsx bench/chat-template.ts
 *
 * Conversations: system, then two user/assistant turns, from the real
 * Bitext customer-support instructions and replies in ../shared/data.
 * Figures: records/s of rendering alone (the parts of every record), and
 * records/s and MB/s of the whole tokenize step (read, render, tokenize,
 * mask, write).
 *
 * 2026-12-01, 2 cores shared with other jobs (load average 5-8, so take the
 * figures as a floor), medians of 3 runs of 2,000 conversations:
 *
 *   template   render records/s   tokenize step records/s
 *   qwen2.5          1179                 407
 *   smollm2          1643                 408
 *   qwen3             188                 140   (markers: past thinking dropped)
 *   mistral           381                 319   (markers: system moved)
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Tokenizer } from "tokenizers"
import { tokenizeRecords } from "../plugins/tokenize/Run.ts"
import { makeRenderer, tokenizerTemplateOptions } from "../plugins/tokenize/Template.ts"
import { loadTokenizer } from "../plugins/tokenize/Tokenizer.ts"
import { csvRows } from "../test/support/csv.ts"

const root = path.resolve(import.meta.dirname, "..")
const data = path.resolve(root, "../shared/data")
const RECORDS = Number(process.env.CHAT_BENCH_RECORDS ?? 2000)
const RUNS = Number(process.env.CHAT_BENCH_RUNS ?? 3)

const FAMILIES = [
  {
    name: "qwen2.5",
    file: "qwen2.5-instruct.jinja",
    special: ["<|im_start|>", "<|im_end|>"],
    eos: "<|im_end|>",
  },
  {
    name: "smollm2",
    file: "smollm2-instruct.jinja",
    special: ["<|im_start|>", "<|im_end|>"],
    eos: "<|im_end|>",
  },
  { name: "qwen3", file: "qwen3.jinja", special: ["<|im_start|>", "<|im_end|>"], eos: "<|im_end|>" },
  {
    name: "mistral",
    file: "mistral-7b-instruct-v0.3.jinja",
    special: ["<s>", "</s>", "[INST]", "[/INST]"],
    eos: "</s>",
    bos: "<s>",
  },
] as const

const conversations = (): Array<{ messages: Array<{ role: string; content: string }> }> => {
  const csv = path.join(
    data,
    "datasets/bitext-customer-support/Bitext_Sample_Customer_Support_Training_Dataset.csv",
  )
  const [header, ...rows] = csvRows(fs.readFileSync(csv, "utf8"))
  const ins = header!.indexOf("instruction")
  const res = header!.indexOf("response")
  return Array.from({ length: RECORDS }, (_, i) => {
    const a = rows[(2 * i) % rows.length]!
    const b = rows[(2 * i + 1) % rows.length]!
    return {
      messages: [
        { role: "system", content: "You are a customer support agent." },
        { role: "user", content: a[ins]! },
        { role: "assistant", content: a[res]! },
        { role: "user", content: b[ins]! },
        { role: "assistant", content: b[res]! },
      ],
    }
  })
}

const median = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)]!

const main = async () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), "chat-bench-"))
  const records = conversations()
  const recordsFile = path.join(work, "records.jsonl")
  fs.writeFileSync(recordsFile, `${records.map((r) => JSON.stringify(r)).join("\n")}\n`)
  const bytes = fs.statSync(recordsFile).size
  console.log(
    `${RECORDS} conversations (${(bytes / 1e6).toFixed(2)} MB), ${RUNS} runs each, medians; node ${process.version}`,
  )
  for (const f of FAMILIES) {
    const dir = path.join(work, f.name)
    fs.mkdirSync(dir)
    const t = Tokenizer.fromFile(path.join(data, "tokenizer/gpt2-hf/tokenizer.json"))
    t.addSpecialTokens([...f.special])
    t.save(path.join(dir, "tokenizer.json"))
    fs.writeFileSync(
      path.join(dir, "tokenizer_config.json"),
      JSON.stringify({
        eos_token: f.eos,
        ...("bos" in f ? { bos_token: f.bos } : {}),
        chat_template: fs.readFileSync(path.join(root, "test/fixtures/templates", f.file), "utf8"),
      }),
    )
    const tok = await loadTokenizer(dir)
    const renderer = await makeRenderer("chat_template", tokenizerTemplateOptions(tok))
    const render: number[] = []
    const step: number[] = []
    for (let run = 0; run < RUNS; run++) {
      let start = performance.now()
      for (const r of records) renderer.render(r as never)
      render.push((performance.now() - start) / 1000)
      start = performance.now()
      await tokenizeRecords({
        recordsFile,
        tokenizer: dir,
        tokensDir: path.join(work, `${f.name}-tokens-${run}`),
        reportFile: path.join(work, `${f.name}-report-${run}.json`),
        params: {
          template: "chat_template",
          maxLength: 8192,
          overflow: "drop",
          trainOnInputs: false,
          pack: false,
          addBos: "auto",
          addEos: true,
          samples: 0,
        },
      })
      step.push((performance.now() - start) / 1000)
    }
    const r = median(render)
    const s = median(step)
    console.log(
      `${f.name.padEnd(8)} render ${Math.round(RECORDS / r)
        .toString()
        .padStart(6)} records/s   tokenize step ${Math.round(RECORDS / s)
        .toString()
        .padStart(6)} records/s, ${(bytes / 1e6 / s).toFixed(2)} MB/s`,
    )
  }
  fs.rmSync(work, { recursive: true, force: true })
}

await main()

/**
 * tokenize benchmark: end-to-end throughput and peak RSS of the tokenize step
 * (read records, render, tokenize, mask, write the Tokens arrays) against raw
 * `tokenizers` batch encoding of the same text with GPT-2's tokenizer.json.
 * Each measurement runs in its own process so its peak RSS is its own.
 *
 *   npx tsx bench/tokenize.ts                      # 200 MB generated corpus
 *   TOKENIZE_BENCH_MB=20 npx tsx bench/tokenize.ts # a smaller one
 *   TOKENIZE_BENCH_RUNS=3 ...                      # repeat each measurement, print medians
 *
 * The corpus is instruction records composed at random (fixed seed) from the
 * real questions, answers and replies in ../shared/data, so the text is real
 * English with numbers, code and placeholders, but not repeated verbatim.
 * Figures: MB/s over the UTF-8 bytes of the records' text fields (the same
 * bytes both sides encode), records/s, and peak RSS.
 *
 * Measured (2 cores, Node 20, 20 MB corpus, 3 runs, medians):
 *   TOKENIZE_BENCH_MB=20 TOKENIZE_BENCH_RUNS=3 TOKENIZE_BENCH_ONLY=raw2,raw3,none,alpaca npx tsx bench/tokenize.ts
 *   before typed-array chunks (quiet machine, load 0.4-2.1):
 *     raw3 4.96 MB/s (2.71 MB/cpu-s), none 3.81 (77%; 81% per CPU s), alpaca 3.52 (71%; 74%), RSS 377 MB
 *   after (other jobs shared the cores, load 0.3-2.9: raw3 swung 2.9-4.6 MB/s from run to run, so the MB/cpu-s
 *   ratio is the steadier one):
 *     typed arrays + 3 in flight: raw3 4.54 (2.57), none 3.85 (85%; 84% per CPU s), alpaca 3.46 (76%; 77%)
 *     + forced collection every 8M tokens, two rounds: none 68% and 98% (100% and 98% per CPU s),
 *     alpaca 75% and 101% (93% and 89% per CPU s); RSS 347-361 MB against raw's 384-390
 *   on a quiet machine (load 1.2-1.7), the step writing parts (plugins/tokenize/Run.ts), raw3,none,alpaca:
 *     raw3 4.86 MB/s (2.73 MB/cpu-s); none 4.53 (93%; 97% per CPU s); alpaca 4.25 (87%; 88%); RSS 338-344 MB
 *     against raw's 387
 * alpaca encodes about 10% more tokens than the records hold (its preamble and headers: 5.00M against 4.54M
 * for none), so its ceiling is below raw's on the same records: per token it runs at about 96% of raw.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { csvRows } from "../test/support/csv.ts"

const root = path.resolve(import.meta.dirname, "..")
const data = path.resolve(root, "../shared/data")
const gpt2 = path.join(data, "tokenizer/gpt2-hf")
const MB = Number(process.env.TOKENIZE_BENCH_MB ?? 200)
const RUNS = Number(process.env.TOKENIZE_BENCH_RUNS ?? 1)

interface Figures {
  readonly what: string
  readonly seconds: number
  /** CPU time of the whole process (every thread) over the same span. */
  readonly cpuSeconds: number
  readonly textBytes: number
  readonly records: number
  readonly maxRssMb: number
  readonly tokens: number
}

/** The text a record holds, as the "none" template concatenates it (prompt, blank line, output). */
const recordText = (r: { instruction: string; input?: string; output: string }) =>
  `${r.instruction}${r.input ? `\n\n${r.input}` : ""}\n\n${r.output}`

// ---------------------------------------------------------------- children

/**
 * The ceiling: plain `encodeBatch` plus ids extraction (`getIds`, as any user
 * of the ids must) over the same texts, in batches of the step's size with
 * `inFlight` batches encoding at once. Records are read and parsed before the
 * clock starts, so only encoding and extraction are timed.
 */
const rawChild = async (file: string, inFlight: number): Promise<Figures> => {
  const { Tokenizer } = await import("tokenizers")
  const { readLines } = await import("../plugins/tokenize/RecordReader.ts")
  const tok = Tokenizer.fromFile(path.join(gpt2, "tokenizer.json"))
  tok.disableTruncation()
  const batches: string[][] = []
  let textBytes = 0
  let records = 0
  for await (const lines of readLines(file)) {
    const texts = lines.map((l) => recordText(JSON.parse(l.text)))
    for (const t of texts) textBytes += Buffer.byteLength(t)
    records += texts.length
    batches.push(texts)
  }
  let tokens = 0
  const extract = (es: ReadonlyArray<{ getIds(): number[] }>) => {
    let n = 0
    for (const e of es) n += e.getIds().length
    return n
  }
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  const pending: Array<Promise<number>> = []
  for (const texts of batches) {
    pending.push(tok.encodeBatch(texts, { addSpecialTokens: false }).then(extract))
    if (pending.length >= inFlight) tokens += await pending.shift()!
  }
  for (const p of pending.splice(0)) tokens += await p
  const seconds = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  return {
    what: `raw tokenizers encodeBatch + getIds, ${inFlight} batch${inFlight === 1 ? "" : "es"} in flight`,
    seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    textBytes,
    records,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
    tokens,
  }
}

const stepChild = async (file: string, template: "none" | "alpaca", pack: boolean): Promise<Figures> => {
  const { tokenizeRecords } = await import("../plugins/tokenize/Run.ts")
  const out = fs.mkdtempSync(path.join(os.tmpdir(), "tokenize-bench-out-"))
  const t0 = performance.now()
  const cpu0 = process.cpuUsage()
  const { meta, report } = await tokenizeRecords({
    recordsFile: file,
    tokenizer: gpt2,
    tokensDir: path.join(out, "tokens"),
    reportFile: path.join(out, "report.json"),
    params: {
      template,
      maxLength: 1024,
      overflow: "truncate",
      trainOnInputs: false,
      pack,
      addBos: "auto",
      addEos: true,
      samples: 3,
    },
  })
  const seconds = (performance.now() - t0) / 1000
  const cpu = process.cpuUsage(cpu0)
  const textBytes = Number(fs.readFileSync(`${file}.textbytes`, "utf8"))
  fs.rmSync(out, { recursive: true, force: true })
  return {
    what: `tokenize step, end to end (template ${template}${pack ? ", packed" : ""})`,
    seconds,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    textBytes,
    records: report.records,
    maxRssMb: process.resourceUsage().maxRSS / 1024,
    tokens: meta.tokens,
  }
}

// ---------------------------------------------------------------- corpus

const readJsonl = (file: string) =>
  fs
    .readFileSync(file, "utf8")
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l))

/** One column of a CSV file, its empty cells left out. */
const csvColumn = (file: string, column: string): string[] => {
  const [header, ...rows] = csvRows(fs.readFileSync(file, "utf8"))
  const col = header!.indexOf(column)
  return rows.flatMap((r) => (r[col] ? [r[col]!] : []))
}

const generateCorpus = (file: string, bytes: number): void => {
  const gsm = readJsonl(path.join(data, "datasets/gsm8k/test.jsonl")) as Array<{
    question: string
    answer: string
  }>
  const seed = readJsonl(path.join(data, "datasets/alpaca-seed/seed_tasks.jsonl")) as Array<{
    instruction: string
    instances: Array<{ input: string; output: string }>
  }>
  const bitext = path.join(
    data,
    "datasets/bitext-customer-support/Bitext_Sample_Customer_Support_Training_Dataset.csv",
  )
  const instructions = [
    ...gsm.map((r) => r.question),
    ...seed.map((t) => t.instruction),
    ...csvColumn(bitext, "instruction"),
  ]
  const inputs = seed.flatMap((t) => t.instances.map((x) => x.input)).filter((s) => s !== "")
  const outputs = [
    ...gsm.map((r) => r.answer),
    ...seed.flatMap((t) => t.instances.map((x) => x.output)),
    ...csvColumn(bitext, "response"),
  ]
  let s = 12345
  const rand = (n: number) => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0
    return (s >>> 8) % n
  }
  const pick = (xs: string[]) => xs[rand(xs.length)]!
  const fd = fs.openSync(file, "w")
  let written = 0
  let records = 0
  let textBytes = 0
  let chunk: string[] = []
  while (written < bytes) {
    const input = rand(4) === 0 ? pick(inputs) : undefined
    const parts = 1 + rand(3)
    const output = Array.from({ length: parts }, () => pick(outputs)).join("\n\n")
    const r = { instruction: `${pick(instructions)} (#${records})`, ...(input ? { input } : {}), output }
    const line = JSON.stringify(r)
    chunk.push(line)
    written += Buffer.byteLength(line) + 1
    textBytes += Buffer.byteLength(recordText(r))
    records++
    if (chunk.length === 2000) {
      fs.writeSync(fd, `${chunk.join("\n")}\n`)
      chunk = []
    }
  }
  if (chunk.length > 0) fs.writeSync(fd, `${chunk.join("\n")}\n`)
  fs.closeSync(fd)
  fs.writeFileSync(`${file}.textbytes`, String(textBytes))
}

// ---------------------------------------------------------------- driver

const child = (args: string[]): Figures => {
  const r = spawnSync(process.execPath, [...process.execArgv, import.meta.filename, ...args], {
    encoding: "utf8",
    maxBuffer: 1 << 24,
  })
  if (r.status !== 0) throw new Error(`child ${args.join(" ")} failed:\n${r.stdout}\n${r.stderr}`)
  return JSON.parse(r.stdout.trim().split("\n").pop()!)
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!

const main = async () => {
  const [mode, file, ...rest] = process.argv.slice(2)
  if (mode === "raw") return console.log(JSON.stringify(await rawChild(file!, Number(rest[0] ?? 1))))
  if (mode === "step")
    return console.log(
      JSON.stringify(await stepChild(file!, rest[0] as "none" | "alpaca", rest[1] === "pack")),
    )

  if (!fs.existsSync(gpt2)) {
    console.log(`no GPT-2 tokenizer at ${gpt2}: the benchmark needs the shared data directory`)
    return
  }
  // TOKENIZE_BENCH_CORPUS keeps the generated corpus at that path and reuses it on the next run.
  const kept = process.env.TOKENIZE_BENCH_CORPUS
  const dir = kept ? undefined : fs.mkdtempSync(path.join(os.tmpdir(), "tokenize-bench-"))
  const corpus = kept ?? path.join(dir!, "records.jsonl")
  const t0 = performance.now()
  if (!(kept && fs.existsSync(`${corpus}.textbytes`))) generateCorpus(corpus, MB * 1e6)
  const size = fs.statSync(corpus).size
  const textBytes = Number(fs.readFileSync(`${corpus}.textbytes`, "utf8"))
  console.log(
    `corpus: ${(size / 1e6).toFixed(1)} MB of JSONL, ${(textBytes / 1e6).toFixed(1)} MB of text ` +
      `(ready in ${((performance.now() - t0) / 1000).toFixed(1)} s); ${os.cpus().length} cores, Node ${process.version}`,
  )
  const allPlans: Array<[string, string[]]> = [
    ["raw1", ["raw", corpus, "1"]],
    ["raw2", ["raw", corpus, "2"]],
    ["raw3", ["raw", corpus, "3"]],
    ["raw4", ["raw", corpus, "4"]],
    ["none", ["step", corpus, "none"]],
    ["alpaca", ["step", corpus, "alpaca"]],
    ["packed", ["step", corpus, "alpaca", "pack"]],
  ]
  // TOKENIZE_BENCH_ONLY=raw4,none measures only those (names as above).
  const only = process.env.TOKENIZE_BENCH_ONLY?.split(",")
  const plans = allPlans.filter(([name]) => only === undefined || only.includes(name))
  console.log(
    `load average before: ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")}`,
  )
  const results = new Map<string, Figures[]>()
  // Rounds interleave the measurements, so a noisy minute on a shared machine hits all of them alike.
  for (let run = 0; run < RUNS; run++) {
    for (const [name, args] of plans) {
      const f = child(args)
      results.set(name, [...(results.get(name) ?? []), f])
    }
  }
  const rate = (f: Figures) => f.textBytes / 1e6 / f.seconds
  // The ceiling is the best raw configuration's median.
  const rawRates = plans.filter(([n]) => n.startsWith("raw")).map(([n]) => median(results.get(n)!.map(rate)))
  const rawRate = Math.max(...rawRates)
  // Text MB per CPU second (all threads): on a busy machine the wall-clock rates follow the share of
  // the cores a run happened to get, while the CPU each one needs is steadier. On a quiet machine,
  // with both sides keeping both cores busy, the two ratios agree.
  const cpuRate = (f: Figures) => f.textBytes / 1e6 / f.cpuSeconds
  const rawCpuRate = Math.max(
    ...plans.filter(([n]) => n.startsWith("raw")).map(([n]) => median(results.get(n)!.map(cpuRate))),
  )
  console.log(
    `load average after: ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(" ")}`,
  )
  console.log(
    `\n${"what".padEnd(58)} ${"MB/s".padStart(6)} ${"range".padStart(11)} ${"records/s".padStart(10)} ${"vs raw".padStart(7)} ` +
      `${"MB/cpu-s".padStart(9)} ${"vs raw".padStart(7)} ${"peak RSS".padStart(9)}`,
  )
  for (const [name] of plans) {
    const fs_ = results.get(name)!
    const f = fs_[0]!
    const rates = fs_.map(rate)
    const mbs = median(rates)
    const range = `${Math.min(...rates).toFixed(2)}-${Math.max(...rates).toFixed(2)}`
    const rps = median(fs_.map((x) => x.records / x.seconds))
    const rss = Math.max(...fs_.map((x) => x.maxRssMb))
    const vs = Number.isFinite(rawRate) ? `${Math.round((mbs / rawRate) * 100)}%` : "-"
    const perCpu = median(fs_.map(cpuRate))
    const cpuVs = Number.isFinite(rawCpuRate) ? `${Math.round((perCpu / rawCpuRate) * 100)}%` : "-"
    console.log(
      `${f.what.padEnd(58)} ${mbs.toFixed(2).padStart(6)} ${range.padStart(11)} ${Math.round(rps).toString().padStart(10)} ` +
        `${vs.padStart(7)} ${perCpu.toFixed(2).padStart(9)} ${cpuVs.padStart(7)} ${`${Math.round(rss)} MB`.padStart(9)}`,
    )
  }
  console.log(
    `\n${RUNS} run(s) each, median shown (range: slowest-fastest); vs raw: against the best raw median.` +
      `\nMB/cpu-s: text MB per second of CPU time, all threads (steadier than MB/s where other jobs share the cores).` +
      `\nReproduce: TOKENIZE_BENCH_MB=${Math.round(size / 1e6)} TOKENIZE_BENCH_RUNS=${RUNS} npx tsx bench/tokenize.ts`,
  )
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
}

await main()

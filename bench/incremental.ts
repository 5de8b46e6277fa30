/**
 * Incremental data steps: a full run of ingest -> dedupe (near) -> split ->
 * tokenize (GPT-2's tokenizer.json, alpaca, packed) on a JSONL recombined from
 * the real datasets (GSM8K, Bitext customer support, Alpaca seed tasks), then
 * appends of 0.1% of the records, then edits of one record in the middle.
 * Each re-run is timed against the full run, with the share of chunks each
 * step computed, the peak RSS of the `tunegraph run` process, and a check that
 * the outputs' digests equal a from-scratch run's (a fresh store, on the same
 * final input).
 *
 * Reproduce (from the repository root, after `npm run build`):
 *   npx esbuild bench/incremental.ts --bundle --platform=node --format=esm \
 *     --packages=external --outfile=dist/bench-incremental.mjs && node dist/bench-incremental.mjs [MB] [repeats]
 *
 * MB defaults to 1000 (the 1 GB of the goal); repeats (default 3) is how many
 * appends and how many edits are measured: medians are printed. At a smaller
 * size, TUNEGRAPH_CHUNK_BYTES=$((MB * 2000)) keeps the chunk count of 1 GB at
 * the default 2 MiB (about 500 chunks a step), so that what an append or an
 * edit costs is measured at the granularity it has at 1 GB. The data
 * lives in /tmp/tg-bench-incremental. Goals: an append of 0.1% costs at most
 * 2% of the full run; a middle edit costs no more than its share of chunks.
 *
 * Measured with the outputs as parts (plugins/ingest/RecordParts.ts; a
 * reused chunk's part is hard-linked, not copied), two-core machine:
 * - 200 MB, TUNEGRAPH_CHUNK_BYTES=400000 (520 chunks a step), `node
 *   dist/bench-incremental.mjs 200 1`, another job sharing the cores: full
 *   run 136.5 s (a from-scratch run on the final input took 79.7 s); append of
 *   0.1% 2.53 s = 1.85% (ingest 0.46 s, dedupe 0.75 s, split 0.27 s,
 *   tokenize 0.58 s, one chunk each); middle edit 8.9 s once dedupe kept its
 *   input's parts open (dedupe 6.5 s deciding 255 of 520 chunks, the others
 *   one chunk); peak RSS 289 MB; digests equal a from-scratch run.
 * - 1 GB, default 2 MiB chunks (482 a step), `node dist/bench-incremental.mjs
 *   1000 1`: full run 360.3 s (tokenize 250.6 s, dedupe 65.1 s, ingest
 *   27.2 s, split 12.1 s); append of 0.1% 16.4 s = 4.55% (ingest 2.58 s,
 *   dedupe 4.73 s, split 0.72 s, tokenize 1.07 s; the rest is the source's
 *   hash and the run around the steps); peak RSS 495 MB.
 * Then dedupe kept its index before the last chunk (plugins/dedupe/Run.ts
 * saveState) and an append loads it instead of replaying every chunk's
 * signatures (164 MB at 1 GB). In that project at 1 GB, under `/usr/bin/time
 * node bin/tunegraph.js run pipeline.ts`: a full run of every step 385.8 s;
 * an append of 733 new records 8.83 s (2.3%: source digest 4.4 s, ingest
 * 1.6 s, dedupe 1.1 s, split 0.68 s, tokenize 0.70 s); one more record
 * 5.4 s (1.4%: source digest 0.90 s). What is left is linear in the data:
 * the source is hashed (the stat cache misses) and cut again to find its
 * chunks.
 * Then the source is read once: hashing it also cuts it into chunks and keeps
 * that line index in the store (core/Chunks.ts LineIndexer), so ingest reads
 * only the chunks it has not parsed; and dedupe writes its kept index again
 * only once the input has grown by a 16th. 1 GB, default 2 MiB chunks,
 * `node dist/bench-incremental.mjs 1000 3`: full run 444.8 s (tokenize
 * 320.3 s, dedupe 87.4 s, split 17.1 s, ingest 15.9 s; full runs of the same
 * tokenize code took 358-469 s on different days here); appends of 0.1%
 * 7.97, 6.03 and 6.35 s, median 1.43% of the full run (ingest 0.20-0.27 s,
 * dedupe 1.2-2.2 s, split 0.8 s, tokenize 1.2-1.4 s; the source's hash and
 * index 2.0-2.2 s is the rest); digests equal a from-scratch run. Middle
 * edits 58.0, 47.2 and 52.4 s (13.1%, 10.6%, 11.8%): dedupe decides 45-60%
 * of its chunks again in 38-50 s against 40-52 s for that share of its full
 * run, and each other step redoes one chunk. Most of dedupe's time there is
 * the exact Jaccard check of near candidates against the kept lines: about
 * 350,000 reads of a kept line at random in the store, ~60 us each on this
 * machine's disk (its page cache holds little), and re-shingling that line.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { type CanonicalRecord, iterateRecords } from "../plugins/ingest/Records.ts"
import { ingestFiles } from "../plugins/ingest/Run.ts"
import { rng } from "./Random.ts"

const repo = path.resolve(import.meta.dirname ?? ".", "..")
const root = fs.existsSync(path.join(repo, "bin/tunegraph.js")) ? repo : process.cwd()
const bin = path.join(root, "bin/tunegraph.js")
const shared = path.resolve(root, "../shared/data")
const work = "/tmp/tg-bench-incremental"

/** Writes the lines a few MB at a time: 1 GB of them joined would pass V8's longest string. */
const writeLines = (file: string, lines: ReadonlyArray<string>) => {
  const fd = fs.openSync(file, "w")
  try {
    for (let i = 0; i < lines.length; i += 10_000)
      fs.writeSync(fd, `${lines.slice(i, i + 10_000).join("\n")}\n`)
  } finally {
    fs.closeSync(fd)
  }
}

interface Pair {
  readonly q: string
  readonly a: string
}

/** Question/answer pairs of the three real datasets (Bitext's CSV read by ingest itself). */
const pool = async (): Promise<Pair[]> => {
  const out: Pair[] = []
  for (const l of fs.readFileSync(path.join(shared, "datasets/gsm8k/test.jsonl"), "utf8").split("\n"))
    if (l.length > 0) {
      const r = JSON.parse(l) as { question: string; answer: string }
      out.push({ q: r.question, a: r.answer })
    }
  const csv = path.join(
    shared,
    "datasets/bitext-customer-support/Bitext_Sample_Customer_Support_Training_Dataset.csv",
  )
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), "tg-bench-bitext-"))
  await ingestFiles(
    [{ abs: csv, path: "bitext.csv", size: fs.statSync(csv).size }],
    path.join(tmp, "records.jsonl"),
    {
      format: "auto",
      onInvalid: "skip",
      textUnit: "line",
      maxLineBytes: 1 << 24,
      rename: { response: "output" },
      keep: [],
      roles: {},
    },
    tmp,
  )
  for (const r of iterateRecords(path.join(tmp, "records.jsonl")) as Iterable<CanonicalRecord>)
    if ("instruction" in r) out.push({ q: r.instruction, a: r.output })
  fs.rmSync(tmp, { recursive: true, force: true })
  for (const l of fs
    .readFileSync(path.join(shared, "datasets/alpaca-seed/seed_tasks.jsonl"), "utf8")
    .split("\n"))
    if (l.length > 0) {
      const t = JSON.parse(l) as { instruction: string; instances: Array<{ input: string; output: string }> }
      for (const i of t.instances) out.push({ q: `${t.instruction} ${i.input}`.trim(), a: i.output })
    }
  return out
}

/** One recombined record: two real pairs joined; 1% exact and 1% near copies of an earlier record. */
const recordMaker = (pairs: ReadonlyArray<Pair>, seed: number) => {
  const r = rng(seed)
  const earlier: string[] = []
  return (): string => {
    const x = r()
    if (earlier.length > 100 && x < 0.01) return earlier[Math.floor(r() * earlier.length)]!
    if (earlier.length > 100 && x < 0.02) {
      const o = JSON.parse(earlier[Math.floor(r() * earlier.length)]!) as { question: string; answer: string }
      return JSON.stringify({ question: o.question, answer: o.answer.replace(/\b(the|a)\b/, "this") })
    }
    const a = pairs[Math.floor(r() * pairs.length)]!
    const b = pairs[Math.floor(r() * pairs.length)]!
    const line = JSON.stringify({ question: `${a.q}\n${b.q}`, answer: `${a.a}\n\n${b.a}` })
    if (earlier.length < 20_000) earlier.push(line)
    else earlier[Math.floor(r() * earlier.length)] = line
    return line
  }
}

const PIPELINE = `import { dedupe, ingest, Pipeline, split, Tokenizer, tokenize } from "tunegraph"
const p = Pipeline.make("bench-incremental")
const data = p.source("data", "data/records.jsonl")
const tokenizer = p.source("tokenizer", "data/tokenizer.json", Tokenizer)
const { records } = p.node("ingest", ingest, { inputs: { files: data }, params: { rename: { question: "instruction", answer: "output" } } })
const { records: unique } = p.node("dedupe", dedupe, { inputs: { records }, params: { near: true } })
const splits = p.node("split", split, { inputs: { records: unique }, params: { onLeak: "report" } })
p.node("tokenize", tokenize, { inputs: { records: splits.train, tokenizer }, params: { template: "alpaca", maxLength: 1024, overflow: "truncate", pack: true } })
export default p
`
const DATA = ["ingest", "dedupe", "split", "tokenize"]

const project = (name: string, records: string) => {
  const dir = path.join(work, name)
  fs.rmSync(dir, { recursive: true, force: true })
  fs.mkdirSync(path.join(dir, "data"), { recursive: true })
  fs.writeFileSync(path.join(dir, "pipeline.ts"), PIPELINE)
  fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
  fs.copyFileSync(
    path.join(shared, "tokenizer/gpt2-hf/tokenizer.json"),
    path.join(dir, "data/tokenizer.json"),
  )
  for (const f of ["tokenizer_config.json", "special_tokens_map.json"])
    fs.copyFileSync(path.join(shared, "tokenizer/gpt2-hf", f), path.join(dir, "data", f))
  fs.copyFileSync(records, path.join(dir, "data/records.jsonl"))
  return dir
}

interface Step {
  node: string
  status: string
  ms: number
  outputs: Record<string, string>
  chunks?: { chunks: number; reused: number; computed: number }
}
interface Measured {
  seconds: number
  rssMb: number
  steps: Step[]
}

/** `tunegraph run --json` under GNU time: wall seconds, peak RSS, the steps. */
const run = (dir: string): Measured => {
  const t0 = performance.now()
  const r = spawnSync("/usr/bin/time", ["-f", "%M", process.execPath, bin, "run", "pipeline.ts", "--json"], {
    cwd: dir,
    encoding: "utf8",
    maxBuffer: 1 << 26,
    env: { ...process.env, NO_COLOR: "1" },
  })
  const seconds = (performance.now() - t0) / 1000
  const json = JSON.parse(r.stdout) as { status: string; steps: Step[] }
  if (json.status !== "succeeded") throw new Error(`run failed in ${dir}: ${r.stdout}\n${r.stderr}`)
  const rss = Number(r.stderr.trim().split("\n").at(-1))
  return { seconds, rssMb: rss / 1024, steps: json.steps }
}

const digests = (m: Measured) =>
  JSON.stringify(
    Object.fromEntries(m.steps.filter((s) => DATA.includes(s.node)).map((s) => [s.node, s.outputs])),
  )

const median = (xs: ReadonlyArray<number>) => {
  const s = [...xs].sort((a, b) => a - b)
  return s.length % 2 === 1 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2
}

const perStep = (m: Measured) =>
  m.steps
    .filter((s) => DATA.includes(s.node))
    .map(
      (s) =>
        `${s.node} ${(s.ms / 1000).toFixed(2)} s${s.chunks === undefined ? ` (${s.status})` : ` (${s.chunks.computed}/${s.chunks.chunks} chunks)`}`,
    )
    .join(", ")

const main = async () => {
  const mb = Number(process.argv[2] ?? 1000)
  const repeats = Number(process.argv[3] ?? 3)
  fs.mkdirSync(work, { recursive: true })
  console.log(
    `bench/incremental: ${mb} MB, ${repeats} appends and ${repeats} edits, chunk target ${process.env.TUNEGRAPH_CHUNK_BYTES ?? "2 MiB (default)"}; ${os.cpus().length} cpus, load ${os
      .loadavg()
      .map((x) => x.toFixed(1))
      .join(" ")}`,
  )
  const pairs = await pool()
  const next = recordMaker(pairs, 12)
  const base = path.join(work, "records.jsonl")
  const lines: string[] = []
  {
    const fd = fs.openSync(base, "w")
    let bytes = 0
    let batch: string[] = []
    while (bytes < mb * 1e6) {
      const l = next()
      lines.push(l)
      batch.push(l)
      bytes += Buffer.byteLength(l) + 1
      if (batch.length >= 4096) {
        fs.writeSync(fd, `${batch.join("\n")}\n`)
        batch = []
      }
    }
    if (batch.length > 0) fs.writeSync(fd, `${batch.join("\n")}\n`)
    fs.closeSync(fd)
    console.log(
      `data: ${lines.length} records, ${(bytes / 1e6).toFixed(1)} MB from ${pairs.length} real pairs`,
    )
  }
  const dir = project("incremental", base)
  const full = run(dir)
  console.log(
    `full run: ${full.seconds.toFixed(1)} s, peak RSS ${full.rssMb.toFixed(0)} MB; ${perStep(full)}`,
  )

  const file = path.join(dir, "data/records.jsonl")
  const check = (m: Measured, what: string) => {
    const ref = run(project("reference", file))
    const same = digests(ref) === digests(m)
    console.log(
      `  ${what}: digests ${same ? "equal" : "DIFFER from"} a from-scratch run (${ref.seconds.toFixed(1)} s)`,
    )
    if (!same) process.exitCode = 1
  }

  const appends: Measured[] = []
  for (let k = 0; k < repeats; k++) {
    const n = Math.max(1, Math.round(lines.length / 1000))
    const more: string[] = []
    for (let i = 0; i < n; i++) more.push(next())
    fs.appendFileSync(file, `${more.join("\n")}\n`)
    lines.push(...more)
    const m = run(dir)
    appends.push(m)
    console.log(
      `append ${k + 1} (${n} records, 0.1%): ${m.seconds.toFixed(2)} s = ${((100 * m.seconds) / full.seconds).toFixed(2)}% of the full run, peak RSS ${m.rssMb.toFixed(0)} MB; ${perStep(m)}`,
    )
    if (k === repeats - 1) check(m, "after the appends")
  }

  const edits: Measured[] = []
  const r = rng(99)
  for (let k = 0; k < repeats; k++) {
    const at = Math.floor(lines.length * (0.4 + 0.2 * r()))
    const o = JSON.parse(lines[at]!) as { question: string; answer: string }
    lines[at] = JSON.stringify({ ...o, question: `${o.question} (edited ${k})` })
    writeLines(file, lines)
    const m = run(dir)
    edits.push(m)
    const shares = m.steps
      .filter((s) => s.chunks !== undefined)
      .map((s) => `${s.node} ${((100 * s.chunks!.computed) / s.chunks!.chunks).toFixed(1)}%`)
      .join(", ")
    console.log(
      `edit ${k + 1} (record ${at} of ${lines.length}): ${m.seconds.toFixed(2)} s = ${((100 * m.seconds) / full.seconds).toFixed(2)}% of the full run, peak RSS ${m.rssMb.toFixed(0)} MB; chunks computed: ${shares}; ${perStep(m)}`,
    )
    if (k === repeats - 1) check(m, "after the edits")
  }
  const pct = (ms: Measured[]) => (100 * median(ms.map((m) => m.seconds))) / full.seconds
  console.log(
    `summary (${mb} MB): full ${full.seconds.toFixed(1)} s; append 0.1% median ${median(appends.map((m) => m.seconds)).toFixed(2)} s = ${pct(appends).toFixed(2)}% (goal <= 2%); middle edit median ${median(edits.map((m) => m.seconds)).toFixed(2)} s = ${pct(edits).toFixed(2)}%; peak RSS ${Math.max(full.rssMb, ...appends.map((m) => m.rssMb), ...edits.map((m) => m.rssMb)).toFixed(0)} MB`,
  )
}

await main()

/**
 * Throughput and peak memory of ingest, exact dedupe and MinHash dedupe on a
 * generated corpus (JSONL, GSM8K-like records: question/answer/id, 10% with
 * non-ASCII text, 8% exact and 4% near duplicates of earlier records).
 *
 * Reproduce (from the repository root):
 *   npx esbuild bench/data-throughput.ts --bundle --platform=node --format=esm \
 *     --packages=external --outfile=dist/bench-data-throughput.mjs && node dist/bench-data-throughput.mjs [MB]
 *
 * Each stage runs in its own child process, so its peak RSS is its own.
 * Throughput is given per wall-clock second and per CPU second of the
 * stage's process: on a machine shared with other work (see the load
 * average printed) the latter is what one core does.
 * Goals: ingest and exact dedupe >= 100 MB/s, MinHash >= 10 MB/s on one
 * core, peak RSS < 1 GB.
 */
import { fork } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { dedupeFile } from "../plugins/dedupe/Run.ts"
import { ingestFiles } from "../plugins/ingest/Run.ts"
import { rng } from "./Random.ts"

/** Writes about `mb` MB of JSONL to `file`. */
export const generateCorpus = (file: string, mb: number, seed = 7): { records: number; bytes: number } => {
  const r = rng(seed)
  const syl = [
    "ka",
    "lo",
    "mi",
    "ne",
    "ru",
    "ta",
    "shi",
    "po",
    "an",
    "ver",
    "tion",
    "ing",
    "er",
    "st",
    "pre",
    "com",
  ]
  const vocab: string[] = []
  for (let i = 0; i < 5000; i++) {
    let w = ""
    const n = 1 + Math.floor(r() * 3)
    for (let k = 0; k < n; k++) w += syl[Math.floor(r() * syl.length)]
    vocab.push(w)
  }
  const wide = ["café", "naïve", "résumé", "don’t", "—", "日本語", "Ωmega"]
  const zipf = () => vocab[Math.floor(vocab.length * r() ** 3)]!
  const sentence = (n: number, exotic: boolean) => {
    const words: string[] = []
    for (let i = 0; i < n; i++) {
      words.push(exotic && r() < 0.03 ? wide[Math.floor(r() * wide.length)]! : zipf())
      if (r() < 0.02) words.push("\n")
    }
    return words.join(" ").replace(/ \n /g, "\n")
  }
  const fd = fs.openSync(file, "w")
  const kept: Array<{ question: string; answer: string }> = []
  let parts: string[] = []
  let bytes = 0
  let records = 0
  const target = mb * 1e6
  while (bytes < target) {
    let rec: { question: string; answer: string }
    const u = r()
    if (u < 0.08 && kept.length > 0) rec = kept[Math.floor(r() * kept.length)]!
    else if (u < 0.12 && kept.length > 0) {
      const base = kept[Math.floor(r() * kept.length)]!
      const words = base.answer.split(" ")
      for (let i = 0; i < words.length; i++) if (r() < 0.03) words[i] = zipf()
      rec = { question: base.question, answer: words.join(" ") }
    } else {
      const exotic = r() < 0.1
      rec = {
        question: sentence(10 + Math.floor(r() * 50), exotic),
        answer: sentence(50 + Math.floor(r() * 250), exotic),
      }
      if (kept.length < 20000) kept.push(rec)
      else kept[Math.floor(r() * kept.length)] = rec
    }
    const line = `{"question": ${JSON.stringify(rec.question)}, "answer": ${JSON.stringify(rec.answer)}, "id": ${records}}\n`
    parts.push(line)
    bytes += Buffer.byteLength(line)
    records++
    if (parts.length === 2000) {
      fs.writeSync(fd, parts.join(""))
      parts = []
    }
  }
  fs.writeSync(fd, parts.join(""))
  fs.closeSync(fd)
  return { records, bytes }
}

type Stage = "ingest" | "exact" | "minhash"

const runStage = async (stage: Stage, dir: string): Promise<Record<string, number>> => {
  const raw = path.join(dir, "corpus.jsonl")
  const records = path.join(dir, "records.jsonl")
  if (stage === "ingest") {
    const s = await ingestFiles(
      [{ abs: raw, path: "corpus.jsonl", size: fs.statSync(raw).size }],
      records,
      {
        format: "auto",
        onInvalid: "fail",
        textUnit: "line",
        maxLineBytes: 64 << 20,
        rename: { question: "instruction", answer: "output" },
        keep: [],
        roles: {},
      },
      dir,
    )
    return { records: s.records }
  }
  const options = {
    exact: stage === "exact",
    near: stage === "minhash",
    on: "example" as const,
    caseFold: false,
  }
  const s = await dedupeFile(records, path.join(dir, `${stage}.jsonl`), {
    ...options,
    ngram: 5,
    permutations: 128,
    bands: 16,
    rows: 8,
    threshold: 0.8,
    seed: 1,
  })
  return {
    records: s.recordsOut,
    exact: s.duplicates.exact,
    near: s.duplicates.near,
    indexMB: s.indexBytes / 1e6,
  }
}

const child = async (stage: Stage, dir: string) => {
  const t = performance.now()
  const cpu = process.cpuUsage()
  const result = await runStage(stage, dir)
  const seconds = (performance.now() - t) / 1000
  const used = process.cpuUsage(cpu)
  process.send?.({
    ...result,
    seconds,
    cpuSeconds: (used.user + used.system) / 1e6,
    maxRssMB: process.resourceUsage().maxRSS / 1024,
  })
}

const main = async () => {
  const mb = Number(process.argv[2] ?? 220)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "tunegraph-bench-"))
  try {
    const t = performance.now()
    const g = generateCorpus(path.join(dir, "corpus.jsonl"), mb)
    console.log(
      `corpus: ${g.records} records, ${(g.bytes / 1e6).toFixed(0)} MB (generated in ${((performance.now() - t) / 1000).toFixed(1)} s)`,
    )
    console.log(
      `node ${process.version}, ${os.cpus()[0]?.model ?? "?"}, ${os.cpus().length} cores, load ${os.loadavg()[0]!.toFixed(1)}`,
    )
    const rows: string[] = []
    for (const stage of ["ingest", "exact", "minhash"] as const) {
      const input = path.join(dir, stage === "ingest" ? "corpus.jsonl" : "records.jsonl")
      const size = fs.statSync(input).size
      const result = await new Promise<Record<string, number>>((resolve, reject) => {
        const c = fork(process.argv[1]!, ["--stage", stage, dir], { execArgv: [] })
        c.on("message", (m) => resolve(m as Record<string, number>))
        c.on("error", reject)
        c.on("exit", (code) => code !== 0 && reject(new Error(`${stage} exited ${code}`)))
      })
      const s = result.seconds!
      const c = result.cpuSeconds!
      const mb = size / 1e6
      const dups =
        stage === "ingest"
          ? ""
          : `  (exact ${result.exact}, near ${result.near}, index ${result.indexMB!.toFixed(1)} MB)`
      rows.push(
        `${stage.padEnd(8)} ${mb.toFixed(0)} MB: ${s.toFixed(2)} s wall, ${c.toFixed(2)} s cpu; ` +
          `${(mb / s).toFixed(1)} MB/s wall, ${(mb / c).toFixed(1)} MB/s per cpu-second, ` +
          `${Math.round(g.records / c).toLocaleString("en")} records per cpu-second; ` +
          `peak RSS ${result.maxRssMB!.toFixed(0)} MB; ${result.records} records out${dups}`,
      )
      console.log(rows[rows.length - 1])
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const isMain = process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href
if (isMain && process.argv[2] === "--stage") void child(process.argv[3] as Stage, process.argv[4]!)
else if (isMain) void main()

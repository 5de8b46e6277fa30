/** Real strings from the shared datasets, and a hand-made step context for running the plugin directly. */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { csvRows } from "../../support/csv.ts"
import { haveShared } from "../../support/data.ts"

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..")
export const dataDir = path.resolve(repoRoot, "../shared/data")
export const gpt2Dir = path.join(dataDir, "tokenizer/gpt2-hf")
// tok512.bin also ships with the quickstart, so its tests run without the shared data.
export const tok512File = path.join(repoRoot, "pipelines/data/stories260K/tok512.bin")
/** Whether the shared datasets are beside the repository (CI has them; a fresh clone may not). */
export const hasData = haveShared(
  "the tokenizer suites on shared data",
  path.join(dataDir, "datasets"),
  gpt2Dir,
)
export const gsm8kFile = path.join(dataDir, "datasets/gsm8k/test.jsonl")
export const alpacaFile = path.join(dataDir, "datasets/alpaca-seed/seed_tasks.jsonl")
export const bitextFile = path.join(
  dataDir,
  "datasets/bitext-customer-support/Bitext_Sample_Customer_Support_Training_Dataset.csv",
)

// The readers below return nothing where the shared data is absent: suites that need it are skipped
// (describe.skipIf(!hasData)), and vitest still evaluates their bodies while collecting them.
const readText = (file: string) => (fs.existsSync(file) ? fs.readFileSync(file, "utf8") : "")

export const bitextRows = (): Array<Record<string, string>> => {
  const [header, ...rows] = csvRows(readText(bitextFile))
  return rows.map((r) => Object.fromEntries(header!.map((h, i) => [h, r[i] ?? ""])))
}

export const gsm8k = (): Array<{ question: string; answer: string }> =>
  readText(gsm8kFile)
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l))

export const alpacaSeed = (): Array<{
  instruction: string
  instances: Array<{ input: string; output: string }>
}> =>
  readText(alpacaFile)
    .split("\n")
    .filter((l) => l.trim() !== "")
    .map((l) => JSON.parse(l))

/** `n` real strings of every kind the datasets hold: questions, worked answers, instructions, replies with placeholders. */
export const realStrings = (n: number): string[] => {
  const pools: string[][] = [
    gsm8k().flatMap((r) => [r.question, r.answer]),
    alpacaSeed().flatMap((t) => [t.instruction, ...t.instances.flatMap((x) => [x.input, x.output])]),
    bitextRows().flatMap((r) => [r.instruction ?? "", r.response ?? ""]),
  ].map((p) => p.filter((s) => s.length > 0))
  const out: string[] = []
  if (pools.every((p) => p.length === 0)) return out
  for (let i = 0; out.length < n; i++) {
    for (const p of pools) if (i * 7 < p.length) out.push(p[(i * 7) % p.length]!)
  }
  return out.slice(0, n)
}

export const tmpDir = (prefix: string): string => fs.mkdtempSync(path.join(os.tmpdir(), `${prefix}-`))

/** Writes records as JSON Lines and returns the file. */
export const writeRecords = (
  dir: string,
  records: ReadonlyArray<unknown>,
  name = "records.jsonl",
): string => {
  const file = path.join(dir, name)
  fs.writeFileSync(file, records.map((r) => JSON.stringify(r)).join("\n") + "\n")
  return file
}

/** gsm8k as instruction records: the question is the instruction, the worked answer the output. */
export const gsm8kRecords = (n: number) =>
  gsm8k()
    .slice(0, n)
    .map((r) => ({ instruction: r.question, output: r.answer }))

/**
 * Runs the tokenize plugin as the engine would: params decoded with its
 * Schema (defaults filled), inputs as artifacts, outputs at fresh paths.
 */
export const runTokenizeStep = async (
  params: Record<string, unknown>,
  inputs: { records: string; tokenizer: string },
): Promise<{ tokensDir: string; reportFile: string; meta: unknown; logs: string[] }> => {
  const { Effect, Schema } = await import("effect")
  const { tokenize, TokenizeParams } = await import("../../../plugins/tokenize/index.ts")
  const out = tmpDir("tokenize-out")
  const artifact = (p: string) => {
    const st = fs.statSync(p)
    return {
      kind: "",
      digest: `test-${path.basename(p)}`,
      path: p,
      isDir: st.isDirectory(),
      size: st.size,
      meta: {},
      files: [],
    }
  }
  const logs: string[] = []
  const ctx = {
    node: "tokenize",
    key: "test",
    params: Schema.decodeUnknownSync(TokenizeParams)(params),
    inputs: {
      records: { ...artifact(inputs.records), meta: { count: 0, recordKind: "instruction" as const } },
      tokenizer: artifact(inputs.tokenizer),
    },
    output: (name: string) => path.join(out, name),
    scratch: tmpDir("tokenize-scratch"),
    checkpoints: tmpDir("tokenize-ckpt"),
    threads: 2,
    signal: new AbortController().signal,
    log: (line: string) => logs.push(line),
    metric: () => {},
    progress: () => {},
    annotate: () => {},
  }
  const meta = await Effect.runPromise(tokenize.run(ctx))
  return { tokensDir: path.join(out, "tokens"), reportFile: path.join(out, "report"), meta, logs }
}

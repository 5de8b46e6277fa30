/**
 * Training throughput of train-full, train-lora and train-qlora: tokens/s,
 * achieved GFLOP/s (matrix-product FLOPs of the step: 6 per weight per token
 * for full fine-tuning, 4 for LoRA's frozen weights and 6 for its own, plus
 * attention), MFU on a GPU, the memory the base weights take and the peak
 * memory, per model configuration and backend; beside the torch backends, a
 * bare PyTorch loop (bench/torch-bare.py) over the same model and tokens
 * shows what the torch backend's step path costs.
 *
 * Reproduce (from the repository root):
 *   npx esbuild bench/train.ts --bundle --platform=node --format=esm \
 *     --packages=external --outfile=node_modules/.cache/train-bench.mjs && node node_modules/.cache/train-bench.mjs \
 *     [--backends torch-cuda,torch-cpu,wasm,cpu] [--configs stories,dim128,dim256,qwen2-dim128,qwen3-dim128,llama1b,llama-tiny] \
 *     [--kinds full,lora,qlora] [--shards 2] [--steps 6] [--seq 128] [--batch 8] [--no-bare] [--llama-dir DIR]
 *
 * Configurations: stories260K (the real llama2.c model, dim 64, 5 layers;
 * from ../shared/data, or STORIES260K), dim128 (MEASURED.md's: 4 layers, 4
 * heads, vocab 512) and dim256 (4 layers, 8 heads), with sequences of 128
 * tokens, batch 8, LoRA r 8 on q, k, v, o (dropout 0). Only when named:
 * qwen2-dim128 and qwen3-dim128, dim128 with Qwen2's q/k/v biases and with
 * Qwen3's biases on all four projections and per-head q/k norms;
 * llama1b, a randomly initialised Llama-3.2-1B-style model in bfloat16 made
 * by bench/make-llama.py (torch-cuda only; seq 2048, batch 4 unless --seq
 * and --batch say otherwise), and llama-tiny, the same architecture at toy
 * sizes, for dry runs on torch-cpu; --llama-dir makes them in DIR/<name>
 * and keeps them for the next run.
 *
 * Each run is a child process training on random tokens; the first step is
 * a warm-up and the figure is the median of the rest of the `tokens_per_s`
 * metric (the bare loop prints the same per-step figure). Torch rows run
 * the real step (runTrainStep with a hand-built context), so each step's
 * figure includes everything the worker's loop does (batching, metrics,
 * gradient norm); the worker's start and the model load are outside the
 * timed steps, as for every row. The bare loop uses the torch worker's
 * threads (the `shards` param, default 2) and OMP_WAIT_POLICY=PASSIVE; for
 * qlora it trains plain LoRA (no NF4 outside tunegraph on the CPU). Runs are
 * interleaved by configuration and step kind; the machine's load average is
 * printed: on a shared machine only ratios from one run compare fairly.
 */
import { type ChildProcess, fork, spawn } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { createInterface } from "node:readline"
import { fileURLToPath } from "node:url"
import { Effect, Schema } from "effect"
import { hashBytes } from "../core/Hash.ts"
import { expectedShapes, headDim, type LlamaConfig } from "../plugins/train/LlamaConfig.ts"
import { loadModel, saveHfModel } from "../plugins/train/ModelIO.ts"
import { FullParams, LoraParams } from "../plugins/train/Params.ts"
import { Rng } from "../plugins/train/Rng.ts"
import type { TrainKind } from "../plugins/train/Trainer.ts"

const RANK = 8
// Run from the repository root; the shared data folder sits beside it.
const stories = path.resolve(process.env.STORIES260K ?? "../shared/data/model/stories260K/stories260K.bin")
const here = path.dirname(fileURLToPath(import.meta.url))

/** A file of this repository, from the source or from a bundle anywhere below the root. */
const repoFile = (rel: string): string => {
  for (let dir = here; ; dir = path.dirname(dir)) {
    if (fs.existsSync(path.join(dir, rel))) return path.join(dir, rel)
    if (path.dirname(dir) === dir) return path.resolve(rel)
  }
}

const synthetic = (dim: number, heads: number, hidden: number, seq: number): LlamaConfig => ({
  dim,
  hiddenDim: hidden,
  nLayers: 4,
  nHeads: heads,
  nKvHeads: heads,
  vocabSize: 512,
  maxSeqLen: Math.max(512, seq),
  normEps: 1e-5,
  ropeTheta: 10000,
  tiedEmbeddings: true,
  bosId: 1,
  eosId: 2,
})

/**
 * Matrix-product FLOPs of one training step, per token. With W the weights
 * of every matrix product (projections, MLP, the output head), A the LoRA
 * weights and attention = 4 · layers · seq · dim (QKᵀ and PV, forward, a
 * multiply-add counted as 2):
 *   full:       6·W + 3·attention            (forward 2, backward 4)
 *   LoRA/QLoRA: 4·W + 6·A + 3·attention      (frozen W: forward 2 and the input gradient 2)
 */
const flopsPerToken = (c: LlamaConfig, kind: TrainKind, seq: number): number => {
  const hd = headDim(c)
  const perLayer = c.dim * c.nHeads * hd * 2 + c.dim * c.nKvHeads * hd * 2 + 3 * c.dim * c.hiddenDim
  const linear = c.nLayers * perLayer + c.vocabSize * c.dim
  const attention = 4 * c.nLayers * seq * c.dim
  if (kind === "full") return 6 * linear + 3 * attention
  const lora = c.nLayers * RANK * (4 * c.dim + 2 * c.nKvHeads * hd + 2 * c.nHeads * hd)
  return 4 * linear + 3 * attention + 6 * lora
}

/**
 * Peak dense bfloat16 FLOP/s by device name (vendor datasheets): H100/H200
 * SXM 989e12 (the PCIe and NVL cards are lower, listed first), A100 312e12,
 * L40S 362e12, L4 121e12.
 */
const PEAK_BF16: ReadonlyArray<readonly [RegExp, number]> = [
  [/H100 PCIe/i, 756e12],
  [/H[12]00 NVL/i, 835e12],
  [/H100|H200|GH200/i, 989e12],
  [/A100/i, 312e12],
  [/L40S/i, 362e12],
  [/\bL4\b/i, 121e12],
]
const peakFlops = (device: string): number | undefined => PEAK_BF16.find(([re]) => re.test(device))?.[1]

interface Result {
  tokensPerS: number
  baseBytes?: number
  baseBytesFloat32?: number
  peakBytes?: number
  backend: string
  device: string
  precision?: string
  note?: string
}
type Outcome = Result | { unavailable: string } | { error: string }

interface ChildSpec {
  mode: "tfjs" | "torch"
  kind: TrainKind
  base: string
  tokens: string
  backend: string
  steps: number
  seq: number
  batch: number
  shards?: number
}

const decodeParams = (spec: ChildSpec) =>
  Schema.decodeUnknownSync(spec.kind === "full" ? FullParams : LoraParams)({
    steps: spec.steps,
    batchSize: spec.batch,
    maxSeqLen: spec.seq,
    checkpointEvery: 0,
    backend: spec.backend,
    ...(spec.shards ? { shards: spec.shards } : {}),
    r: spec.kind === "full" ? undefined : RANK,
    dropout: spec.kind === "full" ? undefined : 0,
  })

const median = (speeds: number[]): number => {
  const rest = speeds.slice(1).sort((a, b) => a - b)
  return rest[Math.floor(rest.length / 2)] ?? 0
}

/** A tfjs backend: the trainer as its worker thread runs it. */
const tfjsChild = async (spec: ChildSpec): Promise<Outcome> => {
  const { train } = await import("../plugins/train/Trainer.ts")
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "bench-run-"))
  const speeds: number[] = []
  const out: Partial<Result> = {}
  try {
    const r = await train(
      {
        kind: spec.kind,
        base: spec.base,
        baseName: "bench",
        train: spec.tokens,
        output: path.join(root, "out"),
        checkpoints: path.join(root, "ck"),
        params: decodeParams(spec),
      },
      {
        log: () => {},
        progress: () => {},
        annotate: () => {},
        metric: (name, value) => {
          if (name === "tokens_per_s") speeds.push(value)
          if (name === "base_weight_bytes") out.baseBytes = value
          if (name === "base_weight_bytes_float32") out.baseBytesFloat32 = value
        },
      },
    )
    return { ...out, tokensPerS: median(speeds), backend: r.backend, device: "cpu" }
  } catch (e) {
    // An unavailable backend is an expected outcome.
    if (e instanceof Error && e.name === "BackendError") return { unavailable: e.message }
    throw e
  } finally {
    fs.rmSync(root, { recursive: true, force: true })
  }
}

/** A torch backend: the step itself (runTrainStep), with a context built by hand as the engine builds it. */
const torchChild = async (spec: ChildSpec): Promise<Outcome> => {
  const { resolveBackend } = await import("../plugins/train/BackendChoice.ts")
  let device: string
  try {
    device = resolveBackend(spec.backend).device
  } catch (e) {
    return { unavailable: e instanceof Error ? e.message : String(e) }
  }
  const { runTrainStep } = await import("../plugins/train/Step.ts")
  type TrainContext = Parameters<typeof runTrainStep>[1]
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "bench-run-"))
  const artifact = (kind: string, p: string) => ({
    kind,
    digest: hashBytes(p),
    path: p,
    isDir: fs.statSync(p).isDirectory(),
    size: 0,
    meta: {},
    files: [],
  })
  const speeds: number[] = []
  const out: Partial<Result> = {}
  const logs: string[] = []
  fs.mkdirSync(path.join(root, "scratch"), { recursive: true })
  const ctx = {
    params: decodeParams(spec),
    inputs: { train: artifact("Tokens", spec.tokens), base: artifact("Model", spec.base) },
    output: (name: string) => path.join(root, "out", name),
    checkpoints: path.join(root, "ck"),
    scratch: path.join(root, "scratch"),
    signal: new AbortController().signal,
    log: (line: string) => {
      logs.push(line)
      if (logs.length > 20) logs.shift()
    },
    metric: (name: string, value: number) => {
      if (name === "tokens_per_s") speeds.push(value)
      if (name === "base_weight_bytes") out.baseBytes = value
      if (name === "base_weight_bytes_float32") out.baseBytesFloat32 = value
      if (name === "peak_memory_bytes") out.peakBytes = value
    },
    progress: () => {},
    annotate: (fields: Record<string, unknown>) => {
      if (typeof fields.precision === "string") out.precision = fields.precision
    },
  } as unknown as TrainContext
  try {
    await Effect.runPromise(runTrainStep(spec.kind, ctx, spec.kind === "full" ? "model" : "adapter"))
    return { ...out, tokensPerS: median(speeds), backend: spec.backend, device }
  } catch (e) {
    const message = e instanceof Error ? e.message : String(e)
    return {
      error: `${message}${logs.length > 0 ? `\n  last log lines: ${logs.slice(-3).join(" | ")}` : ""}`,
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true })
  }
}

const child = async (spec: ChildSpec) => {
  const r = await (spec.mode === "torch" ? torchChild(spec) : tfjsChild(spec))
  await new Promise<void>((resolve) => process.send?.(r, () => resolve()))
}

const runChild = (spec: ChildSpec): Promise<Outcome> =>
  new Promise((resolve) => {
    const p = fork(fileURLToPath(import.meta.url), ["--child", JSON.stringify(spec)], { stdio: "inherit" })
    let result: Outcome | undefined
    p.on("message", (m) => {
      result = m as Outcome
    })
    p.on("exit", (code, sig) =>
      resolve(result ?? { error: `the child exited with ${sig ?? `code ${code}`}` }),
    )
  })

/** Runs a Python script; resolves with its stdout lines, or its exit and the tail of stderr. */
const runPython = async (
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ lines: string[] } | { error: string }> => {
  const { pythonCommand } = await import("../plugins/train/torch/Python.ts")
  return new Promise((resolve) => {
    const p: ChildProcess = spawn(pythonCommand(), args, { env, stdio: ["ignore", "pipe", "pipe"] })
    const lines: string[] = []
    const stderr: string[] = []
    createInterface({ input: p.stdout! }).on("line", (l) => lines.push(l))
    createInterface({ input: p.stderr! }).on("line", (l) => {
      stderr.push(l)
      if (stderr.length > 30) stderr.shift()
    })
    p.on("error", (e) => resolve({ error: e.message }))
    p.on("close", (code, sig) =>
      resolve(
        code === 0
          ? { lines }
          : {
              error: `exit ${sig ?? code}: ${stderr
                .filter((l) => l.trim() !== "")
                .slice(-6)
                .join("\n  ")}`,
            },
      ),
    )
  })
}

/** The bare PyTorch loop on the same Hugging Face directory and tokens. */
const runBare = async (spec: {
  hf: string
  tokens: string
  kind: TrainKind
  steps: number
  seq: number
  batch: number
  threads: number
  device: "cpu" | "cuda"
}): Promise<Outcome> => {
  const { workerEnv } = await import("../plugins/train/torch/Worker.ts")
  const r = await runPython(
    [
      repoFile("bench/torch-bare.py"),
      ...["--model", spec.hf, "--tokens", spec.tokens, "--kind", spec.kind, "--steps", String(spec.steps)],
      ...["--seq", String(spec.seq), "--batch", String(spec.batch), "--threads", String(spec.threads)],
      ...["--device", spec.device, "--rank", String(RANK)],
    ],
    workerEnv(),
  )
  if ("error" in r) return r
  const last = JSON.parse(r.lines.at(-1) ?? "{}") as {
    median_tokens_per_s?: number
    peak_memory_bytes?: number
    precision?: string
    device?: string
    note?: string
  }
  if (last.median_tokens_per_s === undefined)
    return { error: `no figures from torch-bare.py: ${r.lines.at(-1)}` }
  return {
    tokensPerS: last.median_tokens_per_s,
    ...(last.peak_memory_bytes !== undefined ? { peakBytes: last.peak_memory_bytes } : {}),
    backend: `bare PyTorch loop (${spec.device})`,
    device: last.device ?? spec.device,
    ...(last.precision ? { precision: last.precision } : {}),
    ...(last.note ? { note: last.note } : {}),
  }
}

interface Config {
  name: string
  /** What the tunegraph rows load: a llama2.c file or a Hugging Face directory. */
  base: string
  /** The Hugging Face directory the bare loop loads. */
  hf?: string
  config: LlamaConfig
  seq: number
  batch: number
  /** Backends that run it; undefined: all. */
  only?: ReadonlyArray<string>
  make?: () => Promise<void>
}

const main = async () => {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name)
    return i < 0 ? undefined : process.argv[i + 1]
  }
  const backends = (arg("--backends") ?? "torch-cuda,torch-cpu,tfjs-node-gpu,tfjs-node,wasm,cpu").split(",")
  const steps = Number(arg("--steps") ?? 6)
  const only = arg("--configs")?.split(",")
  const kinds = (arg("--kinds") ?? "full,lora,qlora").split(",") as TrainKind[]
  const shards = arg("--shards")
  const seqArg = arg("--seq")
  const batchArg = arg("--batch")
  const bare = !process.argv.includes("--no-bare")
  // Where llama1b and llama-tiny are made, or found from an earlier run, and kept; else a temp dir.
  const llamaDir = arg("--llama-dir")
  const SEQ = Number(seqArg ?? 128)
  const BATCH = Number(batchArg ?? 8)
  const threads = Number(shards ?? 2)
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "bench-train-"))
  const rng = new Rng(1)
  const wanted = (name: string, byDefault: boolean) =>
    only ? only.some((o) => name.startsWith(o)) : byDefault

  const configs: Config[] = []
  if (fs.existsSync(stories) && wanted("stories260K", true)) {
    const hf = path.join(root, "stories260K-hf")
    configs.push({
      name: "stories260K",
      base: stories,
      config: loadModel(stories).config,
      seq: SEQ,
      batch: BATCH,
      make: async () => {
        if (fs.existsSync(hf)) return
        const { hfBaseDir } = await import("../plugins/train/Step.ts")
        const dir = await hfBaseDir(stories, root)
        fs.renameSync(dir, hf)
      },
      hf,
    })
  }
  const dim128 = synthetic(128, 4, 344, SEQ)
  for (const [name, c, byDefault] of [
    ["dim128 (MEASURED.md)", dim128, true],
    ["dim256", synthetic(256, 8, 688, SEQ), true],
    // dim128 with each family's own terms: what q/k/v biases and q/k norms cost.
    ["qwen2-dim128", { ...dim128, modelType: "qwen2", qkvBias: true }, false],
    ["qwen3-dim128", { ...dim128, modelType: "qwen3", qkvBias: true, oBias: true, qkNorm: true }, false],
  ] as ReadonlyArray<readonly [string, LlamaConfig, boolean]>) {
    if (!wanted(name, byDefault)) continue
    const dir = path.join(root, name.split(" ")[0] as string)
    const weights = new Map(
      [...expectedShapes(c)].map(([n, shape]) => {
        const size = shape.reduce((a, b) => a * b, 1)
        const scale = shape.length === 1 ? 0 : 0.05
        return [
          n,
          {
            shape,
            data: Float32Array.from({ length: size }, () =>
              shape.length === 1 ? 1 : (rng.next() - 0.5) * scale,
            ),
          },
        ]
      }),
    )
    saveHfModel(dir, { config: c, weights })
    configs.push({ name, base: dir, hf: dir, config: c, seq: SEQ, batch: BATCH })
  }
  for (const [name, tiny, runsOn] of [
    ["llama1b", false, ["torch-cuda"]],
    ["llama-tiny", true, ["torch-cuda", "torch-cpu"]],
  ] as const) {
    if (!wanted(name, false)) continue
    const dir = path.join(llamaDir ?? root, name)
    const hd = tiny ? 64 : 2048
    const c: LlamaConfig = {
      dim: hd,
      hiddenDim: tiny ? 256 : 8192,
      nLayers: tiny ? 2 : 16,
      nHeads: tiny ? 4 : 32,
      nKvHeads: tiny ? 2 : 8,
      vocabSize: 128256,
      maxSeqLen: 131072,
      normEps: 1e-5,
      ropeTheta: 500000,
      tiedEmbeddings: true,
      bosId: 128000,
      eosId: 128001,
    }
    configs.push({
      name,
      base: dir,
      hf: dir,
      config: c,
      seq: Number(seqArg ?? (tiny ? 128 : 2048)),
      batch: Number(batchArg ?? (tiny ? 8 : 4)),
      only: runsOn,
      make: async () => {
        if (fs.existsSync(path.join(dir, "config.json"))) return
        const t0 = Date.now()
        const r = await runPython([repoFile("bench/make-llama.py"), dir, ...(tiny ? ["--tiny"] : [])], {
          ...process.env,
          PYTHONUNBUFFERED: "1",
        })
        if ("error" in r) throw new Error(`bench/make-llama.py: ${r.error}`)
        const made = JSON.parse(r.lines.at(-1) ?? "{}") as { parameters?: number }
        console.log(
          `(${name}: ${((made.parameters ?? 0) / 1e9).toFixed(3)}B parameters, bfloat16, made in ${((Date.now() - t0) / 1000).toFixed(0)} s)`,
        )
      },
    })
  }

  // Random tokens: 64 sequences per length (throughput does not depend on the text; ids fit every vocabulary here).
  const tokenDirs = new Map<number, string>()
  const tokensFor = (seq: number): string => {
    const known = tokenDirs.get(seq)
    if (known) return known
    const dir = path.join(root, `tokens-${seq}`)
    fs.mkdirSync(dir)
    const n = 64
    const ids = Uint32Array.from({ length: n * seq }, () => 3 + Math.floor(rng.next() * 509))
    fs.writeFileSync(path.join(dir, "tokens.u32"), Buffer.from(ids.buffer))
    fs.writeFileSync(path.join(dir, "labels.i32"), Buffer.from(Int32Array.from(ids).buffer))
    fs.writeFileSync(
      path.join(dir, "offsets.u32"),
      Buffer.from(Uint32Array.from({ length: n + 1 }, (_, i) => i * seq).buffer),
    )
    fs.writeFileSync(path.join(dir, "meta.json"), JSON.stringify({ count: n, padId: 0, packed: false }))
    tokenDirs.set(seq, dir)
    return dir
  }

  const loadavg = () =>
    os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(", ")
  console.log(
    `# Training throughput (seq ${SEQ}, batch ${BATCH} unless the model says otherwise; LoRA r ${RANK} on q,k,v,o, dropout 0; median of ${steps - 1} steps after a warm-up step)`,
  )
  console.log(`load average at start: ${loadavg()} on ${os.cpus().length} cores\n`)
  console.log(
    "| model | backend | step | tokens/s | GFLOP/s | MFU | base weights (MiB) | vs float32 | peak memory (MiB) |",
  )
  console.log("|---|---|---|---|---|---|---|---|---|")
  const mib = (b: number | undefined) => (b === undefined ? "" : (b / 1048576).toFixed(2))
  const unavailable = new Set<string>()
  const skipped = new Map<string, string[]>()
  const rows: Array<{ config: string; kind: TrainKind; backend: string; r: Result }> = []
  const notes: string[] = []

  const row = (c: Config, kind: TrainKind, r: Result) => {
    const flops = flopsPerToken(c.config, kind, c.seq) * r.tokensPerS
    const peak = r.device === "cpu" ? undefined : peakFlops(r.device)
    const mfu =
      r.device === "cpu" ? "" : peak === undefined ? "unknown peak" : `${((100 * flops) / peak).toFixed(1)}%`
    const label = c.seq === SEQ && c.batch === BATCH ? c.name : `${c.name} (seq ${c.seq}, batch ${c.batch})`
    const extras = [...(r.device !== "cpu" ? [r.device] : []), ...(r.precision ? [r.precision] : [])]
    const backend = `${r.backend}${extras.length > 0 ? ` (${extras.join(", ")})` : ""}${r.note ? ` [${r.note}]` : ""}`
    console.log(
      `| ${label} | ${backend} | ${kind} | ${r.tokensPerS.toFixed(0)} | ${(flops / 1e9).toFixed(2)} | ${mfu} | ${mib(r.baseBytes)} | ${r.baseBytes !== undefined && r.baseBytesFloat32 ? `${((100 * r.baseBytes) / r.baseBytesFloat32).toFixed(1)}%` : ""} | ${mib(r.peakBytes)} |`,
    )
  }

  for (const c of configs) {
    const runnable = backends.filter((b) => !c.only || c.only.includes(b))
    for (const b of backends.filter((b) => !runnable.includes(b)))
      skipped.set(c.name, [...(skipped.get(c.name) ?? []), b])
    if (runnable.length === 0) continue
    if (c.make) {
      try {
        await c.make()
      } catch (e) {
        console.log(
          `| ${c.name} | all | all | failed to make the model: ${e instanceof Error ? e.message : e} | | | | | |`,
        )
        continue
      }
    }
    for (const kind of kinds) {
      for (const backend of runnable) {
        if (unavailable.has(backend)) continue
        const torch = backend.startsWith("torch")
        const r = await runChild({
          mode: torch ? "torch" : "tfjs",
          kind,
          base: c.base,
          tokens: tokensFor(c.seq),
          backend,
          steps: backend === "cpu" ? Math.min(steps, 3) : steps,
          seq: c.seq,
          batch: c.batch,
          ...(shards ? { shards: Number(shards) } : {}),
        })
        if ("unavailable" in r) {
          console.log(`| all | ${backend} | all | unavailable: ${r.unavailable.split("\n")[0]} | | | | | |`)
          unavailable.add(backend)
          continue
        }
        if ("error" in r) {
          console.log(`| ${c.name} | ${backend} | ${kind} | failed | | | | | |`)
          notes.push(`${c.name} ${kind} on ${backend} failed: ${r.error}`)
          continue
        }
        row(c, kind, r)
        rows.push({ config: c.name, kind, backend, r })
        if (torch && bare && c.hf) {
          const device = backend === "torch-cuda" ? "cuda" : "cpu"
          const b = await runBare({
            hf: c.hf,
            tokens: tokensFor(c.seq),
            kind,
            steps,
            seq: c.seq,
            batch: c.batch,
            threads,
            device,
          })
          if ("error" in b || "unavailable" in b) {
            console.log(`| ${c.name} | bare PyTorch loop (${device}) | ${kind} | failed | | | | | |`)
            notes.push(
              `the bare loop on ${c.name} ${kind} (${device}) failed: ${"error" in b ? b.error : b.unavailable}`,
            )
            continue
          }
          row(c, kind, b)
          rows.push({ config: c.name, kind, backend: `bare-${device}`, r: b })
        }
      }
    }
  }
  console.log(`\nload average at end: ${loadavg()}`)
  for (const [name, bs] of skipped)
    console.log(`${name}: not run on ${bs.join(", ")} (runs on torch backends only)`)

  // Ratios, within this run.
  const find = (config: string, kind: TrainKind, backend: string) =>
    rows.find((x) => x.config === config && x.kind === kind && x.backend === backend)?.r
  const ratioLines: string[] = []
  for (const c of configs)
    for (const kind of kinds)
      for (const [torch, device] of [
        ["torch-cpu", "cpu"],
        ["torch-cuda", "cuda"],
      ] as const) {
        const t = find(c.name, kind, torch)
        if (t === undefined) continue
        const parts: string[] = []
        const b = find(c.name, kind, `bare-${device}`)
        if (b !== undefined) {
          const x = t.tokensPerS / b.tokensPerS
          parts.push(
            `${torch} / bare loop ${x.toFixed(2)}× (goal ≥ 0.95×: ${x >= 0.95 ? "met" : "not met"})${kind === "qlora" ? " [the bare loop is plain LoRA]" : ""}`,
          )
        }
        const w = find(c.name, kind, "wasm")
        if (w !== undefined && torch === "torch-cpu") {
          const x = t.tokensPerS / w.tokensPerS
          parts.push(`${torch} / wasm ${x.toFixed(2)}× (goal ≥ 3×: ${x >= 3 ? "met" : "not met"})`)
        }
        if (parts.length > 0) ratioLines.push(`${c.name} ${kind}: ${parts.join("; ")}`)
      }
  if (ratioLines.length > 0) console.log(`\n## Ratios (this run)\n${ratioLines.join("\n")}`)

  // QLoRA's base beside LoRA's on the same backend (bfloat16 on CUDA, float32 on the CPU) and the base in bf16.
  const shares: string[] = []
  for (const x of rows)
    if (x.kind === "qlora" && x.r.baseBytes !== undefined && x.r.baseBytesFloat32 !== undefined) {
      const bf16 = x.r.baseBytesFloat32 / 2
      const lora = find(x.config, "lora", x.backend)
      const vsLora =
        lora?.baseBytes !== undefined
          ? `${((100 * x.r.baseBytes) / lora.baseBytes).toFixed(1)}% of LoRA's base there (${mib(lora.baseBytes)} MiB${lora.precision ? `, ${lora.precision}` : ""}); `
          : ""
      shares.push(
        `${x.config} on ${x.backend}: ${mib(x.r.baseBytes)} MiB, ${vsLora}${((100 * x.r.baseBytes) / bf16).toFixed(1)}% of the base in bf16 (${mib(bf16)} MiB)`,
      )
    }
  if (shares.length > 0) console.log(`\n## QLoRA base weights\n${shares.join("\n")}`)
  if (notes.length > 0) console.log(`\n## Failures\n${notes.join("\n")}`)
  fs.rmSync(root, { recursive: true, force: true })
}

const childSpec = process.argv.indexOf("--child")
if (childSpec >= 0) {
  child(JSON.parse(process.argv[childSpec + 1] as string) as ChildSpec).then(
    () => process.exit(0),
    (e) => {
      console.error(e)
      process.exit(1)
    },
  )
} else await main()

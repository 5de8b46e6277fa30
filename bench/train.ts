/**
 * Training throughput of train-full, train-lora and train-qlora: tokens/s,
 * achieved GFLOP/s (matrix-product FLOPs of the step: 6 per weight per token
 * for full fine-tuning, 4 for LoRA's frozen weights, plus attention), and
 * the memory the base weights take, per model configuration and backend.
 *
 * Reproduce (from the repository root):
 *   npx esbuild bench/train.ts --bundle --platform=node --format=esm \
 *     --packages=external --outfile=node_modules/.cache/train-bench.mjs && node node_modules/.cache/train-bench.mjs \
 *     [--backends wasm,cpu] [--configs stories,dim128,dim256] [--kinds full,lora,qlora] [--shards 2] [--steps 6]
 *
 * Configurations: stories260K (the real llama2.c model, dim 64, 5 layers),
 * dim128 (MEASURED.md's: 4 layers, 4 heads, vocab 512; PyTorch CPU reaches
 * 5,650 tok/s LoRA and 4,780 full there) and dim256 (4 layers, 8 heads).
 * Sequences of 128 tokens, batch 8, LoRA r 8 on q, k, v, o. Each run is a
 * child process training on random tokens; the first step is a warm-up and
 * the figure is the median of the rest. The machine's load average is
 * printed: on a shared machine only ratios from one run compare fairly.
 */
import { fork } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { Schema } from "effect"
import { expectedShapes, headDim, type LlamaConfig } from "../plugins/train/LlamaConfig.ts"
import { loadModel, saveHfModel } from "../plugins/train/ModelIO.ts"
import { FullParams, LoraParams } from "../plugins/train/Params.ts"
import { Rng } from "../plugins/train/Rng.ts"
import type { TrainKind } from "../plugins/train/Trainer.ts"

const SEQ = 128
const BATCH = 8
const RANK = 8
// Run from the repository root; the shared data folder sits beside it.
const stories = path.resolve(process.env.STORIES260K ?? "../shared/data/model/stories260K/stories260K.bin")

const synthetic = (dim: number, heads: number, hidden: number): LlamaConfig => ({
  dim,
  hiddenDim: hidden,
  nLayers: 4,
  nHeads: heads,
  nKvHeads: heads,
  vocabSize: 512,
  maxSeqLen: 512,
  normEps: 1e-5,
  ropeTheta: 10000,
  tiedEmbeddings: true,
  bosId: 1,
  eosId: 2,
})

/** Matrix-product FLOPs of one training step, per token. */
const flopsPerToken = (c: LlamaConfig, kind: TrainKind): number => {
  const hd = headDim(c)
  const perLayer = c.dim * c.nHeads * hd * 2 + c.dim * c.nKvHeads * hd * 2 + 3 * c.dim * c.hiddenDim
  const linear = c.nLayers * perLayer + c.vocabSize * c.dim
  const attention = 4 * c.nLayers * SEQ * c.dim // QK^T and PV, forward
  if (kind === "full") return 6 * linear + 3 * attention
  const lora = c.nLayers * RANK * (4 * c.dim + 2 * c.nKvHeads * hd + 2 * c.nHeads * hd)
  return 4 * linear + 3 * attention + 6 * lora
}

interface Result {
  tokensPerS: number
  baseBytes: number
  baseBytesFloat32: number
  backend: string
}

const child = async (spec: {
  kind: TrainKind
  base: string
  tokens: string
  backend: string
  steps: number
  shards?: number
}) => {
  const { train } = await import("../plugins/train/Trainer.ts")
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "bench-run-"))
  const params = Schema.decodeUnknownSync(spec.kind === "full" ? FullParams : LoraParams)({
    steps: spec.steps,
    batchSize: BATCH,
    maxSeqLen: SEQ,
    checkpointEvery: 0,
    backend: spec.backend,
    ...(spec.shards ? { shards: spec.shards } : {}),
    r: spec.kind === "full" ? undefined : RANK,
    dropout: spec.kind === "full" ? undefined : 0,
  })
  const speeds: number[] = []
  const out: Partial<Result> = {}
  const r = await train(
    {
      kind: spec.kind,
      base: spec.base,
      baseName: "bench",
      train: spec.tokens,
      output: path.join(root, "out"),
      checkpoints: path.join(root, "ck"),
      params,
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
  const rest = speeds.slice(1).sort((a, b) => a - b)
  out.tokensPerS = rest[Math.floor(rest.length / 2)] ?? 0
  out.backend = r.backend
  fs.rmSync(root, { recursive: true, force: true })
  process.send?.(out)
}

const runChild = (spec: object): Promise<Result | undefined> =>
  new Promise((resolve) => {
    const p = fork(fileURLToPath(import.meta.url), ["--child", JSON.stringify(spec)], { stdio: "inherit" })
    let result: Result | undefined
    p.on("message", (m) => {
      result = m as Result
    })
    p.on("exit", () => resolve(result))
  })

const main = async () => {
  const arg = (name: string) => {
    const i = process.argv.indexOf(name)
    return i < 0 ? undefined : process.argv[i + 1]
  }
  const backends = (arg("--backends") ?? "tfjs-node-gpu,tfjs-node,wasm,cpu").split(",")
  const steps = Number(arg("--steps") ?? 6)
  const only = arg("--configs")?.split(",")
  const kinds = (arg("--kinds") ?? "full,lora,qlora").split(",") as TrainKind[]
  const shards = arg("--shards")
  const root = fs.mkdtempSync(path.join(os.tmpdir(), "bench-train-"))
  const rng = new Rng(1)
  const configs: Array<{ name: string; base: string; config: LlamaConfig }> = []
  if (fs.existsSync(stories))
    configs.push({ name: "stories260K", base: stories, config: loadModel(stories).config })
  for (const [name, c] of [
    ["dim128 (MEASURED.md)", synthetic(128, 4, 344)],
    ["dim256", synthetic(256, 8, 688)],
  ] as const) {
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
    configs.push({ name, base: dir, config: c })
  }
  // Random tokens: 64 sequences of SEQ tokens (throughput does not depend on the text).
  const tokens = path.join(root, "tokens")
  fs.mkdirSync(tokens)
  const n = 64
  const ids = Uint32Array.from({ length: n * SEQ }, () => 3 + Math.floor(rng.next() * 509))
  fs.writeFileSync(path.join(tokens, "tokens.u32"), Buffer.from(ids.buffer))
  fs.writeFileSync(path.join(tokens, "labels.i32"), Buffer.from(Int32Array.from(ids).buffer))
  fs.writeFileSync(
    path.join(tokens, "offsets.u32"),
    Buffer.from(Uint32Array.from({ length: n + 1 }, (_, i) => i * SEQ).buffer),
  )
  fs.writeFileSync(path.join(tokens, "meta.json"), JSON.stringify({ count: n, padId: 0, packed: false }))

  console.log(
    `# Training throughput (seq ${SEQ}, batch ${BATCH}, LoRA r ${RANK} on q,k,v,o; median of ${steps - 1} steps)`,
  )
  console.log(
    `load average at start: ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(", ")} on ${os.cpus().length} cores\n`,
  )
  console.log("| model | backend | step | tokens/s | GFLOP/s | base weights (MiB) | vs float32 |")
  console.log("|---|---|---|---|---|---|---|")
  for (const backend of backends) {
    let available = true
    for (const c of configs) {
      if (only && !only.some((o) => c.name.startsWith(o))) continue
      for (const kind of kinds) {
        const r = await runChild({
          kind,
          base: c.base,
          tokens,
          backend,
          steps: backend === "cpu" ? Math.min(steps, 3) : steps,
          ...(shards ? { shards: Number(shards) } : {}),
        })
        if (r === undefined) {
          console.log(`| all | ${backend} | all | unavailable | | | |`)
          available = false
          break
        }
        const gflops = (flopsPerToken(c.config, kind) * r.tokensPerS) / 1e9
        console.log(
          `| ${c.name} | ${r.backend} | ${kind} | ${r.tokensPerS.toFixed(0)} | ${gflops.toFixed(2)} | ${(r.baseBytes / 1048576).toFixed(2)} | ${((100 * r.baseBytes) / r.baseBytesFloat32).toFixed(1)}% |`,
        )
      }
      if (!available) break
    }
  }
  console.log(
    `\nload average at end: ${os
      .loadavg()
      .map((x) => x.toFixed(2))
      .join(", ")}`,
  )
  fs.rmSync(root, { recursive: true, force: true })
}

const childSpec = process.argv.indexOf("--child")
if (childSpec >= 0) {
  child(JSON.parse(process.argv[childSpec + 1] as string)).catch((e) => {
    // An unavailable backend is an expected outcome; anything else is reported.
    if (!(e instanceof Error && e.name === "BackendError")) console.error(e)
    process.exit(1)
  })
} else await main()

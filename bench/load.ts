/**
 * Peak memory and speed of loading a real-sized checkpoint: a Llama of about
 * 200M parameters written as bfloat16 shards with model.safetensors.index.json
 * (about 410 MB on disk, 825 MB as float32 in memory), loaded into float32
 * host tensors as the tfjs backend uses them.
 *
 * Each run is a fresh child process: its resident set size just before the
 * load is the baseline, and the figure is (peak RSS - baseline) / float32
 * bytes of the weights, so 1.00x means nothing but the float32 result was
 * held. Two loaders are compared in the same sitting:
 *   tunegraph   loadModel: the header, then one tensor at a time by positioned
 *               reads, BF16 converted into its float32 array through a 4 MiB buffer
 *   whole-file  each shard read whole into one Buffer first, then decoded
 *               (how models were loaded before)
 * The medians of the runs are printed, with the load time and the rate in
 * float32 GB/s. The model is written once to --dir (a temporary directory by
 * default) and kept there for the next run; the first run reads it from the
 * page cache like the rest.
 *
 * Reproduce (from the repository root):
 *   npx esbuild bench/load.ts --bundle --platform=node --format=esm \
 *     --packages=external --outfile=node_modules/.cache/load-bench.mjs && node node_modules/.cache/load-bench.mjs \
 *     [--runs 5] [--dir /tmp/tunegraph-load-bench] [--layers 12] [--dim 1024] [--vocab 32000] [--shard-mb 128]
 *
 * The weights are written twice, as shards of --shard-mb and as one file
 * (a checkpoint of this size ships as one file under the hub's 5 GB shard
 * size), so each loader runs on both layouts.
 */
import { fork } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { configToHf, expectedShapes, type LlamaConfig } from "../plugins/train/LlamaConfig.ts"
import { loadModel } from "../plugins/train/ModelIO.ts"
import { type HostTensor, readSafetensors, writeSafetensorsFile } from "../plugins/train/Safetensors.ts"

const arg = (name: string, fallback: string) => {
  const i = process.argv.indexOf(`--${name}`)
  return i >= 0 && process.argv[i + 1] !== undefined ? (process.argv[i + 1] as string) : fallback
}

interface Sample {
  readonly baseline: number
  readonly peak: number
  readonly ms: number
  readonly f32: number
}

/** The previous loader: every shard read whole into one Buffer, then decoded. */
const wholeFile = (dir: string): Map<string, HostTensor> => {
  const index = JSON.parse(fs.readFileSync(path.join(dir, "model.safetensors.index.json"), "utf8")) as {
    weight_map: Record<string, string>
  }
  const out = new Map<string, HostTensor>()
  for (const shard of [...new Set(Object.values(index.weight_map))].sort())
    for (const [k, v] of readSafetensors(fs.readFileSync(path.join(dir, shard))).tensors) out.set(k, v)
  return out
}

const child = (variant: string, dir: string) => {
  const baseline = process.memoryUsage().rss
  const t0 = performance.now()
  const weights = variant === "tunegraph" ? loadModel(dir).weights : wholeFile(dir)
  const ms = performance.now() - t0
  let f32 = 0
  for (const t of weights.values()) f32 += t.data.byteLength
  const sample: Sample = { baseline, peak: process.resourceUsage().maxRSS * 1024, ms, f32 }
  process.send?.(sample)
}

/** A deterministic stream of small weights (xorshift32), filled straight into each tensor. */
const fill = (data: Float32Array, seed: number) => {
  let s = seed >>> 0 || 1
  for (let i = 0; i < data.length; i++) {
    s ^= s << 13
    s ^= s >>> 17
    s ^= s << 5
    data[i] = ((s >>> 0) / 4294967296 - 0.5) * 0.04
  }
}

/** Writes the model as bfloat16 shards of about `shardBytes` each, one shard's tensors in memory at a time. */
const makeModel = (dir: string, config: LlamaConfig, shardBytes: number) => {
  fs.mkdirSync(dir, { recursive: true })
  const shapes = [...expectedShapes(config)]
  const groups: Array<Array<[string, number[]]>> = [[]]
  let size = 0
  for (const [name, shape] of shapes) {
    const bytes = shape.reduce((a, b) => a * b, 1) * 2
    if (size > 0 && size + bytes > shardBytes) {
      groups.push([])
      size = 0
    }
    groups.at(-1)!.push([name, shape])
    size += bytes
  }
  const weightMap: Record<string, string> = {}
  let total = 0
  groups.forEach((group, g) => {
    const file = `model-${String(g + 1).padStart(5, "0")}-of-${String(groups.length).padStart(5, "0")}.safetensors`
    const tensors = new Map<string, HostTensor>()
    for (const [name, shape] of group) {
      const data = new Float32Array(shape.reduce((a, b) => a * b, 1))
      fill(data, tensors.size + 7 * g + 1)
      tensors.set(name, { shape, data })
      weightMap[name] = file
      total += data.length * 2
    }
    writeSafetensorsFile(path.join(dir, file), tensors, { format: "pt" }, "BF16")
  })
  fs.writeFileSync(
    path.join(dir, "model.safetensors.index.json"),
    JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2),
  )
  fs.writeFileSync(
    path.join(dir, "config.json"),
    JSON.stringify({ ...configToHf(config), torch_dtype: "bfloat16" }),
  )
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2
}

const main = async () => {
  const runs = Number(arg("runs", "5"))
  const dim = Number(arg("dim", "1024"))
  const config: LlamaConfig = {
    dim,
    hiddenDim: Math.round((dim * 8) / 3 / 256) * 256,
    nLayers: Number(arg("layers", "12")),
    nHeads: dim / 64,
    nKvHeads: dim / 128,
    vocabSize: Number(arg("vocab", "32000")),
    maxSeqLen: 2048,
    normEps: 1e-5,
    ropeTheta: 10000,
    tiedEmbeddings: false,
    bosId: 1,
    eosId: 2,
  }
  const root = arg("dir", path.join(os.tmpdir(), "tunegraph-load-bench"))
  const params = [...expectedShapes(config).values()].reduce(
    (sum, sh) => sum + sh.reduce((x, y) => x * y, 1),
    0,
  )
  const shardMb = Number(arg("shard-mb", "128"))
  // The same weights in shards and in one file (as a checkpoint under the hub's 5 GB shard size ships).
  const layouts = [
    { name: `${shardMb} MB shards`, dir: path.join(root, `shards-${shardMb}`), bytes: shardMb * 1024 * 1024 },
    { name: "one file", dir: path.join(root, "one-file"), bytes: Number.POSITIVE_INFINITY },
  ]
  const wanted = JSON.stringify(config)
  for (const l of layouts) {
    const marker = path.join(l.dir, "bench-config.json")
    if (fs.existsSync(marker) && fs.readFileSync(marker, "utf8") === wanted) continue
    fs.rmSync(l.dir, { recursive: true, force: true })
    process.stdout.write(
      `writing ${(params / 1e6).toFixed(0)}M parameters as bfloat16 (${l.name}) to ${l.dir} ...\n`,
    )
    makeModel(l.dir, config, l.bytes)
    fs.writeFileSync(marker, wanted)
  }
  const shardsOf = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith(".safetensors"))
  const disk = shardsOf(layouts[0]!.dir).reduce(
    (sum, f) => sum + fs.statSync(path.join(layouts[0]!.dir, f)).size,
    0,
  )
  process.stdout.write(
    `model: ${(params / 1e6).toFixed(1)}M parameters (dim ${config.dim}, ${config.nLayers} layers, vocab ${config.vocabSize}), ` +
      `BF16, ${(disk / 1e6).toFixed(0)} MB on disk, ${((params * 4) / 1e6).toFixed(0)} MB as float32\n` +
      `node ${process.version}, ${os.cpus().length} cores, load average ${os.loadavg()[0]!.toFixed(2)}; ${runs} runs per row, interleaved\n\n`,
  )
  const rows = layouts.flatMap((l) =>
    ["tunegraph", "whole-file"].map((v) => ({
      label: `${v}, ${l.name} (${shardsOf(l.dir).length})`,
      v,
      dir: l.dir,
    })),
  )
  const samples = new Map<string, Sample[]>(rows.map((r) => [r.label, []]))
  // Interleaved, so a change in the machine's load touches every row alike.
  for (let r = 0; r < runs; r++)
    for (const row of rows) {
      const s = await new Promise<Sample>((resolve, reject) => {
        const c = fork(fileURLToPath(import.meta.url), ["--child", row.v, row.dir], { stdio: "inherit" })
        c.once("message", (m) => resolve(m as Sample))
        c.once("exit", (code) =>
          code === 0 ? undefined : reject(new Error(`${row.label}: child exited with ${code}`)),
        )
      })
      samples.get(row.label)!.push(s)
    }
  const width = Math.max(...rows.map((r) => r.label.length))
  process.stdout.write(
    `${"loader, layout (files)".padEnd(width)}  peak - baseline  / float32 size  load time  float32 GB/s\n`,
  )
  for (const row of rows) {
    const xs = samples.get(row.label)!
    const extra = median(xs.map((s) => s.peak - s.baseline))
    const ratio = median(xs.map((s) => (s.peak - s.baseline) / s.f32))
    const ms = median(xs.map((s) => s.ms))
    const f32 = xs[0]!.f32
    process.stdout.write(
      `${row.label.padEnd(width)}  ${`${(extra / 1e6).toFixed(0)} MB`.padStart(15)}  ${`${ratio.toFixed(2)}x`.padStart(14)}  ${`${(ms / 1000).toFixed(2)} s`.padStart(9)}  ${(f32 / 1e9 / (ms / 1000)).toFixed(2).padStart(12)}\n`,
    )
  }
  process.stdout.write(
    `\nmedians of ${runs} runs; every run's ratio: ${rows
      .map(
        (r) =>
          `${r.label} [${samples
            .get(r.label)!
            .map((s) => ((s.peak - s.baseline) / s.f32).toFixed(2))
            .join(", ")}]`,
      )
      .join("; ")}\n`,
  )
}

if (process.argv[2] === "--child") child(process.argv[3] as string, process.argv[4] as string)
else await main()

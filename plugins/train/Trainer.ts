/**
 * The training loop shared by train-full, train-lora and train-qlora. It
 * reads as a straight line: batch, forward, loss, backward, clip, step,
 * schedule, log, evaluate, checkpoint. Everything random is keyed by (seed,
 * step), and a checkpoint holds the weights, the optimizer moments and the
 * loop's counters, so a run resumed from a checkpoint on a CPU backend ends
 * with exactly the weights of an uninterrupted run.
 */
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import * as tf from "@tensorflow/tfjs-core"
import { canonicalJson } from "../../core/Canonical.ts"
import { AdamW } from "./AdamW.ts"
import { backendDevice, initBackend } from "./Backend.ts"
import { BEST, type LoopState, loadCheckpoint, saveCheckpoint, writeAtomic } from "./Checkpoint.ts"
import { LlamaModel } from "./Llama.ts"
import { checkContext } from "./LlamaConfig.ts"
import { checkAdapter, type LoraModule, type LoraSpec, readAdapter, writeAdapter } from "./Lora.ts"
import { loadModel, saveHfModel } from "./ModelIO.ts"
import type { TrainParams } from "./Params.ts"
import { type HostTensor, readSafetensors, writeSafetensors } from "./Safetensors.ts"
import { learningRate } from "./Schedule.ts"
import { ShardPool, type ShardTask, splitRows, taskGradients, toTask } from "./Shards.ts"
import { BatchPlan, makeBatch, readTokens, type TokenSet } from "./TokenData.ts"

export type TrainKind = "full" | "lora" | "qlora"

export interface TrainJob {
  readonly kind: TrainKind
  /** Base model: a Hugging Face directory or a llama2.c file. */
  readonly base: string
  /** Recorded as the adapter's base_model_name_or_path. */
  readonly baseName: string
  readonly train: string
  readonly validation?: string
  /**
   * Where training starts from instead of scratch (sequential fine-tuning):
   * for LoRA and QLoRA an adapter directory whose A/B start the new adapter,
   * for full fine-tuning a model whose weights replace the base's.
   */
  readonly init?: string
  /** Directory to write the model or adapter to. */
  readonly output: string
  readonly checkpoints: string
  readonly params: TrainParams
}

export interface TrainHooks {
  readonly log: (line: string) => void
  readonly metric: (name: string, value: number, step?: number) => void
  readonly progress: (done: number, total?: number, detail?: string) => void
  readonly annotate: (fields: Record<string, unknown>) => void
}

export interface TrainResult {
  readonly backend: string
  readonly steps: number
  readonly totalSteps: number
  readonly finalTrainLoss: number | null
  readonly bestValLoss: number | null
  readonly bestStep: number | null
  readonly stoppedEarly: boolean
  readonly resumedFrom: number
}

export class TrainError extends Error {
  override readonly name = "TrainError"
}

const loraSpec = (p: TrainParams): LoraSpec => ({
  r: p.r ?? 8,
  alpha: p.alpha ?? 16,
  dropout: p.dropout ?? 0,
  targets: (p.targets ?? ["q_proj", "k_proj", "v_proj", "o_proj"]) as ReadonlyArray<LoraModule>,
  rslora: p.rslora ?? false,
})

const toHost = (vars: ReadonlyMap<string, tf.Variable>, prefix = ""): Map<string, HostTensor> => {
  const out = new Map<string, HostTensor>()
  for (const [name, v] of vars) out.set(prefix + name, { shape: v.shape, data: v.dataSync() as Float32Array })
  return out
}

const assignFrom = (
  vars: ReadonlyMap<string, tf.Variable>,
  tensors: Map<string, HostTensor>,
  prefix = "",
) => {
  for (const [name, v] of vars) {
    const t = tensors.get(prefix + name)
    if (t === undefined) throw new TrainError(`checkpoint lacks ${prefix}${name}`)
    tf.tidy(() => v.assign(tf.tensor(t.data, v.shape)))
  }
}

/** Mean loss over a split's first `maxBatches` batches (all when 0), without dropout. */
const evaluate = (model: LlamaModel, set: TokenSet, p: TrainParams): number => {
  let sum = 0
  let count = 0
  const batches = Math.ceil(set.count / p.batchSize)
  const limit = p.evalBatches > 0 ? Math.min(batches, p.evalBatches) : batches
  for (let b = 0; b < limit; b++) {
    const indices: number[] = []
    for (let i = b * p.batchSize; i < Math.min(set.count, (b + 1) * p.batchSize); i++) indices.push(i)
    const mb = makeBatch(set, indices, p.maxSeqLen)
    if (mb.targetCount === 0) continue
    const loss = tf.tidy(() => model.lossSum(mb.batch, mb.targets))
    sum += loss.dataSync()[0] as number
    loss.dispose()
    count += mb.targetCount
  }
  return count === 0 ? Number.NaN : sum / count
}

/** A model to fine-tune in full from: its weights replace the base's, and its shapes must be the base's. */
const initModel = (base: string, init: string) => {
  const b = loadModel(base)
  const m = loadModel(init)
  for (const [name, t] of b.weights) {
    const w = m.weights.get(name)
    if (w === undefined || w.shape.join(",") !== t.shape.join(","))
      throw new TrainError(
        `init ${init}: ${w === undefined ? `lacks ${name}` : `${name} is [${w.shape.join(", ")}], the base's [${t.shape.join(", ")}]`}: it is not a fine-tune of this base`,
      )
  }
  return { ...m, tokenizer: b.tokenizer ?? m.tokenizer }
}

/** An adapter to continue: its A/B start the new adapter, so it must have the same rank and fit the base. */
const initAdapter = (dir: string, spec: LoraSpec, host: ReturnType<typeof loadModel>) => {
  const adapter = readAdapter(dir)
  if (adapter.spec.r !== spec.r)
    throw new TrainError(`init adapter has r=${adapter.spec.r}; this step trains r=${spec.r}: set r to match`)
  checkAdapter(host.config, host, adapter)
  const modules = new Set<string>(spec.targets)
  for (const w of adapter.pairs.keys()) {
    const m = /\.(\w+_proj)\.weight$/.exec(w)?.[1]
    if (m === undefined || !modules.has(m))
      throw new TrainError(
        `init adapter adapts ${w}, which this step does not train (targets: ${spec.targets.join(", ")})`,
      )
  }
  return adapter.pairs
}

export const train = async (job: TrainJob, hooks: TrainHooks): Promise<TrainResult> => {
  const p = job.params
  const backend = await initBackend(p.backend === "auto" ? undefined : p.backend)
  const device = backendDevice() ?? "unknown"
  hooks.annotate({ backend, device })
  hooks.log(`backend: ${backend} (${device})`)

  const host =
    job.kind === "full" && job.init !== undefined ? initModel(job.base, job.init) : loadModel(job.base)
  const trainSet = readTokens(job.train, host.config.vocabSize)
  const valSet = job.validation === undefined ? undefined : readTokens(job.validation, host.config.vocabSize)
  if (trainSet.count === 0) throw new TrainError(`${job.train}: the training split holds no sequences`)
  // A model with a sliding window (Mistral) runs here only for contexts within it.
  let longest = 0
  for (const set of valSet === undefined ? [trainSet] : [trainSet, valSet])
    for (let i = 0; i < set.count; i++)
      longest = Math.max(longest, (set.offsets[i + 1] as number) - (set.offsets[i] as number))
  checkContext(host.config, Math.min(longest, p.maxSeqLen), path.join(job.base, "config.json"))
  const spec = job.kind === "full" ? undefined : loraSpec(p)
  const start = spec !== undefined && job.init !== undefined ? initAdapter(job.init, spec, host) : undefined
  if (job.init !== undefined)
    hooks.log(
      `starts from ${spec === undefined ? "the weights of" : "the adapter"} ${path.basename(job.init)}`,
    )
  const model = new LlamaModel(host.config, host.weights, {
    mode: job.kind,
    ...(spec ? { lora: spec } : {}),
    ...(start ? { loraWeights: start } : {}),
    seed: p.seed,
  })
  const names = [...model.variables.keys()]
  const vars = names.map((n) => model.variables.get(n) as tf.Variable)
  const optimizer = new AdamW(vars, {
    beta1: p.beta1,
    beta2: p.beta2,
    eps: p.eps,
    weightDecay: p.weightDecay,
  })

  const { float32, resident } = model.baseBytes()
  hooks.metric("base_weight_bytes", resident, 0)
  hooks.metric("base_weight_bytes_float32", float32, 0)
  const mib = (b: number) => (b / 1048576).toFixed(2)
  hooks.log(
    `base weights: ${mib(resident)} MiB resident${job.kind === "qlora" ? " as NF4" : ""}, ${mib(float32)} MiB as float32 (${((100 * resident) / float32).toFixed(1)}%)`,
  )
  const trainable = vars.reduce((a, v) => a + v.size, 0)
  hooks.log(`${trainable} trainable parameters in ${vars.length} tensors`)

  const microPerStep = p.gradAccum
  const totalSteps =
    p.steps > 0 ? p.steps : Math.max(1, Math.ceil((p.epochs * trainSet.count) / (p.batchSize * microPerStep)))
  const schedule = {
    lr: p.lr,
    minLr: p.minLr,
    warmupSteps: p.warmupSteps,
    totalSteps,
    schedule: p.schedule,
  }
  const jobKey = createHash("sha256")
    .update(
      canonicalJson({
        kind: job.kind,
        base: job.base,
        train: job.train,
        val: job.validation ?? null,
        ...(job.init === undefined ? {} : { init: job.init }),
        p,
      }),
    )
    .digest("hex")
    .slice(0, 16)

  let state: LoopState = {
    step: 0,
    bestValLoss: null,
    bestStep: null,
    badEvals: 0,
    stoppedEarly: false,
    lastTrainLoss: null,
    job: jobKey,
  }
  const saved = loadCheckpoint(job.checkpoints, jobKey)
  if (saved !== undefined) {
    assignFrom(model.variables, saved.tensors, "param/")
    const moments = (which: "m" | "v", into: tf.Variable[]) => {
      for (const [i, t] of into.entries()) {
        const h = saved.tensors.get(`${which}/${names[i]}`)
        if (h === undefined) throw new TrainError(`checkpoint lacks ${which}/${names[i]}`)
        tf.tidy(() => t.assign(tf.tensor(h.data, t.shape)))
      }
    }
    moments("m", optimizer.m)
    moments("v", optimizer.v)
    optimizer.t = saved.state.step
    state = saved.state
    hooks.log(`resumed from the checkpoint at step ${state.step}`)
  }
  const resumedFrom = state.step

  const checkpoint = () => {
    const tensors = toHost(model.variables, "param/")
    for (const [which, list] of [
      ["m", optimizer.m],
      ["v", optimizer.v],
    ] as const)
      for (const [i, t] of list.entries())
        tensors.set(`${which}/${names[i]}`, { shape: t.shape, data: t.dataSync() as Float32Array })
    saveCheckpoint(job.checkpoints, tensors, state)
  }

  /** Evaluates, keeps the best weights, and counts evaluations without improvement. */
  const validate = (set: TokenSet) => {
    const val = evaluate(model, set, p)
    hooks.metric("val_loss", val, state.step)
    hooks.log(
      `step ${state.step}: train loss ${state.lastTrainLoss?.toFixed(4) ?? "-"}, validation loss ${val.toFixed(4)}`,
    )
    if (!Number.isFinite(val))
      throw new TrainError(
        `validation loss is ${val} at step ${state.step} (learning rate ${learningRate(schedule, Math.max(0, state.step - 1)).toPrecision(4)})`,
      )
    if (state.bestValLoss === null || val < state.bestValLoss - p.minDelta) {
      state = { ...state, bestValLoss: val, bestStep: state.step, badEvals: 0 }
      writeAtomic(path.join(job.checkpoints, BEST), writeSafetensors(toHost(model.variables)))
      return
    }
    state = { ...state, badEvals: state.badEvals + 1 }
    if (p.patience > 0 && state.badEvals >= p.patience) {
      state = { ...state, stoppedEarly: true }
      hooks.log(
        `early stop at step ${state.step}: no improvement in ${p.patience} evaluations (best ${state.bestValLoss?.toFixed(4)} at step ${state.bestStep})`,
      )
    }
  }
  // The loss before training: the baseline every later evaluation must beat.
  if (valSet !== undefined && state.step === 0) validate(valSet)

  // Data-parallel shards only help where tfjs computes on one CPU thread.
  const shards = backend === "wasm" || backend === "cpu" ? Math.max(1, Math.min(p.shards, p.batchSize)) : 1
  const pool =
    shards > 1
      ? await ShardPool.start(shards - 1, {
          kind: job.kind,
          base: job.base,
          ...(spec ? { lora: spec } : {}),
          seed: p.seed,
          backend,
          attention: model.attention,
          names,
        })
      : undefined
  if (shards > 1) hooks.log(`${shards} data-parallel shards (worker threads)`)
  const plan = new BatchPlan(trainSet.count, p.batchSize, p.seed)
  try {
    while (state.step < totalSteps && !state.stoppedEarly) {
      const step = state.step
      const started = performance.now()
      const lr = learningRate(schedule, step)
      // Each micro-batch's rows are split across the shards; shard 0 is this thread.
      const perShard: ShardTask[][] = Array.from({ length: shards }, () => [])
      let targets = 0
      let tokens = 0
      for (let j = 0; j < microPerStep; j++)
        splitRows(plan.indices(step * microPerStep + j), shards).forEach(({ rows, offset }, s) => {
          if (rows.length === 0) return
          const mb = makeBatch(trainSet, rows, p.maxSeqLen)
          targets += mb.targetCount
          tokens += mb.tokens
          perShard[s]?.push(toTask(mb, j, offset))
        })
      let lossSum = 0
      let grads: tf.Tensor[] | undefined
      if (targets > 0) {
        const dropout = spec?.dropout ?? 0
        const remote = pool?.run(
          vars.map((v) => v.dataSync() as Float32Array),
          perShard.slice(1),
          targets,
          step,
          dropout,
        )
        const local = taskGradients(model, vars, perShard[0] ?? [], targets, p.seed, step, dropout)
        lossSum = local.loss
        grads = local.grads
        for (const r of (await remote) ?? []) {
          lossSum += r.loss
          if (r.grads === null) continue
          const g = r.grads
          const prev = grads
          grads = vars.map((v, i) =>
            tf.tidy(() => {
              const t = tf.tensor(g[i] as Float32Array, v.shape)
              return prev === undefined ? t : tf.add(prev[i] as tf.Tensor, t)
            }),
          )
          tf.dispose(prev ?? [])
        }
      }
      if (!Number.isFinite(lossSum)) {
        tf.dispose(grads ?? [])
        throw new TrainError(
          `training loss is ${lossSum} at step ${step + 1} (learning rate ${lr.toPrecision(4)}): lower the learning rate or check the data`,
        )
      }
      if (grads !== undefined) {
        const g = grads
        const norm = tf
          .tidy(() => tf.sqrt(tf.addN(g.map((t) => tf.sum(tf.square(t))))))
          .dataSync()[0] as number
        if (!Number.isFinite(norm)) {
          tf.dispose(g)
          throw new TrainError(
            `gradient norm is ${norm} at step ${step + 1} (learning rate ${lr.toPrecision(4)})`,
          )
        }
        hooks.metric("grad_norm", norm, step + 1)
        const clipped =
          p.clipNorm > 0 && norm > p.clipNorm ? g.map((t) => tf.mul(t, p.clipNorm / (norm + 1e-6))) : g
        optimizer.step(clipped, lr)
        tf.dispose(clipped === g ? g : [...g, ...clipped])
      }
      const seconds = (performance.now() - started) / 1000
      state = { ...state, step: step + 1, lastTrainLoss: targets > 0 ? lossSum : state.lastTrainLoss }
      hooks.metric("train_loss", lossSum, step + 1)
      hooks.metric("lr", lr, step + 1)
      hooks.metric("tokens_per_s", tokens / seconds, step + 1)
      hooks.progress(step + 1, totalSteps, `loss ${lossSum.toFixed(4)}`)

      const last = state.step === totalSteps
      if (valSet !== undefined && ((p.evalEvery > 0 && state.step % p.evalEvery === 0) || last))
        validate(valSet)
      if (p.checkpointEvery > 0 && state.step % p.checkpointEvery === 0 && !last) checkpoint()
    }
  } finally {
    await pool?.close()
  }

  const bestFile = path.join(job.checkpoints, BEST)
  if (p.keepBest && state.bestStep !== null && state.bestStep !== state.step && fs.existsSync(bestFile)) {
    assignFrom(model.variables, readSafetensors(bestFile).tensors)
    hooks.log(
      `output: the weights of step ${state.bestStep} (best validation loss ${state.bestValLoss?.toFixed(4)})`,
    )
  }

  const result: TrainResult = {
    backend,
    steps: state.step,
    totalSteps,
    finalTrainLoss: state.lastTrainLoss,
    bestValLoss: state.bestValLoss,
    bestStep: state.bestStep,
    stoppedEarly: state.stoppedEarly,
    resumedFrom,
  }
  fs.mkdirSync(job.output, { recursive: true })
  if (job.kind === "full")
    saveHfModel(job.output, {
      config: host.config,
      weights: model.toHost(),
      tokenizer: host.tokenizer,
      dtype: host.dtype,
    })
  else
    writeAdapter(job.output, { spec: spec as LoraSpec, pairs: model.loraToHost(), baseModel: job.baseName })
  // No timings and no paths: the same inputs, seed and backend give the same bytes.
  const record = {
    backend,
    baseName: job.baseName,
    bestStep: state.bestStep,
    bestValLoss: state.bestValLoss,
    finalTrainLoss: state.lastTrainLoss,
    kind: job.kind,
    params: p,
    steps: state.step,
    stoppedEarly: state.stoppedEarly,
    totalSteps,
  }
  fs.writeFileSync(path.join(job.output, "training.json"), `${canonicalJson(record)}\n`)
  optimizer.dispose()
  model.dispose()
  return result
}

/**
 * Data parallelism over worker threads for the CPU backends. tfjs runs the
 * WebAssembly backend on one thread under Node, so each extra shard is a
 * worker holding its own copy of the model: every micro-batch's sequences
 * are split into contiguous row ranges, each shard computes the gradient of
 * its rows (divided by the whole step's target count), and the shards'
 * sums are added in shard order, so a given shard count always yields the
 * same bits.
 *
 * Dropout masks are drawn per sequence row, keyed by (seed, step,
 * micro-batch, layer, module, row), so they do not depend on the sharding.
 */

import { Worker } from "node:worker_threads"
import * as tf from "@tensorflow/tfjs-core"
import type { ForwardOptions, LlamaModel, TokenBatch } from "./Llama.ts"
import { LORA_MODULES, type LoraSpec } from "./Lora.ts"
import { mixSeed, Rng } from "./Rng.ts"
import type { MicroBatch } from "./TokenData.ts"
import type { TrainKind } from "./Trainer.ts"
import { workerScript } from "./TrainRunner.ts"

/** One shard's share of one micro-batch. */
export interface ShardTask {
  readonly batch: TokenBatch
  readonly targets: Int32Array
  readonly micro: number
  /** Index of the task's first row within its micro-batch (keys the dropout masks). */
  readonly rowOffset: number
}

/** LoRA dropout masks for rows rowOffset.. of a batch: 0 or 1/(1-p), [B·S, width]. */
export const dropoutMasks =
  (seed: number, step: number, task: ShardTask, p: number): ForwardOptions["loraMask"] =>
  (layer, module, [n, width]) => {
    if (p <= 0) return undefined
    const { batch: B, seq: S } = task.batch
    const keep = 1 / (1 - p)
    const mask = new Float32Array(n * width)
    for (let b = 0; b < B; b++) {
      const rng = new Rng(
        mixSeed(seed, 0xd409, step, task.micro, layer, LORA_MODULES.indexOf(module), task.rowOffset + b),
      )
      for (let i = b * S * width; i < (b + 1) * S * width; i++) mask[i] = rng.next() < p ? 0 : keep
    }
    return tf.tensor(mask, [n, width])
  }

/** Summed loss and gradients of `tasks`, each divided by `divisor` (the step's target count). */
export const taskGradients = (
  model: LlamaModel,
  vars: ReadonlyArray<tf.Variable>,
  tasks: ReadonlyArray<ShardTask>,
  divisor: number,
  seed: number,
  step: number,
  dropout: number,
): { loss: number; grads: tf.Tensor[] | undefined } => {
  let loss = 0
  let grads: tf.Tensor[] | undefined
  for (const task of tasks) {
    const masks = dropoutMasks(seed, step, task, dropout)
    const { value, grads: g } = tf.variableGrads(
      () =>
        tf.div(
          model.lossSum(task.batch, task.targets, masks ? { loraMask: masks } : {}),
          divisor,
        ) as tf.Scalar,
      vars as tf.Variable[],
    )
    loss += value.dataSync()[0] as number
    value.dispose()
    const ordered = vars.map((v) => g[v.name] as tf.Tensor)
    if (grads === undefined) grads = ordered
    else {
      const prev = grads
      grads = prev.map((a, i) => tf.add(a, ordered[i] as tf.Tensor))
      tf.dispose([...prev, ...ordered])
    }
  }
  return { loss, grads }
}

/** Splits a micro-batch's sequence indices into at most `shards` contiguous row ranges. */
export const splitRows = (
  indices: ReadonlyArray<number>,
  shards: number,
): Array<{ rows: number[]; offset: number }> => {
  const per = Math.ceil(indices.length / shards)
  const out: Array<{ rows: number[]; offset: number }> = []
  for (let s = 0; s < shards; s++) out.push({ rows: indices.slice(s * per, (s + 1) * per), offset: s * per })
  return out
}

export const toTask = (mb: MicroBatch, micro: number, rowOffset: number): ShardTask => ({
  batch: mb.batch,
  targets: mb.targets,
  micro,
  rowOffset,
})

export interface ShardInit {
  readonly kind: TrainKind
  readonly base: string
  readonly lora?: LoraSpec
  readonly seed: number
  readonly backend: string
  readonly attention: "simd" | "js" | "tf"
  readonly names: ReadonlyArray<string>
}

export type ShardRequest =
  | { readonly type: "init"; readonly init: ShardInit }
  | {
      readonly type: "run"
      readonly params: Float32Array[]
      readonly tasks: ShardTask[]
      readonly divisor: number
      readonly step: number
      readonly dropout: number
    }

export type ShardReply =
  | { readonly type: "ready" }
  | { readonly type: "done"; readonly loss: number; readonly grads: Float32Array[] | null }
  | { readonly type: "error"; readonly message: string }

/** The helper shards (all but the first, which is the trainer's own thread). */
export class ShardPool {
  private constructor(private readonly workers: Worker[]) {}

  static async start(count: number, init: ShardInit): Promise<ShardPool> {
    const file = await workerScript("ShardWorker")
    const workers = Array.from(
      { length: count },
      () => new Worker(file, { workerData: { tunegraphShard: true } }),
    )
    const pool = new ShardPool(workers)
    try {
      await Promise.all(workers.map((w) => pool.request(w, { type: "init", init })))
    } catch (e) {
      await pool.close()
      throw e
    }
    return pool
  }

  private request(w: Worker, message: ShardRequest): Promise<ShardReply> {
    return new Promise((resolve, reject) => {
      const onMessage = (m: ShardReply) => {
        cleanup()
        if (m.type === "error") reject(new Error(m.message))
        else resolve(m)
      }
      const onError = (e: Error) => {
        cleanup()
        reject(e)
      }
      const onExit = (code: number) => {
        cleanup()
        reject(new Error(`a training shard exited with code ${code}`))
      }
      const cleanup = () => {
        w.off("message", onMessage)
        w.off("error", onError)
        w.off("exit", onExit)
      }
      w.on("message", onMessage)
      w.on("error", onError)
      w.on("exit", onExit)
      w.postMessage(message)
    })
  }

  /** Runs each helper's tasks with the current weights; replies come back in shard order. */
  async run(
    params: ReadonlyArray<Float32Array>,
    tasks: ReadonlyArray<ShardTask[]>,
    divisor: number,
    step: number,
    dropout: number,
  ): Promise<Array<{ loss: number; grads: Float32Array[] | null }>> {
    const replies = await Promise.all(
      this.workers.map((w, i) =>
        this.request(w, { type: "run", params: [...params], tasks: tasks[i] ?? [], divisor, step, dropout }),
      ),
    )
    return replies.map((r) =>
      r.type === "done" ? { loss: r.loss, grads: r.grads } : { loss: 0, grads: null },
    )
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((w) => w.terminate()))
  }
}

/**
 * A helper shard of data-parallel training (Shards.ts): holds a copy of the
 * model, takes the current weights and its rows of each micro-batch, and
 * answers with the summed loss and gradients.
 */

import { parentPort, workerData } from "node:worker_threads"
import * as tf from "@tensorflow/tfjs-core"
import { initBackend } from "./Backend.ts"
import { LlamaModel } from "./Llama.ts"
import { loadModel } from "./ModelIO.ts"
import { type ShardReply, type ShardRequest, taskGradients } from "./Shards.ts"

if (parentPort !== null && (workerData as { tunegraphShard?: boolean })?.tunegraphShard) {
  const port = parentPort
  let model: LlamaModel | undefined
  let vars: tf.Variable[] = []
  let seed = 0
  const reply = (m: ShardReply, transfer: ArrayBuffer[] = []) => port.postMessage(m, transfer)
  port.on("message", async (m: ShardRequest) => {
    try {
      if (m.type === "init") {
        await initBackend(m.init.backend)
        seed = m.init.seed
        const host = loadModel(m.init.base)
        model = new LlamaModel(host.config, host.weights, {
          mode: m.init.kind,
          ...(m.init.lora ? { lora: m.init.lora } : {}),
          seed: m.init.seed,
          attention: m.init.attention,
        })
        const names = [...model.variables.keys()]
        if (names.join("\n") !== m.init.names.join("\n"))
          throw new Error("a training shard built different variables")
        vars = names.map((n) => model?.variables.get(n) as tf.Variable)
        return reply({ type: "ready" })
      }
      if (model === undefined) throw new Error("a training shard got work before its model")
      const params = m.params
      for (const [i, v] of vars.entries())
        tf.tidy(() => v.assign(tf.tensor(params[i] as Float32Array, v.shape)))
      const { loss, grads } = taskGradients(model, vars, m.tasks, m.divisor, seed, m.step, m.dropout)
      const arrays = grads?.map((g) => g.dataSync() as Float32Array) ?? null
      tf.dispose(grads ?? [])
      reply({ type: "done", loss, grads: arrays }, arrays?.map((a) => a.buffer as ArrayBuffer) ?? [])
    } catch (e) {
      reply({ type: "error", message: e instanceof Error ? e.message : String(e) })
    }
  })
}

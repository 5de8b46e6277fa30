/**
 * Inference on the torch backend: a `worker.py serve` process (see
 * tunegraph_torch/serve.py) that holds models by id and answers requests
 * one JSON line each, in the order they were sent. Tokenization, sampling
 * and printing stay in TypeScript; the worker runs the model (logits of the
 * next position, greedy decoding, the test loss). Closing the session, or
 * aborting its signal, ends the process.
 */
import { type ChildProcess, spawn } from "node:child_process"
import { createInterface } from "node:readline"
import { pythonCommand, workerPath } from "./Python.ts"
import { workerEnv } from "./Worker.ts"

export class TorchSessionError extends Error {
  override readonly name: string
  constructor(message: string, name = "TorchSessionError") {
    super(message)
    this.name = name
  }
}

export class TorchSessionClosed extends Error {
  override readonly name = "TorchSessionClosed"
}

export interface LoadRequest {
  /** A Hugging Face model directory. */
  readonly path: string
  /** A PEFT LoRA adapter directory, merged into the model. */
  readonly adapter?: string
  /** Round-trip the base's projections through NF4 before the merge (a QLoRA adapter's base). */
  readonly nf4?: boolean
  readonly device: "cpu" | "cuda"
  /** torch's CPU threads. */
  readonly threads?: number
}

export interface LoadedModel {
  /** The compute type: bfloat16 on a GPU that supports it, else float32. */
  readonly dtype: string
  readonly vocabSize: number
  readonly maxSeqLen: number
}

export interface LossChunk {
  /** Summed negative log-likelihood (nats). */
  readonly nll: number
  readonly tokens: number
  readonly truncated: number
  readonly sequences: number
}

interface Pending {
  readonly op: string
  readonly resolve: (answer: Record<string, unknown>) => void
  readonly reject: (e: Error) => void
}

/** Little-endian float32 bytes in base64 as a Float32Array (copied, so aligned). */
export const decodeFloat32 = (b64: string): Float32Array => {
  const bytes = Buffer.from(b64, "base64")
  if (bytes.byteLength % 4 !== 0)
    throw new TorchSessionError(`logits of ${bytes.byteLength} bytes are not float32 values`)
  const copy = new Uint8Array(bytes.byteLength)
  copy.set(bytes)
  return new Float32Array(copy.buffer)
}

const CLOSE_GRACE_MS = 10_000

export class TorchSession {
  private readonly child: ChildProcess
  private readonly pending: Pending[] = []
  private readonly stderr: string[] = []
  private ended: Error | undefined
  private started = true
  private readonly exited: Promise<void>
  private readonly onAbort: () => void

  constructor(private readonly options: { readonly signal?: AbortSignal } = {}) {
    this.child = spawn(pythonCommand(), [workerPath(), "serve"], {
      env: workerEnv(),
      stdio: ["pipe", "pipe", "pipe"],
    })
    this.onAbort = () => {
      this.end(new TorchSessionClosed("the torch worker was stopped"))
      this.child.kill("SIGKILL")
    }
    this.exited = new Promise((resolve) => {
      this.child.on("close", (code, sig) => {
        options.signal?.removeEventListener("abort", this.onAbort)
        this.end(
          new TorchSessionError(
            `the torch worker exited with ${sig ?? `code ${code}`}${this.stderr.length > 0 ? `:\n${this.stderr.slice(-12).join("\n")}` : ""}`,
          ),
        )
        resolve()
      })
    })
    this.child.on("error", (e) => {
      this.end(new TorchSessionError(`${pythonCommand()} cannot be started: ${e.message}`))
      if (this.child.pid === undefined) this.started = false
    })
    // A write to a worker that has died: the close handler says why.
    this.child.stdin?.on("error", () => {})
    createInterface({ input: this.child.stderr! }).on("line", (line) => {
      this.stderr.push(line)
      if (this.stderr.length > 40) this.stderr.shift()
    })
    createInterface({ input: this.child.stdout! }).on("line", (line) => {
      let answer: Record<string, unknown>
      try {
        answer = JSON.parse(line)
      } catch {
        return
      }
      const p = this.pending.shift()
      if (p === undefined) return
      if (typeof answer.error === "string")
        p.reject(
          new TorchSessionError(answer.error, typeof answer.name === "string" ? answer.name : undefined),
        )
      else p.resolve(answer)
    })
    if (options.signal?.aborted) this.onAbort()
    else options.signal?.addEventListener("abort", this.onAbort, { once: true })
  }

  /** Rejects every request in flight and every later one with `e` (the first reason sticks). */
  private end(e: Error): void {
    if (this.ended === undefined) this.ended = e
    for (const p of this.pending.splice(0)) p.reject(this.ended)
  }

  /** Sends one request; resolves with its answer, rejects with the worker's error message. */
  request(op: string, fields: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    if (this.ended !== undefined) return Promise.reject(this.ended)
    return new Promise((resolve, reject) => {
      this.pending.push({ op, resolve, reject })
      this.child.stdin!.write(`${JSON.stringify({ ...fields, op })}\n`)
    })
  }

  async load(id: string, r: LoadRequest): Promise<LoadedModel> {
    const a = await this.request("load", { id, ...r })
    return { dtype: a.dtype as string, vocabSize: a.vocabSize as number, maxSeqLen: a.maxSeqLen as number }
  }

  /** Feeds ids after those fed since the last reset; the next position's logits. */
  async next(id: string, ids: ReadonlyArray<number>, reset = false): Promise<Float32Array> {
    const a = await this.request("next", { id, ids, reset })
    return decodeFloat32(a.logits as string)
  }

  /** Greedy decoding: up to maxTokens ids after the prompt, stop ids excluded. */
  async greedy(
    id: string,
    ids: ReadonlyArray<number>,
    maxTokens: number,
    stopIds: ReadonlyArray<number>,
  ): Promise<number[]> {
    const a = await this.request("greedy", { id, ids, maxTokens, stopIds })
    return a.ids as number[]
  }

  /** The eval step's test loss (plugins/eval/Loss.ts) over sequences [start, end) of a Tokens directory. */
  async loss(
    id: string,
    tokens: string,
    o: { readonly start: number; readonly end: number; readonly maxLen: number },
  ): Promise<LossChunk> {
    const a = await this.request("loss", { id, tokens, ...o })
    return a as unknown as LossChunk
  }

  /** Ends the worker: a close request, then a kill if it does not exit in time. */
  async close(): Promise<void> {
    this.options.signal?.removeEventListener("abort", this.onAbort)
    if (this.ended === undefined) {
      this.request("close").catch(() => {})
      this.child.stdin?.end()
      this.end(new TorchSessionClosed("the torch session is closed"))
    }
    if (!this.started) return
    const timer = setTimeout(() => this.child.kill("SIGKILL"), CLOSE_GRACE_MS)
    await this.exited
    clearTimeout(timer)
  }
}

/**
 * A synchronous handle on a shared store's services (PostgreSQL, an S3
 * bucket): a worker thread (remote-worker.cjs) owns the connections, and each
 * call blocks until it answers. The store's interface stays synchronous,
 * as better-sqlite3's is for the embedded store, and a pipeline's steps run
 * in workers or child processes of their own, so blocking the main thread
 * for a round trip costs the scheduler nothing it would otherwise do.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from "node:worker_threads"

export class RemoteError extends Error {
  override readonly name = "RemoteError"
  constructor(
    message: string,
    readonly code?: string,
    readonly status?: number,
  ) {
    super(message)
  }
}

/** The worker's file: beside this module in the sources, or in cache/ beside dist/ when bundled. */
const workerFile = (): string => {
  const here = path.dirname(fileURLToPath(import.meta.url))
  for (const c of [
    path.join(here, "remote-worker.cjs"),
    path.join(here, "..", "cache", "remote-worker.cjs"),
    path.join(here, "..", "..", "cache", "remote-worker.cjs"),
  ])
    if (fs.existsSync(c)) return c
  throw new Error(`the shared store's worker (cache/remote-worker.cjs) is missing near ${here}`)
}

export class Remote {
  private readonly flag = new Int32Array(new SharedArrayBuffer(4))
  private readonly port: MessagePort
  private readonly worker: Worker
  private closed = false

  constructor(private readonly what: string) {
    const channel = new MessageChannel()
    this.port = channel.port1
    this.worker = new Worker(workerFile(), {
      workerData: { port: channel.port2, flag: this.flag.buffer },
      transferList: [channel.port2],
    })
    // The process may exit while the worker idles; close() ends it cleanly.
    this.worker.unref()
    this.port.unref()
  }

  /** Sends one request and waits for its answer. */
  call<A>(op: string, ...args: ReadonlyArray<unknown>): A {
    return this.callAs(this.what, op, ...args)
  }

  /** As call, its errors naming `what` (the bucket, where the request was for it). */
  callAs<A>(what: string, op: string, ...args: ReadonlyArray<unknown>): A {
    if (this.closed) throw new RemoteError(`${this.what}: the connection is closed`)
    Atomics.store(this.flag, 0, 0)
    this.port.postMessage({ op, args })
    for (;;) {
      Atomics.wait(this.flag, 0, 0, 1000)
      const got = receiveMessageOnPort(this.port)
      if (got !== undefined) {
        Atomics.store(this.flag, 0, 0)
        const msg = got.message as
          | { ok: true; value: A }
          | { ok: false; error: { message: string; code?: string; status?: number } }
        if (msg.ok) return msg.value
        throw new RemoteError(`${what}: ${msg.error.message}`, msg.error.code, msg.error.status)
      }
      if (this.worker.threadId === -1) throw new RemoteError(`${this.what}: its worker thread stopped`)
    }
  }

  close() {
    if (this.closed) return
    try {
      this.call("close")
    } catch {
      // closing anyway
    }
    this.closed = true
    this.port.close()
    void this.worker.terminate()
  }
}

/**
 * Chooses the TensorFlow.js backend at run time: the native CUDA build, the
 * native CPU build, WebAssembly, then plain JavaScript. The native packages
 * are optional dependencies (their install downloads libtensorflow), so each
 * is tried with a dynamic import. `TUNEGRAPH_BACKEND` (or an explicit
 * choice) names one; then it must load.
 */
import * as tf from "@tensorflow/tfjs-core"
import { registerWasmKernels } from "./WasmKernels.ts"

export const BACKENDS = ["tfjs-node-gpu", "tfjs-node", "wasm", "cpu"] as const
export type BackendName = (typeof BACKENDS)[number]

export class BackendError extends Error {
  override readonly name = "BackendError"
}

const ALIASES: Record<string, BackendName> = {
  "tfjs-node-gpu": "tfjs-node-gpu",
  gpu: "tfjs-node-gpu",
  cuda: "tfjs-node-gpu",
  "tfjs-node": "tfjs-node",
  node: "tfjs-node",
  tensorflow: "tfjs-node",
  wasm: "wasm",
  webassembly: "wasm",
  cpu: "cpu",
  js: "cpu",
}

/** Parses a backend name as a user writes it; undefined or "auto" means choose. */
export const parseBackend = (name: string | undefined): BackendName | undefined => {
  if (name === undefined || name === "" || name === "auto") return undefined
  const b = ALIASES[name.toLowerCase()]
  if (b === undefined) throw new BackendError(`unknown backend "${name}": use auto, ${BACKENDS.join(", ")}`)
  return b
}

const load = async (b: BackendName): Promise<void> => {
  switch (b) {
    case "tfjs-node-gpu":
      // Computed specifiers keep bundlers from resolving packages that may be absent.
      await import(["@tensorflow", "tfjs-node-gpu"].join("/"))
      if (!(await tf.setBackend("tensorflow")))
        throw new BackendError("tfjs-node-gpu loaded but did not initialise")
      return
    case "tfjs-node":
      await import(["@tensorflow", "tfjs-node"].join("/"))
      if (!(await tf.setBackend("tensorflow")))
        throw new BackendError("tfjs-node loaded but did not initialise")
      return
    case "wasm":
      await import("@tensorflow/tfjs-backend-wasm")
      registerWasmKernels()
      if (!(await tf.setBackend("wasm"))) throw new BackendError("the WebAssembly backend did not initialise")
      return
    case "cpu":
      await import("@tensorflow/tfjs-backend-cpu")
      if (!(await tf.setBackend("cpu"))) throw new BackendError("the CPU backend did not initialise")
      return
  }
}

/** What TensorFlow computes on once tfjs-node-gpu has loaded, when it found no GPU it can use. */
export const NO_USABLE_GPU = "cpu (TensorFlow found no usable GPU)"

/**
 * The device a loaded backend computes on, from its backend object
 * (`tf.backend()`): tfjs-node's NodeJSKernelBackend sets `isUsingGpuDevice`
 * from TensorFlow's device list when it starts, and tfjs-node-gpu falls back
 * to the CPU when that list holds no GPU.
 */
export const deviceOf = (name: BackendName, backend: unknown): string => {
  if (name !== "tfjs-node-gpu") return "cpu"
  const using = (backend as { isUsingGpuDevice?: unknown } | null | undefined)?.isUsingGpuDevice
  return using === true ? "cuda" : using === false ? NO_USABLE_GPU : "unknown (tfjs-node-gpu did not say)"
}

let active: BackendName | undefined
let activeDevice: string | undefined

/** The device the initialised backend computes on ("cpu", "cuda", or NO_USABLE_GPU); undefined before initBackend. */
export const backendDevice = (): string | undefined => activeDevice

/**
 * Initialises the requested backend (or the first that loads) and returns
 * its name, for lineage; backendDevice() then says what it computes on.
 * Calling it again with the same choice is free.
 */
export const initBackend = async (
  requested: string | undefined = process.env.TUNEGRAPH_BACKEND,
): Promise<BackendName> => {
  const want = parseBackend(requested)
  if (active !== undefined && (want === undefined || want === active)) return active
  // PROD silences the CPU backend's advice to install tfjs-node and skips debug checks.
  tf.env().set("PROD", true)
  if (want !== undefined) {
    try {
      await load(want)
    } catch (e) {
      throw new BackendError(
        `backend ${want} is not available: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}${want.startsWith("tfjs-node") ? ` (install @tensorflow/${want} 4.22.0, which needs libtensorflow)` : ""}`,
      )
    }
    active = want
    activeDevice = deviceOf(want, tf.backend())
    return want
  }
  const errors: string[] = []
  for (const b of BACKENDS) {
    try {
      await load(b)
      active = b
      activeDevice = deviceOf(b, tf.backend())
      return b
    } catch (e) {
      errors.push(`${b}: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`)
    }
  }
  throw new BackendError(`no TensorFlow.js backend loads (${errors.join("; ")})`)
}

/** Whether a backend computes in a fixed order on the CPU (resume and determinism are bit-exact there). */
export const isCpuBackend = (b: BackendName): boolean => b === "wasm" || b === "cpu" || b === "tfjs-node"

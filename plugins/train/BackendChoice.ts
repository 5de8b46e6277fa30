/**
 * Which backend a training, eval or generate step computes on, resolved
 * before its key is built, without loading either backend:
 *
 *   auto   torch with CUDA, then torch on the CPU, then the tfjs chain
 *          (tfjs-node-gpu, tfjs-node, WebAssembly, plain CPU);
 *   torch  torch-cuda where CUDA works, else torch-cpu;
 *   or one backend by name.
 *
 * `auto` defers to TUNEGRAPH_BACKEND. The answer carries what enters the
 * step key (core/StepKey.ts `environment`): the backend, its device, and the
 * versions of the libraries it computes with. The torch side comes from the
 * cached probe (torch/Probe.ts), so a no-op re-run starts no Python.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { probeTorch, type TorchProbe } from "./torch/Probe.ts"

export const TRAIN_BACKENDS = [
  "torch-cuda",
  "torch-cpu",
  "tfjs-node-gpu",
  "tfjs-node",
  "wasm",
  "cpu",
] as const
export type TrainBackend = (typeof TRAIN_BACKENDS)[number]
export const BACKEND_CHOICES = ["auto", "torch", ...TRAIN_BACKENDS] as const
export type BackendChoice = (typeof BACKEND_CHOICES)[number]

export class BackendChoiceError extends Error {
  override readonly name = "BackendChoiceError"
}

export interface ResolvedBackend {
  readonly name: TrainBackend
  readonly family: "torch" | "tfjs"
  /** The device it computes on, in words ("cpu", "NVIDIA H200"). */
  readonly device: string
  /** The step-key ingredients: backend, device, and `python:`/`npm:` library versions. */
  readonly environment: Readonly<Record<string, string>>
  readonly probe?: TorchProbe
}

const here = path.dirname(fileURLToPath(import.meta.url))

/** node_modules/<name>/package.json's version, looked up from this module upward; undefined when absent. */
export const npmVersion = (name: string): string | undefined => {
  for (let dir = here; ; dir = path.dirname(dir)) {
    const file = path.join(dir, "node_modules", name, "package.json")
    if (fs.existsSync(file)) {
      try {
        return (JSON.parse(fs.readFileSync(file, "utf8")) as { version?: string }).version
      } catch {
        return undefined
      }
    }
    if (path.dirname(dir) === dir) return undefined
  }
}

const nvidiaGpus = (): number => {
  try {
    return fs.readdirSync("/proc/driver/nvidia/gpus").length
  } catch {
    return 0
  }
}

const TFJS_PACKAGE: Record<Exclude<TrainBackend, "torch-cuda" | "torch-cpu">, string> = {
  "tfjs-node-gpu": "@tensorflow/tfjs-node-gpu",
  "tfjs-node": "@tensorflow/tfjs-node",
  wasm: "@tensorflow/tfjs-backend-wasm",
  cpu: "@tensorflow/tfjs-backend-cpu",
}

const tfjs = (name: keyof typeof TFJS_PACKAGE): ResolvedBackend | string => {
  const pkg = TFJS_PACKAGE[name]
  const version = npmVersion(pkg)
  if (version === undefined) return `${pkg} is not installed`
  // tfjs-node-gpu computes on the CPU when TensorFlow finds no GPU it can use: say so.
  const device = name === "tfjs-node-gpu" ? (nvidiaGpus() > 0 ? "cuda" : "cpu (no usable GPU)") : "cpu"
  return {
    name,
    family: "tfjs",
    device,
    environment: {
      backend: name,
      device,
      "npm:@tensorflow/tfjs-core": npmVersion("@tensorflow/tfjs-core") ?? "absent",
      [`npm:${pkg}`]: version,
    },
  }
}

const torch = (name: "torch-cuda" | "torch-cpu", probe: TorchProbe): ResolvedBackend | string => {
  if (!probe.available) return probe.reason ?? "torch is not available"
  if (name === "torch-cuda" && probe.cudaAvailable !== true)
    return `no CUDA device for torch (${probe.cudaReason ?? "none found"})`
  const device =
    name === "torch-cuda"
      ? [...new Set((probe.devices ?? []).map((d) => d.name))].join(", ") || "cuda"
      : "cpu"
  const env: Record<string, string> = { backend: name, device }
  for (const pkg of ["torch", "transformers", "peft", "safetensors", "accelerate"]) {
    const v = probe.packages?.[pkg]
    if (v) env[`python:${pkg}`] = v
  }
  if (name === "torch-cuda") {
    env.cuda = probe.cuda ?? "unknown"
    const bnb = probe.packages?.bitsandbytes
    if (bnb) env["python:bitsandbytes"] = bnb
  }
  return { name, family: "torch", device, environment: env, probe }
}

/** Every backend, in `auto`'s order, resolved or with the reason it is unavailable. */
export const allBackends = (): Array<{ name: TrainBackend; resolved?: ResolvedBackend; reason?: string }> => {
  const probe = probeTorch()
  return TRAIN_BACKENDS.map((name) => {
    const r = name === "torch-cuda" || name === "torch-cpu" ? torch(name, probe) : tfjs(name)
    return typeof r === "string" ? { name, reason: r } : { name, resolved: r }
  })
}

const ALIASES: Record<string, BackendChoice> = {
  auto: "auto",
  torch: "torch",
  pytorch: "torch",
  "torch-cuda": "torch-cuda",
  "torch-cpu": "torch-cpu",
  "tfjs-node-gpu": "tfjs-node-gpu",
  gpu: "tfjs-node-gpu",
  "tfjs-node": "tfjs-node",
  node: "tfjs-node",
  wasm: "wasm",
  webassembly: "wasm",
  cpu: "cpu",
  js: "cpu",
}

export const parseBackendChoice = (name: string | undefined): BackendChoice => {
  if (name === undefined || name === "") return "auto"
  const c = ALIASES[name.toLowerCase()]
  if (c === undefined)
    throw new BackendChoiceError(`unknown backend "${name}": use ${BACKEND_CHOICES.join(", ")}`)
  return c
}

const memo = new Map<string, ResolvedBackend>()

/**
 * The backend for a step's `backend` parameter ("auto" defers to
 * TUNEGRAPH_BACKEND); throws, saying why and what to install, when the one
 * asked for cannot run here.
 */
export const resolveBackend = (requested: string | undefined, tfjsOnly = false): ResolvedBackend => {
  const choice = parseBackendChoice(
    requested === undefined || requested === "auto" ? process.env.TUNEGRAPH_BACKEND : requested,
  )
  const memoKey = `${choice}|${tfjsOnly}`
  const known = memo.get(memoKey)
  if (known !== undefined) return known
  const order: ReadonlyArray<TrainBackend> =
    choice === "auto"
      ? tfjsOnly
        ? ["tfjs-node-gpu", "tfjs-node", "wasm", "cpu"]
        : TRAIN_BACKENDS
      : choice === "torch"
        ? ["torch-cuda", "torch-cpu"]
        : [choice]
  const reasons: string[] = []
  const probe = order.some((b) => b.startsWith("torch")) ? probeTorch() : undefined
  for (const b of order) {
    const r = b === "torch-cuda" || b === "torch-cpu" ? torch(b, probe as TorchProbe) : tfjs(b)
    if (typeof r !== "string") {
      memo.set(memoKey, r)
      return r
    }
    reasons.push(`${b}: ${r}`)
  }
  throw new BackendChoiceError(
    choice === "auto"
      ? `no backend can run here (${reasons.join("; ")})`
      : `backend ${choice} is not available: ${reasons.join("; ")}${choice.startsWith("torch") ? "; install the torch backend's requirements: python3 -m pip install -r plugins/train/torch/requirements.txt (TUNEGRAPH_PYTHON names another interpreter)" : ""}`,
  )
}

/** A step's key ingredients from its `backend` parameter: the resolved backend, device and library versions. */
export const backendEnvironment = (p: { readonly backend: string }): Readonly<Record<string, string>> =>
  resolveBackend(p.backend).environment

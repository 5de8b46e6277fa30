/**
 * `tunegraph backends [--json]`: every backend a training, eval or generate
 * step can compute on, in `auto`'s order, with whether it can run here, its
 * device(s), the versions of the libraries it computes with, why it cannot
 * run when it cannot, and which one `auto` picks (TUNEGRAPH_BACKEND
 * included). The torch side comes from the cached probe; tfjs-node-gpu, when
 * installed, is loaded to ask TensorFlow whether it found a usable GPU.
 */
import { bool, parseArgs, UsageError } from "../../core/cli/Args.ts"
import { bold, dim, green, red } from "../../core/cli/Output.ts"
import { allBackends, npmVersion, resolveBackend, type TrainBackend } from "./BackendChoice.ts"
import { probeTorch, type TorchProbe } from "./torch/Probe.ts"

export const BACKENDS_USAGE = "tunegraph backends [--json]"

const HELP = `usage: ${BACKENDS_USAGE}

Lists the backends training, eval and generate steps can compute on, in the order
\`backend: auto\` tries them: torch-cuda, torch-cpu, tfjs-node-gpu, tfjs-node, wasm, cpu.
For each: available or not (and why not), its device(s), library versions, and which
one auto picks. TUNEGRAPH_BACKEND makes auto pick that one; TUNEGRAPH_PYTHON names the
interpreter the torch backends use (default python3).

  --json   an array of objects: backend, family, available, device, gpus, versions,
           reason, auto (auto picks it now), firstAvailable (auto's pick without
           TUNEGRAPH_BACKEND)
`

export interface GpuInfo {
  readonly name: string
  /** Bytes. */
  readonly memory: number
  readonly capability: string
}

export interface BackendRow {
  readonly backend: TrainBackend
  readonly family: "torch" | "tfjs"
  readonly available: boolean
  /** What it computes on, in words; null when it cannot run. */
  readonly device: string | null
  /** The CUDA devices (torch-cuda). */
  readonly gpus: ReadonlyArray<GpuInfo>
  readonly versions: Readonly<Record<string, string>>
  readonly reason: string | null
  /** `backend: auto` resolves to it now (TUNEGRAPH_BACKEND honoured). */
  readonly auto: boolean
  /** The first available in auto's order: auto's pick when TUNEGRAPH_BACKEND is not set. */
  readonly firstAvailable: boolean
}

/** What the table is made from; the live parts are gathered by `survey`. */
export interface Survey {
  readonly entries: ReturnType<typeof allBackends>
  readonly probe: TorchProbe
  /** tfjs-node-gpu loaded: the device TensorFlow computes on, or why it did not load; absent when not installed. */
  readonly nodeGpu?: { readonly device: string } | { readonly error: string }
  readonly auto: { readonly name: TrainBackend } | { readonly error: string }
  readonly npmVersions: Readonly<Record<string, string | undefined>>
}

const TFJS_PACKAGES: Partial<Record<TrainBackend, string>> = {
  "tfjs-node-gpu": "@tensorflow/tfjs-node-gpu",
  "tfjs-node": "@tensorflow/tfjs-node",
  wasm: "@tensorflow/tfjs-backend-wasm",
  cpu: "@tensorflow/tfjs-backend-cpu",
}

const torchVersions = (name: TrainBackend, probe: TorchProbe): Record<string, string> => {
  const v: Record<string, string> = {}
  for (const pkg of ["torch", "transformers", "peft"]) {
    const version = probe.packages?.[pkg]
    if (version) v[pkg] = version
  }
  if (name === "torch-cuda" && probe.available) v.cuda = probe.cuda ?? "none"
  if (probe.pythonVersion) v.python = probe.pythonVersion
  return v
}

const tfjsVersions = (name: TrainBackend, npm: Survey["npmVersions"]): Record<string, string> => {
  const v: Record<string, string> = {}
  const pkg = TFJS_PACKAGES[name] as string
  const own = npm[pkg]
  if (own === undefined) return v
  const core = npm["@tensorflow/tfjs-core"]
  if (core !== undefined) v["@tensorflow/tfjs-core"] = core
  v[pkg] = own
  return v
}

/** The table's rows, from a survey (pure: the tests give it fake surveys). */
export const backendRows = (s: Survey): BackendRow[] => {
  const picked = "name" in s.auto ? s.auto.name : undefined
  const first = s.entries.find((e) => e.resolved !== undefined)?.name
  return s.entries.map((e) => {
    const family = e.name.startsWith("torch") ? "torch" : "tfjs"
    let available = e.resolved !== undefined
    let device: string | null = e.resolved?.device ?? null
    let reason: string | null = e.reason ?? null
    // tfjs-node-gpu's device is what TensorFlow reported once loaded, not a guess from the driver.
    if (e.name === "tfjs-node-gpu" && available && s.nodeGpu !== undefined) {
      if ("device" in s.nodeGpu) device = s.nodeGpu.device
      else {
        available = false
        device = null
        reason = `@tensorflow/tfjs-node-gpu is installed but does not load: ${s.nodeGpu.error}`
      }
    }
    const gpus =
      e.name === "torch-cuda" && available
        ? (s.probe.devices ?? []).map((d) => ({ name: d.name, memory: d.memory, capability: d.capability }))
        : []
    return {
      backend: e.name,
      family,
      available,
      device,
      gpus,
      versions: family === "torch" ? torchVersions(e.name, s.probe) : tfjsVersions(e.name, s.npmVersions),
      reason,
      auto: e.name === picked,
      firstAvailable: e.name === first,
    }
  })
}

const survey = async (): Promise<Survey> => {
  const probe = probeTorch()
  const entries = allBackends()
  const npmVersions = Object.fromEntries(
    ["@tensorflow/tfjs-core", ...Object.values(TFJS_PACKAGES)].map((p) => [p, npmVersion(p as string)]),
  )
  let nodeGpu: Survey["nodeGpu"]
  if (npmVersions["@tensorflow/tfjs-node-gpu"] !== undefined) {
    const { initBackend, backendDevice } = await import("./Backend.ts")
    try {
      await initBackend("tfjs-node-gpu")
      nodeGpu = { device: backendDevice() ?? "unknown" }
    } catch (e) {
      nodeGpu = { error: (e instanceof Error ? e.message : String(e)).split("\n")[0] as string }
    }
  }
  let auto: Survey["auto"]
  try {
    auto = { name: resolveBackend("auto").name }
  } catch (e) {
    auto = { error: e instanceof Error ? e.message : String(e) }
  }
  return { entries, probe, auto, npmVersions, ...(nodeGpu === undefined ? {} : { nodeGpu }) }
}

const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(1)} GiB`

const deviceText = (r: BackendRow): string =>
  r.gpus.length > 0
    ? r.gpus.map((g) => `${g.name} (${gib(g.memory)}, sm ${g.capability})`).join("; ")
    : (r.device ?? "-")

const versionsText = (r: BackendRow): string =>
  Object.entries(r.versions)
    .map(([k, v]) => `${k.replace(/^@tensorflow\//, "")} ${v}`)
    .join(", ") || "-"

/** The human table: aligned columns, a marker on auto's pick, the reason under an unavailable row. */
export const formatRows = (
  rows: ReadonlyArray<BackendRow>,
  env: string | undefined,
  autoError?: string,
): string => {
  const cells = rows.map((r) => [
    r.backend,
    r.available ? "available" : "unavailable",
    deviceText(r),
    versionsText(r),
  ])
  const header = ["backend", "status", "device", "versions"]
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((c) => (c[i] as string).length)))
  const pad = (s: string, i: number) => (i === header.length - 1 ? s : s.padEnd(widths[i] as number))
  const lines = [`  ${bold(header.map(pad).join("  ").trimEnd())}`]
  rows.forEach((r, n) => {
    const c = cells[n] as string[]
    const status = r.available ? green(pad(c[1] as string, 1)) : red(pad(c[1] as string, 1))
    const rest = `${pad(c[2] as string, 2)}  ${c[3] as string}`.trimEnd()
    const line = `${pad(c[0] as string, 0)}  ${status}  ${r.available ? rest : dim(rest)}`
    lines.push(`${r.auto ? "*" : " "} ${line}`)
    if (r.reason !== null && !r.available)
      lines.push(`  ${" ".repeat(widths[0] as number)}  ${dim(r.reason)}`)
  })
  const picked = rows.find((r) => r.auto)
  const first = rows.find((r) => r.firstAvailable)
  lines.push("")
  const envSet = env !== undefined && env !== "" && env !== "auto"
  if (picked === undefined)
    lines.push(
      `auto picks nothing: ${envSet ? `TUNEGRAPH_BACKEND=${env}: ` : ""}${autoError ?? "no backend is available"}`,
    )
  else if (envSet)
    lines.push(
      `* auto picks ${picked.backend}: TUNEGRAPH_BACKEND=${env}${first !== undefined && first.backend !== picked.backend ? ` (without it: ${first.backend})` : ""}`,
    )
  else
    lines.push(
      `* auto picks ${picked.backend}: the first available in this order (TUNEGRAPH_BACKEND or a step's backend param picks another)`,
    )
  if (picked !== undefined && !picked.available)
    lines.push(`  ${picked.backend} is installed but will fail: ${picked.reason ?? "unavailable"}`)
  return `${lines.join("\n")}\n`
}

export const backendsCommand = async (argv: ReadonlyArray<string>): Promise<number> => {
  const args = parseArgs(argv, { json: "boolean", help: "boolean" }, { h: "help" })
  if (bool(args, "help")) {
    process.stdout.write(HELP)
    return 0
  }
  if (args.positionals.length > 0) throw new UsageError(`usage: ${BACKENDS_USAGE}`)
  const s = await survey()
  const rows = backendRows(s)
  if (bool(args, "json")) process.stdout.write(`${JSON.stringify(rows)}\n`)
  else
    process.stdout.write(
      formatRows(rows, process.env.TUNEGRAPH_BACKEND, "error" in s.auto ? s.auto.error : undefined),
    )
  return 0
}

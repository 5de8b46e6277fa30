/**
 * The MLflow tracking server the test/mlflow suites log to: started by
 * test/services/mlflow.sh (SQLite backend, artifact proxying, loopback) when
 * none is running, and shared by the suites. Where `mlflow` is not installed
 * (pip install -r test/services/requirements.txt) the suites are skipped,
 * saying so; under CI=true that is a failure.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { repoRoot } from "../support/cli.ts"

export const serverDir = process.env.TUNEGRAPH_MLFLOW_DIR ?? "/tmp/tunegraph-mlflow"
const script = path.join(repoRoot, "test/services/mlflow.sh")
const python = process.env.TUNEGRAPH_PYTHON ?? "python3"

const probe = spawnSync(python, ["-c", "import mlflow; print(mlflow.__version__)"], {
  encoding: "utf8",
  timeout: 120_000,
})
export const hasMlflow = probe.status === 0
export const mlflowMissing = hasMlflow
  ? ""
  : `${python} cannot import mlflow (${(probe.stderr ?? probe.error?.message ?? "").trim().split("\n").pop()}): pip install -r test/services/requirements.txt`
if (!hasMlflow) {
  if (process.env.CI === "true") throw new Error(`CI=true and ${mlflowMissing}`)
  process.stderr.write(`skipping the MLflow suites: ${mlflowMissing}\n`)
}

/** The server's URL, starting it first when it is not running. */
export const startServer = (): string => {
  const r = spawnSync("bash", [script, "start", serverDir], { encoding: "utf8", timeout: 180_000 })
  if (r.status !== 0)
    throw new Error(
      `could not start the MLflow server (test/services/mlflow.sh start):\n${r.stderr}${r.stdout}`,
    )
  return fs.readFileSync(path.join(serverDir, "url"), "utf8").trim()
}

/** A REST call to the server; throws with its answer when it fails. */
export const api = async <A = Record<string, unknown>>(
  base: string,
  method: "GET" | "POST",
  endpoint: string,
  body: Record<string, unknown> = {},
): Promise<A> => {
  let url = `${base}/api/2.0/${endpoint}`
  if (method === "GET")
    url += `?${new URLSearchParams(Object.entries(body).map(([k, v]) => [k, String(v)] as [string, string]))}`
  const res = await fetch(url, {
    method,
    ...(method === "POST"
      ? { body: JSON.stringify(body), headers: { "content-type": "application/json" } }
      : {}),
  })
  const text = await res.text()
  if (!res.ok) throw new Error(`${method} ${endpoint}: ${res.status} ${text}`)
  return JSON.parse(text) as A
}

export interface Run {
  info: { run_id: string; run_name: string; status: string; artifact_uri: string; experiment_id: string }
  data: {
    tags?: Array<{ key: string; value: string }>
    params?: Array<{ key: string; value: string }>
    metrics?: Array<{ key: string; value: number; step: number; timestamp: number }>
  }
}

export const tags = (r: Run) => Object.fromEntries((r.data.tags ?? []).map((t) => [t.key, t.value]))
export const params = (r: Run) => Object.fromEntries((r.data.params ?? []).map((t) => [t.key, t.value]))

export const experimentId = async (base: string, name: string) =>
  (
    await api<{ experiment: { experiment_id: string } }>(base, "GET", "mlflow/experiments/get-by-name", {
      experiment_name: name,
    })
  ).experiment.experiment_id

/** Every run of an experiment. */
export const runsOf = async (base: string, experiment: string): Promise<Run[]> =>
  (
    await api<{ runs?: Run[] }>(base, "POST", "mlflow/runs/search", {
      experiment_ids: [experiment],
      max_results: 1000,
    })
  ).runs ?? []

export const history = async (base: string, run: string, key: string) =>
  (
    await api<{ metrics?: Array<{ key: string; value: number; step: number; timestamp: number }> }>(
      base,
      "GET",
      "mlflow/metrics/get-history",
      { run_id: run, metric_key: key, max_results: 25000 },
    )
  ).metrics ?? []

/** The files under a run's artifact root (recursively), through the REST API. */
export const artifactFiles = async (base: string, run: string, dir = ""): Promise<string[]> => {
  const r = await api<{ files?: Array<{ path: string; is_dir: boolean }> }>(
    base,
    "GET",
    "mlflow/artifacts/list",
    {
      run_id: run,
      ...(dir === "" ? {} : { path: dir }),
    },
  )
  const out: string[] = []
  for (const f of r.files ?? []) out.push(...(f.is_dir ? await artifactFiles(base, run, f.path) : [f.path]))
  return out.sort()
}

/** One artifact's bytes, downloaded through the artifact proxy. */
export const artifactText = async (base: string, artifactUri: string, file: string) => {
  const root = artifactUri.replace(/^mlflow-artifacts:\/*/, "")
  const res = await fetch(`${base}/api/2.0/mlflow-artifacts/artifacts/${root}/${file}`)
  if (!res.ok) throw new Error(`download ${file}: ${res.status}`)
  return res.text()
}

export const uniqueName = (prefix: string) =>
  `${prefix}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`

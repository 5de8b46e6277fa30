/**
 * A small client of MLflow's REST API (https://mlflow.org/docs/latest/rest-api.html):
 * experiments, runs, batched metrics, params and tags, the model registry, and
 * artifact uploads through the server's artifact proxy (`mlflow-artifacts:`).
 *
 * Every request is bounded: it is cut at `requestMs`, and at the deadline the
 * caller gives for the whole conversation, so a server that is down or slow
 * costs a bounded time. Authentication follows MLflow's own variables:
 * MLFLOW_TRACKING_TOKEN (bearer), MLFLOW_TRACKING_USERNAME and _PASSWORD (basic).
 */

export class MlflowError extends Error {
  override readonly name = "MlflowError"
  constructor(
    message: string,
    readonly status?: number,
    readonly code?: string,
  ) {
    super(message)
  }
}

export interface Tag {
  readonly key: string
  readonly value: string
}

export interface MetricPoint {
  readonly key: string
  readonly value: number
  readonly timestamp: number
  readonly step: number
}

export interface MlflowRun {
  readonly info: {
    readonly run_id: string
    readonly experiment_id: string
    readonly run_name?: string
    readonly status?: string
    readonly artifact_uri?: string
    readonly lifecycle_stage?: string
  }
  readonly data: {
    readonly tags?: ReadonlyArray<Tag>
    readonly params?: ReadonlyArray<Tag>
    readonly metrics?: ReadonlyArray<MetricPoint>
  }
}

export const tagOf = (run: MlflowRun, key: string): string | undefined =>
  run.data.tags?.find((t) => t.key === key)?.value

export interface ClientOptions {
  /** http(s) URL of the tracking server. */
  readonly uri: string
  /** Longest wait for one request. */
  readonly requestMs?: number
  /** Fires when the whole conversation must stop. */
  readonly deadline?: AbortSignal
  readonly env?: NodeJS.ProcessEnv
}

// Limits of runs/log-batch.
export const MAX_METRICS = 1000
export const MAX_PARAMS = 100
export const MAX_TAGS = 100
export const MAX_PARAM_VALUE = 6000
export const MAX_TAG_VALUE = 8000

export class MlflowClient {
  readonly base: string
  private readonly requestMs: number
  private readonly deadline: AbortSignal | undefined
  private readonly headers: Record<string, string>

  constructor(options: ClientOptions) {
    const uri = options.uri.replace(/\/+$/, "")
    if (!/^https?:\/\//.test(uri))
      throw new MlflowError(`tracking URI ${options.uri}: only http:// and https:// servers are supported`)
    this.base = uri
    this.requestMs = options.requestMs ?? 10_000
    this.deadline = options.deadline
    const env = options.env ?? process.env
    this.headers = {}
    if (env.MLFLOW_TRACKING_TOKEN) this.headers.authorization = `Bearer ${env.MLFLOW_TRACKING_TOKEN}`
    else if (env.MLFLOW_TRACKING_USERNAME)
      this.headers.authorization = `Basic ${Buffer.from(`${env.MLFLOW_TRACKING_USERNAME}:${env.MLFLOW_TRACKING_PASSWORD ?? ""}`).toString("base64")}`
  }

  private signal(ms = this.requestMs): AbortSignal {
    const t = AbortSignal.timeout(ms)
    return this.deadline === undefined ? t : AbortSignal.any([t, this.deadline])
  }

  private async send(
    method: string,
    url: string,
    body: string | Uint8Array | undefined,
    contentType: string | undefined,
    ms?: number,
  ): Promise<Response> {
    const signal = this.signal(ms)
    try {
      return await fetch(url, {
        method,
        headers: { ...this.headers, ...(contentType === undefined ? {} : { "content-type": contentType }) },
        ...(body === undefined ? {} : { body }),
        signal,
      })
    } catch (e) {
      const err = e as Error & { cause?: { code?: string; message?: string } }
      if (err.name === "TimeoutError" || err.name === "AbortError" || signal.aborted)
        throw new MlflowError(
          this.deadline?.aborted === true
            ? `${this.base} did not finish in time`
            : `${this.base} did not answer within ${((ms ?? this.requestMs) / 1000).toFixed(0)} s`,
        )
      const why = err.cause?.code ?? err.cause?.message ?? err.message
      throw new MlflowError(`cannot reach ${this.base} (${why})`)
    }
  }

  /** One REST call: JSON in, JSON out, MLflow's error_code on failure. */
  async call<A = Record<string, unknown>>(
    method: "GET" | "POST",
    endpoint: string,
    body?: Record<string, unknown>,
    ms?: number,
  ): Promise<A> {
    let url = `${this.base}/api/2.0/mlflow/${endpoint}`
    if (method === "GET" && body !== undefined) {
      const q = new URLSearchParams()
      for (const [k, v] of Object.entries(body)) if (v !== undefined) q.set(k, String(v))
      url += `?${q}`
    }
    const res = await this.send(
      method,
      url,
      method === "POST" ? JSON.stringify(body ?? {}) : undefined,
      method === "POST" ? "application/json" : undefined,
      ms,
    )
    const text = await res.text()
    let json: Record<string, unknown> = {}
    try {
      json = text === "" ? {} : JSON.parse(text)
    } catch {
      if (res.ok) throw new MlflowError(`${endpoint}: the server's answer is not JSON`, res.status)
    }
    if (!res.ok) {
      const code = typeof json.error_code === "string" ? json.error_code : undefined
      const message = typeof json.message === "string" ? json.message : text.slice(0, 300)
      throw new MlflowError(`${endpoint}: ${res.status} ${code ?? ""} ${message}`.trim(), res.status, code)
    }
    return json as A
  }

  /** The experiment's id, creating it (or restoring a deleted one) when needed. */
  async experiment(name: string, probeMs?: number): Promise<string> {
    try {
      const r = await this.call<{ experiment: { experiment_id: string; lifecycle_stage?: string } }>(
        "GET",
        "experiments/get-by-name",
        { experiment_name: name },
        probeMs,
      )
      if (r.experiment.lifecycle_stage === "deleted")
        await this.call("POST", "experiments/restore", { experiment_id: r.experiment.experiment_id })
      return r.experiment.experiment_id
    } catch (e) {
      if (!(e instanceof MlflowError) || e.code !== "RESOURCE_DOES_NOT_EXIST") throw e
    }
    try {
      // The UI shows a fine-tuning experiment as model training (not as GenAI traces).
      const tags = [{ key: "mlflow.experimentKind", value: "finetuning" }]
      return (await this.call<{ experiment_id: string }>("POST", "experiments/create", { name, tags }))
        .experiment_id
    } catch (e) {
      // Created meanwhile by another process.
      if (e instanceof MlflowError && e.code === "RESOURCE_ALREADY_EXISTS") return this.experiment(name)
      throw e
    }
  }

  /** Every active run of an experiment matching a filter (all pages). */
  async searchRuns(experimentId: string, filter: string): Promise<MlflowRun[]> {
    const out: MlflowRun[] = []
    let token: string | undefined
    do {
      const r = await this.call<{ runs?: MlflowRun[]; next_page_token?: string }>("POST", "runs/search", {
        experiment_ids: [experimentId],
        filter,
        run_view_type: "ACTIVE_ONLY",
        max_results: 1000,
        ...(token === undefined ? {} : { page_token: token }),
      })
      out.push(...(r.runs ?? []))
      token = r.next_page_token || undefined
    } while (token !== undefined)
    return out
  }

  async createRun(options: {
    experimentId: string
    name: string
    startTime: number
    tags: ReadonlyArray<Tag>
  }): Promise<MlflowRun> {
    const r = await this.call<{ run: MlflowRun }>("POST", "runs/create", {
      experiment_id: options.experimentId,
      run_name: options.name,
      start_time: options.startTime,
      tags: options.tags.map(limitTag),
    })
    return r.run
  }

  async getRun(runId: string): Promise<MlflowRun> {
    return (await this.call<{ run: MlflowRun }>("GET", "runs/get", { run_id: runId })).run
  }

  /** Metrics, params and tags, in as many log-batch calls as MLflow's limits need. */
  async logBatch(
    runId: string,
    data: { metrics?: ReadonlyArray<MetricPoint>; params?: ReadonlyArray<Tag>; tags?: ReadonlyArray<Tag> },
  ): Promise<void> {
    const params = (data.params ?? []).map((p) => ({ key: p.key, value: p.value.slice(0, MAX_PARAM_VALUE) }))
    const tags = (data.tags ?? []).map(limitTag)
    const metrics = data.metrics ?? []
    for (let i = 0; i < params.length; i += MAX_PARAMS)
      await this.call("POST", "runs/log-batch", { run_id: runId, params: params.slice(i, i + MAX_PARAMS) })
    for (let i = 0; i < tags.length; i += MAX_TAGS)
      await this.call("POST", "runs/log-batch", { run_id: runId, tags: tags.slice(i, i + MAX_TAGS) })
    for (let i = 0; i < metrics.length; i += MAX_METRICS)
      await this.call("POST", "runs/log-batch", {
        run_id: runId,
        metrics: metrics.slice(i, i + MAX_METRICS).map(jsonMetric),
      })
  }

  async setTag(runId: string, key: string, value: string): Promise<void> {
    await this.call("POST", "runs/set-tag", { run_id: runId, ...limitTag({ key, value }) })
  }

  async updateRun(runId: string, status: "FINISHED" | "FAILED" | "KILLED", endTime: number): Promise<void> {
    await this.call("POST", "runs/update", { run_id: runId, status, end_time: endTime })
  }

  /** A metric's whole history in a run. */
  async metricHistory(runId: string, key: string): Promise<MetricPoint[]> {
    const out: MetricPoint[] = []
    let token: string | undefined
    do {
      const r = await this.call<{ metrics?: MetricPoint[]; next_page_token?: string }>(
        "GET",
        "metrics/get-history",
        { run_id: runId, metric_key: key, max_results: 25000, page_token: token },
      )
      out.push(...(r.metrics ?? []).map((m) => ({ ...m, value: Number(m.value), step: Number(m.step ?? 0) })))
      token = r.next_page_token || undefined
    } while (token !== undefined)
    return out
  }

  /** Uploads one file under a run's artifact root (which must be an `mlflow-artifacts:` URI). */
  async uploadArtifact(artifactUri: string, relPath: string, body: Buffer): Promise<void> {
    const root = proxiedPath(artifactUri)
    if (root === undefined)
      throw new MlflowError(
        `artifact root ${artifactUri} is not served by the tracking server: start \`mlflow server\` with artifact proxying (--serve-artifacts, the default)`,
      )
    const url = `${this.base}/api/2.0/mlflow-artifacts/artifacts/${[...root.split("/"), ...relPath.split("/")]
      .filter((s) => s !== "")
      .map(encodeURIComponent)
      .join("/")}`
    const res = await this.send("PUT", url, new Uint8Array(body), "application/octet-stream")
    if (!res.ok)
      throw new MlflowError(`upload of ${relPath}: ${res.status} ${(await res.text()).slice(0, 300)}`)
    await res.arrayBuffer().catch(() => undefined)
  }

  async createRegisteredModel(name: string): Promise<void> {
    try {
      await this.call("POST", "registered-models/create", { name })
    } catch (e) {
      if (e instanceof MlflowError && e.code === "RESOURCE_ALREADY_EXISTS") return
      throw e
    }
  }

  async searchModelVersions(
    filter: string,
  ): Promise<Array<{ name: string; version: string; run_id?: string; source?: string; tags?: Tag[] }>> {
    const r = await this.call<{
      model_versions?: Array<{
        name: string
        version: string
        run_id?: string
        source?: string
        tags?: Tag[]
      }>
    }>("GET", "model-versions/search", { filter, max_results: 1000 })
    return r.model_versions ?? []
  }

  async createModelVersion(options: {
    name: string
    source: string
    runId: string
    tags: ReadonlyArray<Tag>
    description?: string
  }): Promise<{ version: string }> {
    const r = await this.call<{ model_version: { version: string } }>("POST", "model-versions/create", {
      name: options.name,
      source: options.source,
      run_id: options.runId,
      tags: options.tags.map(limitTag),
      ...(options.description === undefined ? {} : { description: options.description }),
    })
    return r.model_version
  }
}

const limitTag = (t: Tag): Tag => ({ key: t.key, value: t.value.slice(0, MAX_TAG_VALUE) })

/** MLflow's JSON for a metric: NaN and infinities as the strings its server reads. */
const jsonMetric = (m: MetricPoint) => ({
  key: m.key,
  value: Number.isNaN(m.value)
    ? "NaN"
    : m.value === Infinity
      ? "Infinity"
      : m.value === -Infinity
        ? "-Infinity"
        : m.value,
  timestamp: Math.round(m.timestamp),
  step: m.step,
})

/** `mlflow-artifacts:/1/abc/artifacts` (or with a host) as the proxy's path `1/abc/artifacts`. */
export const proxiedPath = (artifactUri: string): string | undefined => {
  const m = /^mlflow-artifacts:(?:\/\/[^/]*)?\/*(.*)$/.exec(artifactUri)
  return m === null ? undefined : m[1]!.replace(/\/+$/, "")
}

/** The run's page in the MLflow UI. */
export const runUrl = (base: string, experimentId: string, runId: string) =>
  `${base.replace(/\/+$/, "")}/#/experiments/${experimentId}/runs/${runId}`

/**
 * Steps on a Ray cluster: a local cluster of two nodes (test/services/ray.sh:
 * a head with 1 CPU, and a node with 1 CPU that declares a GPU), the shared
 * store on a real PostgreSQL and moto's S3 server, and `tunegraph run
 * --executor ray` run through the CLI as a user runs it.
 */
import { execFileSync, spawnSync } from "node:child_process"
import { once } from "node:events"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, describe, expect, it } from "vitest"
import { cli, type RunJson, repoRoot, runJson, spawnCli, tempDir } from "../support/cli.ts"
import { freshBucket, freshDatabase, postgresUrl, s3Endpoint, s3Env } from "../support/services.ts"

const rayDir = process.env.TUNEGRAPH_RAY_DIR ?? "/tmp/tunegraph-ray"
const startRay = (): string | undefined => {
  const r = spawnSync("bash", [path.join(repoRoot, "test/services/ray.sh"), "start", rayDir], {
    encoding: "utf8",
    timeout: 300_000,
  })
  if (r.status === 0) return fs.readFileSync(path.join(rayDir, "url"), "utf8").trim()
  const why = `test/services/ray.sh start could not start a local Ray cluster: ${(r.stderr || r.stdout || "").trim()}`
  if (process.env.CI === "true") throw new Error(`CI=true and ${why}`)
  process.stderr.write(`skipping the Ray suites: ${why}\n`)
  return undefined
}

const server = postgresUrl()
const endpoint = s3Endpoint()
const ray = server === undefined || endpoint === undefined ? undefined : startRay()

interface RayNode {
  raylet: { nodeId: string; state: string; resourcesTotal: Record<string, number>; nodeManagerPort: number }
}
const nodes = async (): Promise<RayNode[]> =>
  ((await (await fetch(`${ray}/nodes?view=summary`)).json()) as { data: { summary: RayNode[] } }).data.summary
const gpuNodeId = async () =>
  (await nodes()).find((n) => n.raylet.state === "ALIVE" && (n.raylet.resourcesTotal.GPU ?? 0) > 0)!.raylet
    .nodeId

const project = () => {
  const dir = tempDir("ray")
  fs.copyFileSync(path.join(repoRoot, "test/fixtures/ray/pipeline.ts"), path.join(dir, "pipeline.ts"))
  fs.mkdirSync(path.join(dir, "data"))
  fs.writeFileSync(path.join(dir, "data/a.txt"), "some text\n")
  fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
  fs.mkdirSync(path.join(dir, "markers"))
  return dir
}

const sharedEnv = () => ({
  TUNEGRAPH_STORE: freshDatabase(server!),
  TUNEGRAPH_OBJECTS: `s3://${freshBucket("ray")}/team`,
  ...s3Env(endpoint!),
})

const init = (env: Record<string, string>) => {
  const r = cli(process.cwd(), ["store", "init"], env)
  expect(r.code, r.stderr).toBe(0)
}

// moto takes any credentials, but the workers need some: passed on, as secrets are, by name only.
const onRay = [
  ...["TG_FIT_MS=0", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"].flatMap((e) => ["--ray-env", e]),
  "--executor",
  "ray",
  "--ray-address",
]
/** The test pipeline's own variables, passed on to the jobs. */
const passOn = (...names: string[]) => names.flatMap((n) => ["--ray-env", n])

type Step = RunJson["steps"][number] & {
  executor?: { attempts: number; jobs: Array<{ job: string; node: string | null; status: string }> }
}

/** The pid's ancestors, nearest first (from /proc). */
const ancestors = (pid: number): number[] => {
  const out: number[] = []
  let cur = pid
  for (let i = 0; i < 64 && cur > 1; i++) {
    let stat: string
    try {
      stat = fs.readFileSync(`/proc/${cur}/stat`, "utf8")
    } catch {
      break
    }
    cur = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
    out.push(cur)
  }
  return out
}

const raylets = () =>
  execFileSync("pgrep", ["-f", "raylet/raylet"], { encoding: "utf8" })
    .trim()
    .split("\n")
    .filter(Boolean)
    .map(Number)

/** A process and every process below it. */
const tree = (root: number): number[] => {
  const all = fs
    .readdirSync("/proc")
    .filter((n) => /^\d+$/.test(n))
    .map(Number)
  return [root, ...all.filter((p) => p !== root && ancestors(p).includes(root))]
}

describe.skipIf(ray === undefined)("the Ray executor", () => {
  afterAll(() => {
    // The cluster is this suite's alone: stopped, so it takes no CPU from the suites after it.
    spawnSync("bash", [path.join(repoRoot, "test/services/ray.sh"), "stop", rayDir], { timeout: 120_000 })
  })

  it("spreads a 4-trial sweep over both nodes, sends the GPU step to the GPU node, and records where", async () => {
    const env = sharedEnv()
    init(env)
    const dir = project()
    const r = runJson(dir, ["pipeline.ts", ...onRay, ray!, ...passOn("TG_FIT_MS")], {
      ...env,
      TG_FIT_MS: "1500",
      PGPASSWORD: "not-for-the-dashboard",
      AWS_SESSION_TOKEN: "not-for-the-dashboard",
    })
    expect(r.code, `${r.stderr}\n${JSON.stringify(r.json)}`).toBe(0)
    const steps = r.json.steps as Step[]
    const trials = steps.filter((s) => s.node.startsWith("sweep/"))
    expect(trials).toHaveLength(4)
    for (const s of steps.filter((s) => s.plugin !== "source")) {
      expect(s.status, s.node).toBe("ran")
      expect(s.executor?.attempts, s.node).toBe(1)
    }
    const placed = new Set(trials.map((t) => t.executor!.jobs[0]!.node))
    const alive = (await nodes()).filter((n) => n.raylet.state === "ALIVE").map((n) => n.raylet.nodeId)
    expect([...placed].sort()).toEqual([...alive].sort())
    const gpu = steps.find((s) => s.node === "gpu-check")!
    expect(gpu.executor!.jobs[0]!.node).toBe(await gpuNodeId())
    // What the jobs were given: where the store is, and only the secrets asked for by name.
    const job = (await (await fetch(`${ray}/api/jobs/${gpu.executor!.jobs[0]!.job}`)).json()) as {
      runtime_env: { env_vars: Record<string, string> }
    }
    const given = job.runtime_env.env_vars
    // (Ray shows the names; it redacts the values)
    for (const k of ["TUNEGRAPH_STORE", "TUNEGRAPH_OBJECTS", "AWS_ENDPOINT_URL_S3", "AWS_SECRET_ACCESS_KEY"])
      expect(Object.keys(given), k).toContain(k)
    expect(given.PGPASSWORD).toBeUndefined()
    expect(given.AWS_SESSION_TOKEN).toBeUndefined()
    // The step ran with the device Ray assigned it; its log and its placement are in lineage.
    const q = cli(
      dir,
      [
        "query",
        "SELECT e.annotations, l.text FROM executions e JOIN logs l ON l.execution = e.execution WHERE e.node = 'gpu-check'",
        "--json",
      ],
      env,
    )
    expect(q.code, q.stderr).toBe(0)
    const row = (JSON.parse(q.stdout) as Array<{ annotations: string; text: string }>)[0]!
    expect(row.text).toMatch(/CUDA_VISIBLE_DEVICES=0/)
    expect(JSON.parse(row.annotations).executor.ray.jobs[0].job).toBe(gpu.executor!.jobs[0]!.job)
    // The trials' metrics came back too; the best trial is the one the select step picked.
    const m = cli(
      dir,
      [
        "query",
        "SELECT node, value FROM metrics WHERE name = 'val_loss' AND node LIKE 'sweep/%' ORDER BY node",
        "--json",
      ],
      env,
    )
    expect((JSON.parse(m.stdout) as unknown[]).length).toBe(4)
    // Run again: nothing to submit.
    const again = runJson(dir, ["pipeline.ts", ...onRay, ray!], env)
    expect(again.code).toBe(0)
    for (const s of again.json.steps as Step[]) {
      if (s.plugin !== "source") expect(s.status, s.node).toBe("cached")
      expect(s.executor).toBeUndefined()
    }
  }, 300_000)

  it("Ctrl-C stops the jobs it submitted", async () => {
    const env = sharedEnv()
    init(env)
    const dir = project()
    const markers = path.join(dir, "markers")
    const child = spawnCli(
      dir,
      ["run", "pipeline.ts", ...onRay, ray!, ...passOn("TG_FIT_MS", "TG_MARKERS", "TG_NO_GPU"), "--json"],
      {
        ...env,
        TG_FIT_MS: "120000",
        TG_MARKERS: markers,
        TG_NO_GPU: "1",
      },
    )
    let stdout = ""
    child.stdout!.on("data", (d) => {
      stdout += d
    })
    let exited = false
    child.on("exit", () => {
      exited = true
    })
    const started = () => fs.readdirSync(markers).filter((m) => m.startsWith("sweep_"))
    for (let i = 0; i < 1200 && started().length < 2 && !exited; i++)
      await new Promise((r) => setTimeout(r, 100))
    expect(started().length, `the run ended before two trials started:\n${stdout}`).toBe(2)
    child.kill("SIGINT")
    const [code] = (await once(child, "exit")) as [number]
    expect(code, stdout).toBe(130)
    // Every job of this run is stopped (or stopping) on the cluster, and the trials' processes are gone.
    const jobs = (await (await fetch(`${ray}/api/jobs/`)).json()) as Array<{
      status: string
      metadata: Record<string, string> | null
    }>
    const runs = JSON.parse(cli(dir, ["runs", "--json"], env).stdout) as {
      runs: Array<{ run: string; status: string }>
    }
    expect(runs.runs[0]!.status).toBe("interrupted")
    const mine = jobs.filter((j) => j.metadata?.tunegraph_run === runs.runs[0]!.run)
    expect(mine.length).toBeGreaterThanOrEqual(3)
    for (let i = 0; i < 100; i++) {
      const now = (await (await fetch(`${ray}/api/jobs/`)).json()) as typeof jobs
      const left = now.filter(
        (j) =>
          j.metadata?.tunegraph_run === runs.runs[0]!.run &&
          (j.status === "RUNNING" || j.status === "PENDING"),
      )
      if (left.length === 0) break
      await new Promise((r) => setTimeout(r, 200))
    }
    const final = (await (await fetch(`${ray}/api/jobs/`)).json()) as typeof jobs
    const trialJobs = final.filter(
      (j) =>
        j.metadata?.tunegraph_run === runs.runs[0]!.run &&
        (j.metadata?.tunegraph_node ?? "").startsWith("sweep/"),
    )
    expect(trialJobs.length).toBeGreaterThanOrEqual(2)
    for (const j of trialJobs) expect(["STOPPED", "SUCCEEDED", "FAILED"]).toContain(j.status)
    expect(trialJobs.some((j) => j.status === "STOPPED")).toBe(true)
  }, 300_000)

  it("retries a trial whose node is killed mid-way, and the run succeeds", async () => {
    const env = sharedEnv()
    init(env)
    const dir = project()
    const markers = path.join(dir, "markers")
    const gpuPort = fs.readFileSync(path.join(rayDir, "gpu-node-port"), "utf8").trim()
    const raylet = Number(
      execFileSync("pgrep", ["-f", `raylet/raylet.*--node_manager_port=${gpuPort}`], { encoding: "utf8" })
        .trim()
        .split("\n")[0],
    )
    expect(raylets()).toContain(raylet)
    const child = spawnCli(
      dir,
      ["run", "pipeline.ts", ...onRay, ray!, ...passOn("TG_FIT_MS", "TG_MARKERS", "TG_NO_GPU"), "--json"],
      {
        ...env,
        TG_FIT_MS: "6000",
        TG_MARKERS: markers,
        TG_NO_GPU: "1",
      },
    )
    let stdout = ""
    let stderr = ""
    child.stdout!.on("data", (d) => {
      stdout += d
    })
    child.stderr!.on("data", (d) => {
      stderr += d
    })
    // A trial running on the GPU node: its process descends from that node's raylet.
    let victim: string | undefined
    for (let i = 0; i < 1200 && victim === undefined; i++) {
      victim = fs
        .readdirSync(markers)
        .find((m) => m.startsWith("sweep_") && ancestors(Number(m.split(".").pop())).includes(raylet))
      if (victim === undefined) await new Promise((r) => setTimeout(r, 100))
    }
    expect(victim).toBeDefined()
    for (const pid of tree(raylet).reverse())
      try {
        process.kill(pid, "SIGKILL")
      } catch {
        // gone already
      }
    const [code] = (await once(child, "exit")) as [number]
    expect(code, `${stdout}\n${stderr}`).toBe(0)
    const json = JSON.parse(stdout) as RunJson
    const steps = json.steps as Step[]
    for (const s of steps.filter((s) => s.plugin !== "source")) expect(s.status, s.node).toBe("ran")
    const killed = victim!.replace(/\.\d+$/, "").replace(/^sweep_/, "sweep/")
    const retried = steps.find((s) => s.node === killed)!
    expect(retried.executor!.attempts).toBe(2)
    expect(retried.executor!.jobs[0]!.status).toBe("FAILED")
    expect(retried.executor!.jobs[1]!.status).toBe("SUCCEEDED")
    const v = cli(dir, ["verify", "--json"], env)
    expect(JSON.parse(v.stdout).problems).toEqual([])
  }, 300_000)
})

describe.skipIf(server === undefined)("exec-step, the entrypoint of a job", () => {
  it("refuses to run a step whose key differs from the driver's, saying what this machine has", () => {
    const env = { TUNEGRAPH_STORE: freshDatabase(server!), TUNEGRAPH_OBJECTS: tempDir("ray-objects") }
    init(env)
    const dir = project()
    // The driver's run (recorded, so its upstream is in the store), then a job for "prep" with another key.
    const first = runJson(dir, ["pipeline.ts", "--target", "prep"], env)
    expect(first.code, first.stderr).toBe(0)
    const prep = first.json.steps.find((s) => s.node === "prep")!
    const wrong = `${prep.key!.slice(0, 60)}0000`
    const r = cli(
      dir,
      ["exec-step", "pipeline.ts", "--node", "prep", "--key", wrong, "--run", first.json.run],
      env,
    )
    expect(r.code).toBe(3)
    expect(r.stderr).toMatch(
      /refusing to run "prep": its key here is \w+, the driver's \w+\. This machine has prep@1; code \w+/,
    )
    // The same key runs (again, into the driver's run) and exits 0.
    const ok = cli(
      dir,
      ["exec-step", "pipeline.ts", "--node", "prep", "--key", prep.key!, "--run", first.json.run],
      env,
    )
    expect(ok.code, ok.stderr + ok.stdout).toBe(0)
    expect(ok.stdout).toMatch(/prep: ran/)
  })
})

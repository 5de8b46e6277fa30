/**
 * The quickstart logged to a real MLflow server (test/services/mlflow.sh), read
 * back through MLflow's REST API: the experiment, the run and its child runs,
 * params, whole metric histories (the points `tunegraph query` returns), tags,
 * artifacts and the registered adapter; then a cached re-run, and a second
 * sync of the same run that adds nothing. On tfjs (WebAssembly), as
 * test/pipelines/quickstart.test.ts.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { cli, repoRoot, runJson, tempDir } from "../support/cli.ts"
import {
  api,
  artifactFiles,
  artifactText,
  experimentId,
  hasMlflow,
  history,
  params,
  type Run,
  runsOf,
  startServer,
  tags,
  uniqueName,
} from "./server.ts"

let base = ""
beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
  if (hasMlflow) base = startServer()
})

/** The store's points of a node's metrics in a run, as `tunegraph query` gives them. */
const queried = (dir: string, run: string, node: string) => {
  const r = cli(dir, [
    "query",
    `SELECT name, step, value, at FROM metrics WHERE run = '${run}' AND node = '${node}'`,
    "--json",
  ])
  expect(r.code, r.stderr).toBe(0)
  return JSON.parse(r.stdout) as Array<{ name: string; step: number | null; value: number; at: number }>
}

const sortPoints = (ps: Array<{ key: string; step: number; value: number; timestamp: number }>) =>
  [...ps].sort(
    (a, b) => a.key.localeCompare(b.key) || a.timestamp - b.timestamp || a.step - b.step || a.value - b.value,
  )

/** Every metric of a child run, in full, equals the store's points of its node. */
const expectSameHistories = async (dir: string, run: string, node: string, child: Run) => {
  const points = queried(dir, run, node)
  expect(points.length).toBeGreaterThan(0)
  const logged = []
  for (const key of new Set(points.map((p) => p.name)))
    logged.push(...(await history(base, child.info.run_id, key)))
  expect(
    sortPoints(
      logged.map((m) => ({
        key: m.key,
        step: Number(m.step),
        value: m.value,
        timestamp: Number(m.timestamp),
      })),
    ),
  ).toEqual(
    sortPoints(points.map((p) => ({ key: p.name, step: p.step ?? 0, value: p.value, timestamp: p.at }))),
  )
  return points
}

describe.skipIf(!hasMlflow)("MLflow: the quickstart", () => {
  it("logs the run, its training and eval as child runs, params, metric histories, tags, artifacts and the registered adapter", async () => {
    const dir = tempDir("mlflow-quickstart")
    fs.cpSync(path.join(repoRoot, "pipelines"), dir, { recursive: true })
    fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
    const model = uniqueName("stories-lora")
    const file = path.join(dir, "quickstart.ts")
    const source = fs.readFileSync(file, "utf8")
    const registering = source.replace(
      'params: { to: "out/quickstart/adapter" }',
      `params: { to: "out/quickstart/adapter", registerAs: "${model}" }`,
    )
    expect(registering).not.toBe(source)
    fs.writeFileSync(file, registering)
    const git = (...args: string[]) =>
      execFileSync("git", args, {
        cwd: dir,
        encoding: "utf8",
        env: {
          ...process.env,
          GIT_AUTHOR_NAME: "t",
          GIT_AUTHOR_EMAIL: "t@t",
          GIT_COMMITTER_NAME: "t",
          GIT_COMMITTER_EMAIL: "t@t",
        },
      }).trim()
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "pipeline")
    const commit = git("rev-parse", "HEAD")
    const experiment = uniqueName("quickstart")
    const env = { TUNEGRAPH_BACKEND: "wasm", MLFLOW_TRACKING_URI: base, MLFLOW_EXPERIMENT_NAME: experiment }

    const first = runJson(dir, ["quickstart.ts"], env)
    expect(first.json.status, first.stderr).toBe("succeeded")
    expect(first.stderr).toMatch(
      /mlflow: logged run \S+: http:\/\/127\.0\.0\.1:\d+\/#\/experiments\/\d+\/runs\/[0-9a-f]+/,
    )
    const run = first.json.run

    const exp = await experimentId(base, experiment)
    const all = await runsOf(base, exp)
    const parents = all.filter((r) => tags(r)["mlflow.parentRunId"] === undefined)
    expect(parents).toHaveLength(1)
    const parent = parents[0]!
    expect(parent.info.status).toBe("FINISHED")
    expect(tags(parent)).toMatchObject({
      "tunegraph.run_id": run,
      "tunegraph.pipeline": "quickstart",
      "mlflow.source.git.commit": commit,
      "mlflow.runName": run,
    })
    const children = all.filter((r) => tags(r)["mlflow.parentRunId"] === parent.info.run_id)
    expect(children.map((c) => c.info.run_name).sort()).toEqual(["eval", "train"])
    const train = children.find((c) => c.info.run_name === "train")!
    const evalRun = children.find((c) => c.info.run_name === "eval")!

    // Params: the parent's by node (train.lr), each child's its own, flattened as MLflow does.
    expect(params(parent)).toMatchObject({ "train.lr": "0.005", "train.r": "8", "split.ratios.train": "0.8" })
    const stored = JSON.parse(
      JSON.parse(
        cli(dir, ["query", `SELECT params FROM executions WHERE run = '${run}' AND node = 'train'`, "--json"])
          .stdout,
      )[0].params,
    ) as Record<string, unknown>
    const trainParams = params(train)
    expect(Object.keys(trainParams).sort()).toEqual(Object.keys(stored).sort())
    for (const [k, v] of Object.entries(stored))
      expect(trainParams[k]).toBe(typeof v === "string" ? v : JSON.stringify(v))
    expect(trainParams).toMatchObject({ lr: "0.005", r: "8", alpha: "16" })

    // Tags: key, plugin and version, backend, commit, run id.
    const trainStep = first.json.steps.find((s) => s.node === "train")!
    expect(tags(train)).toMatchObject({
      "tunegraph.step_key": trainStep.key,
      "tunegraph.plugin": "train-lora",
      "tunegraph.plugin_version": "1",
      "tunegraph.backend": "wasm",
      "tunegraph.run_id": run,
      "tunegraph.cached": "false",
      "mlflow.source.git.commit": commit,
    })
    expect(tags(evalRun)["tunegraph.plugin"]).toBe("eval")
    expect(train.info.status).toBe("FINISHED")

    // Metrics: every point with its step, as the store has them.
    const trainPoints = await expectSameHistories(dir, run, "train", train)
    for (const m of ["train_loss", "val_loss", "lr", "tokens_per_s"])
      expect(
        trainPoints.some((p) => p.name === m),
        m,
      ).toBe(true)
    expect(trainPoints.filter((p) => p.name === "train_loss").length).toBeGreaterThan(5)
    const evalPoints = await expectSameHistories(dir, run, "eval", evalRun)
    for (const m of ["tuned/uses_name", "base/uses_name", "tuned/loss", "base/loss"])
      expect(
        evalPoints.some((p) => p.name === m),
        m,
      ).toBe(true)

    // Artifacts: the eval report's files in its run, the exported adapter's config in the parent.
    expect(await artifactFiles(base, evalRun.info.run_id)).toEqual(["report.md", "samples.jsonl"])
    const report = first.json.steps.find((s) => s.node === "eval")!.outputs.report!.replace("sha256:", "")
    const reportDir = path.join(dir, ".tunegraph/objects", report.slice(0, 2), report.slice(2))
    for (const f of ["report.md", "samples.jsonl"])
      expect(await artifactText(base, evalRun.info.artifact_uri, f)).toBe(
        fs.readFileSync(path.join(reportDir, f), "utf8"),
      )
    expect(await artifactFiles(base, parent.info.run_id)).toEqual([
      "export-adapter/adapter_config.json",
      "export-merged/config.json",
    ])
    expect(await artifactText(base, parent.info.artifact_uri, "export-adapter/adapter_config.json")).toBe(
      fs.readFileSync(path.join(dir, "out/quickstart/adapter/adapter_config.json"), "utf8"),
    )

    // The registered adapter: its source is the uploaded directory, its digest a tag.
    const exportDigest = first.json.steps.find((s) => s.node === "export-adapter")!.outputs.export!
    const versions = (
      await api<{
        model_versions: Array<{
          version: string
          source: string
          run_id: string
          tags: Array<{ key: string; value: string }>
        }>
      }>(base, "GET", "mlflow/model-versions/search", { filter: `name = '${model}'` })
    ).model_versions
    expect(versions).toHaveLength(1)
    expect(versions[0]!.source).toBe(`${parent.info.artifact_uri}/export-adapter`)
    expect(versions[0]!.run_id).toBe(parent.info.run_id)
    expect(versions[0]!.tags).toContainEqual({ key: "tunegraph.digest", value: exportDigest })

    // A cached re-run: the steps still appear, tagged cached, pointing at the run that computed them.
    const second = runJson(dir, ["quickstart.ts"], env)
    expect(
      second.json.steps.every((s) => s.status === "cached"),
      second.stderr,
    ).toBe(true)
    const after = await runsOf(base, exp)
    const parent2 = after.find(
      (r) => tags(r)["tunegraph.run_id"] === second.json.run && tags(r)["mlflow.parentRunId"] === undefined,
    )!
    const children2 = after.filter((r) => tags(r)["mlflow.parentRunId"] === parent2.info.run_id)
    expect(children2.map((c) => c.info.run_name).sort()).toEqual(["eval", "train"])
    const train2 = children2.find((c) => c.info.run_name === "train")!
    expect(tags(train2)).toMatchObject({
      "tunegraph.cached": "true",
      "tunegraph.computed_in": run,
      "tunegraph.computed_by_mlflow_run": train.info.run_id,
      "tunegraph.backend": "wasm",
    })
    await expectSameHistories(dir, second.json.run, "train", train2)
    // The export was reused: no second version of the same artifact.
    const versions2 = (
      await api<{ model_versions: unknown[] }>(base, "GET", "mlflow/model-versions/search", {
        filter: `name = '${model}'`,
      })
    ).model_versions
    expect(versions2).toHaveLength(1)

    // Logging the first run again adds nothing.
    const again = cli(dir, ["mlflow", "sync", run], env)
    expect(again.code, again.stderr).toBe(0)
    expect(again.stdout).toContain(`already logged run ${run}`)
    const final = await runsOf(base, exp)
    expect(final).toHaveLength(after.length)
    await expectSameHistories(dir, run, "train", train)
  }, 900_000)
})

/**
 * pipelines/sweep.ts logged to a real MLflow server: one child run per trial
 * with its own params (lr, r) and full metric histories, so the trials compare
 * side by side; then the run's page and the trials' comparison rendered in
 * headless Chromium (Debian's `chromium`), screenshots kept in
 * out/mlflow-screenshots/ (or $TUNEGRAPH_SCREENSHOTS). On tfjs (WebAssembly).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { cli, repoRoot, runJson, tempDir } from "../support/cli.ts"
import { experimentId, hasMlflow, history, params, runsOf, startServer, tags, uniqueName } from "./server.ts"

const CHROMIUM = "/usr/bin/chromium"
const hasChromium = fs.existsSync(CHROMIUM)
const shots = process.env.TUNEGRAPH_SCREENSHOTS ?? path.join(repoRoot, "out/mlflow-screenshots")

let base = ""
beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
  if (hasMlflow) base = startServer()
  if (!hasChromium) {
    if (process.env.CI === "true")
      throw new Error(`CI=true and ${CHROMIUM} is missing: apt-get install chromium`)
    process.stderr.write(`skipping the MLflow page checks: no ${CHROMIUM}\n`)
  }
})

describe.skipIf(!hasMlflow)("MLflow: a sweep", () => {
  it("logs a child run per trial with its params and metric histories, and the run page renders", async () => {
    const dir = tempDir("mlflow-sweep")
    fs.cpSync(path.join(repoRoot, "pipelines"), dir, { recursive: true })
    fs.writeFileSync(path.join(dir, "package.json"), "{}\n")
    const experiment = uniqueName("sweep")
    const env = { TUNEGRAPH_BACKEND: "wasm", MLFLOW_TRACKING_URI: base, MLFLOW_EXPERIMENT_NAME: experiment }
    const r = runJson(dir, ["sweep.ts"], env)
    expect(r.json.status, r.stderr).toBe("succeeded")
    expect(r.stderr).toContain(`mlflow: logged run ${r.json.run}`)

    const exp = await experimentId(base, experiment)
    const all = await runsOf(base, exp)
    const parent = all.find((x) => tags(x)["mlflow.parentRunId"] === undefined)!
    expect(all.filter((x) => tags(x)["mlflow.parentRunId"] === undefined)).toHaveLength(1)
    const children = all.filter((x) => tags(x)["mlflow.parentRunId"] === parent.info.run_id)
    const trials = children
      .filter((c) => c.info.run_name.startsWith("sweep/"))
      .sort((a, b) => a.info.run_name.localeCompare(b.info.run_name))
    expect(trials.map((t) => t.info.run_name)).toEqual([
      "sweep/lr=0.001,r=4",
      "sweep/lr=0.001,r=8",
      "sweep/lr=0.005,r=4",
      "sweep/lr=0.005,r=8",
    ])
    expect(children.map((c) => c.info.run_name)).toContain("eval")
    for (const t of trials) {
      const [lr, rank] = /lr=([\d.]+),r=(\d+)/.exec(t.info.run_name)!.slice(1)
      expect(params(t)).toMatchObject({ lr: lr!, r: rank!, steps: "20", batchSize: "8" })
      expect(tags(t)).toMatchObject({
        "tunegraph.group": "sweep",
        "tunegraph.plugin": "train-lora",
        "tunegraph.backend": "wasm",
      })
      // The whole history of every metric, as `tunegraph query` returns it.
      const q = cli(dir, [
        "query",
        `SELECT name, step, value, at FROM metrics WHERE run = '${r.json.run}' AND node = '${t.info.run_name}' ORDER BY name, at, step`,
        "--json",
      ])
      const points = JSON.parse(q.stdout) as Array<{ name: string; step: number; value: number; at: number }>
      expect(points.filter((p) => p.name === "val_loss").length).toBeGreaterThanOrEqual(2)
      for (const key of new Set(points.map((p) => p.name))) {
        const logged = (await history(base, t.info.run_id, key))
          .map((m) => [Number(m.timestamp), Number(m.step), m.value])
          .sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]! || a[2]! - b[2]!)
        const want = points.filter((p) => p.name === key).map((p) => [p.at, p.step ?? 0, p.value])
        expect(logged, `${t.info.run_name} ${key}`).toEqual(
          want.sort((a, b) => a[0]! - b[0]! || a[1]! - b[1]! || a[2]! - b[2]!),
        )
      }
    }

    if (!hasChromium) return
    fs.mkdirSync(shots, { recursive: true })
    const { chromium } = await import("playwright-core")
    const browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
      ],
    })
    try {
      const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } })
      // The UI's "Model training" view (its default is GenAI), without the assistant panel.
      await page.addInitScript({
        content: `localStorage.setItem("mlflow.workflowType_v1", '"machine_learning"');
          localStorage.setItem("mlflow.assistant.fab.autoOpenedOnFirstLoad_v1", "true");
          localStorage.setItem("mlflow.assistant.panelOpen_v1", "false");`,
      })
      const errors: string[] = []
      page.on("pageerror", (e) => errors.push(e.message))
      // The run's page: its name, status, tunegraph's tags and the params by node.
      await page.goto(`${base}/#/experiments/${exp}/runs/${parent.info.run_id}`)
      await page.getByText(r.json.run).first().waitFor({ timeout: 60_000 })
      await page.getByText("Child runs").first().waitFor({ timeout: 30_000 })
      for (const t of trials) await page.getByText(t.info.run_name).first().waitFor({ timeout: 30_000 })
      await page.getByText("sweep/lr_0.001_r_4.lr").first().waitFor({ timeout: 30_000 })
      await page.waitForTimeout(1500)
      await page.screenshot({ path: path.join(shots, "run.png"), fullPage: true })
      // A trial's page: its model metrics charted.
      const trial = trials[0]!
      await page.goto(`${base}/#/experiments/${exp}/runs/${trial.info.run_id}/model-metrics`)
      await page.getByText("val_loss").first().waitFor({ timeout: 60_000 })
      await page.getByText("train_loss").first().waitFor({ timeout: 60_000 })
      await page.waitForTimeout(2500)
      await page.screenshot({ path: path.join(shots, "trial-metrics.png"), fullPage: true })
      // The trials side by side: MLflow's compare view of the four child runs.
      const ids = JSON.stringify(trials.map((t) => t.info.run_id))
      await page.goto(
        `${base}/#/compare-runs?runs=${encodeURIComponent(ids)}&experiments=${encodeURIComponent(JSON.stringify([exp]))}`,
      )
      await page.getByText("sweep/lr=0.005,r=8").first().waitFor({ timeout: 60_000 })
      await page.waitForTimeout(2500)
      await page.screenshot({ path: path.join(shots, "compare-trials.png"), fullPage: true })
      expect(errors).toEqual([])
    } finally {
      await browser.close()
    }
  }, 900_000)
})

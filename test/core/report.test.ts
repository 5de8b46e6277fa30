/**
 * `tunegraph report`: the page is written by the CLI and opened in headless
 * Chromium (Debian's `chromium`; .ci/run installs it). Where it is absent the
 * browser checks are skipped, since nothing else can render the page.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { beforeAll, describe, expect, it } from "vitest"
import { opsProject, readStore } from "../fixtures/ops/project.ts"
import { cli, repoRoot, runJson } from "../support/cli.ts"

const CHROMIUM = "/usr/bin/chromium"
const hasChromium = fs.existsSync(CHROMIUM)

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

/** Points logged for a metric by the execution that computed a node's outputs in a run. */
const loggedPoints = (dir: string, run: string, node: string, metric: string) =>
  readStore(dir, (db) =>
    db
      .prepare(
        `SELECT count(*) FROM metrics WHERE name = ? AND execution_id =
           (SELECT coalesce(produced_by, id) FROM executions WHERE run_id = ? AND node = ?)`,
      )
      .pluck()
      .get(metric, run, node),
  ) as number

describe("report", () => {
  it("writes one self-contained page", () => {
    const dir = opsProject("report")
    const r = runJson(dir, ["pipeline.ts"]).json
    const out = cli(dir, ["report", r.run, "-o", "report.html"])
    expect(out.code).toBe(0)
    const html = fs.readFileSync(path.join(dir, "report.html"), "utf8")
    // Nothing to fetch: no external scripts, styles, images or fonts.
    expect(html).not.toMatch(/<(script|link|img|iframe)[^>]+(src|href)=/i)
    expect(html).not.toMatch(/url\(\s*['"]?(https?:|\/\/)/i)
    expect(html).toContain("default-src 'none'")
    // `last` is the default run.
    expect(cli(dir, ["report", "-o", "last.html"]).code).toBe(0)
    expect(fs.readFileSync(path.join(dir, "last.html"), "utf8")).toContain(r.run)
  })

  describe.skipIf(!hasChromium)("in headless Chromium", () => {
    it("renders the DAG by status, whole curves, the sweep table and the evaluation, without errors", async () => {
      const dir = opsProject("report")
      runJson(dir, ["pipeline.ts"])
      // A second run where one step runs again, one fails and the rest are cached.
      const r = runJson(dir, ["pipeline.ts", "--set", "train.lr=0.2"], { TG_OPS_FAIL: "1" }).json
      expect(r.status).toBe("failed")
      expect(cli(dir, ["report", r.run, "-o", "report.html"]).code).toBe(0)

      const { chromium } = await import("playwright-core")
      const browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          "--disable-background-networking",
          "--disable-component-update",
          "--disable-sync",
          "--no-first-run",
        ],
      })
      try {
        const page = await browser.newPage()
        const problems: string[] = []
        const requests: string[] = []
        page.on("console", (m) => {
          if (m.type() === "error" || m.type() === "warning") problems.push(`${m.type()}: ${m.text()}`)
        })
        page.on("pageerror", (e) => problems.push(`pageerror: ${e.message}`))
        page.on("request", (q) => requests.push(q.url()))
        const url = `file://${path.join(dir, "report.html")}`
        await page.goto(url)

        // The DAG: every step, coloured by what happened to it.
        const statusOf = async (node: string) =>
          page.getAttribute(`.dag .node[data-node="${node}"]`, "data-status")
        expect(await page.locator(".dag .node").count()).toBe(r.steps.length)
        expect(await statusOf("train")).toBe("ran")
        expect(await statusOf("clean")).toBe("cached")
        expect(await statusOf("broken")).toBe("failed")
        expect(await page.locator(".dag path.edge").count()).toBeGreaterThanOrEqual(8)
        const fill = await page.$eval(
          '.dag .node[data-node="broken"] rect',
          (el) =>
            (
              el.ownerDocument.defaultView as unknown as { getComputedStyle(e: unknown): { stroke: string } }
            ).getComputedStyle(el).stroke,
        )
        expect(fill).not.toBe(
          await page.$eval(
            '.dag .node[data-node="clean"] rect',
            (el) =>
              (
                el.ownerDocument.defaultView as unknown as {
                  getComputedStyle(e: unknown): { stroke: string }
                }
              ).getComputedStyle(el).stroke,
          ),
        )

        // Curves: as many points as the step logged.
        for (const [node, metric] of [
          ["train", "train_loss"],
          ["train", "val_loss"],
          ["train", "lr"],
          ["train", "tokens_per_s"],
          ["sweep/lr=0.01", "train_loss"],
        ] as const) {
          const line = page.locator(`polyline[data-series="${node}:${metric}"]`)
          const points = (await line.getAttribute("points"))!.trim().split(/\s+/)
          const expected = loggedPoints(dir, r.run, node, metric)
          expect(expected).toBeGreaterThan(1)
          expect(points, `${node} ${metric}`).toHaveLength(expected)
          expect(await line.getAttribute("data-points")).toBe(String(expected))
          expect(await line.isVisible()).toBe(true)
        }
        await page.locator("figure.chart svg").first().hover()
        expect(await page.locator("figure.chart .readout").first().textContent()).toMatch(/step \d+: /)

        // The sweep: one row per trial, the varying parameter, final metrics.
        const rows = page.locator('table.sweep[data-group="sweep"] tbody tr')
        expect(await rows.count()).toBe(2)
        expect(await page.locator('table.sweep[data-group="sweep"] th.param').allTextContents()).toEqual([
          "lr",
        ])
        expect(await rows.first().locator("td").first().textContent()).toBe("sweep/lr=0.01")

        // The evaluation: scores tuned against base, and the samples, escaped.
        const evalOf = (output: string) => page.locator(`.eval[data-node="eval"][data-output="${output}"]`)
        const scores = await evalOf("report").locator("table.scores tbody tr").allTextContents()
        expect(scores).toHaveLength(2)
        expect(scores[0]).toContain("exact_match")
        expect(await evalOf("report").locator(".sample").count()).toBe(2)
        expect(await evalOf("report").locator(".sample .f-base pre").first().textContent()).toBe(
          "I don't know <b>",
        )
        // The eval step's layout: a directory, scores as {tuned, base} maps, a score missing on one side.
        const details = evalOf("details").locator("table.scores tbody tr")
        expect(await details.count()).toBe(2)
        expect(await details.first().locator("td").allTextContents()).toEqual([
          "loss",
          "2.5",
          "1.5",
          "-1",
          "",
        ])
        expect(await details.nth(1).locator("td").allTextContents()).toEqual(["exact", "", "0.5", "", ""])
        expect(await evalOf("details").locator(".sample .field .k").allTextContents()).toEqual([
          "prompt",
          "reference",
          "base",
          "tuned",
        ])

        // Clicking a step shows its parameters.
        await page.click('.dag .node[data-node="train"]')
        expect(await page.locator("#details").textContent()).toContain('{"steps":12,"lr":0.2}')

        expect(problems).toEqual([])
        expect(requests).toEqual([url])
      } finally {
        await browser.close()
      }
    })
  })
})

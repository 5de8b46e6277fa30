/**
 * The run report: one self-contained HTML page (inline CSS, SVG and a small
 * script; nothing is fetched), readable offline and attachable to an issue.
 */
import { formatNumber, lineChart, type Series } from "./Chart.ts"
import { dagSvg } from "./Dag.ts"
import type { Curve, Evaluation, ReportData, Sweep } from "./Data.ts"
import { escapeHtml as h, jsonForScript } from "./Escape.ts"
import { SCRIPT } from "./Script.ts"
import { STYLE } from "./Style.ts"

const PALETTE = [
  "#3366cc",
  "#dc3912",
  "#ff9900",
  "#109618",
  "#990099",
  "#0099c6",
  "#dd4477",
  "#66aa00",
  "#b82e2e",
  "#316395",
]

const seconds = (ms: number | null) =>
  ms === null ? "" : ms < 1000 ? `${(ms / 1000).toFixed(2)} s` : `${(ms / 1000).toFixed(1)} s`
const short = (d: string) => `sha256:${d.slice(0, 12)}`

const CHARTS: ReadonlyArray<{ title: string; metrics: ReadonlyArray<string> }> = [
  { title: "Loss (train solid, validation dashed)", metrics: ["train_loss", "val_loss"] },
  { title: "Learning rate", metrics: ["lr"] },
  { title: "Throughput (tokens/s)", metrics: ["tokens_per_s"] },
]

const chartSeries = (curves: ReadonlyArray<Curve>): Array<{ title: string; series: Series[] }> => {
  const nodes = [...new Set(curves.map((c) => c.node))]
  const color = (node: string) => PALETTE[nodes.indexOf(node) % PALETTE.length]!
  return CHARTS.map((chart) => ({
    title: chart.title,
    series: curves
      .filter((c) => chart.metrics.includes(c.metric))
      .map((c) => ({
        id: `${c.node}:${c.metric}`,
        label: chart.metrics.length > 1 ? `${c.node} ${c.metric}` : c.node,
        color: color(c.node),
        dashed: c.metric === "val_loss",
        points: c.points,
      })),
  })).filter((c) => c.series.length > 0)
}

const cell = (v: unknown) =>
  typeof v === "number"
    ? formatNumber(v)
    : v === undefined
      ? ""
      : typeof v === "string"
        ? v
        : JSON.stringify(v)

const sweepTable = (s: Sweep): string => {
  const metricNames = [...new Set(s.rows.flatMap((r) => Object.keys(r.metrics)))]
    .filter((m) => m !== "resumed_from")
    .sort()
  const paramNames =
    s.varying.length > 0 ? s.varying : [...new Set(s.rows.flatMap((r) => Object.keys(r.params)))].sort()
  const rank = metricNames.includes("val_loss")
    ? "val_loss"
    : metricNames.includes("train_loss")
      ? "train_loss"
      : undefined
  const best =
    rank === undefined
      ? undefined
      : s.rows
          .filter((r) => typeof r.metrics[rank] === "number")
          .sort((a, b) => a.metrics[rank]! - b.metrics[rank]!)[0]?.node
  return (
    `<h3>${h(s.group)} <span class="muted">${s.rows.length} trials${rank ? `, best by final ${h(rank)}` : ""}</span></h3>` +
    `<table class="sweep" data-group="${h(s.group)}"><thead>` +
    `<tr><th colspan="2"></th>${paramNames.length > 0 ? `<th colspan="${paramNames.length}" class="group">parameters</th>` : ""}${metricNames.length > 0 ? `<th colspan="${metricNames.length}" class="group num">final metrics</th>` : ""}</tr>` +
    "<tr><th>trial</th><th>status</th>" +
    paramNames.map((p) => `<th class="param">${h(p)}</th>`).join("") +
    metricNames.map((m) => `<th class="num metric">${h(m)}</th>`).join("") +
    "</tr></thead><tbody>" +
    s.rows
      .map(
        (r) =>
          `<tr${r.node === best ? ' class="best"' : ""}><td>${h(r.node)}</td><td><span class="badge status-${h(r.status)}">${h(r.status)}</span></td>` +
          paramNames.map((p) => `<td class="param">${h(cell(r.params[p]))}</td>`).join("") +
          metricNames.map((m) => `<td class="num">${h(cell(r.metrics[m]))}</td>`).join("") +
          "</tr>",
      )
      .join("") +
    "</tbody></table>"
  )
}

const evaluation = (e: Evaluation): string => {
  const hasBase = e.scores.some((s) => s.base !== null)
  const max = Math.max(1e-12, ...e.scores.flatMap((s) => [s.base ?? 0, s.tuned ?? 0].map(Math.abs)))
  const bar = (v: number | null, cls: string) =>
    v === null
      ? ""
      : `<span class="bar ${cls}" style="width:${Math.round((Math.abs(v) / max) * 100)}%"></span>`
  const scores =
    `<table class="scores"><thead><tr><th>metric</th>${hasBase ? '<th class="num">base</th>' : ""}<th class="num">tuned</th>${hasBase ? '<th class="num">change</th>' : ""}<th></th></tr></thead><tbody>` +
    e.scores
      .map((s) => {
        const delta = s.base !== null && s.tuned !== null ? s.tuned - s.base : null
        // For a loss, a perplexity or an error rate, lower is better.
        const better =
          delta === null ? null : /loss|perplexity|error|wer|cer/i.test(s.name) ? delta <= 0 : delta >= 0
        return (
          `<tr><td>${h(s.name)}</td>${hasBase ? `<td class="num">${h(cell(s.base ?? undefined))}</td>` : ""}<td class="num">${h(cell(s.tuned ?? undefined))}</td>` +
          (hasBase
            ? `<td class="num ${better === null ? "" : better ? "up" : "down"}">${delta === null ? "" : `${delta >= 0 ? "+" : ""}${h(formatNumber(delta))}`}</td>`
            : "") +
          `<td class="bars">${hasBase ? bar(s.base, "base") : ""}${bar(s.tuned, "tuned")}</td></tr>`
        )
      })
      .join("") +
    "</tbody></table>"
  const order = ["prompt", "input", "reference", "expected", "base", "tuned"]
  const fields = [...new Set(e.samples.flatMap((s) => Object.keys(s)))].sort(
    (a, b) => (order.indexOf(a) + 1 || 99) - (order.indexOf(b) + 1 || 99),
  )
  const samples =
    e.samples.length === 0
      ? ""
      : `<details${e.samples.length <= 5 ? " open" : ""}><summary><h4>Sample generations <span class="muted">(${e.samples.length})</span></h4></summary><div class="samples">` +
        e.samples
          .map(
            (s, i) =>
              `<div class="sample"><div class="n">#${i + 1}</div>${fields
                .filter((f) => s[f] !== undefined)
                .map(
                  (f) =>
                    `<div class="field f-${h(f)}"><div class="k">${h(f)}</div><pre>${h(s[f]!)}</pre></div>`,
                )
                .join("")}</div>`,
          )
          .join("") +
        "</div></details>"
  return `<div class="eval" data-node="${h(e.node)}" data-output="${h(e.output)}"><h3>${h(e.node)} <span class="muted">${h(e.output)} ${h(short(e.digest))}</span></h3>${scores}${samples}</div>`
}

export const renderReport = (d: ReportData): string => {
  const counts = (st: string) => d.nodes.filter((n) => n.status === st).length
  const charts = chartSeries(d.curves)
  const legend = ["ran", "cached", "failed", "skipped", "interrupted"]
    .filter((s) => counts(s) > 0)
    .map((s) => `<span class="badge status-${s}">${s} ${counts(s)}</span>`)
    .join(" ")
  const overrides = d.run.argv.flatMap((a, i, all) => (a === "--set" && all[i + 1] ? [all[i + 1]!] : []))
  const steps = d.nodes
    .map(
      (n) =>
        `<tr data-node="${h(n.node)}"><td>${h(n.node)}</td><td>${h(n.plugin === "source" ? "source" : `${n.plugin}@${n.version}`)}</td>` +
        `<td><span class="badge status-${h(n.status)}">${h(n.status)}</span></td><td class="num">${h(seconds(n.ms))}</td>` +
        `<td class="mono">${Object.entries(n.outputs)
          .map(([k, v]) => `${h(k)}=${h(short(v))}`)
          .join("<br>")}${n.error ? `<div class="error">${h(n.error)}</div>` : ""}</td>` +
        `<td class="mono">${Object.entries(n.metrics)
          .map(([k, v]) => `${h(k)}=${h(formatNumber(v))}`)
          .join("<br>")}</td></tr>`,
    )
    .join("")
  const data = {
    charts: charts.map((c) => ({
      title: c.title,
      series: c.series.map((s) => ({ label: s.label, points: s.points })),
    })),
    nodes: Object.fromEntries(d.nodes.map((n) => [n.node, n])),
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">
<title>${h(`${d.run.pipeline} · run ${d.run.id}`)}</title>
<style>${STYLE}</style></head>
<body>
<header><h1>${h(d.run.pipeline)} <span class="badge run-${h(d.run.status)}">${h(d.run.status)}</span></h1>
<p class="muted">run <span class="mono">${h(d.run.id)}</span> · started ${h(d.run.startedAt)}${d.run.ms === null ? "" : ` · ${h(seconds(d.run.ms))}`} · <span class="mono">${h(d.run.pipelinePath)}</span>${overrides.length > 0 ? ` · <span class="mono">--set ${h(overrides.join(" --set "))}</span>` : ""}</p>
<p>${d.nodes.length} steps: ${legend}</p></header>
<section id="dag"><h2>Pipeline</h2><div class="dag-wrap">${dagSvg(
    d.nodes.map((n) => ({ id: n.node, label: n.node, sub: n.plugin, status: n.status })),
    d.edges,
  )}</div><div id="details" class="details muted">Click a step for its details.</div></section>
${charts.length > 0 ? `<section id="curves"><h2>Training</h2><div class="charts">${charts.map((c) => lineChart(c.title, c.series)).join("")}</div></section>` : ""}
${d.sweeps.length > 0 ? `<section id="sweeps"><h2>Sweeps</h2>${d.sweeps.map(sweepTable).join("")}</section>` : ""}
${d.evaluations.length > 0 ? `<section id="evals"><h2>Evaluation</h2>${d.evaluations.map(evaluation).join("")}</section>` : ""}
<section id="steps"><h2>Steps</h2><table class="steps"><thead><tr><th>node</th><th>plugin</th><th>status</th><th class="num">time</th><th>outputs</th><th>final metrics</th></tr></thead><tbody>${steps}</tbody></table></section>
<footer class="muted">tunegraph report · generated ${h(d.generatedAt)}</footer>
<script type="application/json" id="tg-data">${jsonForScript(data)}</script>
<script>${SCRIPT}</script>
</body></html>
`
}

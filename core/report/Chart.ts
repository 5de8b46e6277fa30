/**
 * Line charts as inline SVG: axes with round ticks, one polyline per series
 * (every point of it, so the page shows exactly what was logged), a legend.
 * Each polyline carries its series index; the page's script finds the
 * nearest point for the hover readout from the embedded data.
 */
import { escapeHtml } from "./Escape.ts"

export interface Series {
  readonly label: string
  readonly color: string
  readonly dashed?: boolean
  readonly points: ReadonlyArray<readonly [number, number]>
  /** Names the series for the page's script and for tests. */
  readonly id: string
}

export const WIDTH = 540
export const HEIGHT = 300
export const MARGIN = { top: 16, right: 16, bottom: 40, left: 64 }

/** Round tick values covering [lo, hi]. */
export const ticks = (lo: number, hi: number, count = 5): number[] => {
  if (!(hi > lo)) return [lo]
  const raw = (hi - lo) / count
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = ([1, 2, 2.5, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag
  const out: number[] = []
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
    out.push(Number(v.toPrecision(12)))
  return out
}

export const formatNumber = (v: number): string => {
  const a = Math.abs(v)
  if (a === 0) return "0"
  if (a >= 1e6 || a < 1e-3) return v.toExponential(1)
  if (a >= 1000) return Math.round(v).toLocaleString("en-US")
  return String(Number(v.toPrecision(4)))
}

export const extent = (series: ReadonlyArray<Series>) => {
  const xs = series.flatMap((s) => s.points.map((p) => p[0]))
  const ys = series.flatMap((s) => s.points.map((p) => p[1]))
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)]
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)]
  if (x0 === x1) [x0, x1] = [x0 - 1, x1 + 1]
  if (y0 === y1) [y0, y1] = [y0 - Math.abs(y0 || 1) * 0.1, y1 + Math.abs(y1 || 1) * 0.1]
  const pad = (y1 - y0) * 0.05
  return { x0, x1, y0: y0 - pad, y1: y1 + pad }
}

export const lineChart = (title: string, series: ReadonlyArray<Series>, xLabel = "step"): string => {
  const { x0, x1, y0, y1 } = extent(series)
  const iw = WIDTH - MARGIN.left - MARGIN.right
  const ih = HEIGHT - MARGIN.top - MARGIN.bottom
  const sx = (x: number) => MARGIN.left + ((x - x0) / (x1 - x0)) * iw
  const sy = (y: number) => MARGIN.top + ih - ((y - y0) / (y1 - y0)) * ih
  const r = (v: number) => Math.round(v * 10) / 10
  const grid = [
    ...ticks(y0, y1).map(
      (t) =>
        `<line class="grid" x1="${MARGIN.left}" x2="${MARGIN.left + iw}" y1="${r(sy(t))}" y2="${r(sy(t))}"/>` +
        `<text class="tick" x="${MARGIN.left - 6}" y="${r(sy(t)) + 4}" text-anchor="end">${escapeHtml(formatNumber(t))}</text>`,
    ),
    ...ticks(x0, x1)
      .filter((t) => Number.isInteger(t) || x1 - x0 < 10)
      .map(
        (t) =>
          `<line class="grid" y1="${MARGIN.top}" y2="${MARGIN.top + ih}" x1="${r(sx(t))}" x2="${r(sx(t))}"/>` +
          `<text class="tick" x="${r(sx(t))}" y="${MARGIN.top + ih + 16}" text-anchor="middle">${escapeHtml(formatNumber(t))}</text>`,
      ),
  ]
  const lines = series.map(
    (s, i) =>
      `<polyline class="series" data-series="${escapeHtml(s.id)}" data-index="${i}" data-points="${s.points.length}"` +
      ` fill="none" stroke="${escapeHtml(s.color)}"${s.dashed ? ' stroke-dasharray="6 4"' : ""}` +
      ` points="${s.points.map(([x, y]) => `${r(sx(x))},${r(sy(y))}`).join(" ")}"/>` +
      // A lone point has no line to show: mark it.
      (s.points.length === 1
        ? `<circle cx="${r(sx(s.points[0]![0]))}" cy="${r(sy(s.points[0]![1]))}" r="3" fill="${escapeHtml(s.color)}"/>`
        : ""),
  )
  const legend = series
    .map(
      (s) =>
        `<span class="key"><svg width="22" height="8"><line x1="0" x2="22" y1="4" y2="4" stroke="${escapeHtml(s.color)}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ""}/></svg>${escapeHtml(s.label)}</span>`,
    )
    .join("")
  return (
    `<figure class="chart" data-title="${escapeHtml(title)}" data-w="${WIDTH}" data-h="${HEIGHT}" data-x0="${x0}" data-x1="${x1}" data-y0="${y0}" data-y1="${y1}">` +
    `<figcaption>${escapeHtml(title)}</figcaption>` +
    `<svg width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label="${escapeHtml(title)}">` +
    grid.join("") +
    `<rect class="frame" x="${MARGIN.left}" y="${MARGIN.top}" width="${iw}" height="${ih}"/>` +
    `<text class="axis" x="${MARGIN.left + iw / 2}" y="${HEIGHT - 6}" text-anchor="middle">${escapeHtml(xLabel)}</text>` +
    lines.join("") +
    `<g class="hover"><line class="cursor" y1="${MARGIN.top}" y2="${MARGIN.top + ih}"/><circle class="dot" r="4"/></g>` +
    "</svg>" +
    `<div class="legend">${legend}</div><div class="readout"></div>` +
    "</figure>"
  )
}

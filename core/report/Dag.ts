/**
 * The run's DAG as inline SVG: layered left to right (a node's layer is its
 * longest path from a source), nodes ordered within a layer by the mean
 * position of their parents, edges as curves. Each node is coloured by what
 * happened to it: ran, cached, failed, skipped or interrupted.
 */
import { escapeHtml } from "./Escape.ts"

export interface DagNode {
  readonly id: string
  readonly label: string
  readonly sub: string
  readonly status: string
}

const W = 168
const H = 46
const GAP_X = 64
const GAP_Y = 18
const PAD = 12

export const layout = (nodes: ReadonlyArray<DagNode>, edges: ReadonlyArray<{ from: string; to: string }>) => {
  const parents = new Map<string, string[]>(nodes.map((n) => [n.id, []]))
  for (const e of edges) parents.get(e.to)?.push(e.from)
  const layer = new Map<string, number>()
  const depth = (id: string, seen: Set<string>): number => {
    const known = layer.get(id)
    if (known !== undefined) return known
    if (seen.has(id)) return 0
    seen.add(id)
    const ps = (parents.get(id) ?? []).filter((p) => parents.has(p))
    const d = ps.length === 0 ? 0 : 1 + Math.max(...ps.map((p) => depth(p, seen)))
    layer.set(id, d)
    return d
  }
  for (const n of nodes) depth(n.id, new Set())
  const layers: string[][] = []
  for (const n of nodes) {
    const l = layer.get(n.id)!
    layers[l] = [...(layers[l] ?? []), n.id]
  }
  const pos = new Map<string, number>()
  layers.forEach((ids) => {
    ids.forEach((id, i) => {
      const ps = parents.get(id)!.filter((p) => pos.has(p))
      pos.set(id, ps.length === 0 ? i : ps.reduce((s, p) => s + pos.get(p)!, 0) / ps.length + i * 1e-3)
    })
    ids.sort((a, b) => pos.get(a)! - pos.get(b)!)
    ids.forEach((id, i) => {
      pos.set(id, i)
    })
  })
  const tallest = Math.max(1, ...layers.map((l) => l?.length ?? 0))
  const height = PAD * 2 + tallest * H + (tallest - 1) * GAP_Y
  const xy = new Map<string, { x: number; y: number }>()
  layers.forEach((ids, l) => {
    const span = ids.length * H + (ids.length - 1) * GAP_Y
    const top = (height - span) / 2
    ids.forEach((id, i) => {
      xy.set(id, { x: PAD + l * (W + GAP_X), y: top + i * (H + GAP_Y) })
    })
  })
  const width = PAD * 2 + layers.length * W + Math.max(0, layers.length - 1) * GAP_X
  return { xy, width, height }
}

const clip = (s: string, n: number) => (s.length > n ? `${s.slice(0, n - 1)}…` : s)

export const dagSvg = (
  nodes: ReadonlyArray<DagNode>,
  edges: ReadonlyArray<{ from: string; to: string }>,
): string => {
  const { xy, width, height } = layout(nodes, edges)
  const paths = edges
    .filter((e) => xy.has(e.from) && xy.has(e.to))
    .map((e) => {
      const a = xy.get(e.from)!
      const b = xy.get(e.to)!
      const x1 = a.x + W
      const y1 = a.y + H / 2
      const x2 = b.x
      const y2 = b.y + H / 2
      const mid = (x1 + x2) / 2
      return `<path class="edge" d="M${x1},${y1} C${mid},${y1} ${mid},${y2} ${x2 - 4},${y2}" marker-end="url(#arrow)"/>`
    })
  const boxes = nodes.map((n) => {
    const { x, y } = xy.get(n.id)!
    return (
      `<g class="node status-${escapeHtml(n.status)}" data-node="${escapeHtml(n.id)}" data-status="${escapeHtml(n.status)}" tabindex="0">` +
      `<title>${escapeHtml(`${n.id} (${n.sub}): ${n.status}`)}</title>` +
      `<rect x="${x}" y="${y}" width="${W}" height="${H}" rx="7"/>` +
      `<text x="${x + 10}" y="${y + 19}" class="label">${escapeHtml(clip(n.label, 24))}</text>` +
      `<text x="${x + 10}" y="${y + 36}" class="sub">${escapeHtml(clip(`${n.sub} · ${n.status}`, 30))}</text>` +
      "</g>"
    )
  })
  return (
    `<svg class="dag" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="pipeline graph">` +
    '<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto"><path d="M0,0 L8,4 L0,8 z" class="arrowhead"/></marker></defs>' +
    paths.join("") +
    boxes.join("") +
    "</svg>"
  )
}

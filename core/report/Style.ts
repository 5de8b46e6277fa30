/** The report page's stylesheet (inlined). Status colours match the CLI's words. */
export const STYLE = `
:root { --fg: #1d2330; --muted: #6b7385; --line: #dde1e8; --bg: #fff; --panel: #f6f7f9;
  --ran: #2e9d4f; --cached: #7d8ca3; --failed: #d64545; --skipped: #c99a06; --interrupted: #e07b24; }
@media (prefers-color-scheme: dark) {
  :root { --fg: #e6e8ee; --muted: #9aa3b5; --line: #353b48; --bg: #16191f; --panel: #1f232b; }
}
* { box-sizing: border-box; }
body { margin: 0 auto; max-width: 1180px; padding: 24px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg); }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 32px 0 10px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 8px; } h4 { font-size: 14px; margin: 16px 0 6px; }
.muted { color: var(--muted); font-weight: normal; } .mono, pre { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; font-size: 12px; background: var(--cached); }
.status-ran, .run-succeeded { background: var(--ran); } .status-cached { background: var(--cached); }
.status-failed, .run-failed { background: var(--failed); } .status-skipped { background: var(--skipped); }
.status-interrupted, .run-interrupted, .run-running { background: var(--interrupted); }
.dag-wrap { overflow-x: auto; background: var(--panel); border-radius: 8px; padding: 8px; }
.dag .edge { fill: none; stroke: var(--muted); stroke-width: 1.4; } .dag .arrowhead { fill: var(--muted); }
.dag .node { cursor: pointer; } .dag .node rect { fill: var(--bg); stroke-width: 2.5; }
.dag .node.status-ran rect { stroke: var(--ran); } .dag .node.status-cached rect { stroke: var(--cached); stroke-dasharray: 5 3; }
.dag .node.status-failed rect { stroke: var(--failed); fill: #fdeaea; } .dag .node.status-skipped rect { stroke: var(--skipped); }
.dag .node.status-interrupted rect { stroke: var(--interrupted); }
.dag .node.selected rect { stroke-width: 4; } .dag .node { background: none; }
.dag .label { font-size: 13px; font-weight: 600; fill: var(--fg); } .dag .sub { font-size: 11px; fill: var(--muted); }
.details { margin-top: 10px; padding: 10px 14px; background: var(--panel); border-radius: 8px; }
.details h3 { margin: 0 0 6px; } .details th { text-align: left; padding-right: 14px; color: var(--muted); font-weight: normal; vertical-align: top; }
.details td { font-family: ui-monospace, Menlo, monospace; font-size: 12px; word-break: break-all; }
.charts { display: flex; flex-wrap: wrap; gap: 18px; }
.chart { margin: 0; background: var(--panel); border-radius: 8px; padding: 8px 8px 4px; }
.chart figcaption { font-weight: 600; margin: 0 0 4px 8px; } .chart svg { display: block; max-width: 100%; height: auto; }
.chart .grid { stroke: var(--line); } .chart .frame { fill: none; stroke: var(--line); }
.chart .tick, .chart .axis { font-size: 11px; fill: var(--muted); } .chart .series { stroke-width: 1.8; stroke-linejoin: round; }
.chart .hover { display: none; pointer-events: none; } .chart .cursor { stroke: var(--muted); stroke-dasharray: 2 3; }
.chart .dot { fill: var(--fg); } .legend { display: flex; flex-wrap: wrap; gap: 4px 14px; margin: 4px 8px; font-size: 12px; }
.legend .key svg { margin-right: 5px; vertical-align: middle; } .readout { min-height: 18px; margin: 2px 8px; font-size: 12px; color: var(--muted); }
table { border-collapse: collapse; } th, td { padding: 4px 10px; text-align: left; }
table.sweep, table.steps, table.scores { width: 100%; } table.sweep thead tr:last-child th, table.steps thead th, table.scores thead th { border-bottom: 2px solid var(--line); }
th.group { color: var(--muted); font-weight: normal; font-size: 12px; border-bottom: 1px solid var(--line); }
table.sweep td, table.steps td, table.scores td { border-bottom: 1px solid var(--line); vertical-align: top; }
.num { text-align: right; font-variant-numeric: tabular-nums; } tr.best td { background: rgba(46, 157, 79, 0.12); font-weight: 600; }
table.steps tr[data-node] { cursor: pointer; } .up { color: var(--ran); } .down { color: var(--failed); }
td.bars { width: 35%; } .bar { display: block; height: 7px; margin: 2px 0; border-radius: 3px; } .bar.base { background: var(--cached); } .bar.tuned { background: #3366cc; }
.samples { display: grid; gap: 10px; } .sample { background: var(--panel); border-radius: 8px; padding: 8px 12px; position: relative; }
.sample .n { position: absolute; right: 10px; top: 6px; color: var(--muted); font-size: 12px; }
.sample .field { display: grid; grid-template-columns: 90px 1fr; gap: 8px; margin: 2px 0; }
.sample .k { color: var(--muted); font-size: 12px; padding-top: 2px; } .sample pre { margin: 0; white-space: pre-wrap; word-break: break-word; }
.sample .f-tuned pre { color: #2554a6; } .error { color: var(--failed); font-family: system-ui, sans-serif; } footer { margin-top: 36px; font-size: 12px; }
summary { cursor: pointer; } summary h4 { display: inline-block; }
`

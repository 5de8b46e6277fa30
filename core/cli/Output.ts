/** Human output: plain lines off a TTY, a live status line on one, colour unless NO_COLOR. */
import type { RunEvent, StepOutcome } from "../Run.ts"

const tty = process.stderr.isTTY === true
const color = tty && process.env.NO_COLOR === undefined && process.env.TERM !== "dumb"
const paint = (code: number) => (s: string) => (color ? `\x1b[${code}m${s}\x1b[0m` : s)
export const green = paint(32)
export const red = paint(31)
export const yellow = paint(33)
export const dim = paint(2)
export const bold = paint(1)

export const seconds = (ms: number) =>
  ms < 1000 ? `${(ms / 1000).toFixed(2)} s` : `${(ms / 1000).toFixed(1)} s`

export const summaryLine = (steps: ReadonlyArray<StepOutcome>, ms: number): string => {
  const n = (s: StepOutcome["status"]) => steps.filter((x) => x.status === s).length
  const skipped = n("skipped")
  return `${steps.length} steps: ${n("cached")} cached, ${n("ran")} ran, ${n("failed")} failed${skipped > 0 ? `, ${skipped} skipped` : ""} (${seconds(ms)})`
}

const statusWord = (o: StepOutcome) =>
  o.status === "ran"
    ? green("ran    ")
    : o.status === "failed"
      ? red("failed ")
      : o.status === "skipped"
        ? yellow("skipped")
        : dim("cached ")

/** Prints finished steps as lines (stdout), and on a TTY a live line of what is running (stderr). */
export const makeReporter = (options: { readonly verbose: boolean; readonly quiet: boolean }) => {
  const running = new Map<string, string>()
  const started = new Map<string, number>()
  let live = false
  const clear = () => {
    if (live) {
      process.stderr.write("\r\x1b[2K")
      live = false
    }
  }
  const draw = () => {
    if (!tty || running.size === 0) return
    const parts = [...running.entries()].map(([n, d]) => `${n}${d ? ` ${d}` : ""}`)
    const text = `running: ${parts.join(" | ")}`
    const width = process.stderr.columns ?? 100
    process.stderr.write(`\r\x1b[2K${dim(text.length > width - 1 ? `${text.slice(0, width - 2)}…` : text)}`)
    live = true
  }
  const onEvent = (e: RunEvent) => {
    if (options.quiet) return
    switch (e.type) {
      case "start":
        running.set(e.node, "")
        started.set(e.node, Date.now())
        draw()
        break
      case "progress": {
        const pct = e.total !== undefined && e.total > 0 ? ` ${Math.floor((100 * e.done) / e.total)}%` : ""
        const t0 = started.get(e.node) ?? Date.now()
        const elapsed = (Date.now() - t0) / 1000
        const eta =
          e.total !== undefined && e.done > 0 && e.total > e.done
            ? ` eta ${Math.round((elapsed * (e.total - e.done)) / e.done)}s`
            : ""
        running.set(
          e.node,
          `${e.total !== undefined ? `${e.done}/${e.total}` : `${e.done}`}${pct}${eta}${e.detail ? ` ${e.detail}` : ""}`,
        )
        draw()
        break
      }
      case "log":
        if (options.verbose) {
          clear()
          process.stdout.write(`${dim(`[${e.node}]`)} ${e.line}\n`)
          draw()
        }
        break
      case "wait":
        clear()
        process.stdout.write(`${dim("waiting")} ${e.node}: ${e.holder} is computing the same step\n`)
        draw()
        break
      case "end": {
        running.delete(e.outcome.node)
        if (e.outcome.status === "cached" && !options.verbose) {
          draw()
          break
        }
        clear()
        const o = e.outcome
        const reuse =
          o.chunks === undefined
            ? ""
            : `, ${o.chunks.computed} of ${o.chunks.chunks} chunk${o.chunks.chunks === 1 ? "" : "s"} computed (${o.chunks.reused} reused)`
        const extra = o.status === "ran" || o.status === "failed" ? dim(` ${seconds(o.ms)}${reuse}`) : ""
        process.stdout.write(
          `  ${statusWord(o)} ${o.node}${o.plugin !== "source" ? dim(` (${o.plugin})`) : ""}${extra}\n`,
        )
        if (o.error !== undefined && o.status === "failed")
          process.stdout.write(`          ${red(o.error.split("\n").join("\n          "))}\n`)
        draw()
        break
      }
    }
  }
  return { onEvent, done: clear }
}

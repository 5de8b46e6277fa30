/**
 * The synthetic pipeline the engine benchmarks time (bench/engine.ts, bench/shared.ts): one
 * source, a `head` step reading it, and a binary tree of tiny `step`s, `nodes` in all.
 */
export const PLUGIN = `
import * as fs from "node:fs"
import { definePlugin, Effect, Files, kind, Pipeline, Schema, withDefault } from "tunegraph"
const Blob = kind("Blob")
const head = definePlugin({
  name: "head", version: 1,
  params: Schema.Struct({ bytes: Schema.Int.pipe(withDefault(64)) }),
  inputs: { files: Files }, outputs: { out: Blob },
  run: (ctx) => Effect.sync(() => {
    const fd = fs.openSync(ctx.inputs.files.path, "r")
    const buf = Buffer.alloc(ctx.params.bytes)
    fs.readSync(fd, buf, 0, buf.length, 0)
    fs.closeSync(fd)
    fs.writeFileSync(ctx.output("out"), buf)
  }),
})
const step = definePlugin({
  name: "step", version: 1,
  params: Schema.Struct({ i: Schema.Int }),
  inputs: { a: Blob }, outputs: { out: Blob },
  run: (ctx) => Effect.sync(() => {
    fs.writeFileSync(ctx.output("out"), fs.readFileSync(ctx.inputs.a.path, "utf8") + ctx.params.i)
  }),
})
`

/** The pipeline file's text: node i reads node floor((i - 1) / 2). */
export const syntheticPipeline = (nodes: number): string => {
  const lines = [
    PLUGIN,
    `const p = Pipeline.make("synthetic-${nodes}")`,
    `const src = p.source("seed", "seed.txt")`,
  ]
  lines.push(`const n0 = p.node("n0", head, { inputs: { files: src } }).out`)
  for (let i = 1; i < nodes - 1; i++)
    lines.push(
      `const n${i} = p.node("n${i}", step, { inputs: { a: n${Math.floor((i - 1) / 2)} }, params: { i: ${i} } }).out`,
    )
  lines.push("export default p")
  return lines.join("\n")
}

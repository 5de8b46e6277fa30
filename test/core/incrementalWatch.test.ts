/**
 * `tunegraph watch` over the incremental fixture with training: an append
 * to the source makes the data steps do only the new chunks, then LoRA
 * training runs on the new tokens.
 */
import type { ChildProcess } from "node:child_process"
import { once } from "node:events"
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, beforeAll, describe, expect, it } from "vitest"
import { gsm8kFile, gsm8kLines, incrementalProject, reuseOf } from "../fixtures/incremental/project.ts"
import { repoRoot, spawnCli } from "../support/cli.ts"
import { haveShared } from "../support/data.ts"

interface Cycle {
  cycle: number
  status: string
  run?: string
  steps: Array<{ node: string; status: string }>
}

const have = haveShared("watch over incremental data steps", gsm8kFile)
const children: ChildProcess[] = []
afterEach(async () => {
  for (const c of children.splice(0))
    if (c.exitCode === null) {
      c.kill("SIGKILL")
      await once(c, "exit")
    }
})

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe.skipIf(!have)("watch with chunked data steps", () => {
  it("an append re-does only the new chunks of each data step, then training runs", async () => {
    const all = gsm8kLines()
    const dir = incrementalProject(all.slice(0, 300), "inc-watch")
    const child = spawnCli(dir, ["watch", "pipeline.ts", "--json", "--debounce", "100"], {
      TUNEGRAPH_CHUNK_BYTES: "16384",
      TG_INC_TRAIN: "1",
    })
    children.push(child)
    const cycles: Cycle[] = []
    let buffer = ""
    let stderr = ""
    child.stdout!.on("data", (d) => {
      buffer += d
      for (let i = buffer.indexOf("\n"); i >= 0; i = buffer.indexOf("\n")) {
        cycles.push(JSON.parse(buffer.slice(0, i)))
        buffer = buffer.slice(i + 1)
      }
    })
    child.stderr!.on("data", (d) => {
      stderr += d
    })
    const next = async (n: number): Promise<Cycle> => {
      for (let i = 0; i < 2400 && cycles.length < n; i++) {
        if (child.exitCode !== null) throw new Error(`watch exited (${child.exitCode}): ${stderr}`)
        await new Promise((r) => setTimeout(r, 50))
      }
      if (cycles.length < n) throw new Error(`no cycle ${n} after 120 s: ${stderr}`)
      return cycles[n - 1]!
    }
    const status = (c: Cycle, node: string) => c.steps.find((s) => s.node === node)?.status

    const first = await next(1)
    expect(first.status, stderr).toBe("succeeded")
    expect(status(first, "train")).toBe("ran")

    fs.appendFileSync(path.join(dir, "data/records.jsonl"), `${all.slice(300, 306).join("\n")}\n`)
    const second = await next(2)
    expect(second.status, stderr).toBe("succeeded")
    for (const n of ["ingest", "dedupe", "split", "tokenize", "train"]) expect(status(second, n)).toBe("ran")
    const reuse = reuseOf(dir, second.run!)
    for (const n of ["ingest", "dedupe", "split", "tokenize"]) {
      expect(reuse[n]!.chunks).toBeGreaterThanOrEqual(5)
      expect(reuse[n]!.computed).toBeGreaterThanOrEqual(1)
      expect(reuse[n]!.computed).toBeLessThanOrEqual(2)
    }
    child.kill("SIGINT")
    const [code] = await once(child, "exit")
    expect(code).toBe(0)
  }, 300_000)
})

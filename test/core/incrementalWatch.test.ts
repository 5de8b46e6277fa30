/**
 * `tunegraph watch` over the incremental fixture with training: an append
 * to the source makes the data steps do only the new chunks, then LoRA
 * training runs on the new tokens.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterEach, beforeAll, describe, expect, it } from "vitest"
import { gsm8kFile, gsm8kLines, incrementalProject, reuseOf } from "../fixtures/incremental/project.ts"
import { killChildren, repoRoot, startWatch, type WatchCycle } from "../support/cli.ts"
import { haveShared } from "../support/data.ts"

const have = haveShared("watch over incremental data steps", gsm8kFile)
afterEach(killChildren)

beforeAll(() => {
  expect(fs.existsSync(path.join(repoRoot, "dist/cli.js")), "run `npm run build` first").toBe(true)
})

describe.skipIf(!have)("watch with chunked data steps", () => {
  it("an append re-does only the new chunks of each data step, then training runs", async () => {
    const all = gsm8kLines()
    const dir = incrementalProject(all.slice(0, 300), "inc-watch")
    const w = startWatch(dir, { TUNEGRAPH_CHUNK_BYTES: "16384", TG_INC_TRAIN: "1" }, 120_000)
    const status = (c: WatchCycle, node: string) => c.steps.find((s) => s.node === node)?.status

    const first = await w.next()
    expect(first.status, w.stderr()).toBe("succeeded")
    expect(status(first, "train")).toBe("ran")

    fs.appendFileSync(path.join(dir, "data/records.jsonl"), `${all.slice(300, 306).join("\n")}\n`)
    const second = await w.next()
    expect(second.status, w.stderr()).toBe("succeeded")
    for (const n of ["ingest", "dedupe", "split", "tokenize", "train"]) expect(status(second, n)).toBe("ran")
    const reuse = reuseOf(dir, second.run!)
    for (const n of ["ingest", "dedupe", "split", "tokenize"]) {
      expect(reuse[n]!.chunks).toBeGreaterThanOrEqual(5)
      expect(reuse[n]!.computed).toBeGreaterThanOrEqual(1)
      expect(reuse[n]!.computed).toBeLessThanOrEqual(2)
    }
    expect(await w.stop()).toBe(0)
  }, 300_000)
})
